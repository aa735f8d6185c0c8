//! `/v1/apps`: technology partner apps, registered and deleted by the operator (the only
//! principal that manages them). An app's key is shown once, in the response that
//! registers it.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::domain::app::App;
use shared::events::app::AppKind;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::context::Ctx;
use super::cursor::{Keyset, Listing, SortKind};
use super::error::{ApiError, Problem};
use super::extract::{Json, Path, Query};
use super::paged::{self, paged};
use super::pagination::{Count, Page, SortOrder};
use super::shown_once::ShownOnce;
use super::sql::{Filter, text_filter};
use super::{AppState, conditional};
use crate::app::apps as app;
use crate::app::cache::Loaded;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_app, list_apps))
        .routes(routes!(count_apps))
        .routes(routes!(get_app, delete_app))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AppStatus {
    Active,
    Revoked,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AppView {
    pub id: Uuid,
    pub name: String,
    pub kind: AppKind,
    pub contact_email: String,
    pub status: AppStatus,
    pub partial_key_hint: String,
    pub created_at: DateTime<Utc>,
    /// The app key itself: only in the response that registers the app.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub secret: Option<ShownOnce>,
    #[serde(skip)]
    version: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApp {
    pub name: String,
    pub kind: AppKind,
    /// Who the platform writes to about the app (e.g. a key routed to it).
    pub contact_email: String,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AppSort {
    Name,
    #[default]
    CreatedAt,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AppQuery {
    page: Option<u32>,
    page_size: Option<u32>,
    /// `pagination.next_cursor` of the previous page (same filters and sort); instead of `page`.
    cursor: Option<String>,
    #[param(inline)]
    sort_by: Option<AppSort>,
    #[param(inline)]
    sort_order: Option<SortOrder>,
    /// Substring of the name, case-insensitive.
    name: Option<String>,
    #[param(inline)]
    kind: Option<AppKind>,
    #[param(inline)]
    status: Option<AppStatus>,
}

paged!(AppQuery);

const SELECT: &str = "SELECT p.id, p.name, p.kind, p.contact_email, p.revoked_at IS NOT NULL AS revoked, \
     p.partial_key_hint, p.created_at, p.version FROM apps p";

impl AppView {
    /// A row of [`SELECT`].
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        let revoked: bool = row.try_get("revoked")?;
        Ok(Self {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            kind: row.try_get("kind")?,
            contact_email: row.try_get("contact_email")?,
            status: if revoked { AppStatus::Revoked } else { AppStatus::Active },
            partial_key_hint: row.try_get("partial_key_hint")?,
            created_at: row.try_get("created_at")?,
            secret: None,
            version: row.try_get("version")?,
        })
    }

    /// The view of an app as its registration left it (what the read model now holds).
    fn registered(id: Uuid, loaded: &Loaded<App>, partial_key_hint: String, secret: ShownOnce) -> Self {
        let a = &loaded.state;
        Self {
            id,
            name: a.name.clone(),
            kind: a.kind.unwrap_or(AppKind::Source),
            contact_email: a.contact_email.clone(),
            status: AppStatus::Active,
            partial_key_hint,
            created_at: loaded.created_at.unwrap_or_else(Utc::now),
            secret: Some(secret),
            version: loaded.version,
        }
    }
}

fn filter(query: &AppQuery) -> Result<Filter, ApiError> {
    let mut filter = Filter::default();
    if let Some(name) = &query.name {
        filter.contains("p.name", text_filter("name", name, 200)?);
    }
    if let Some(kind) = query.kind {
        filter.bind("p.kind = $?", Box::new(kind));
    }
    match query.status {
        Some(AppStatus::Active) => filter.clause("p.revoked_at IS NULL"),
        Some(AppStatus::Revoked) => filter.clause("p.revoked_at IS NOT NULL"),
        None => &mut filter,
    };
    Ok(filter)
}

impl AppQuery {
    fn keyset(&self) -> Keyset {
        let order = self.sort_order.unwrap_or_default();
        match self.sort_by.unwrap_or_default() {
            AppSort::Name => Keyset { sort: "lower(p.name)", kind: SortKind::Text, id: "p.id", order },
            AppSort::CreatedAt => Keyset { sort: "p.created_at", kind: SortKind::Time, id: "p.id", order },
        }
    }
}

async fn find(state: &AppState, id: Uuid) -> Result<AppView, ApiError> {
    let client = state.pool.get().await?;
    let row = client.query_opt(&format!("{SELECT} WHERE p.id = $1"), &[&id]).await?.ok_or(ApiError::NotFound("app"))?;
    Ok(AppView::from_row(&row)?)
}

fn single(status: StatusCode, view: AppView) -> Response {
    let carries_secret = view.secret.is_some();
    let location = format!("/v1/apps/{}", view.id);
    let mut response = (status, conditional::etag(view.version), axum::Json(view)).into_response();
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

/// Register a technology partner app (operator only). The response carries the app key
/// (`secret`), shown this once; the app authenticates with it on `/v1/partner/*`.
#[utoipa::path(post, path = "/v1/apps", tag = "apps", request_body = CreateApp,
    responses((status = 201, description = "Created", body = AppView), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn create_app(
    State(state): State<AppState>,
    ctx: Ctx,
    Json(body): Json<CreateApp>,
) -> Result<Response, ApiError> {
    let request = app::Register { name: body.name, kind: body.kind, contact_email: body.contact_email };
    let (id, loaded, key) = app::register(&state, &ctx, request).await?;
    Ok(single(StatusCode::CREATED, AppView::registered(id, &loaded, key.hint(), ShownOnce::from(&key))))
}

/// List partner apps (operator only).
#[utoipa::path(get, path = "/v1/apps", tag = "apps", params(AppQuery),
    responses((status = 200, description = "OK", body = Page<AppView>), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn list_apps(
    State(state): State<AppState>,
    ctx: Ctx,
    uri: Uri,
    Query(query): Query<AppQuery>,
) -> Result<axum::Json<Page<AppView>>, ApiError> {
    ctx.principal.require_operator()?;
    let listing = Listing::of(&state.master_key, &ctx.principal, &uri, &query, query.keyset())?;
    let mut filter = filter(&query)?;
    let sql = listing.sql(SELECT, &mut filter);
    listing.fetch(&state.pool, (sql, filter), "id", AppView::from_row, &uri).await
}

/// Count partner apps matching the list's filters (operator only).
#[utoipa::path(get, path = "/v1/apps/count", tag = "apps", params(AppQuery),
    responses((status = 200, description = "OK", body = Count), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn count_apps(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(query): Query<AppQuery>,
) -> Result<axum::Json<Count>, ApiError> {
    ctx.principal.require_operator()?;
    paged::count(&state.pool, &query, || {
        let filter = filter(&query)?;
        Ok((format!("SELECT count(*) FROM apps p {}", filter.where_sql()), filter))
    })
    .await
}

/// Get a partner app (never its key; operator only).
#[utoipa::path(get, path = "/v1/apps/{id}", tag = "apps", params(("id" = Uuid, Path)),
    responses((status = 200, description = "OK", body = AppView), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn get_app(State(state): State<AppState>, ctx: Ctx, Path(id): Path<Uuid>) -> Result<Response, ApiError> {
    ctx.principal.require_operator()?;
    Ok(single(StatusCode::OK, find(&state, id).await?))
}

/// Delete a partner app (operator only): its status becomes `revoked`, its key fails from
/// the next request on, and every interaction key provisioned to it or routed to it is
/// revoked.
#[utoipa::path(delete, path = "/v1/apps/{id}", tag = "apps", params(("id" = Uuid, Path)),
    responses((status = 204, description = "No content"), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn delete_app(State(state): State<AppState>, ctx: Ctx, Path(id): Path<Uuid>) -> Result<StatusCode, ApiError> {
    app::delete(&state, &ctx, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
