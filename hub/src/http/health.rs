//! Liveness and readiness. Readiness includes the relay: a hub whose relay has stayed
//! behind the log without progressing is not ready (instances receive nothing).

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
    /// The relay to NATS; absent when none runs (single-node mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    relay: Option<RelayProgress>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RelayProgress {
    /// The position of the last event published to NATS.
    position: i64,
    /// Events committed but not yet published.
    lag: i64,
    /// How long the relay has been behind without progressing (0 when caught up).
    stalled_seconds: f64,
}

/// Every background task runs, the database is reachable, every migration is applied, and
/// the relay (if one runs) has not stayed behind the log without progressing for `HUB_RELAY_STALL_SECONDS`.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "OK", body = Readiness),
        (status = 503, description = "Not ready: a background task is down, or the database is unreachable or unmigrated (`not_ready`), or the relay is stalled (`relay_stalled`)", body = Problem, content_type = "application/problem+json")
    )
)]
async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, axum::response::Response> {
    let unavailable = |detail: &str| {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", Some(detail.to_owned()))
            .into_response_with(StatusCode::SERVICE_UNAVAILABLE)
    };
    let down = state.tasks.down();
    if !down.is_empty() {
        return Err(unavailable(&format!("background tasks are down: {}", down.join(", "))));
    }
    let client = state.pool.get().await.map_err(|_| unavailable("the database is unreachable"))?;
    let current =
        crate::migrate::is_current(&**client).await.map_err(|_| unavailable("the database is unreachable"))?;
    if !current {
        return Err(unavailable("database migrations are not applied"));
    }
    let head_position =
        crate::store::head_position(&**client).await.map_err(|_| unavailable("the event log is unreadable"))?;
    let relay = match state.config.relay_stall {
        None => None,
        Some(stall) => {
            let status =
                crate::relay::status(&**client).await.map_err(|_| unavailable("the relay checkpoint is unreadable"))?;
            if status.is_stalled(stall) {
                let detail = format!(
                    "the relay is {} events behind the log and has not progressed for {:.0} s",
                    status.lag, status.stalled_seconds
                );
                return Err(Problem::new(StatusCode::SERVICE_UNAVAILABLE, "relay_stalled", Some(detail))
                    .into_response_with(StatusCode::SERVICE_UNAVAILABLE));
            }
            Some(RelayProgress { position: status.position, lag: status.lag, stalled_seconds: status.stalled_seconds })
        }
    };
    Ok(Json(Readiness { status: "ready", head_position, schema_version: crate::migrate::latest_version(), relay }))
}
