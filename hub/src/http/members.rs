//! `/v1/workspaces/{id}/members`: who belongs to a workspace, with which role.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::domain::Aggregate;
use shared::domain::workspace::{Workspace, WorkspaceCommand};
use shared::events::workspace::Role;
use shared::scope::Scope;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::context::Ctx;
use super::cursor::{Keyset, Listing, SortKind};
use super::error::{ApiError, Problem};
use super::extract::{Json, Path, Query};
use super::paged::{self, paged};
use super::pagination::{Count, Page, SortOrder};
use super::sql::Filter;
use crate::commands;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_members))
        .routes(routes!(count_members))
        .routes(routes!(change_member, remove_member))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    pub user_id: Uuid,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub joined_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeMember {
    pub role: Role,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MemberQuery {
    page: Option<u32>,
    page_size: Option<u32>,
    /// `pagination.next_cursor` of the previous page (same filters and sort); instead of `page`.
    cursor: Option<String>,
    #[param(inline)]
    role: Option<Role>,
}

paged!(MemberQuery);

/// Members in the order they joined.
pub(crate) const MEMBERS: Keyset =
    Keyset { sort: "m.joined_at", kind: SortKind::Time, id: "m.user_id", order: SortOrder::Asc };

fn filter(workspace_id: Uuid, query: &MemberQuery) -> Filter {
    let mut filter = Filter::default();
    filter.bind("m.workspace_id = $?", Box::new(workspace_id));
    filter.clause("u.status <> 'deleted'");
    if let Some(role) = query.role {
        filter.bind("m.role = $?", Box::new(role));
    }
    filter
}

/// The list query of a page of a workspace's members.
pub(crate) fn list_sql(workspace_id: Uuid, query: &MemberQuery, listing: &Listing) -> (String, Filter) {
    let mut filter = filter(workspace_id, query);
    let sql = listing.sql(
        "SELECT m.user_id, u.email, u.name, m.role, m.joined_at FROM members m JOIN users u ON u.id = m.user_id",
        &mut filter,
    );
    (sql, filter)
}

pub(crate) fn count_sql(workspace_id: Uuid, query: &MemberQuery) -> (String, Filter) {
    let filter = filter(workspace_id, query);
    (format!("SELECT count(*) FROM members m JOIN users u ON u.id = m.user_id {}", filter.where_sql()), filter)
}

impl MemberView {
    /// A row of `SELECT m.user_id, u.email, u.name, m.role, m.joined_at`.
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            user_id: row.try_get("user_id")?,
            email: row.try_get("email")?,
            name: row.try_get("name")?,
            role: row.try_get("role")?,
            joined_at: row.try_get("joined_at")?,
        })
    }
}

/// A workspace's members.
#[utoipa::path(get, path = "/v1/workspaces/{id}/members", tag = "users", params(("id" = Uuid, Path), MemberQuery),
    responses((status = 200, description = "OK", body = Page<MemberView>), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn list_members(
    State(state): State<AppState>,
    ctx: Ctx,
    uri: Uri,
    Path(workspace_id): Path<Uuid>,
    Query(query): Query<MemberQuery>,
) -> Result<axum::Json<Page<MemberView>>, ApiError> {
    ctx.principal.require(Scope::UsersRead)?;
    super::workspaces::find(&state, &ctx.principal, workspace_id).await?;
    let listing = Listing::of(&state.master_key, &ctx.principal, &uri, &query, MEMBERS)?;
    listing.fetch(&state.pool, list_sql(workspace_id, &query, &listing), "user_id", MemberView::from_row, &uri).await
}

/// Count a workspace's members.
#[utoipa::path(get, path = "/v1/workspaces/{id}/members/count", tag = "users", params(("id" = Uuid, Path), MemberQuery),
    responses((status = 200, description = "OK", body = Count), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn count_members(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(workspace_id): Path<Uuid>,
    Query(query): Query<MemberQuery>,
) -> Result<axum::Json<Count>, ApiError> {
    ctx.principal.require(Scope::UsersRead)?;
    super::workspaces::find(&state, &ctx.principal, workspace_id).await?;
    paged::count(&state.pool, &query, || Ok(count_sql(workspace_id, &query))).await
}

/// Change a member's role (the last owner cannot be demoted).
#[utoipa::path(patch, path = "/v1/workspaces/{id}/members/{user_id}", tag = "users",
    params(("id" = Uuid, Path), ("user_id" = Uuid, Path)), request_body = ChangeMember,
    responses((status = 204, description = "No content"), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn change_member(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((workspace_id, user_id)): Path<(Uuid, Uuid)>,
    Json(body): Json<ChangeMember>,
) -> Result<StatusCode, ApiError> {
    ctx.principal.require(Scope::UsersWrite)?;
    super::workspaces::find(&state, &ctx.principal, workspace_id).await?;
    commands::execute::<Workspace>(&state.store, workspace_id, ctx.if_match, &ctx.metadata, |w| {
        w.decide(WorkspaceCommand::ChangeRole { user_id, role: body.role })
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove a member (the last owner cannot be removed).
#[utoipa::path(delete, path = "/v1/workspaces/{id}/members/{user_id}", tag = "users",
    params(("id" = Uuid, Path), ("user_id" = Uuid, Path)),
    responses((status = 204, description = "No content"), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn remove_member(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((workspace_id, user_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    ctx.principal.require(Scope::UsersWrite)?;
    super::workspaces::find(&state, &ctx.principal, workspace_id).await?;
    commands::execute::<Workspace>(&state.store, workspace_id, ctx.if_match, &ctx.metadata, |w| {
        w.decide(WorkspaceCommand::RemoveMember { user_id })
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
