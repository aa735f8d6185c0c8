//! `GET /v1/events`: the raw event feed in position order, with hashes (operator only).
//! Instances catch up and fill gaps from it; auditors can check the chain from it.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use shared::feed::{DEFAULT_LIMIT, FeedPage, FeedQuery, MAX_LIMIT};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::context::Ctx;
use super::error::{ApiError, Problem};
use super::extract::Query;
use super::sql::text_filter;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(event_feed))
}

/// The event feed, in position order.
#[utoipa::path(get, path = "/v1/events", tag = "operations", params(FeedQuery),
    responses((status = 200, description = "OK", body = FeedPage),
              (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn event_feed(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(query): Query<FeedQuery>,
) -> Result<impl IntoResponse, ApiError> {
    ctx.principal.require_operator()?;
    let after = query.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::invalid("after", "range", "after must be 0 or more"));
    }
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid("limit", "range", format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    let stream = query.stream_id.as_deref().map(|s| text_filter("stream_id", s, 200)).transpose()?;
    let client = state.pool.get().await?;
    // The page a `FeedPage` serializes to, the payloads copied from the database's JSON
    // text rather than parsed and written again.
    let events = crate::store::read_feed_page(&**client, stream, after, limit).await?;
    let body = shared::feed::raw_page(&events, limit, query.stream_id.as_deref());
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body))
}
