//! The hub's HTTP surface: the shared state, the router and its layers.
//!
//! Layers, outermost first: metrics (by matched route) → request id → problems (every
//! error a problem+json with the request id) → trace → timeout → body limit →
//! authenticate (+ rate limit) → idempotency → the resource routers.

mod api_keys;
mod apps;
mod audit_logs;
pub mod auth;
mod conditional;
pub mod context;
pub mod cursor;
pub mod error;
pub mod events;
mod external_keys;
pub mod extract;
mod health;
pub mod idempotency;
pub mod instances;
mod interaction_keys;
mod invitations;
pub mod key_cache;
pub mod lists;
mod members;
mod metrics;
mod middleware;
pub mod openapi;
mod organizations;
mod paged;
pub mod pagination;
mod partner;
mod partner_claim;
pub mod rate_limit;
mod settings;
mod shown_once;
pub(crate) mod sql;
mod traces;
pub mod usage;
mod usage_report;
mod users;
pub(crate) mod visibility;
mod workspace_secrets;
mod workspaces;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use deadpool_postgres::Pool;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;

pub use error::{ApiError, Problem};

use crate::store::EventStore;

/// Settings the handlers read.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Requests per minute per key, unless the organization sets its own.
    pub rate_limit_per_minute: u32,
    /// Failed authentications per client address and minute before it is refused.
    pub auth_failures_per_minute: u32,
    /// Where workspaces go when a request names no instance (the embedded one in
    /// single-node mode).
    pub default_instance_id: Option<String>,
    /// The base of links in emails.
    pub public_url: String,
    /// When a relay publishes the log: how long it may stall before `/readyz` says 503.
    pub relay_stall: Option<std::time::Duration>,
    /// Where external VAN keys are checked before they are stored (unset: not checked).
    pub van_api_url: Option<String>,
}

/// What every handler can reach: one shared [`Services`], so the copy axum makes for
/// each layer and extractor of a request is one reference count, not one per service.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The services behind [`AppState`].
pub struct Services {
    pub pool: Pool,
    pub store: EventStore,
    pub config: Arc<HttpConfig>,
    pub auth: Arc<auth::Authenticator>,
    pub rate_limiter: Arc<rate_limit::RateLimiter>,
    pub usage: Arc<usage::UsageRecorder>,
    /// Signalled after a commit that queued email.
    pub mail_wake: Arc<tokio::sync::Notify>,
    /// The supervised background tasks, for `/readyz`.
    pub tasks: Arc<shared::supervise::Tasks>,
    /// Seals and opens the workspaces' data keys.
    pub master_key: Arc<crate::secrets::MasterKey>,
    /// Where workspaces go when a request names no instance.
    pub placement: Arc<crate::app::placement::Placement>,
}

/// Request bodies above this are refused with 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub fn router(state: AppState) -> Router {
    let (api_router, api) = OpenApiRouter::with_openapi(openapi::base())
        .merge(health::router())
        .merge(metrics::router())
        .merge(organizations::router())
        .merge(api_keys::router())
        .merge(workspaces::router())
        .merge(settings::router())
        .merge(users::router())
        .merge(invitations::router())
        .merge(members::router())
        .merge(events::router())
        .merge(workspace_secrets::router())
        .merge(instances::router())
        .merge(audit_logs::router())
        .merge(usage_report::router())
        .merge(external_keys::router())
        .merge(interaction_keys::router())
        .merge(apps::router())
        .merge(partner::router())
        .merge(partner_claim::router())
        .split_for_parts();
    let api = Arc::new(openapi::finish(api));
    api_router
        .route("/openapi.json", axum::routing::get(move || openapi::serve(api.clone())))
        .fallback(middleware::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), idempotency::idempotency))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(axum::middleware::from_fn(shared::serve::request_timeout))
        .layer(TraceLayer::new_for_http().make_span_with(traces::request_span).on_response(traces::record_response))
        .layer(SetSensitiveRequestHeadersLayer::new([axum::http::header::AUTHORIZATION]))
        .layer(axum::middleware::from_fn(middleware::problems))
        .layer(axum::middleware::from_fn(middleware::request_id))
        .layer(axum::middleware::from_fn(shared::metrics::track))
        .with_state(state)
}
