//! `/v1/workspaces`: an organization's workspace tree.

mod tree;

use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::domain::workspace::{Workspace, WorkspaceChanges};
use shared::events::workspace::PublicKey;
use shared::scope::Scope;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Principal;
use super::context::Ctx;
use super::cursor::{Keyset, Listing, SortKind};
use super::error::{ApiError, Problem};
use super::extract::{Json, Path, Query, double_option};
use super::paged::{self, paged};
use super::pagination::{Count, Page, SortOrder};
use super::shown_once::ShownOnce;
use super::sql::{Filter, text_filter};
use super::visibility::Table;
use super::{AppState, conditional};
use crate::app::cache::Loaded;
use crate::app::workspaces as app;
use crate::columns;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_workspace, list_workspaces))
        .routes(routes!(count_workspaces))
        .routes(routes!(get_workspace, update_workspace, delete_workspace))
        .routes(routes!(workspace_tree))
        .routes(routes!(archive_workspace))
        .routes(routes!(restore_workspace))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkspaceView {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub parent_id: Option<Uuid>,
    pub instance_id: Option<String>,
    pub name: String,
    /// `active` or `archived`.
    #[schema(value_type = String)]
    pub status: columns::WorkspaceStatus,
    pub settings: serde_json::Value,
    pub webhook_uris: Vec<String>,
    pub public_keys: Vec<PublicKey>,
    pub secret_version: i32,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip)]
    pub(super) ancestors: Vec<Uuid>,
    /// The signing secret: only in the response that creates the workspace.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub secret: Option<ShownOnce>,
    /// The same secret as Standard Webhooks libraries take it (`whsec_` + base64 of its
    /// UTF-8 bytes): only in the response that creates the workspace.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub webhook_secret: Option<ShownOnce>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    pub name: String,
    pub parent_id: Option<Uuid>,
    pub instance_id: Option<String>,
    pub settings: Option<serde_json::Value>,
    pub webhook_uris: Option<Vec<String>>,
    pub public_keys: Option<Vec<PublicKey>>,
    /// Required for the operator; a key creates workspaces in its own organization.
    pub organization_id: Option<Uuid>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWorkspace {
    pub name: Option<String>,
    /// A JSON merge patch (RFC 7396) of the settings.
    pub settings: Option<serde_json::Value>,
    pub webhook_uris: Option<Vec<String>>,
    pub public_keys: Option<Vec<PublicKey>>,
    /// Moves the workspace; `null` makes it a root.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Uuid>)]
    pub parent_id: Option<Option<Uuid>>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceSort {
    Name,
    #[default]
    CreatedAt,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceStatus {
    Active,
    Archived,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceQuery {
    page: Option<u32>,
    page_size: Option<u32>,
    /// `pagination.next_cursor` of the previous page (same filters and sort); instead of `page`.
    cursor: Option<String>,
    #[param(inline)]
    sort_by: Option<WorkspaceSort>,
    #[param(inline)]
    sort_order: Option<SortOrder>,
    /// Substring of the name, case-insensitive.
    name: Option<String>,
    parent_id: Option<Uuid>,
    #[param(inline)]
    status: Option<WorkspaceStatus>,
    instance_id: Option<String>,
}

paged!(WorkspaceQuery);

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TreeQuery {
    /// Levels below the workspace to include (whole subtree by default).
    depth: Option<u32>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Delete the whole subtree.
    cascade: Option<bool>,
}

/// The schema of the tree's body; `tree::Tree` writes it without recursing per level.
#[derive(Debug, Serialize, ToSchema)]
pub struct TreeNode {
    pub id: Uuid,
    pub name: String,
    pub status: String,
    #[schema(no_recursion)]
    pub children: Vec<TreeNode>,
}

const SELECT: &str = "SELECT w.id, w.organization_id, w.parent_id, w.instance_id, w.name, w.status, w.settings, \
     w.webhook_uris, w.public_keys, w.secret_version, w.version, w.created_at, w.updated_at, w.ancestors \
     FROM workspaces w";

impl WorkspaceView {
    /// A row of [`SELECT`].
    pub(super) fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            organization_id: row.try_get("organization_id")?,
            parent_id: row.try_get("parent_id")?,
            instance_id: row.try_get("instance_id")?,
            name: row.try_get("name")?,
            status: row.try_get("status")?,
            settings: row.try_get("settings")?,
            webhook_uris: serde_json::from_value(row.try_get("webhook_uris")?).unwrap_or_default(),
            public_keys: serde_json::from_value(row.try_get("public_keys")?).unwrap_or_default(),
            secret_version: row.try_get("secret_version")?,
            version: row.try_get("version")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            ancestors: row.try_get("ancestors")?,
            secret: None,
            webhook_secret: None,
        })
    }
}

