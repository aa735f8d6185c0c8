//! `/v1/workspaces/{id}/interaction-keys`: a workspace's Interactions API keys.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::events::workspace::Destination;
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
use super::shown_once::ShownOnce;
use super::sql::{Filter, text_filter};
use crate::app::interaction_keys as app;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_interaction_key, list_workspace_interaction_keys))
        .routes(routes!(count_workspace_interaction_keys))
        .routes(routes!(delete_interaction_key))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InteractionKeyView {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub name: String,
    pub destination: Destination,
    /// The source app the secret was withheld for (it retrieves it once).
    pub source_app_id: Option<Uuid>,
    /// `active`, `expired` or `revoked`.
    pub status: String,
    pub partial_key_hint: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// With a source app: whether it has retrieved the secret; null without one.
    pub secret_retrieved: Option<bool>,
    /// Only in the creating response: the key itself, or null when a source app retrieves
    /// it instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub secret: Option<Option<ShownOnce>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInteractionKey {
    pub name: String,
    /// An external key of this workspace, or a partner app of kind `destination`.
    pub destination: Destination,
    /// A partner app of kind `source`: the secret is withheld for it (`secret` is null).
    pub source_app_id: Option<Uuid>,
    /// In the future.
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InteractionKeySort {
    Name,
    #[default]
    CreatedAt,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InteractionKeyStatus {
    Active,
    Expired,
    Revoked,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InteractionKeyQuery {
    page: Option<u32>,
    page_size: Option<u32>,
    /// `pagination.next_cursor` of the previous page (same filters and sort); instead of `page`.
    cursor: Option<String>,
    #[param(inline)]
    sort_by: Option<InteractionKeySort>,
    #[param(inline)]
    sort_order: Option<SortOrder>,
    /// Substring of the name, case-insensitive.
    name: Option<String>,
    #[param(inline)]
    status: Option<InteractionKeyStatus>,
}

paged!(InteractionKeyQuery);

const STATUS_SQL: &str = "CASE WHEN k.revoked_at IS NOT NULL THEN 'revoked' \
     WHEN k.expires_at IS NOT NULL AND k.expires_at <= now() THEN 'expired' ELSE 'active' END";

fn select() -> String {
    format!(
        "SELECT k.id, k.workspace_id, k.name, k.destination, k.source_app_id, {STATUS_SQL} AS status, \
         k.partial_key_hint, k.expires_at, k.created_at, k.secret_retrieved FROM interaction_keys k"
    )
}

impl InteractionKeyView {
    /// A row of [`select`].
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        let tokio_postgres::types::Json(destination) = row.try_get("destination")?;
        Ok(Self {
            id: row.try_get("id")?,
            workspace_id: row.try_get("workspace_id")?,
            name: row.try_get("name")?,
            destination,
            source_app_id: row.try_get("source_app_id")?,
            status: row.try_get("status")?,
            partial_key_hint: row.try_get("partial_key_hint")?,
            expires_at: row.try_get("expires_at")?,
            created_at: row.try_get("created_at")?,
            secret_retrieved: row.try_get("secret_retrieved")?,
            secret: None,
        })
    }
}

fn filter(workspace_id: Uuid, query: &InteractionKeyQuery) -> Result<Filter, ApiError> {
    let mut filter = Filter::default();
    filter.bind("k.workspace_id = $?", Box::new(workspace_id));
    if let Some(name) = &query.name {
        filter.contains("k.name", text_filter("name", name, 200)?);
    }
    if let Some(status) = query.status {
        let status = match status {
            InteractionKeyStatus::Active => "active",
            InteractionKeyStatus::Expired => "expired",
            InteractionKeyStatus::Revoked => "revoked",
        };
        filter.bind(&format!("{STATUS_SQL} = $?"), Box::new(status));
    }
    Ok(filter)
}

impl InteractionKeyQuery {
    fn keyset(&self) -> Keyset {
        let order = self.sort_order.unwrap_or_default();
        match self.sort_by.unwrap_or_default() {
            InteractionKeySort::Name => Keyset { sort: "lower(k.name)", kind: SortKind::Text, id: "k.id", order },
            InteractionKeySort::CreatedAt => Keyset { sort: "k.created_at", kind: SortKind::Time, id: "k.id", order },
        }
    }
}

async fn find(state: &AppState, workspace_id: Uuid, id: Uuid) -> Result<InteractionKeyView, ApiError> {
    let client = state.pool.get().await?;
    let row = client
        .query_opt(&format!("{} WHERE k.id = $1 AND k.workspace_id = $2", select()), &[&id, &workspace_id])
        .await?
        .ok_or(ApiError::NotFound("interaction key"))?;
    Ok(InteractionKeyView::from_row(&row)?)
}

/// Create an interaction key. The response carries its `secret` this once, or null when a
/// source app retrieves it instead (`POST /v1/partner/interaction-keys/{id}/secret`).
#[utoipa::path(post, path = "/v1/workspaces/{id}/interaction-keys", tag = "interaction keys",
    params(("id" = Uuid, Path)), request_body = CreateInteractionKey,
    responses((status = 201, description = "Created", body = InteractionKeyView), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn create_interaction_key(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(workspace_id): Path<Uuid>,
    Json(body): Json<CreateInteractionKey>,
) -> Result<Response, ApiError> {
    let request = app::Create {
        name: body.name,
        destination: body.destination,
        source_app_id: body.source_app_id,
        expires_at: body.expires_at,
    };
    let created = app::create(&state, &ctx, workspace_id, request).await?;
    let mut view = find(&state, workspace_id, created.id).await?;
    view.secret = Some(created.secret.as_ref().map(ShownOnce::from));
    // No `Location`: an interaction key has no resource of its own to GET (the list shows it).
    let mut response = (StatusCode::CREATED, axum::Json(view)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// A workspace's interaction keys (never their secrets).
#[utoipa::path(get, path = "/v1/workspaces/{id}/interaction-keys", tag = "interaction keys",
    params(("id" = Uuid, Path), InteractionKeyQuery),
    responses((status = 200, description = "OK", body = Page<InteractionKeyView>), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn list_workspace_interaction_keys(
    State(state): State<AppState>,
    ctx: Ctx,
    uri: Uri,
    Path(workspace_id): Path<Uuid>,
    Query(query): Query<InteractionKeyQuery>,
) -> Result<axum::Json<Page<InteractionKeyView>>, ApiError> {
    ctx.principal.require(Scope::InteractionKeysRead)?;
    super::workspaces::find(&state, &ctx.principal, workspace_id).await?;
    let listing = Listing::of(&state.master_key, &ctx.principal, &uri, &query, query.keyset())?;
    let mut filter = filter(workspace_id, &query)?;
    let sql = listing.sql(&select(), &mut filter);
    listing.fetch(&state.pool, (sql, filter), "id", InteractionKeyView::from_row, &uri).await
}

/// Count a workspace's interaction keys matching the list's filters.
#[utoipa::path(get, path = "/v1/workspaces/{id}/interaction-keys/count", tag = "interaction keys",
    params(("id" = Uuid, Path), InteractionKeyQuery),
    responses((status = 200, description = "OK", body = Count), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn count_workspace_interaction_keys(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(workspace_id): Path<Uuid>,
    Query(query): Query<InteractionKeyQuery>,
) -> Result<axum::Json<Count>, ApiError> {
    ctx.principal.require(Scope::InteractionKeysRead)?;
    super::workspaces::find(&state, &ctx.principal, workspace_id).await?;
    paged::count(&state.pool, &query, || {
        let filter = filter(workspace_id, &query)?;
        Ok((format!("SELECT count(*) FROM interaction_keys k {}", filter.where_sql()), filter))
    })
    .await
}

/// Revoke an interaction key: instances reject it once the event reaches them.
#[utoipa::path(delete, path = "/v1/workspaces/{id}/interaction-keys/{key_id}", tag = "interaction keys",
    params(("id" = Uuid, Path), ("key_id" = Uuid, Path)),
    responses((status = 204, description = "No content"), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn delete_interaction_key(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((workspace_id, key_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    app::delete(&state, &ctx, workspace_id, key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
