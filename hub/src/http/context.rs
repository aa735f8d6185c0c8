//! What every command handler needs from the request: who, from where, which request.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use shared::Metadata;

use super::AppState;
use super::auth::{ClientIp, Principal};
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
            idempotency_key: parts.headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned),
            traceparent: parts.headers.get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_owned),
        };
        Ok(Self { principal, metadata, if_match: conditional::if_match(&parts.headers) })
    }
}
