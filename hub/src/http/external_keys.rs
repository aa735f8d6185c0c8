//! `/v1/workspaces/{id}/external-keys`: a workspace's third-party credentials (VAN API
//! keys). A credential is sealed on arrival and never shown again: responses carry its
//! last 4 characters only.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shared::domain::external_keys::{API_KEY_PATTERN, MAX_NAME_LENGTH};
use shared::domain::values;
use shared::events::workspace::ExternalProvider;
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
use crate::app::external_keys as app;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_external_key, list_external_keys))
        .routes(routes!(count_external_keys))
        .routes(routes!(delete_external_key))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExternalKeyView {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub provider: ExternalProvider,
    pub name: String,
    /// The credential's last 4 characters.
    pub key_hint: String,
    pub settings: Value,
    pub created_at: DateTime<Utc>,
}

// No `Debug`: it carries a credential.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateExternalKey {
    pub provider: ExternalProvider,
    pub name: String,
    /// The credential (for VAN: the API key, with its `|<mode>` suffix if any). Stored
    /// sealed, never returned.
    pub api_key: String,
    /// Provider options, a JSON object (e.g. `{"application_name": "..."}` for VAN).
    pub settings: Option<Value>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExternalKeyQuery {
    page: Option<u32>,
    page_size: Option<u32>,
    /// `pagination.next_cursor` of the previous page (same filters and sort); instead of `page`.
    cursor: Option<String>,
    #[param(inline)]
    sort_order: Option<SortOrder>,
    #[param(inline)]
    provider: Option<ExternalProvider>,
}

paged!(ExternalKeyQuery);

const SELECT: &str =
    "SELECT e.id, e.workspace_id, e.provider, e.name, e.key_hint, e.settings, e.created_at FROM external_keys e";

impl ExternalKeyView {
    /// A row of [`SELECT`].
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            workspace_id: row.try_get("workspace_id")?,
            provider: row.try_get("provider")?,
            name: row.try_get("name")?,
            key_hint: row.try_get("key_hint")?,
            settings: row.try_get("settings")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

impl ExternalKeyQuery {
    pub(crate) fn keyset(&self) -> Keyset {
        Keyset { sort: "e.created_at", kind: SortKind::Time, id: "e.id", order: self.sort_order.unwrap_or_default() }
    }
}

fn filter(workspace_id: Uuid, query: &ExternalKeyQuery) -> Filter {
    let mut filter = Filter::default();
    filter.bind("e.workspace_id = $?", Box::new(workspace_id));
    if let Some(provider) = query.provider {
        filter.bind("e.provider = $?", Box::new(provider));
    }
    filter
}

/// The list query of a page of a workspace's external keys.
pub(crate) fn list_sql(workspace_id: Uuid, query: &ExternalKeyQuery, listing: &Listing) -> (String, Filter) {
    let mut filter = filter(workspace_id, query);
    (listing.sql(SELECT, &mut filter), filter)
}

pub(crate) fn count_sql(workspace_id: Uuid, query: &ExternalKeyQuery) -> (String, Filter) {
    let filter = filter(workspace_id, query);
    (format!("SELECT count(*) FROM external_keys e {}", filter.where_sql()), filter)
}

/// The constraints of the request body, for the OpenAPI document.
pub(in crate::http) fn constraints() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        ("CreateExternalKey", "name", json!({"pattern": values::name_pattern(MAX_NAME_LENGTH), "minLength": 1})),
        ("CreateExternalKey", "api_key", json!({"pattern": API_KEY_PATTERN})),
        ("CreateExternalKey", "settings", json!({"type": ["object", "null"]})),
    ]
}

/// Add a third-party credential to a workspace. When the hub is configured with
/// `VAN_API_URL`, a VAN key is first checked with VAN: a key VAN refuses is a 422
/// `external_key_rejected`, VAN unreachable (or failing) a 502 `provider_unavailable`.
#[utoipa::path(post, path = "/v1/workspaces/{id}/external-keys", tag = "workspaces", params(("id" = Uuid, Path)),
    request_body = CreateExternalKey,
    responses((status = 201, description = "Created", body = ExternalKeyView),
              (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json"),
              (status = "5XX", description = "The provider could not be reached (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn create_external_key(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(workspace_id): Path<Uuid>,
    Json(body): Json<CreateExternalKey>,
) -> Result<Response, ApiError> {
    ctx.principal.require(Scope::ExternalKeysWrite)?;
    super::workspaces::find(&state, &ctx.principal, workspace_id).await?;
    let request =
        app::Create { provider: body.provider, name: body.name, api_key: body.api_key, settings: body.settings };
    let id = app::create(&state, &ctx, workspace_id, request).await?;
    let client = state.pool.get().await?;
    let row = client.query_one(&format!("{SELECT} WHERE e.id = $1"), &[&id]).await?;
    let view = ExternalKeyView::from_row(&row)?;
    // No `Location`: an external key has no resource of its own to GET (the list shows it).
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

/// A workspace's external keys (never their credentials).
#[utoipa::path(get, path = "/v1/workspaces/{id}/external-keys", tag = "workspaces",
    params(("id" = Uuid, Path), ExternalKeyQuery),
    responses((status = 200, description = "OK", body = Page<ExternalKeyView>), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn list_external_keys(
    State(state): State<AppState>,
    ctx: Ctx,
    uri: Uri,
    Path(workspace_id): Path<Uuid>,
    Query(query): Query<ExternalKeyQuery>,
) -> Result<axum::Json<Page<ExternalKeyView>>, ApiError> {
    ctx.principal.require(Scope::ExternalKeysRead)?;
    super::workspaces::find(&state, &ctx.principal, workspace_id).await?;
    let listing = Listing::of(&state.master_key, &ctx.principal, &uri, &query, query.keyset())?;
    listing.fetch(&state.pool, list_sql(workspace_id, &query, &listing), "id", ExternalKeyView::from_row, &uri).await
}

/// Count a workspace's external keys.
#[utoipa::path(get, path = "/v1/workspaces/{id}/external-keys/count", tag = "workspaces",
    params(("id" = Uuid, Path), ExternalKeyQuery),
    responses((status = 200, description = "OK", body = Count), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn count_external_keys(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(workspace_id): Path<Uuid>,
    Query(query): Query<ExternalKeyQuery>,
) -> Result<axum::Json<Count>, ApiError> {
    ctx.principal.require(Scope::ExternalKeysRead)?;
    super::workspaces::find(&state, &ctx.principal, workspace_id).await?;
    paged::count(&state.pool, &query, || Ok(count_sql(workspace_id, &query))).await
}

/// Delete an external key; every interaction key routed to it is revoked with it.
#[utoipa::path(delete, path = "/v1/workspaces/{id}/external-keys/{key_id}", tag = "workspaces",
    params(("id" = Uuid, Path), ("key_id" = Uuid, Path)),
    responses((status = 204, description = "No content"), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn delete_external_key(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((workspace_id, key_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    ctx.principal.require(Scope::ExternalKeysWrite)?;
    super::workspaces::find(&state, &ctx.principal, workspace_id).await?;
    app::delete(&state, &ctx, workspace_id, key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
