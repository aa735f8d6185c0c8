//! Liveness and readiness.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, Problem};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "OK", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Readiness {
    status: &'static str,
    /// The last committed position of the event log.
    head_position: i64,
    schema_version: i32,
}

/// The database is reachable and every migration is applied.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses((status = 200, description = "OK", body = Readiness), (status = 503, description = "Not ready", body = Problem, content_type = "application/problem+json"))
)]
async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, axum::response::Response> {
    let unavailable = |detail: &str| {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", Some(detail.to_owned()))
            .into_response_with(StatusCode::SERVICE_UNAVAILABLE)
    };
    let client = state.pool.get().await.map_err(|_| unavailable("the database is unreachable"))?;
    let current =
        crate::migrate::is_current(&**client).await.map_err(|_| unavailable("the database is unreachable"))?;
    if !current {
        return Err(unavailable("database migrations are not applied"));
    }
    let head_position =
        crate::store::head_position(&**client).await.map_err(|_| unavailable("the event log is unreadable"))?;
    Ok(Json(Readiness { status: "ready", head_position, schema_version: crate::migrate::latest_version() }))
}
