//! `GET /metrics`: the process's series in the Prometheus text format, unauthenticated
//! like `/healthz`. No label names an organization, a workspace or a key.
//!
//! Most series are recorded as things happen; the writer's counters are read from the
//! store, and what only the database knows (the email outbox's depth, the relay's
//! progress) is sampled by a scrape at most every 5 s, bounded in time so a slow database
//! cannot hold the scrape.

use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use shared::metrics as names;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::columns::OutboxStatus;

/// Longest a scrape waits for the database; past it the sampled series keep their values.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// The hub's metrics (Prometheus text format): `http_requests_total{method,route,status}`,
/// `http_request_duration_seconds`, the event store's writer, the relay, the email outbox,
/// failed authentications and rate-limit refusals.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"))
)]
async fn metrics(State(state): State<AppState>) -> Response {
    record_store_stats(&state);
    if tokio::time::timeout(SAMPLE_TIMEOUT, sample_database(&state)).await.is_err() {
        tracing::debug!("metrics: the database did not answer in time; sampled series not refreshed");
    }
    shared::metrics::render()
}

fn record_store_stats(state: &AppState) {
    let stats = state.store.stats();
    for (name, value) in [
        (names::APPEND_BATCHES, stats.batches),
        (names::APPEND_COMMITS, stats.commits),
        (names::APPEND_REFUSED, stats.refused),
        (names::APPEND_SAVEPOINT_ROLLBACKS, stats.savepoint_rollbacks),
        (names::APPEND_SOLO_RETRIES, stats.solo_retries),
        (names::APPEND_MERGED_FALLBACKS, stats.merged_fallbacks),
        (names::APPEND_NAMES_TAKEN, stats.names_taken),
    ] {
        metrics::counter!(name).absolute(value);
    }
    metrics::gauge!(names::APPEND_QUEUE_DEPTH).set(stats.queued as f64);
}

/// Database figures are sampled at most this often, whoever scrapes `/metrics` (it needs no
/// credentials): between samples a scrape reports the last values.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

async fn sample_database(state: &AppState) {
    static LAST: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    {
        let Ok(mut last) = LAST.lock() else { return };
        if last.is_some_and(|at| at.elapsed() < SAMPLE_EVERY) {
            return;
        }
        *last = Some(std::time::Instant::now());
    }
    let Ok(client) = state.pool.get().await else { return };
    let depth = client
        // Pending rows only: the partial index `outbox_due` counts them without a scan.
        .query_one("SELECT count(*) FROM outbox WHERE status = $1", &[&OutboxStatus::Pending])
        .await;
    if let Ok(row) = depth {
        metrics::gauge!(names::OUTBOX_DEPTH).set(row.get::<_, i64>(0) as f64);
    }
    // Only where a relay runs; every hub reports the same figures (they are the database's).
    if state.config.relay_stall.is_some()
        && let Ok(status) = crate::relay::status(&**client).await
    {
        metrics::gauge!(names::RELAY_POSITION).set(status.position as f64);
        metrics::gauge!(names::RELAY_LAG).set(status.lag as f64);
        metrics::gauge!(names::RELAY_STALLED).set(status.stalled_seconds);
    }
}
