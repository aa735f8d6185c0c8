//! `/v1/organizations`: tenants, created by the operator.

use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::domain::organization::{LimitsPatch, Organization, QuotasPatch};
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
use super::paged::{self, paged};
use super::pagination::{Count, Page, SortOrder};
use super::sql::{Filter, text_filter};
use super::visibility::Table;
use super::{AppState, conditional};
use crate::app::cache::Loaded;
use crate::app::organizations as app;
use crate::columns;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_organization, list_organizations))
        .routes(routes!(count_organizations))
        .routes(routes!(get_organization, update_organization, delete_organization))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrganizationView {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    pub plan: String,
    #[schema(value_type = String)]
    pub status: columns::OrganizationStatus,
    /// The most `rate_limit_per_minute` the organization may set in `/v1/settings`.
    pub rate_limit_ceiling_per_minute: u32,
    pub quotas: QuotasView,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The most of each resource the organization may hold at once (deleted ones do not
/// count, archived ones do); creating past one gives 409 `quota_exceeded`.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuotasView {
    pub workspaces: u32,
    pub api_keys: u32,
    pub interaction_keys: u32,
    pub pending_invitations: u32,
}

/// Quotas to set (operator only); fields left out keep their value.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotasInput {
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub workspaces: Option<u32>,
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub api_keys: Option<u32>,
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub interaction_keys: Option<u32>,
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub pending_invitations: Option<u32>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrganization {
    pub name: String,
    pub email: String,
    pub plan: String,
    /// Default: the server's `HUB_RATE_LIMIT_PER_MINUTE`.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub rate_limit_ceiling_per_minute: Option<u32>,
    /// Defaults: 10000 workspaces, 1000 API keys, 100000 interaction keys, 1000 pending
    /// invitations.
    pub quotas: Option<QuotasInput>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateOrganization {
    pub name: Option<String>,
    pub email: Option<String>,
    pub plan: Option<String>,
    /// Operator only.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub rate_limit_ceiling_per_minute: Option<u32>,
    /// Operator only; a partial object changes only the fields it names.
    pub quotas: Option<QuotasInput>,
}

fn limits(ceiling: Option<u32>, quotas: Option<QuotasInput>) -> LimitsPatch {
    let quotas = quotas.unwrap_or_default();
    LimitsPatch {
        rate_limit_ceiling_per_minute: ceiling,
        quotas: QuotasPatch {
            workspaces: quotas.workspaces,
            api_keys: quotas.api_keys,
            interaction_keys: quotas.interaction_keys,
            pending_invitations: quotas.pending_invitations,
        },
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrganizationSort {
    Name,
    #[default]
    CreatedAt,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OrganizationQuery {
    page: Option<u32>,
    page_size: Option<u32>,
    /// `pagination.next_cursor` of the previous page (same filters and sort); instead of `page`.
    cursor: Option<String>,
    #[param(inline)]
    sort_by: Option<OrganizationSort>,
    #[param(inline)]
    sort_order: Option<SortOrder>,
    /// Substring of the name, case-insensitive.
    name: Option<String>,
}

paged!(OrganizationQuery);

const COLUMNS: &str = "id, name, email, plan, status, version, created_at, updated_at, \
     rate_limit_ceiling_per_minute, quota_workspaces, quota_api_keys, quota_interaction_keys, quota_pending_invitations";

impl OrganizationView {
    /// A row of [`COLUMNS`]; `default_ceiling`: the server's, for an organization whose
    /// operator set none.
    fn from_row(row: &tokio_postgres::Row, default_ceiling: u32) -> Result<Self, tokio_postgres::Error> {
        let limit = |column: &str| row.try_get::<_, i32>(column).map(|v| u32::try_from(v).unwrap_or_default());
        let ceiling: Option<i32> = row.try_get("rate_limit_ceiling_per_minute")?;
        Ok(Self {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            email: row.try_get("email")?,
            plan: row.try_get("plan")?,
            status: row.try_get("status")?,
            rate_limit_ceiling_per_minute: ceiling.and_then(|v| u32::try_from(v).ok()).unwrap_or(default_ceiling),
            quotas: QuotasView {
                workspaces: limit("quota_workspaces")?,
                api_keys: limit("quota_api_keys")?,
                interaction_keys: limit("quota_interaction_keys")?,
                pending_invitations: limit("quota_pending_invitations")?,
            },
            version: row.try_get("version")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

impl OrganizationView {
    /// The view of an organization as a command left it (what the read model now holds);
    /// `default_ceiling` as in [`Self::from_row`].
    fn decided(id: Uuid, organization: &Loaded<Organization>, default_ceiling: u32) -> Self {
        let o = &organization.state;
        let quotas = &o.limits.quotas;
        let at = organization.updated_at.unwrap_or_else(Utc::now);
        Self {
            id,
            name: o.name.clone(),
            email: o.email.clone(),
            plan: o.plan.clone(),
            status: if o.deleted { columns::OrganizationStatus::Deleted } else { columns::OrganizationStatus::Active },
            rate_limit_ceiling_per_minute: o.limits.rate_limit_ceiling_per_minute.unwrap_or(default_ceiling),
            quotas: QuotasView {
                workspaces: quotas.workspaces,
                api_keys: quotas.api_keys,
                interaction_keys: quotas.interaction_keys,
                pending_invitations: quotas.pending_invitations,
            },
            version: organization.version,
            created_at: organization.created_at.unwrap_or(at),
            updated_at: at,
        }
    }
}

fn filter(principal: &Principal, query: &OrganizationQuery) -> Result<Filter, ApiError> {
    let mut filter = Filter::default();
    filter.visible_to(principal, Table::Organizations);
    if let Some(name) = &query.name {
        filter.contains("o.name", text_filter("name", name, 200)?);
    }
    Ok(filter)
}

impl OrganizationQuery {
    pub(crate) fn keyset(&self) -> Keyset {
        let order = self.sort_order.unwrap_or_default();
        match self.sort_by.unwrap_or_default() {
            OrganizationSort::Name => Keyset { sort: "lower(o.name)", kind: SortKind::Text, id: "o.id", order },
            OrganizationSort::CreatedAt => Keyset { sort: "o.created_at", kind: SortKind::Time, id: "o.id", order },
        }
    }
}

/// The list query of a page of organizations.
pub(crate) fn list_sql(
    principal: &Principal,
    query: &OrganizationQuery,
    listing: &Listing,
) -> Result<(String, Filter), ApiError> {
    let mut filter = filter(principal, query)?;
    Ok((listing.sql(&format!("SELECT {COLUMNS} FROM organizations o"), &mut filter), filter))
}

pub(crate) fn count_sql(principal: &Principal, query: &OrganizationQuery) -> Result<(String, Filter), ApiError> {
    let filter = filter(principal, query)?;
    Ok((format!("SELECT count(*) FROM organizations o {}", filter.where_sql()), filter))
}

pub(super) async fn find(state: &AppState, ctx: &Ctx, id: Uuid) -> Result<OrganizationView, ApiError> {
    let mut filter = Filter::default();
    filter.bind("o.id = $?", Box::new(id));
    filter.visible_to(&ctx.principal, Table::Organizations);
    let client = state.pool.get().await?;
    let row = client
        .query_opt(&format!("SELECT {COLUMNS} FROM organizations o {}", filter.where_sql()), &filter.params())
        .await?
        .ok_or(ApiError::NotFound("organization"))?;
    Ok(OrganizationView::from_row(&row, state.config.rate_limit_per_minute)?)
}

fn single(status: StatusCode, org: OrganizationView) -> Response {
    let location = format!("/v1/organizations/{}", org.id);
    let mut response = (status, conditional::etag(org.version), axum::Json(org)).into_response();
    if status == StatusCode::CREATED
        && let Ok(value) = location.parse()
    {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Create an organization (operator only).
#[utoipa::path(post, path = "/v1/organizations", tag = "organizations", request_body = CreateOrganization,
    responses((status = 201, description = "Created", body = OrganizationView), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn create_organization(
    State(state): State<AppState>,
    ctx: Ctx,
    Json(body): Json<CreateOrganization>,
) -> Result<Response, ApiError> {
    let request = app::Create {
        name: body.name,
        email: body.email,
        plan: body.plan,
        limits: limits(body.rate_limit_ceiling_per_minute, body.quotas),
    };
    let (id, organization) = app::create(&state, &ctx, request).await?;
    Ok(single(StatusCode::CREATED, OrganizationView::decided(id, &organization, state.config.rate_limit_per_minute)))
}

/// List organizations (the operator sees all; a key its own).
#[utoipa::path(get, path = "/v1/organizations", tag = "organizations", params(OrganizationQuery),
    responses((status = 200, description = "OK", body = Page<OrganizationView>), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn list_organizations(
    State(state): State<AppState>,
    ctx: Ctx,
    uri: Uri,
    Query(query): Query<OrganizationQuery>,
) -> Result<axum::Json<Page<OrganizationView>>, ApiError> {
    ctx.principal.require(Scope::OrgsRead)?;
    let listing = Listing::of(&state.master_key, &ctx.principal, &uri, &query, query.keyset())?;
    let (sql, filter) = list_sql(&ctx.principal, &query, &listing)?;
    let client = state.pool.get().await?;
    let rows = client.query(&sql, &filter.params()).await?;
    let default_ceiling = state.config.rate_limit_per_minute;
    Ok(axum::Json(listing.page(&rows, "id", |row| OrganizationView::from_row(row, default_ceiling), &uri)?))
}

/// Count organizations matching the list's filters.
#[utoipa::path(get, path = "/v1/organizations/count", tag = "organizations", params(OrganizationQuery),
    responses((status = 200, description = "OK", body = Count), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn count_organizations(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(query): Query<OrganizationQuery>,
) -> Result<axum::Json<Count>, ApiError> {
    ctx.principal.require(Scope::OrgsRead)?;
    paged::count(&state.pool, &query, || count_sql(&ctx.principal, &query)).await
}

/// Get an organization.
#[utoipa::path(get, path = "/v1/organizations/{org_id}", tag = "organizations", params(("org_id" = Uuid, Path)),
    responses((status = 200, description = "OK", body = OrganizationView), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn get_organization(State(state): State<AppState>, ctx: Ctx, Path(id): Path<Uuid>) -> Result<Response, ApiError> {
    ctx.principal.require(Scope::OrgsRead)?;
    Ok(single(StatusCode::OK, find(&state, &ctx, id).await?))
}

/// Change an organization's name, email, plan, rate-limit ceiling or quotas (the last
/// three: operator only).
#[utoipa::path(patch, path = "/v1/organizations/{org_id}", tag = "organizations", params(("org_id" = Uuid, Path)),
    request_body = UpdateOrganization,
    responses((status = 200, description = "OK", body = OrganizationView), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn update_organization(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateOrganization>,
) -> Result<Response, ApiError> {
    let limits = (body.rate_limit_ceiling_per_minute.is_some() || body.quotas.is_some())
        .then(|| limits(body.rate_limit_ceiling_per_minute, body.quotas));
    let request = app::Update { name: body.name, email: body.email, plan: body.plan, limits };
    let organization = app::update(&state, &ctx, id, request).await?;
    Ok(single(StatusCode::OK, OrganizationView::decided(id, &organization, state.config.rate_limit_per_minute)))
}

/// Delete an organization (operator only): its keys are revoked, its workspaces deleted.
#[utoipa::path(delete, path = "/v1/organizations/{org_id}", tag = "organizations", params(("org_id" = Uuid, Path)),
    responses((status = 204, description = "No content"), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn delete_organization(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    app::delete(&state, &ctx, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
