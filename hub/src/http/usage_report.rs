//! `GET /v1/usage`: an organization's interactions, deliveries and admin requests over a
//! period, grouped by hour, day, interaction key or workspace, read from the
//! `usage_counters` table (instances report theirs over the link, hubs add the admin
//! requests they count: see [`super::usage`] and `instance::usage`). Needs `usage:read`; a
//! key restricted to workspaces sees only the counters of workspaces in its subtrees, the
//! operator every organization's.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use shared::scope::Scope;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::context::Ctx;
use super::error::{ApiError, Problem};
use super::extract::Query;
use super::sql::Filter;
use super::visibility::Table;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_usage))
}

/// The period counted, ending now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum UsagePeriod {
    /// The last 24 hours.
    #[default]
    #[serde(rename = "24h")]
    Day,
    /// The last 7 days.
    #[serde(rename = "7d")]
    Week,
    /// The last 30 days.
    #[serde(rename = "30d")]
    Month,
}

impl UsagePeriod {
    fn hours(self) -> i32 {
        match self {
            Self::Day => 24,
            Self::Week => 7 * 24,
            Self::Month => 30 * 24,
        }
    }
}

/// What an item's `key` is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UsageGrouping {
    /// The start of the hour (RFC 3339, UTC).
    #[default]
    Hour,
    /// The start of the day (RFC 3339, UTC).
    Day,
    /// The interaction key's id (admin requests belong to no key and are left out).
    InteractionKey,
    /// The workspace's id (admin requests of the organization as a whole are left out).
    Workspace,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsageQuery {
    /// `24h` (the default), `7d` or `30d`, ending now.
    #[param(inline)]
    period: Option<UsagePeriod>,
    /// `hour` (the default), `day`, `interaction_key` or `workspace`.
    #[param(inline)]
    group_by: Option<UsageGrouping>,
    /// Only the counters of this workspace (not of its descendants).
    workspace_id: Option<Uuid>,
    /// Only this organization's counters. The operator sees every organization; a key only
    /// its own, so another organization's id gives no items.
    organization_id: Option<Uuid>,
}

/// The counters of one bucket.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageItem {
    /// The bucket: its start time, the interaction key's id or the workspace's id.
    pub key: String,
    /// Interactions accepted by the instances (202).
    pub interactions_accepted: i64,
    /// Interactions refused for a key the instance knew: an expired key, an archived
    /// workspace, a body refused after the key authenticated.
    pub interactions_rejected: i64,
    /// Webhook deliveries that succeeded.
    pub deliveries_succeeded: i64,
    /// Webhook deliveries that failed for good (retries exhausted or refused).
    pub deliveries_failed: i64,
    /// Requests to this Admin API with the organization's keys.
    pub admin_requests: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    pub period: UsagePeriod,
    pub group_by: UsageGrouping,
    /// One item per bucket with counts, in the order of `key`.
    pub items: Vec<UsageItem>,
}

/// The query of the counters the principal may see, grouped as asked.
fn sql(ctx: &Ctx, period: UsagePeriod, group_by: UsageGrouping, query: &UsageQuery) -> (String, Filter) {
    let mut filter = Filter::default();
    filter.visible_to(&ctx.principal, Table::Usage);
    filter.bind("g.hour >= date_trunc('hour', now() - make_interval(hours => $?))", Box::new(period.hours()));
    if let Some(workspace_id) = query.workspace_id {
        filter.bind("g.workspace_id = $?", Box::new(workspace_id));
    }
    if let Some(organization_id) = query.organization_id {
        filter.bind("g.organization_id = $?", Box::new(organization_id));
    }
    let key = match group_by {
        UsageGrouping::Hour => "to_char(g.hour AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:00:00\"Z\"')",
        UsageGrouping::Day => "to_char(g.hour AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T00:00:00Z\"')",
        UsageGrouping::InteractionKey => {
            filter.clause("g.interaction_key_id IS NOT NULL");
            "g.interaction_key_id::text"
        }
        UsageGrouping::Workspace => {
            filter.clause("g.workspace_id IS NOT NULL");
            "g.workspace_id::text"
        }
    };
    let sql = format!(
        "SELECT {key} AS key, sum(g.interactions_accepted)::int8 AS interactions_accepted, \
         sum(g.interactions_rejected)::int8 AS interactions_rejected, \
         sum(g.deliveries_succeeded)::int8 AS deliveries_succeeded, \
         sum(g.deliveries_failed)::int8 AS deliveries_failed, sum(g.admin_requests)::int8 AS admin_requests \
         FROM usage_counters g {} GROUP BY 1 ORDER BY 1",
        filter.where_sql()
    );
    (sql, filter)
}

/// Usage of the organization over a period, grouped by hour, day, interaction key or
/// workspace. Instances report their counts every few seconds: a request is counted here
/// within 15 seconds.
#[utoipa::path(get, path = "/v1/usage", tag = "usage", params(UsageQuery),
    responses((status = 200, description = "OK", body = Usage), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn get_usage(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(query): Query<UsageQuery>,
) -> Result<axum::Json<Usage>, ApiError> {
    ctx.principal.require(Scope::UsageRead)?;
    let (period, group_by) = (query.period.unwrap_or_default(), query.group_by.unwrap_or_default());
    let (sql, filter) = sql(&ctx, period, group_by, &query);
    let client = state.pool.get().await?;
    let rows = client.query(&sql, &filter.params()).await?;
    let items = rows
        .iter()
        .map(|row| {
            Ok(UsageItem {
                key: row.try_get("key")?,
                interactions_accepted: row.try_get("interactions_accepted")?,
                interactions_rejected: row.try_get("interactions_rejected")?,
                deliveries_succeeded: row.try_get("deliveries_succeeded")?,
                deliveries_failed: row.try_get("deliveries_failed")?,
                admin_requests: row.try_get("admin_requests")?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    Ok(axum::Json(Usage { period, group_by, items }))
}
