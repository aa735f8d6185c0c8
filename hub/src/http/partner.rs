//! `/v1/partner/*`: what a technology partner app sees with its app key: the public
//! metadata of the interaction keys provisioned to it (as their source app) or routed to
//! it (as their destination), never another app's. The handlers take an [`AppPrincipal`],
//! which only an app key passes.

use axum::extract::State;
use axum::http::Uri;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::auth::{AppPrincipal, Principal};
use super::cursor::{Keyset, Listing, SortKind};
use super::error::{ApiError, Problem};
use super::extract::Query;
use super::paged::{self, paged};
use super::pagination::{Count, Page, SortOrder};
use super::sql::Filter;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_partner_interaction_keys)).routes(routes!(count_partner_interaction_keys))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Named {
    pub id: Uuid,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PartnerKeyStatus {
    Active,
    Expired,
    Revoked,
}

/// An interaction key as its app sees it: public metadata only.
#[derive(Debug, Serialize, ToSchema)]
pub struct PartnerInteractionKey {
    pub id: Uuid,
    pub name: String,
    pub workspace: Named,
    pub organization: Named,
    pub status: PartnerKeyStatus,
    pub created_at: DateTime<Utc>,
    /// True once the source app has claimed the secret, false before; null for a key with
    /// no source app.
    pub secret_retrieved: Option<bool>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PartnerKeyQuery {
    page: Option<u32>,
    page_size: Option<u32>,
    /// `pagination.next_cursor` of the previous page (same filters and sort); instead of `page`.
    cursor: Option<String>,
    /// By creation time (the only order).
    #[param(inline)]
    sort_order: Option<SortOrder>,
    #[param(inline)]
    status: Option<PartnerKeyStatus>,
}

paged!(PartnerKeyQuery);

const STATUS_SQL: &str = "CASE WHEN k.revoked_at IS NOT NULL THEN 'revoked' \
     WHEN k.expires_at IS NOT NULL AND k.expires_at <= now() THEN 'expired' ELSE 'active' END";

fn select() -> String {
    format!(
        "SELECT k.id, k.name, k.workspace_id, w.name AS workspace_name, k.organization_id, \
         o.name AS organization_name, {STATUS_SQL} AS status, k.created_at, k.secret_retrieved \
         FROM interaction_keys k JOIN workspaces w ON w.id = k.workspace_id \
         JOIN organizations o ON o.id = k.organization_id"
    )
}

impl PartnerInteractionKey {
    /// A row of [`select`].
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        let status = match row.try_get::<_, &str>("status")? {
            "revoked" => PartnerKeyStatus::Revoked,
            "expired" => PartnerKeyStatus::Expired,
            _ => PartnerKeyStatus::Active,
        };
        Ok(Self {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            workspace: Named { id: row.try_get("workspace_id")?, name: row.try_get("workspace_name")? },
            organization: Named { id: row.try_get("organization_id")?, name: row.try_get("organization_name")? },
            status,
            created_at: row.try_get("created_at")?,
            secret_retrieved: row.try_get("secret_retrieved")?,
        })
    }
}

/// The app's keys: provisioned to it or routed to it, of live workspaces and organizations.
fn filter(app: AppPrincipal, query: &PartnerKeyQuery) -> Filter {
    let mut filter = Filter::default();
    let id = filter.placeholder(Box::new(app.id));
    filter.clause(&format!("(k.source_app_id = {id} OR k.destination_app_id = {id})"));
    filter.clause("w.status <> 'deleted' AND o.status = 'active'");
    if let Some(status) = query.status {
        let status = match status {
            PartnerKeyStatus::Active => "active",
            PartnerKeyStatus::Expired => "expired",
            PartnerKeyStatus::Revoked => "revoked",
        };
        filter.bind(&format!("{STATUS_SQL} = $?"), Box::new(status));
    }
    filter
}

fn keyset(query: &PartnerKeyQuery) -> Keyset {
    Keyset { sort: "k.created_at", kind: SortKind::Time, id: "k.id", order: query.sort_order.unwrap_or_default() }
}

/// List the interaction keys provisioned to this app or routed to it (app key only), oldest
/// first; a revoked key stays listed as `revoked`, a deleted workspace's keys are gone.
#[utoipa::path(get, path = "/v1/partner/interaction-keys", tag = "partner", params(PartnerKeyQuery),
    responses((status = 200, description = "OK", body = Page<PartnerInteractionKey>), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn list_partner_interaction_keys(
    State(state): State<AppState>,
    app: AppPrincipal,
    uri: Uri,
    Query(query): Query<PartnerKeyQuery>,
) -> Result<axum::Json<Page<PartnerInteractionKey>>, ApiError> {
    let listing = Listing::of(&state.master_key, &Principal::App(app), &uri, &query, keyset(&query))?;
    let mut filter = filter(app, &query);
    let sql = listing.sql(&select(), &mut filter);
    listing.fetch(&state.pool, (sql, filter), "id", PartnerInteractionKey::from_row, &uri).await
}

/// Count the interaction keys provisioned to this app or routed to it (app key only).
#[utoipa::path(get, path = "/v1/partner/interaction-keys/count", tag = "partner", params(PartnerKeyQuery),
    responses((status = 200, description = "OK", body = Count), (status = "4XX", description = "Problem details (RFC 9457)", body = Problem, content_type = "application/problem+json")))]
async fn count_partner_interaction_keys(
    State(state): State<AppState>,
    app: AppPrincipal,
    Query(query): Query<PartnerKeyQuery>,
) -> Result<axum::Json<Count>, ApiError> {
    paged::count(&state.pool, &query, || {
        let filter = filter(app, &query);
        let sql = format!(
            "SELECT count(*) FROM interaction_keys k JOIN workspaces w ON w.id = k.workspace_id \
             JOIN organizations o ON o.id = k.organization_id {}",
            filter.where_sql()
        );
        Ok((sql, filter))
    })
    .await
}
