//! `/v1/users`: the people of an organization, and the invitations waiting for them.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::domain::Aggregate;
use shared::domain::api_key::ApiKey;
use shared::domain::user::{User, UserCommand};
use shared::domain::workspace::{Workspace, WorkspaceCommand};
use shared::scope::Scope;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Principal;
use super::context::Ctx;
use super::cursor::{Keyset, Listing, SortKind};
use super::error::{ApiError, Problem};
use super::extract::{Json, Path, Query};
use super::invitations::{InvitationStatus, InvitationView};
use super::paged::{self, paged};
use super::pagination::{Count, Page, SortOrder};
use super::sql::{Filter, text_filter};
use super::visibility::Table;
use super::{AppState, conditional};
use crate::store::{AppendError, Commit, ExpectedVersion, StreamAppend};
use crate::{columns, commands};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users))
        .routes(routes!(count_users))
        .routes(routes!(get_user, update_user, delete_user))
        .routes(routes!(user_invitations))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub email: String,
    pub name: String,
    /// `active` or `disabled`.
    #[schema(value_type = String)]
    pub status: columns::UserStatus,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    Active,
    Disabled,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    pub name: Option<String>,
    /// `disabled` suspends every admin key bound to the user until `active` again.
    pub status: Option<UserStatus>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserSort {
    Name,
    Email,
    #[default]
    CreatedAt,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UserQuery {
    page: Option<u32>,
    page_size: Option<u32>,
    /// `pagination.next_cursor` of the previous page (same filters and sort); instead of `page`.
    cursor: Option<String>,
    #[param(inline)]
    sort_by: Option<UserSort>,
    #[param(inline)]
    sort_order: Option<SortOrder>,
    /// Substring of the email, case-insensitive.
    email: Option<String>,
    #[param(inline)]
    status: Option<UserStatus>,
}

paged!(UserQuery, UserInvitationQuery);

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UserInvitationQuery {
    page: Option<u32>,
    page_size: Option<u32>,
    /// `pagination.next_cursor` of the previous page (same filters and sort); instead of `page`.
    cursor: Option<String>,
    #[param(inline)]
    status: Option<InvitationStatus>,
}

const SELECT: &str =
    "SELECT u.id, u.organization_id, u.email, u.name, u.status, u.version, u.created_at, u.updated_at FROM users u";

impl UserView {
    /// A row of [`SELECT`].
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            organization_id: row.try_get("organization_id")?,
            email: row.try_get("email")?,
            name: row.try_get("name")?,
            status: row.try_get("status")?,
            version: row.try_get("version")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

impl From<UserStatus> for columns::UserStatus {
    fn from(status: UserStatus) -> Self {
        match status {
            UserStatus::Active => Self::Active,
            UserStatus::Disabled => Self::Disabled,
        }
    }
}

fn filter(principal: &Principal, query: &UserQuery) -> Result<Filter, ApiError> {
    let mut filter = Filter::default();
    filter.visible_to(principal, Table::Users);
    if let Some(email) = &query.email {
        filter.contains("u.email", text_filter("email", email, 254)?);
    }
    if let Some(status) = query.status {
        filter.bind("u.status = $?", Box::new(columns::UserStatus::from(status)));
    }
    Ok(filter)
}

impl UserQuery {
    pub(crate) fn keyset(&self) -> Keyset {
        let order = self.sort_order.unwrap_or_default();
        let (sort, kind) = match self.sort_by.unwrap_or_default() {
            UserSort::Name => ("lower(u.name)", SortKind::Text),
            UserSort::Email => ("lower(u.email)", SortKind::Text),
            UserSort::CreatedAt => ("u.created_at", SortKind::Time),
        };
        Keyset { sort, kind, id: "u.id", order }
    }
}

/// The list query of a page of users.
pub(crate) fn list_sql(
    principal: &Principal,
    query: &UserQuery,
    listing: &Listing,
) -> Result<(String, Filter), ApiError> {
    let mut filter = filter(principal, query)?;
    Ok((listing.sql(SELECT, &mut filter), filter))
}

/// The count query: the organization's counters (kept in the append transaction) when
/// only the status filters, else a count over the filters' indexes.
pub(crate) fn count_sql(principal: &Principal, query: &UserQuery) -> Result<(String, Filter), ApiError> {
    if query.email.is_none() && principal.workspace_roots().is_none() {
        let counter = match query.status {
            None => "o.live_users",
            Some(UserStatus::Disabled) => "o.disabled_users",
            Some(UserStatus::Active) => "o.live_users - o.disabled_users",
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
    Ok((format!("SELECT count(*) FROM users u {}", filter.where_sql()), filter))
}

impl UserInvitationQuery {
    pub(crate) fn status(&self) -> Option<InvitationStatus> {
        self.status
    }
}

/// The keyset of a user's invitations: oldest first.
pub(crate) const USER_INVITATIONS: Keyset =
    Keyset { sort: "i.created_at", kind: SortKind::Time, id: "i.id", order: SortOrder::Asc };

/// The list query of a page of the invitations addressed to `email`.
pub(crate) fn user_invitations_sql(
    principal: &Principal,
    email: String,
    organization_id: Uuid,
    status: Option<InvitationStatus>,
    listing: &Listing,
) -> (String, Filter) {
    let mut filter = Filter::default();
    filter.bind("lower(i.email) = lower($?)", Box::new(email));
    filter.bind("w.organization_id = $?", Box::new(organization_id));
    filter.visible_to(principal, Table::Workspaces);
    if let Some(status) = status {
        status.bind(&mut filter);
    }
    (listing.sql(super::invitations::SELECT, &mut filter), filter)
}

pub(super) async fn find(state: &AppState, principal: &Principal, id: Uuid) -> Result<UserView, ApiError> {
    let mut filter = Filter::default();
    filter.bind("u.id = $?", Box::new(id));
    filter.visible_to(principal, Table::Users);
    let client = state.pool.get().await?;
    let row = client
        .query_opt(&format!("{SELECT} {}", filter.where_sql()), &filter.params())
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    Ok(UserView::from_row(&row)?)
}

/// List the organization's users.
#[utoipa::path(get, path = "/v1/users", tag = "users", params(UserQuery),
    responses((status = 200, description = "OK", body = Page<UserView>), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn list_users(
    State(state): State<AppState>,
    ctx: Ctx,
    uri: Uri,
    Query(query): Query<UserQuery>,
) -> Result<axum::Json<Page<UserView>>, ApiError> {
    ctx.principal.require(Scope::UsersRead)?;
    let listing = Listing::of(&state.master_key, &ctx.principal, &uri, &query, query.keyset())?;
    listing.fetch(&state.pool, list_sql(&ctx.principal, &query, &listing)?, "id", UserView::from_row, &uri).await
}

/// Count the organization's users.
#[utoipa::path(get, path = "/v1/users/count", tag = "users", params(UserQuery),
    responses((status = 200, description = "OK", body = Count), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn count_users(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(query): Query<UserQuery>,
) -> Result<axum::Json<Count>, ApiError> {
    ctx.principal.require(Scope::UsersRead)?;
    paged::count(&state.pool, &query, || count_sql(&ctx.principal, &query)).await
}

/// Get a user.
#[utoipa::path(get, path = "/v1/users/{id}", tag = "users", params(("id" = Uuid, Path)),
    responses((status = 200, description = "OK", body = UserView), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn get_user(State(state): State<AppState>, ctx: Ctx, Path(id): Path<Uuid>) -> Result<Response, ApiError> {
    ctx.principal.require(Scope::UsersRead)?;
    let user = find(&state, &ctx.principal, id).await?;
    Ok((conditional::etag(user.version), axum::Json(user)).into_response())
}

/// Rename, disable or re-enable a user.
#[utoipa::path(patch, path = "/v1/users/{id}", tag = "users", params(("id" = Uuid, Path)), request_body = UpdateUser,
    responses((status = 200, description = "OK", body = UserView), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn update_user(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateUser>,
) -> Result<Response, ApiError> {
    ctx.principal.require(Scope::UsersWrite)?;
    ctx.principal.require_unrestricted()?;
    find(&state, &ctx.principal, id).await?;
    if body.status.is_some() {
        check_bound_keys_covered(&state, &ctx.principal, id).await?;
    }
    commands::execute::<User>(&state.store, id, ctx.if_match, &ctx.metadata, |user| {
        let mut events = Vec::new();
        if let Some(name) = &body.name {
            events.extend(user.decide(UserCommand::Rename { name: name.clone() })?);
        }
        match body.status {
            Some(UserStatus::Disabled) => events.extend(user.decide(UserCommand::Disable)?),
            Some(UserStatus::Active) => events.extend(user.decide(UserCommand::Enable)?),
            None => {}
        }
        Ok(events)
    })
    .await?;
    let user = find(&state, &ctx.principal, id).await?;
    Ok((conditional::etag(user.version), axum::Json(user)).into_response())
}

/// Disabling, enabling or deleting a user suspends, revives or revokes every admin key bound
/// to them: the caller must be able to revoke each of those keys itself (`keys:write` and a
/// grant that covers the key).
async fn check_bound_keys_covered(state: &AppState, principal: &Principal, user_id: Uuid) -> Result<(), ApiError> {
    let client = state.pool.get().await?;
    let bound: Vec<Uuid> = client
        .query("SELECT id FROM api_keys WHERE owner_user_id = $1 AND revoked_at IS NULL", &[&user_id])
        .await?
        .iter()
        .map(|row| row.try_get("id"))
        .collect::<Result<_, _>>()?;
    drop(client);
    if bound.is_empty() {
        return Ok(());
    }
    principal.require(Scope::KeysWrite)?;
    let grantor = principal.grantor();
    for id in bound {
        let (key, _) = commands::load::<ApiKey>(&state.store, id).await?;
        let ancestry = super::api_keys::ancestry(state, principal, &key.workspace_ids).await?;
        key.check_covered(&grantor, &ancestry)?;
    }
    Ok(())
}

/// Delete a user: their memberships go with them (refused while they are a workspace's
/// last owner), and every admin key bound to them stops working for good.
#[utoipa::path(delete, path = "/v1/users/{id}", tag = "users", params(("id" = Uuid, Path)),
    responses((status = 204, description = "No content"), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn delete_user(State(state): State<AppState>, ctx: Ctx, Path(id): Path<Uuid>) -> Result<StatusCode, ApiError> {
    ctx.principal.require(Scope::UsersWrite)?;
    ctx.principal.require_unrestricted()?;
    find(&state, &ctx.principal, id).await?;
    check_bound_keys_covered(&state, &ctx.principal, id).await?;
    for _ in 0..5 {
        let (user, version) = commands::load::<User>(&state.store, id).await?;
        if ctx.if_match.is_some_and(|expected| expected != version) {
            return Err(ApiError::PreconditionFailed);
        }
        let mut appends = vec![StreamAppend {
            stream_id: User::stream_id(id),
            expected: ExpectedVersion::Exact(version),
            events: commands::encode(&user.decide(UserCommand::Delete)?, &ctx.metadata)?,
        }];
        let client = state.pool.get().await?;
        let workspaces: Vec<Uuid> = client
            .query("SELECT workspace_id FROM members WHERE user_id = $1", &[&id])
            .await?
            .iter()
            .map(|r| r.try_get("workspace_id"))
            .collect::<Result<_, _>>()?;
        drop(client);
        for workspace_id in workspaces {
            let (workspace, version) = commands::load::<Workspace>(&state.store, workspace_id).await?;
            let events = workspace.decide(WorkspaceCommand::RemoveMember { user_id: id })?;
            appends.push(StreamAppend {
                stream_id: Workspace::stream_id(workspace_id),
                expected: ExpectedVersion::Exact(version),
                events: commands::encode(&events, &ctx.metadata)?,
            });
        }
        let extra = commands::idempotency_mark(&ctx.metadata).into_iter().collect();
        match state.store.commit(Commit { appends, extra }).await {
            Ok(_) => return Ok(StatusCode::NO_CONTENT),
            Err(AppendError::Conflict { .. }) if ctx.if_match.is_none() => continue,
            Err(AppendError::Conflict { .. }) => return Err(ApiError::PreconditionFailed),
            Err(error) => return Err(error.into()),
        }
    }
    Err(ApiError::Conflict { code: "concurrent_modification", detail: "the user changed concurrently; retry".into() })
}

/// Invitations addressed to the user's email (the console's banner: `?status=pending`).
#[utoipa::path(get, path = "/v1/users/{id}/invitations", tag = "users", params(("id" = Uuid, Path), UserInvitationQuery),
    responses((status = 200, description = "OK", body = Page<InvitationView>), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn user_invitations(
    State(state): State<AppState>,
    ctx: Ctx,
    uri: Uri,
    Path(id): Path<Uuid>,
    Query(query): Query<UserInvitationQuery>,
) -> Result<axum::Json<Page<InvitationView>>, ApiError> {
    ctx.principal.require(Scope::UsersRead)?;
    let user = find(&state, &ctx.principal, id).await?;
    let listing = Listing::of(&state.master_key, &ctx.principal, &uri, &query, USER_INVITATIONS)?;
    listing
        .fetch(
            &state.pool,
            user_invitations_sql(&ctx.principal, user.email, user.organization_id, query.status, &listing),
            "id",
            InvitationView::from_row,
            &uri,
        )
        .await
}
