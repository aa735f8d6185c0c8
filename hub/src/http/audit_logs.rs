//! `/v1/audit-logs`: who did what, when, from where, to which resource of the
//! organization, as the `audit_log` read model records it (one row per event, secrets
//! redacted: see `projections::audit_log`). Needs `audit:read`; a key sees its own
//! organization's rows, a key restricted to workspaces only the rows of workspaces in its
//! subtrees, the operator every organization's.

use axum::extract::State;
use axum::http::Uri;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::scope::Scope;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::auth::Principal;
use super::context::Ctx;
use super::cursor::{Keyset, Listing, SortKind};
use super::error::{ApiError, Problem};
use super::extract::Query;
use super::paged::{self, paged};
use super::pagination::{Count, Page, SortOrder};
use super::sql::Filter;
use super::visibility::Table;
use crate::columns::ActorType;
use crate::projections::audit_log::EVENT_TYPES;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit_logs)).routes(routes!(count_audit_logs))
}

/// Who caused the event.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditActor {
    /// `operator`, `api_key`, `user`, `app` or `system`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: ActorType,
    /// The key's or user's id; null for the operator and the system.
    pub id: Option<String>,
    /// The client address of the request.
    pub ip: Option<String>,
}

/// What the event is about.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditResource {
    /// `organization`, `workspace`, `api_key`, `user`, `invitation`, `member` (whose id
    /// is the user's, in the entry's workspace), `external_key`, `interaction_key` or `app`.
    #[serde(rename = "type")]
    pub kind: String,
    pub id: Uuid,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditLogEntry {
    /// The event's id.
    pub id: Uuid,
    /// The event's position in the log.
    pub position: i64,
    pub event_type: String,
    pub recorded_at: DateTime<Utc>,
    pub actor: AuditActor,
    /// Null for an event of a technology partner app (of no organization; the operator's).
    pub organization_id: Option<Uuid>,
    /// Null for an event of the organization as a whole.
    pub workspace_id: Option<Uuid>,
    pub resource: AuditResource,
    /// The event's data; key material, hashes and sealed secrets read `"[redacted]"`.
    pub data: serde_json::Value,
    /// The `Request-Id` of the request that caused the event.
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditLogSort {
    /// The log's order (also the order of `recorded_at`).
    #[default]
    Position,
}

fn event_type_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(EVENT_TYPES))
        .build()
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditLogQuery {
    /// The page to show, from 1 (the default).
    #[param(minimum = 1, maximum = 100_000)]
    page: Option<u32>,
    /// Entries per page (default 20).
    #[param(minimum = 1, maximum = 100)]
    page_size: Option<u32>,
    /// `position`, the log's order (the default and only sort).
    #[param(inline)]
    sort_by: Option<AuditLogSort>,
    /// `desc` (newest first) unless `asc`.
    #[param(inline)]
    sort_order: Option<SortOrder>,
    /// Entries of this workspace (not of its descendants).
    workspace_id: Option<Uuid>,
    /// Entries caused by this key or user.
    actor_id: Option<Uuid>,
    /// Entries of this event type (one of the log's).
    #[param(schema_with = event_type_schema)]
    event_type: Option<String>,
    /// Entries recorded at or after this time (RFC 3339).
    from: Option<DateTime<Utc>>,
    /// Entries recorded before this time (RFC 3339); not before `from`.
    to: Option<DateTime<Utc>>,
    /// Entries of this organization. The operator sees every organization; a key only its
    /// own, so another organization's id gives no entries.
    organization_id: Option<Uuid>,
    /// The `pagination.next_cursor` of the previous page (with the same filters and sort),
    /// instead of `page`: the page after it, at the cost of the first page.
    #[param(max_length = 2048)]
    cursor: Option<String>,
}

paged!(AuditLogQuery);

impl AuditLogQuery {
    /// The log's order: by position, newest first unless `sort_order=asc`.
    pub(crate) fn keyset(&self) -> Keyset {
        let AuditLogSort::Position = self.sort_by.unwrap_or_default();
        let order = self.sort_order.unwrap_or(SortOrder::Desc);
        Keyset { sort: "a.position", kind: SortKind::UniqueInteger, id: "a.id", order }
    }
}

const SELECT: &str = "SELECT a.position, a.id, a.event_type, a.recorded_at, a.actor_type, a.actor_id, a.actor_ip, \
     a.organization_id, a.workspace_id, a.resource_type, a.resource_id, a.data, a.request_id FROM audit_log a";

