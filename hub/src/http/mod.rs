//! The hub's HTTP surface: builds the shared state and the router.

mod health;
pub mod openapi;
mod problem;

use std::time::Duration;

use axum::Router;
use axum::http::HeaderName;
use deadpool_postgres::Pool;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;

pub use problem::Problem;

use crate::store::EventStore;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    pub store: EventStore,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("request-id");

pub fn router(state: AppState) -> Router {
    let (router, api) = OpenApiRouter::with_openapi(openapi::base())
        .merge(health::router())
        .with_state(state)
        .split_for_parts();
    let api = std::sync::Arc::new(api);
    router
        .route(
            "/openapi.json",
            axum::routing::get(move || openapi::serve(api.clone())),
        )
        .fallback(problem::not_found)
        .layer(CatchPanicLayer::custom(problem::panic_response))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(30),
        ))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http())
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}