impl WorkspaceView {
    /// The view of a workspace as a command left it (what the read model now holds).
    fn decided(id: Uuid, workspace: &Loaded<Workspace>) -> Self {
        let w = &workspace.state;
        let status = if w.deleted {
            columns::WorkspaceStatus::Deleted
        } else if w.archived {
            columns::WorkspaceStatus::Archived
        } else {
            columns::WorkspaceStatus::Active
        };
        let at = workspace.updated_at.unwrap_or_else(Utc::now);
        WorkspaceView {
            id,
            organization_id: w.organization_id,
            parent_id: w.parent_id,
            instance_id: w.instance_id.clone(),
            name: w.name.clone(),
            status,
            settings: w.settings.clone(),
            webhook_uris: w.webhook_uris.clone(),
            public_keys: w.public_keys.clone(),
            secret_version: w.secret_version,
            version: workspace.version,
            created_at: workspace.created_at.unwrap_or(at),
            updated_at: at,
            ancestors: Vec::new(),
            secret: None,
            webhook_secret: None,
        }
    }
}

impl From<WorkspaceStatus> for columns::WorkspaceStatus {
    fn from(status: WorkspaceStatus) -> Self {
        match status {
            WorkspaceStatus::Active => Self::Active,
            WorkspaceStatus::Archived => Self::Archived,
        }
    }
}

fn filter(principal: &Principal, query: &WorkspaceQuery) -> Result<Filter, ApiError> {
    let mut filter = Filter::default();
    filter.visible_to(principal, Table::Workspaces);
    if let Some(name) = &query.name {
        filter.contains("w.name", text_filter("name", name, 200)?);
    }
    if let Some(parent) = query.parent_id {
        filter.bind("w.parent_id = $?", Box::new(parent));
    }
    if let Some(status) = query.status {
        filter.bind("w.status = $?", Box::new(columns::WorkspaceStatus::from(status)));
    }
    if let Some(instance) = &query.instance_id {
        filter.bind("w.instance_id = $?", Box::new(text_filter("instance_id", instance, 100)?.to_owned()));
    }
    Ok(filter)
}

impl WorkspaceQuery {
    pub(crate) fn parse(query: &str) -> Result<Self, serde_urlencoded::de::Error> {
        serde_urlencoded::from_str(query)
    }

    pub(crate) fn keyset(&self) -> Keyset {
        let order = self.sort_order.unwrap_or_default();
        match self.sort_by.unwrap_or_default() {
            WorkspaceSort::Name => Keyset { sort: "lower(w.name)", kind: SortKind::Text, id: "w.id", order },
            WorkspaceSort::CreatedAt => Keyset { sort: "w.created_at", kind: SortKind::Time, id: "w.id", order },
        }
    }
}

/// The list query of a page of workspaces.
pub(crate) fn list_sql(
    principal: &Principal,
    query: &WorkspaceQuery,
    listing: &Listing,
) -> Result<(String, Filter), ApiError> {
    let mut filter = filter(principal, query)?;
    Ok((listing.sql(SELECT, &mut filter), filter))
}

