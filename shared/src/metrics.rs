//! Prometheus metrics: one recorder per process (a single-node hub and its embedded
//! instance share it), rendered by each binary's unauthenticated `GET /metrics`, the
//! series names both binaries use, and the layer that records every HTTP request.
//!
//! Labels never carry ids or names: a request is labelled with its route's template
//! (`/v1/workspaces/{id}`), never its raw path, so the series stay few and
//! identify no tenant; an unknown method is `other`.

use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests answered, by `method`, `route` (template) and `status`.
pub const HTTP_REQUESTS: &str = "http_requests_total";
/// Time to answer a request (until its response head), same labels.
pub const HTTP_REQUEST_DURATION: &str = "http_request_duration_seconds";
/// Credentials refused (missing where required, unknown, expired, revoked, malformed).
pub const AUTHENTICATION_FAILURES: &str = "authentication_failures_total";
/// Requests refused with 429, by `limit`: `requests` (a key's rate limit) or
/// `failed_authentications` (an address past its failed authentications).
pub const RATE_LIMIT_REFUSALS: &str = "rate_limit_refusals_total";

/// Batches the hub's writer took from its queue.
pub const APPEND_BATCHES: &str = "event_store_append_batches_total";
/// Commits the writer answered, whatever the answer.
pub const APPEND_COMMITS: &str = "event_store_append_commits_total";
/// Commits the database refused.
pub const APPEND_REFUSED: &str = "event_store_append_refused_total";
/// Refused commits undone by their savepoint, their batch-mates kept.
pub const APPEND_SAVEPOINT_ROLLBACKS: &str = "event_store_append_savepoint_rollbacks_total";
/// Commits retried alone after a refusal no commit could be charged with.
pub const APPEND_SOLO_RETRIES: &str = "event_store_append_solo_retries_total";
/// Merged batches refused and written again with a savepoint per commit.
pub const APPEND_MERGED_FALLBACKS: &str = "event_store_append_merged_fallbacks_total";
/// Commits answered 409 because a name they take was found held before their batch was written.
pub const APPEND_NAMES_TAKEN: &str = "event_store_append_names_taken_total";
/// Commits waiting for the writer.
pub const APPEND_QUEUE_DEPTH: &str = "event_store_append_queue_depth";
/// Commits per batch.
pub const APPEND_BATCH_COMMITS: &str = "event_store_append_batch_commits";
/// Events per batch.
pub const APPEND_BATCH_EVENTS: &str = "event_store_append_batch_events";
/// Time to write a batch, from taking it to answering its commits.
pub const APPEND_BATCH_DURATION: &str = "event_store_append_batch_duration_seconds";

/// The position of the last event the relay published to NATS.
pub const RELAY_POSITION: &str = "relay_published_position";
/// Events committed but not yet published.
pub const RELAY_LAG: &str = "relay_lag_events";
/// How long the relay has been behind without progressing (0 when caught up).
pub const RELAY_STALLED: &str = "relay_stalled_seconds";
/// Emails waiting in the outbox to be sent (`pending`).
pub const OUTBOX_DEPTH: &str = "email_outbox_depth";

/// The position of the last event an instance applied.
pub const INSTANCE_APPLIED_POSITION: &str = "instance_applied_position";
/// How far the instance trails the log's head (as the hub last reported it).
pub const INSTANCE_LAG: &str = "instance_lag_events";
/// Events the instance applied.
pub const INSTANCE_APPLIED_EVENTS: &str = "instance_applied_events_total";

