//! `POST /v1/partner/interaction-keys/{id}/secret`: a source app takes the secret withheld
//! for it, once. The data key that sealed it is destroyed in the same commit.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::context::AppCtx;
use super::error::{ApiError, Problem};
use super::extract::Path;
use super::shown_once::ShownOnce;
use crate::app::interaction_keys as app;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(claim_interaction_key_secret))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClaimedSecret {
    /// The interaction key itself, shown this once.
    #[schema(value_type = String)]
    pub secret: ShownOnce,
}

/// Retrieve the secret of an interaction key generated for this (source) app: once; later
/// calls get 410. The key's destination app is refused (403); other apps find no such key.
#[utoipa::path(post, path = "/v1/partner/interaction-keys/{id}/secret", tag = "partner",
    params(("id" = Uuid, Path)),
    responses((status = 200, description = "OK", body = ClaimedSecret), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn claim_interaction_key_secret(
    State(state): State<AppState>,
    ctx: AppCtx,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let ip = ctx.metadata.actor.ip.clone();
    let secret = app::claim_secret(&state, &ctx.metadata, ctx.app.id, id, ip).await?;
    let mut response = axum::Json(ClaimedSecret { secret: ShownOnce::new(secret.expose_secret()) }).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