impl AuditLogEntry {
    /// A row of [`SELECT`].
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            position: row.try_get("position")?,
            event_type: row.try_get("event_type")?,
            recorded_at: row.try_get("recorded_at")?,
            actor: AuditActor {
                kind: row.try_get("actor_type")?,
                id: row.try_get("actor_id")?,
                ip: row.try_get("actor_ip")?,
            },
            organization_id: row.try_get("organization_id")?,
            workspace_id: row.try_get("workspace_id")?,
            resource: AuditResource { kind: row.try_get("resource_type")?, id: row.try_get("resource_id")? },
            data: row.try_get("data")?,
            request_id: row.try_get("request_id")?,
        })
    }
}

/// The rows the principal may see that match the query's filters; every bad filter is a
/// 422 naming it.
fn filter(principal: &Principal, query: &AuditLogQuery) -> Result<Filter, ApiError> {
    let mut filter = Filter::default();
    filter.visible_to(principal, Table::AuditLog);
    if let Some(organization_id) = query.organization_id {
        filter.bind("a.organization_id = $?", Box::new(organization_id));
    }
    if let Some(workspace_id) = query.workspace_id {
        filter.bind("a.workspace_id = $?", Box::new(workspace_id));
    }
    if let Some(actor_id) = query.actor_id {
        filter.bind("a.actor_id = $?", Box::new(actor_id.to_string()));
    }
    if let Some(event_type) = &query.event_type {
        if !EVENT_TYPES.contains(&event_type.as_str()) {
            return Err(ApiError::invalid("event_type", "enum", "event_type names no event type of the log"));
        }
        filter.bind("a.event_type = $?", Box::new(event_type.clone()));
    }
    if let (Some(from), Some(to)) = (query.from, query.to)
        && from > to
    {
        return Err(ApiError::invalid("from", "range", "from must not be after to"));
    }
    if let Some(from) = query.from {
        filter.bind("a.recorded_at >= $?", Box::new(from));
    }
    if let Some(to) = query.to {
        filter.bind("a.recorded_at < $?", Box::new(to));
    }
    Ok(filter)
}

/// The list query of a page of entries.
pub(crate) fn list_sql(
    principal: &Principal,
    query: &AuditLogQuery,
    listing: &Listing,
) -> Result<(String, Filter), ApiError> {
    let mut filter = filter(principal, query)?;
    Ok((listing.sql(SELECT, &mut filter), filter))
}

/// The count query, over the filters' indexes.
pub(crate) fn count_sql(principal: &Principal, query: &AuditLogQuery) -> Result<(String, Filter), ApiError> {
    let filter = filter(principal, query)?;
    Ok((format!("SELECT count(*) FROM audit_log a {}", filter.where_sql()), filter))
}

/// List audit log entries, newest first.
#[utoipa::path(get, path = "/v1/audit-logs", tag = "audit", params(AuditLogQuery),
    responses((status = 200, description = "OK", body = Page<AuditLogEntry>), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn list_audit_logs(
    State(state): State<AppState>,
    ctx: Ctx,
    uri: Uri,
    Query(query): Query<AuditLogQuery>,
) -> Result<axum::Json<Page<AuditLogEntry>>, ApiError> {
    ctx.principal.require(Scope::AuditRead)?;
    let listing = Listing::of(&state.master_key, &ctx.principal, &uri, &query, query.keyset())?;
    listing.fetch(&state.pool, list_sql(&ctx.principal, &query, &listing)?, "id", AuditLogEntry::from_row, &uri).await
}

/// Count audit log entries.
#[utoipa::path(get, path = "/v1/audit-logs/count", tag = "audit", params(AuditLogQuery),
    responses((status = 200, description = "OK", body = Count), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn count_audit_logs(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(query): Query<AuditLogQuery>,
) -> Result<axum::Json<Count>, ApiError> {
    ctx.principal.require(Scope::AuditRead)?;
    // The paging parameters count nothing, but out of range they are refused here too
    // (`paged::count`), and so is a cursor past the bound the document declares.
    if query.cursor.as_ref().is_some_and(|cursor| cursor.len() > 2048) {
        return Err(ApiError::Unprocessable {
            code: "invalid_cursor",
            detail: "the cursor is not one this list handed out".into(),
        });
    }
    paged::count(&state.pool, &query, || count_sql(&ctx.principal, &query)).await
}

#[cfg(test)]
mod tests {
    use super::super::pagination::{MAX_PAGE, MAX_PAGE_SIZE};

    #[test]
    fn the_documented_paging_bounds_are_the_enforced_ones() {
        assert_eq!(MAX_PAGE, 100_000);
        assert_eq!(MAX_PAGE_SIZE, 100);
    }
}
