//! `GET /v1/events`: the raw event feed in position order, with hashes (operator only).
//! Instances catch up and fill gaps from it; auditors can check the chain from it.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use shared::RecordedEvent;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::context::Ctx;
use super::error::{ApiError, Problem};
use super::extract::Query;
use super::pagination::Link;
use super::sql::text_filter;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(event_feed))
}

pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    /// Events with a position greater than this (default 0: from the start).
    after: Option<i64>,
    /// At most this many events (default 100, at most 1000).
    limit: Option<i64>,
    /// Only this stream's events, e.g. `workspace-<uuid>`.
    stream_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FeedEvent {
    pub position: i64,
    pub stream_id: String,
    pub stream_version: i64,
    pub event_id: uuid::Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub data: serde_json::Value,
    pub metadata: serde_json::Value,
    pub recorded_at: chrono::DateTime<chrono::Utc>,
    /// Hex of the previous event's hash.
    pub prev_hash: String,
    /// Hex of `sha256(prev_hash ‖ canonical bytes of the event)`.
    pub hash: String,
}

impl From<RecordedEvent> for FeedEvent {
    fn from(e: RecordedEvent) -> Self {
        Self {
            position: e.position,
            stream_id: e.stream_id,
            stream_version: e.stream_version,
            event_id: e.event_id,
            event_type: e.event_type,
            schema_version: e.schema_version,
            data: e.data,
            metadata: e.metadata,
            recorded_at: e.recorded_at,
            prev_hash: hex::encode(e.prev_hash),
            hash: hex::encode(e.hash),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Feed {
    pub items: Vec<FeedEvent>,
    /// `next` while a full page came back (more may follow).
    pub links: Vec<Link>,
}

/// The event feed, in position order.
#[utoipa::path(get, path = "/v1/events", tag = "operations", params(FeedQuery),
    responses((status = 200, description = "OK", body = Feed),
              (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn event_feed(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(query): Query<FeedQuery>,
) -> Result<axum::Json<Feed>, ApiError> {
    ctx.principal.require_operator()?;
    let after = query.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::invalid("after", "range", "after must be 0 or more"));
    }
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid("limit", "range", format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    let client = state.pool.get().await?;
    let events = match &query.stream_id {
        Some(stream) => {
            crate::store::read_stream_page(&**client, text_filter("stream_id", stream, 200)?, after, limit).await?
        }
        None => crate::store::read_page(&**client, after, limit).await?,
    };
    let mut links = Vec::new();
    if let Some(last) = events.last().filter(|_| events.len() as i64 == limit) {
        let mut href = format!("/v1/events?after={}&limit={limit}", last.position);
        if let Some(stream) = &query.stream_id {
            href.push_str("&stream_id=");
            href.push_str(&form_urlencoded::byte_serialize(stream.as_bytes()).collect::<String>());
        }
        links.push(Link { rel: "next", href });
    }
    Ok(axum::Json(Feed { items: events.into_iter().map(FeedEvent::from).collect(), links }))
}