/// The count query: the organization's counters (kept in the append transaction) when
/// only the status filters, else a count over the filters' indexes.
pub(crate) fn count_sql(principal: &Principal, query: &WorkspaceQuery) -> Result<(String, Filter), ApiError> {
    let plain = query.name.is_none() && query.parent_id.is_none() && query.instance_id.is_none();
    if plain && principal.workspace_roots().is_none() {
        let counter = match query.status {
            None => "o.used_workspaces",
            Some(WorkspaceStatus::Archived) => "o.archived_workspaces",
            Some(WorkspaceStatus::Active) => "o.used_workspaces - o.archived_workspaces",
        };
        let mut filter = Filter::default();
        if let Some(own) = principal.organization_id() {
            filter.bind("o.id = $?", Box::new(own));
        }
        let sql =
            format!("SELECT coalesce(sum({counter}), 0)::bigint AS count FROM organizations o {}", filter.where_sql());
        return Ok((sql, filter));
    }
    let filter = filter(principal, query)?;
    Ok((format!("SELECT count(*) FROM workspaces w {}", filter.where_sql()), filter))
}

/// A workspace the principal may see, or 404.
pub(super) async fn find(state: &AppState, principal: &Principal, id: Uuid) -> Result<WorkspaceView, ApiError> {
    let mut filter = Filter::default();
    filter.bind("w.id = $?", Box::new(id));
    filter.visible_to(principal, Table::Workspaces);
    let client = state.pool.get().await?;
    let row = client
        .query_opt(&format!("{SELECT} {}", filter.where_sql()), &filter.params())
        .await?
        .ok_or(ApiError::NotFound("workspace"))?;
    Ok(WorkspaceView::from_row(&row)?)
}