/// What each series means, for the `# HELP` lines.
const DESCRIPTIONS: &[(&str, &str)] = &[
    (HTTP_REQUESTS, "HTTP requests answered, by method, route template and status"),
    (HTTP_REQUEST_DURATION, "Seconds to answer an HTTP request, by method, route template and status"),
    (AUTHENTICATION_FAILURES, "Requests whose credentials were missing, unknown, expired, revoked or malformed"),
    (RATE_LIMIT_REFUSALS, "Requests refused with 429, by the limit that refused them"),
    (APPEND_BATCHES, "Batches the event store's writer took from its queue"),
    (APPEND_COMMITS, "Commits the event store's writer answered"),
    (APPEND_REFUSED, "Commits the database refused"),
    (APPEND_SAVEPOINT_ROLLBACKS, "Refused commits undone by their own savepoint"),
    (APPEND_SOLO_RETRIES, "Commits retried alone after their batch was refused"),
    (APPEND_MERGED_FALLBACKS, "Merged batches refused and written again with a savepoint per commit"),
    (APPEND_NAMES_TAKEN, "Commits refused before their batch was written: a name they take was held"),
    (APPEND_QUEUE_DEPTH, "Commits waiting for the event store's writer"),
    (APPEND_BATCH_COMMITS, "Commits per batch written by the event store's writer"),
    (APPEND_BATCH_EVENTS, "Events per batch written by the event store's writer"),
    (APPEND_BATCH_DURATION, "Seconds to write a batch and answer its commits"),
    (RELAY_POSITION, "Position of the last event published to NATS"),
    (RELAY_LAG, "Events committed but not yet published to NATS"),
    (RELAY_STALLED, "Seconds the relay has been behind the log without progressing"),
    (OUTBOX_DEPTH, "Emails pending in the outbox"),
    (INSTANCE_APPLIED_POSITION, "Position of the last event this instance applied"),
    (INSTANCE_LAG, "Events between the log's head and this instance's applied position"),
    (INSTANCE_APPLIED_EVENTS, "Events this instance applied"),
];

/// Request durations: 1 ms to 30 s (the request timeout).
const DURATION_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Batch sizes: powers of two up to the writer's largest batch.
const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0];
/// How often histogram samples are folded in between scrapes, so memory stays bounded.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static UPKEEP: Once = Once::new();

fn builder() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new()
        .set_buckets(DURATION_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(APPEND_BATCH_COMMITS.into()), SIZE_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(APPEND_BATCH_EVENTS.into()), SIZE_BUCKETS)
}

/// The process's recorder, installed as the global one on first use.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        // The buckets are constants; should the builder still refuse them, the series
        // render as summaries rather than not at all.
        let recorder = builder().unwrap_or_default().build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics shows none of its series");
        }
        for (name, description) in DESCRIPTIONS {
            if name.ends_with("_total") {
                metrics::describe_counter!(*name, *description);
            } else if name.ends_with("_seconds") || name.starts_with("event_store_append_batch_") {
                metrics::describe_histogram!(*name, *description);
            } else {
                metrics::describe_gauge!(*name, *description);
            }
        }
        handle
    })
}

/// Installs the recorder and starts its upkeep; call once the runtime runs, before the
/// process records anything.
pub fn install() {
    let handle = handle();
    UPKEEP.call_once(|| {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(UPKEEP_EVERY);
            loop {
                ticker.tick().await;
                handle.run_upkeep();
            }
        });
    });
}

/// The body of `GET /metrics`: every series in the Prometheus text format.
pub fn render() -> Response {
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    ([(header::CONTENT_TYPE, content_type)], handle().render()).into_response()
}

/// Records every request of the router it wraps (as `Router::layer`, so the matched
/// route is known) in [`HTTP_REQUESTS`] and [`HTTP_REQUEST_DURATION`].
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let response = next.run(request).await;
    let labels = [("method", method.to_owned()), ("route", route), ("status", response.status().as_str().to_owned())];
    metrics::counter!(HTTP_REQUESTS, &labels).increment(1);
    metrics::histogram!(HTTP_REQUEST_DURATION, &labels).record(started.elapsed().as_secs_f64());
    response
}

/// The standard methods by name; anything else is `other`, so a client cannot mint series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    /// A key's requests per minute.
    Requests,
    /// An address's failed authentications per minute.
    FailedAuthentications,
}

/// Counts a request refused with 429.
pub fn rate_limited(limit: Limit) {
    let limit = match limit {
        Limit::Requests => "requests",
        Limit::FailedAuthentications => "failed_authentications",
    };
    metrics::counter!(RATE_LIMIT_REFUSALS, "limit" => limit).increment(1);
}

/// Counts a failed authentication.
pub fn authentication_failed() {
    metrics::counter!(AUTHENTICATION_FAILURES).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_buckets_are_accepted() {
        assert!(builder().is_ok());
    }

    #[test]
    fn a_made_up_method_is_not_a_label_of_its_own() {
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }
}
