//! What every command handler needs from the request: who, from where, which request.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use shared::Metadata;

use super::AppState;
use super::auth::{AppPrincipal, ClientIp, Principal};
use super::conditional;
use super::error::ApiError;
use super::middleware::RequestId;

pub struct Ctx {
    pub principal: Principal,
    pub metadata: Metadata,
    /// The version demanded by `If-Match`, if any.
    pub if_match: Option<i64>,
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let principal = Principal::from_request_parts(parts, state).await?;
        let ClientIp(ip) = ClientIp::from_request_parts(parts, state).await.unwrap_or(ClientIp(None));
        let metadata = Metadata {
            actor: principal.actor(ip),
            request_id: parts.extensions.get::<RequestId>().map(|r| r.0.clone()),
            idempotency_key: header(parts, "idempotency-key"),
            // The request's span when traces are exported, so the trace goes on with
            // the event; otherwise the caller's own.
            traceparent: shared::telemetry::current_traceparent().or_else(|| header(parts, "traceparent")),
        }
        .bounded();
        Ok(Self { principal, metadata, if_match: conditional::if_match(&parts.headers) })
    }
}

/// What a partner route's command handler needs: the app calling (only an app key passes,
/// see [`AppPrincipal`]) and the metadata of the events it causes.
pub struct AppCtx {
    pub app: AppPrincipal,
    pub metadata: Metadata,
}

impl FromRequestParts<AppState> for AppCtx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let app = AppPrincipal::from_request_parts(parts, state).await?;
        let ClientIp(ip) = ClientIp::from_request_parts(parts, state).await.unwrap_or(ClientIp(None));
        let metadata = Metadata {
            actor: Principal::App(app).actor(ip),
            request_id: parts.extensions.get::<RequestId>().map(|r| r.0.clone()),
            idempotency_key: header(parts, "idempotency-key"),
            traceparent: shared::telemetry::current_traceparent().or_else(|| header(parts, "traceparent")),
        }
        .bounded();
        Ok(Self { app, metadata })
    }
}

/// A header's text; `Metadata::bounded` then drops it unless it is within its bounds.
fn header(parts: &Parts, name: &str) -> Option<String> {
    parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}