fn single(status: StatusCode, workspace: WorkspaceView) -> Response {
    let location = format!("/v1/workspaces/{}", workspace.id);
    let carries_secret = workspace.secret.is_some();
    let mut response = (status, conditional::etag(workspace.version), axum::Json(workspace)).into_response();
    if carries_secret {
        response.headers_mut().insert(header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    }
    if status == StatusCode::CREATED
        && let Ok(value) = location.parse()
    {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Create a workspace, at the root or under a parent.
#[utoipa::path(post, path = "/v1/workspaces", tag = "workspaces", request_body = CreateWorkspace,
    responses((status = 201, description = "Created", body = WorkspaceView), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn create_workspace(
    State(state): State<AppState>,
    ctx: Ctx,
    Json(body): Json<CreateWorkspace>,
) -> Result<Response, ApiError> {
    let request = app::Create {
        name: body.name,
        organization_id: body.organization_id,
        parent_id: body.parent_id,
        instance_id: body.instance_id,
        settings: body.settings,
        webhook_uris: body.webhook_uris,
        public_keys: body.public_keys,
    };
    let created = app::create(&state, &ctx, request).await?;
    let mut view = WorkspaceView::decided(created.id, &created.workspace);
    view.secret = Some(ShownOnce::from(&created.secret));
    view.webhook_secret = Some(ShownOnce::webhook_secret(created.secret.expose()));
    Ok(single(StatusCode::CREATED, view))
}

/// List workspaces.
#[utoipa::path(get, path = "/v1/workspaces", tag = "workspaces", params(WorkspaceQuery),
    responses((status = 200, description = "OK", body = Page<WorkspaceView>), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn list_workspaces(
    State(state): State<AppState>,
    ctx: Ctx,
    uri: Uri,
    Query(query): Query<WorkspaceQuery>,
) -> Result<axum::Json<Page<WorkspaceView>>, ApiError> {
    ctx.principal.require(Scope::WorkspacesRead)?;
    let listing = Listing::of(&state.master_key, &ctx.principal, &uri, &query, query.keyset())?;
    listing.fetch(&state.pool, list_sql(&ctx.principal, &query, &listing)?, "id", WorkspaceView::from_row, &uri).await
}

/// Count workspaces matching the list's filters.
#[utoipa::path(get, path = "/v1/workspaces/count", tag = "workspaces", params(WorkspaceQuery),
    responses((status = 200, description = "OK", body = Count), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn count_workspaces(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(query): Query<WorkspaceQuery>,
) -> Result<axum::Json<Count>, ApiError> {
    ctx.principal.require(Scope::WorkspacesRead)?;
    paged::count(&state.pool, &query, || count_sql(&ctx.principal, &query)).await
}

/// Get a workspace.
#[utoipa::path(get, path = "/v1/workspaces/{id}", tag = "workspaces", params(("id" = Uuid, Path)),
    responses((status = 200, description = "OK", body = WorkspaceView), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn get_workspace(State(state): State<AppState>, ctx: Ctx, Path(id): Path<Uuid>) -> Result<Response, ApiError> {
    ctx.principal.require(Scope::WorkspacesRead)?;
    Ok(single(StatusCode::OK, find(&state, &ctx.principal, id).await?))
}

/// Change a workspace; `parent_id` moves it (never under its own descendant).
#[utoipa::path(patch, path = "/v1/workspaces/{id}", tag = "workspaces", params(("id" = Uuid, Path)),
    request_body = UpdateWorkspace,
    responses((status = 200, description = "OK", body = WorkspaceView), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn update_workspace(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateWorkspace>,
) -> Result<Response, ApiError> {
    let request = app::Update {
        changes: WorkspaceChanges {
            name: body.name,
            settings_patch: body.settings,
            webhook_uris: body.webhook_uris,
            public_keys: body.public_keys,
        },
        parent_id: body.parent_id,
    };
    let workspace = app::update(&state, &ctx, id, request).await?;
    Ok(single(StatusCode::OK, WorkspaceView::decided(id, &workspace)))
}

/// The workspace and its descendants, nested.
#[utoipa::path(get, path = "/v1/workspaces/{id}/tree", tag = "workspaces", params(("id" = Uuid, Path), TreeQuery),
    responses((status = 200, description = "OK", body = TreeNode), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn workspace_tree(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Query(query): Query<TreeQuery>,
) -> Result<Response, ApiError> {
    ctx.principal.require(Scope::WorkspacesRead)?;
    let root = find(&state, &ctx.principal, id).await?;
    let depth = query.depth.map_or(i32::MAX, |d| i32::try_from(d).unwrap_or(i32::MAX));
    let client = state.pool.get().await?;
    let rows = client
        .query(
            "SELECT id, parent_id, name, status FROM workspaces \
             WHERE ancestors @> ARRAY[$1::uuid] AND status <> 'deleted' AND id <> $1 \
             AND cardinality(ancestors) - $2 <= $3 ORDER BY lower(name), id",
            &[&id, &i32::try_from(root.ancestors.len()).unwrap_or(i32::MAX), &depth],
        )
        .await?;
    let rows = rows
        .iter()
        .map(|row| Ok((row.try_get("id")?, row.try_get("parent_id")?, row.try_get("name")?, row.try_get("status")?)))
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    let tree = tree::Tree::new((root.id, root.name, root.status), rows);
    Ok(([(header::CONTENT_TYPE, "application/json")], tree.to_json()).into_response())
}

/// Archive a workspace and its whole subtree.
#[utoipa::path(post, path = "/v1/workspaces/{id}/archive", tag = "workspaces", params(("id" = Uuid, Path)),
    responses((status = 200, description = "OK", body = WorkspaceView), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn archive_workspace(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let workspace = app::archive(&state, &ctx, id).await?;
    Ok(single(StatusCode::OK, WorkspaceView::decided(id, &workspace)))
}

/// Restore an archived workspace and its whole subtree.
#[utoipa::path(post, path = "/v1/workspaces/{id}/restore", tag = "workspaces", params(("id" = Uuid, Path)),
    responses((status = 200, description = "OK", body = WorkspaceView), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn restore_workspace(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let workspace = app::restore(&state, &ctx, id).await?;
    Ok(single(StatusCode::OK, WorkspaceView::decided(id, &workspace)))
}

/// Delete a workspace (with `cascade=true`, its whole subtree): its secrets are shredded,
/// admin keys restricted to deleted workspaces alone are revoked, and keys restricted to
/// others too keep only those.
#[utoipa::path(delete, path = "/v1/workspaces/{id}", tag = "workspaces", params(("id" = Uuid, Path), DeleteQuery),
    responses((status = 204, description = "No content"), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn delete_workspace(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Query(query): Query<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    app::delete(&state, &ctx, id, query.cascade.unwrap_or(false)).await?;
    Ok(StatusCode::NO_CONTENT)
}
