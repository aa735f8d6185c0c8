//! Instances: heartbeats in, `GET /v1/instances` out, and where new workspaces go.

use axum::extract::State;
use axum::http::Uri;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::link::{Heartbeat, HeartbeatReply};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::context::Ctx;
use super::error::{ApiError, Problem};
use super::extract::{Json, Path, Query};
use super::pagination::{Page, Paging};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_instances)).routes(routes!(heartbeat))
}

/// An instance that has not reported for this long is not given new workspaces.
pub const LIVE_SECONDS: f64 = 30.0;

#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceView {
    pub id: String,
    pub last_heartbeat_at: DateTime<Utc>,
    pub applied_position: i64,
    /// How far the instance trails the log (by position).
    pub lag: i64,
    pub workspace_count: i64,
}

impl InstanceView {
    /// A row of the list's query (`lag` computed against the log's head).
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            last_heartbeat_at: row.try_get("last_heartbeat_at")?,
            applied_position: row.try_get("applied_position")?,
            lag: row.try_get::<_, i64>("lag")?.max(0),
            workspace_count: row.try_get("workspace_count")?,
        })
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InstanceQuery {
    page: Option<u32>,
    page_size: Option<u32>,
}

/// The instances, as they last reported (operator).
#[utoipa::path(get, path = "/v1/instances", tag = "operations", params(InstanceQuery),
    responses((status = 200, description = "OK", body = Page<InstanceView>),
              (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn list_instances(
    State(state): State<AppState>,
    ctx: Ctx,
    uri: Uri,
    Query(query): Query<InstanceQuery>,
) -> Result<axum::Json<Page<InstanceView>>, ApiError> {
    ctx.principal.require_operator()?;
    let paging = Paging::new(query.page, query.page_size)?;
    let (limit, offset) = paging.limit_offset();
    let client = state.pool.get().await?;
    let rows = client
        .query(
            "SELECT i.id, i.last_heartbeat_at, i.applied_position, h.position - i.applied_position AS lag, \
             i.workspace_count \
             FROM instances i, event_log_head h ORDER BY i.id LIMIT $1 OFFSET $2",
            &[&limit, &offset],
        )
        .await?;
    let items = rows.iter().map(InstanceView::from_row).collect::<Result<_, _>>()?;
    Ok(axum::Json(Page::new(items, paging, &uri)))
}

/// An instance reports itself (operator key; instances send it every few seconds).
#[utoipa::path(post, path = "/v1/instances/{id}/heartbeat", tag = "operations", params(("id" = String, Path)),
    request_body = Heartbeat,
    responses((status = 200, description = "OK", body = HeartbeatReply),
              (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn heartbeat(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Json(body): Json<Heartbeat>,
) -> Result<axum::Json<HeartbeatReply>, ApiError> {
    ctx.principal.require_operator()?;
    shared::domain::values::instance_id("id", &id)?;
    record(&**state.pool.get().await?, &id, body.applied_position, body.workspace_count).await.map(axum::Json)
}

/// Upserts an instance's report; returns the log's head.
pub async fn record(
    client: &impl tokio_postgres::GenericClient,
    id: &str,
    applied_position: i64,
    workspace_count: i64,
) -> Result<HeartbeatReply, ApiError> {
    // A position or count below zero is no instance's truth, and would overflow the lag
    // the instance list computes from it.
    for (name, value) in [("applied_position", applied_position), ("workspace_count", workspace_count)] {
        if value < 0 {
            return Err(ApiError::invalid(name, "range", format!("{name} must be 0 or more")));
        }
    }
    client
        .execute(
            "INSERT INTO instances (id, last_heartbeat_at, applied_position, workspace_count) VALUES ($1, now(), $2, $3) \
             ON CONFLICT (id) DO UPDATE SET last_heartbeat_at = now(), applied_position = $2, workspace_count = $3",
            &[&id, &applied_position, &workspace_count],
        )
        .await?;
    let head: i64 = client.query_one("SELECT position FROM event_log_head", &[]).await?.try_get("position")?;
    Ok(HeartbeatReply { head_position: head })
}

/// The live instance with the fewest live workspaces (by the hub's own placements).
pub async fn place(client: &impl tokio_postgres::GenericClient) -> Result<Option<String>, ApiError> {
    let row = client
        .query_opt(
            "SELECT i.id FROM instances i \
             WHERE i.last_heartbeat_at > now() - make_interval(secs => $1) \
             ORDER BY (SELECT count(*) FROM workspaces w WHERE w.instance_id = i.id AND w.status <> 'deleted'), i.id \
             LIMIT 1",
            &[&LIVE_SECONDS],
        )
        .await?;
    Ok(row.map(|r| r.try_get("id")).transpose()?)
}
