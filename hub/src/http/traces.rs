//! The span of each request: the root of the trace its writes carry into their events.
//!
//! Named after the route template, never the path (paths hold ids, query strings can hold
//! tokens). A valid incoming `traceparent` makes the caller's span its parent.

use std::time::Duration;

use axum::extract::MatchedPath;
use axum::http::{Request, Response};
use tower_http::trace::{DefaultOnResponse, OnResponse};
use tracing::Span;
use tracing::field::Empty;

/// The request's span; at debug level, so the `info` logs read as before.
pub fn request_span<B>(request: &Request<B>) -> Span {
    let method = request.method();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str);
    let span = tracing::debug_span!(
        "http",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = Empty,
    );
    let traceparent = request.headers().get("traceparent").and_then(|value| value.to_str().ok());
    shared::telemetry::set_parent(&span, traceparent);
    span
}

/// Records the status on the request's span (a 5xx marks it failed), then logs the
/// response as tower-http does by default.
pub fn record_response<B>(response: &Response<B>, latency: Duration, span: &Span) {
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    DefaultOnResponse::default().on_response(response, latency, span);
}
