//! `/v1/api-keys`: an organization's admin keys.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use shared::domain::Aggregate;
use shared::domain::api_key::{Ancestry, ApiKey, ApiKeyCommand, NewApiKey};
use shared::keys::{GeneratedKey, KeyKind};
use shared::metadata::ActorType;
use shared::scope::{Scope, Scopes};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Principal;
use super::context::Ctx;
use super::cursor::{Keyset, Listing, SortKind};
use super::error::{ApiError, Problem};
use super::extract::{Json, OptionalJson, Path, Query};
use super::paged::{self, paged};
use super::pagination::{Count, Page, SortOrder};
use super::shown_once::ShownOnce;
use super::sql::{Filter, text_filter};
use super::visibility::Table;
use super::{AppState, conditional};
use crate::commands;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_key, list_keys))
        .routes(routes!(count_keys))
        .routes(routes!(get_key, update_key, revoke_key))
        .routes(routes!(rotate_key))
}

/// Default grace period of a rotation: the old secret keeps working for a day.
const DEFAULT_GRACE_SECONDS: i64 = 86_400;

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedBy {
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: ActorType,
    pub id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub workspace_ids: Vec<Uuid>,
    pub allowed_ips: Vec<String>,
    pub partial_key_hint: String,
    /// `active`, `expired`, `revoked` or `suspended`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub created_by: CreatedBy,
    pub owner_user_id: Option<Uuid>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub version: i64,
    /// The key itself: only in the response that creates (or rotates) it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub secret: Option<ShownOnce>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    pub name: String,
    pub scopes: Vec<Scope>,
    /// Required for the operator; a key creates keys of its own organization only.
    pub organization_id: Option<Uuid>,
    pub workspace_ids: Option<Vec<Uuid>>,
    /// No later than the creating key's own expiry (absent: the creator's).
    pub expires_at: Option<DateTime<Utc>>,
    /// IP addresses or CIDR ranges the key may be used from, within the creating key's
    /// (absent: the creator's).
    pub allowed_ips: Option<Vec<String>>,
    /// A user of the organization; a creating key bound to a user binds the new key to
    /// that same user (absent: the creator's).
    pub owner_user_id: Option<Uuid>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateApiKey {
    pub name: Option<String>,
    pub scopes: Option<Vec<Scope>>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateApiKey {
    /// How long the previous secret keeps working (default 86400, at most 30 days).
    pub grace_period_seconds: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApiKeySort {
    Name,
    #[default]
    CreatedAt,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApiKeyStatus {
    Active,
    Expired,
    Revoked,
    Suspended,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyQuery {
    page: Option<u32>,
    page_size: Option<u32>,
    /// `pagination.next_cursor` of the previous page (same filters and sort); instead of `page`.
    cursor: Option<String>,
    #[param(inline)]
    sort_by: Option<ApiKeySort>,
    #[param(inline)]
    sort_order: Option<SortOrder>,
    /// Substring of the name, case-insensitive.
    name: Option<String>,
    #[param(inline)]
    status: Option<ApiKeyStatus>,
    /// The operator's filter by organization.
    organization_id: Option<Uuid>,
}

paged!(ApiKeyQuery);

const STATUS_SQL: &str = "CASE WHEN k.revoked_at IS NOT NULL THEN 'revoked' \
     WHEN k.owner_user_id IS NOT NULL AND (SELECT o.status FROM users o WHERE o.id = k.owner_user_id) = 'deleted' \
     THEN 'revoked' \
     WHEN k.expires_at IS NOT NULL AND k.expires_at <= now() THEN 'expired' \
     WHEN k.owner_user_id IS NOT NULL AND (SELECT o.status FROM users o WHERE o.id = k.owner_user_id) = 'disabled' \
     THEN 'suspended' ELSE 'active' END";

fn select() -> String {
    format!(
        "SELECT k.id, k.organization_id, k.name, k.scopes, k.workspace_ids, k.allowed_ips, k.partial_key_hint, \
         {STATUS_SQL} AS status, k.created_at, k.created_by_type, k.created_by_id, k.owner_user_id, k.expires_at, \
         u.last_used_at, k.version FROM api_keys k LEFT JOIN api_key_usage u ON u.key_id = k.id"
    )
}

impl ApiKeyView {
    /// A row of [`select`].
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        let scopes: Vec<String> = row.try_get("scopes")?;
        Ok(Self {
            id: row.try_get("id")?,
            organization_id: row.try_get("organization_id")?,
            name: row.try_get("name")?,
            scopes: scopes
                .into_iter()
                .filter_map(|s| serde_json::from_value(serde_json::Value::String(s)).ok())
                .collect(),
            workspace_ids: row.try_get("workspace_ids")?,
            allowed_ips: row.try_get("allowed_ips")?,
            partial_key_hint: row.try_get("partial_key_hint")?,
            status: row.try_get("status")?,
            created_at: row.try_get("created_at")?,
            created_by: CreatedBy { kind: row.try_get("created_by_type")?, id: row.try_get("created_by_id")? },
            owner_user_id: row.try_get("owner_user_id")?,
            expires_at: row.try_get("expires_at")?,
            last_used_at: row.try_get("last_used_at")?,
            version: row.try_get("version")?,
            secret: None,
        })
    }
}

fn filter(principal: &Principal, query: &ApiKeyQuery) -> Result<Filter, ApiError> {
    let mut filter = Filter::default();
    filter.visible_to(principal, Table::ApiKeys);
    if let Some(org) = query.organization_id {
        filter.bind("k.organization_id = $?", Box::new(org));
    }
    if let Some(name) = &query.name {
        filter.contains("k.name", text_filter("name", name, 200)?);
    }
    if let Some(status) = query.status {
        // The status is derived (times, owners), so each is narrowed first by what it
        // implies of the stored columns, which the partial indexes of V15 find.
        let (status, implied) = match status {
            ApiKeyStatus::Active => ("active", "k.revoked_at IS NULL"),
            ApiKeyStatus::Expired => ("expired", "k.revoked_at IS NULL AND k.expires_at <= now()"),
            ApiKeyStatus::Revoked => ("revoked", "(k.revoked_at IS NOT NULL OR k.owner_user_id IS NOT NULL)"),
            ApiKeyStatus::Suspended => ("suspended", "k.revoked_at IS NULL AND k.owner_user_id IS NOT NULL"),
        };
        filter.clause(implied);
        filter.bind(&format!("{STATUS_SQL} = $?"), Box::new(status));
    }
    Ok(filter)
}

impl ApiKeyQuery {
    pub(crate) fn keyset(&self) -> Keyset {
        let order = self.sort_order.unwrap_or_default();
        match self.sort_by.unwrap_or_default() {
            ApiKeySort::Name => Keyset { sort: "lower(k.name)", kind: SortKind::Text, id: "k.id", order },
            ApiKeySort::CreatedAt => Keyset { sort: "k.created_at", kind: SortKind::Time, id: "k.id", order },
        }
    }
}

/// The list query of a page of admin keys.
pub(crate) fn list_sql(
    principal: &Principal,
    query: &ApiKeyQuery,
    listing: &Listing,
) -> Result<(String, Filter), ApiError> {
    let mut filter = filter(principal, query)?;
    Ok((listing.sql(&select(), &mut filter), filter))
}

pub(crate) fn count_sql(principal: &Principal, query: &ApiKeyQuery) -> Result<(String, Filter), ApiError> {
    let filter = filter(principal, query)?;
    Ok((format!("SELECT count(*) FROM api_keys k {}", filter.where_sql()), filter))
}

async fn find(state: &AppState, principal: &Principal, id: Uuid) -> Result<ApiKeyView, ApiError> {
    let mut filter = Filter::default();
    filter.bind("k.id = $?", Box::new(id));
    filter.visible_to(principal, Table::ApiKeys);
    let client = state.pool.get().await?;
    let row = client
        .query_opt(&format!("{} {}", select(), filter.where_sql()), &filter.params())
        .await?
        .ok_or(ApiError::NotFound("api key"))?;
    Ok(ApiKeyView::from_row(&row)?)
}

fn single(status: StatusCode, key: ApiKeyView) -> Response {
    let carries_secret = key.secret.is_some();
    let location = format!("/v1/api-keys/{}", key.id);
    let mut response = (status, conditional::etag(key.version), axum::Json(key)).into_response();
    let headers = response.headers_mut();
    if carries_secret {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if status == StatusCode::CREATED
        && let Ok(value) = location.parse()
    {
        headers.insert(header::LOCATION, value);
    }
    response
}

fn parse_ips(ips: Vec<String>) -> Result<Vec<IpNet>, ApiError> {
    ips.iter()
        .map(|text| {
            text.parse::<IpNet>().or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from)).map_err(|_| {
                ApiError::invalid(
                    "allowed_ips",
                    "cidr",
                    format!("`{}` is not an IP address or CIDR range", truncate(text)),
                )
            })
        })
        .collect()
}

fn truncate(text: &str) -> String {
    text.chars().take(60).collect()
}

/// The organization a new key belongs to, and its key lifetime limit.
async fn target_organization(
    state: &AppState,
    principal: &Principal,
    requested: Option<Uuid>,
) -> Result<(Uuid, Option<u32>), ApiError> {
    let id = match (principal.organization_id(), requested) {
        (Some(own), None) => own,
        (Some(own), Some(requested)) if requested == own => own,
        (Some(_), Some(_)) => return Err(ApiError::NotFound("organization")),
        (None, Some(requested)) => requested,
        (None, None) => {
            return Err(ApiError::invalid("organization_id", "required", "the operator must name the organization"));
        }
    };
    let client = state.pool.get().await?;
    let row = client
        .query_opt(
            "SELECT (settings->>'max_key_lifetime_days')::int AS max_key_lifetime_days FROM organizations \
             WHERE id = $1 AND status = 'active'",
            &[&id],
        )
        .await?
        .ok_or_else(|| ApiError::invalid("organization_id", "exists", "no such organization"))?;
    let days: Option<i32> = row.try_get("max_key_lifetime_days")?;
    Ok((id, days.and_then(|d| u32::try_from(d).ok())))
}

/// Every requested workspace must exist in the organization (whether they lie within the
/// creator's own is the domain's rule, decided on the ancestry this returns).
async fn check_workspaces(
    state: &AppState,
    principal: &Principal,
    organization_id: Uuid,
    ids: &[Uuid],
) -> Result<Ancestry, ApiError> {
    if ids.is_empty() {
        return ancestry(state, principal, &[]).await;
    }
    let client = state.pool.get().await?;
    let rows = client
        .query(
            "SELECT id FROM workspaces WHERE id = ANY($1) AND organization_id = $2 AND status <> 'deleted'",
            &[&ids, &organization_id],
        )
        .await?;
    if rows.len() != ids.iter().collect::<std::collections::HashSet<_>>().len() {
        return Err(ApiError::invalid(
            "workspace_ids",
            "exists",
            "a workspace id names no workspace of the organization",
        ));
    }
    ancestry(state, principal, ids).await
}

/// The ancestors of `ids` and of the principal's own workspaces, for the domain to compare
/// grants on.
pub(super) async fn ancestry(state: &AppState, principal: &Principal, ids: &[Uuid]) -> Result<Ancestry, ApiError> {
    let mut all = ids.to_vec();
    all.extend(principal.workspace_roots().unwrap_or_default());
    if all.is_empty() {
        return Ok(Ancestry::new());
    }
    let client = state.pool.get().await?;
    let rows = client.query("SELECT id, ancestors FROM workspaces WHERE id = ANY($1)", &[&all]).await?;
    Ok(rows
        .iter()
        .map(|row| Ok((row.try_get("id")?, row.try_get("ancestors")?)))
        .collect::<Result<_, tokio_postgres::Error>>()?)
}

/// Create an admin key. The response carries the `secret`, shown this once.
#[utoipa::path(post, path = "/v1/api-keys", tag = "api keys", request_body = CreateApiKey,
    responses((status = 201, description = "Created", body = ApiKeyView), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn create_key(
    State(state): State<AppState>,
    ctx: Ctx,
    Json(body): Json<CreateApiKey>,
) -> Result<Response, ApiError> {
    ctx.principal.require(Scope::KeysWrite)?;
    let (organization_id, max_lifetime_days) =
        target_organization(&state, &ctx.principal, body.organization_id).await?;
    let workspace_ids = body.workspace_ids.unwrap_or_default();
    let ancestry = check_workspaces(&state, &ctx.principal, organization_id, &workspace_ids).await?;
    let allowed_ips = parse_ips(body.allowed_ips.unwrap_or_default())?;
    if let Some(owner) = body.owner_user_id {
        let client = state.pool.get().await?;
        client
            .query_opt(
                "SELECT 1 FROM users WHERE id = $1 AND organization_id = $2 AND status = 'active'",
                &[&owner, &organization_id],
            )
            .await?
            .ok_or_else(|| {
                ApiError::invalid("owner_user_id", "exists", "no active user of the organization has this id")
            })?;
    }
    let key = GeneratedKey::generate(KeyKind::Admin);
    let new = NewApiKey {
        organization_id,
        name: body.name,
        scopes: body.scopes.into_iter().collect::<Scopes>(),
        workspace_ids,
        expires_at: body.expires_at,
        allowed_ips,
        owner_user_id: body.owner_user_id,
        created_by: ctx.metadata.actor.clone(),
        key_hash: state.auth.hasher().hash(key.expose()),
        partial_key_hint: key.hint(),
        grantor: ctx.principal.grantor(),
        ancestry,
        max_lifetime_days,
        now: Utc::now(),
    };
    let id = Uuid::now_v7();
    commands::execute::<ApiKey>(&state.store, id, None, &ctx.metadata, |state| {
        state.decide(ApiKeyCommand::Create(Box::new(new.clone())))
    })
    .await?;
    let mut view = find(&state, &ctx.principal, id).await?;
    view.secret = Some(ShownOnce::from(&key));
    Ok(single(StatusCode::CREATED, view))
}

/// List admin keys.
#[utoipa::path(get, path = "/v1/api-keys", tag = "api keys", params(ApiKeyQuery),
    responses((status = 200, description = "OK", body = Page<ApiKeyView>), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn list_keys(
    State(state): State<AppState>,
    ctx: Ctx,
    uri: Uri,
    Query(query): Query<ApiKeyQuery>,
) -> Result<axum::Json<Page<ApiKeyView>>, ApiError> {
    ctx.principal.require(Scope::KeysRead)?;
    let listing = Listing::of(&state.master_key, &ctx.principal, &uri, &query, query.keyset())?;
    listing.fetch(&state.pool, list_sql(&ctx.principal, &query, &listing)?, "id", ApiKeyView::from_row, &uri).await
}

/// Count admin keys matching the list's filters.
#[utoipa::path(get, path = "/v1/api-keys/count", tag = "api keys", params(ApiKeyQuery),
    responses((status = 200, description = "OK", body = Count), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn count_keys(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(query): Query<ApiKeyQuery>,
) -> Result<axum::Json<Count>, ApiError> {
    ctx.principal.require(Scope::KeysRead)?;
    paged::count(&state.pool, &query, || count_sql(&ctx.principal, &query)).await
}

/// Get an admin key (never its secret).
#[utoipa::path(get, path = "/v1/api-keys/{id}", tag = "api keys", params(("id" = Uuid, Path)),
    responses((status = 200, description = "OK", body = ApiKeyView), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn get_key(State(state): State<AppState>, ctx: Ctx, Path(id): Path<Uuid>) -> Result<Response, ApiError> {
    ctx.principal.require(Scope::KeysRead)?;
    Ok(single(StatusCode::OK, find(&state, &ctx.principal, id).await?))
}

/// Rename a key or change its scopes (never beyond the caller's own; the caller's grant
/// must cover the key, as for a revocation).
#[utoipa::path(patch, path = "/v1/api-keys/{id}", tag = "api keys", params(("id" = Uuid, Path)), request_body = UpdateApiKey,
    responses((status = 200, description = "OK", body = ApiKeyView), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn update_key(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateApiKey>,
) -> Result<Response, ApiError> {
    ctx.principal.require(Scope::KeysWrite)?;
    let target = find(&state, &ctx.principal, id).await?;
    let command = ApiKeyCommand::Update {
        name: body.name,
        scopes: body.scopes.map(|s| s.into_iter().collect()),
        grantor: ctx.principal.grantor(),
        ancestry: ancestry(&state, &ctx.principal, &target.workspace_ids).await?,
    };
    commands::execute::<ApiKey>(&state.store, id, ctx.if_match, &ctx.metadata, |key| key.decide(command.clone()))
        .await?;
    Ok(single(StatusCode::OK, find(&state, &ctx.principal, id).await?))
}

/// Revoke a key: it fails from the next request on. The caller's grant must cover the key
/// (scopes, workspaces, addresses, lifetime).
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "api keys", params(("id" = Uuid, Path)),
    responses((status = 204, description = "No content"), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn revoke_key(State(state): State<AppState>, ctx: Ctx, Path(id): Path<Uuid>) -> Result<StatusCode, ApiError> {
    ctx.principal.require(Scope::KeysWrite)?;
    let target = find(&state, &ctx.principal, id).await?;
    let command = ApiKeyCommand::Revoke {
        grantor: ctx.principal.grantor(),
        ancestry: ancestry(&state, &ctx.principal, &target.workspace_ids).await?,
    };
    commands::execute::<ApiKey>(&state.store, id, ctx.if_match, &ctx.metadata, |key| key.decide(command.clone()))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Issue a new secret; the previous one keeps working for the grace period. The secret goes
/// to the caller, so rotating another key needs a grant that covers it and is wider.
#[utoipa::path(post, path = "/v1/api-keys/{id}/rotate", tag = "api keys", params(("id" = Uuid, Path)),
    request_body(content = Option<RotateApiKey>, description = "Optional: an empty body keeps the defaults"),
    responses((status = 200, description = "OK", body = ApiKeyView), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn rotate_key(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    OptionalJson(body): OptionalJson<RotateApiKey>,
) -> Result<Response, ApiError> {
    ctx.principal.require(Scope::KeysWrite)?;
    let target = find(&state, &ctx.principal, id).await?;
    let grace = body.unwrap_or_default().grace_period_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
    let key = GeneratedKey::generate(KeyKind::Admin);
    let command = ApiKeyCommand::Rotate {
        key_hash: state.auth.hasher().hash(key.expose()),
        partial_key_hint: key.hint(),
        grace_period: Duration::try_seconds(grace).unwrap_or(Duration::MAX),
        now: Utc::now(),
        grantor: ctx.principal.grantor(),
        ancestry: ancestry(&state, &ctx.principal, &target.workspace_ids).await?,
        by_itself: matches!(&ctx.principal, super::auth::Principal::Key(key) if key.id == id),
    };
    commands::execute::<ApiKey>(&state.store, id, ctx.if_match, &ctx.metadata, |k| k.decide(command.clone())).await?;
    let mut view = find(&state, &ctx.principal, id).await?;
    view.secret = Some(ShownOnce::from(&key));
    Ok(single(StatusCode::OK, view))
}
