//! The relay: publishes the event log to the JetStream stream `HUB_EVENTS`, in position
//! order, at least once.
//!
//! Exactly one relay runs across all hub processes: the one whose dedicated database
//! session holds the relay advisory lock (a crashed leader's session ends, and a standby
//! takes over within a second). The leader reads the log after its checkpoint, publishes a
//! page with every ack in flight (`Nats-Msg-Id` = event id, so a retried publish is
//! deduplicated by the stream), awaits the acks in order, then advances the checkpoint.
//! A commit in this process wakes it at once; a timer covers other hubs' commits.
//!
//! No single event can stop it: an event too large for the server's `max_payload`, or
//! one NATS keeps refusing, is published as a small reference (same `Nats-Msg-Id`) that
//! the instances resolve from the hub's event feed. Any other trouble is retried, and a
//! relay that stays behind without progressing says so in the log and in `/readyz`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage, stream};
use deadpool_postgres::tokio_postgres;
use shared::RecordedEvent;
use shared::domain::Aggregate;
use shared::domain::workspace::Workspace;
use shared::relayed::{self, Relayed, STREAM, subject};
use shared::supervise::Tasks;
use tokio::sync::Notify;
use tokio_postgres::Client;
use tracing::Instrument;
use uuid::Uuid;

/// Key of the session advisory lock that elects the relay leader (an arbitrary number).
const RELAY_LOCK: i64 = 0x6875_625f_7265_6c61;
/// Events published per round, all acks in flight.
const PAGE: i64 = 256;
/// Publishes retried within this window are deduplicated by the stream; it must exceed
/// the longest NATS outage the relay should absorb without duplicates.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(15 * 60);
const IDLE: Duration = Duration::from_millis(250);
const RETRY: Duration = Duration::from_secs(1);

/// Runs the relay (as leader or standby) under supervision in `tasks`. A relay behind the
/// log that has not progressed for `stall_after` says so in the log.
pub fn spawn(
    tasks: &Arc<Tasks>,
    db_config: tokio_postgres::Config,
    nats_url: String,
    wake: Arc<Notify>,
    stall_after: Duration,
    limits: StreamLimits,
) {
    tasks.spawn("relay", move || {
        let (db_config, nats_url, wake) = (db_config.clone(), nats_url.clone(), wake.clone());
        async move {
            let mut watch = Watch::new(stall_after);
            loop {
                if let Err(error) = lead(&db_config, &nats_url, &wake, &mut watch, &limits).await {
                    tracing::warn!(error = %format!("{error:#}"), "relay interrupted; retrying");
                }
                tokio::time::sleep(RETRY).await;
            }
        }
    });
}

async fn lead(
    db_config: &tokio_postgres::Config,
    nats_url: &str,
    wake: &Notify,
    watch: &mut Watch,
    limits: &StreamLimits,
) -> anyhow::Result<()> {
    let client = crate::db::connect(db_config).await?;
    loop {
        let locked: bool = client.query_one("SELECT pg_try_advisory_lock($1)", &[&RELAY_LOCK]).await?.get(0);
        if locked {
            break;
        }
        tokio::time::sleep(RETRY).await;
    }
    tracing::info!("relay leader elected");
    // The watch runs beside the publishing, so a relay waiting on NATS is reported too.
    tokio::select! {
        result = publish(&client, nats_url, wake, limits) => result,
        result = watch.run(&client) => Err(result.into()),
    }
}

/// Publishes until the database session is lost.
async fn publish(client: &Client, nats_url: &str, wake: &Notify, limits: &StreamLimits) -> anyhow::Result<()> {
    let mut failures = Failures::default();
    loop {
        // NATS trouble keeps the leadership and retries from the checkpoint; losing the
        // database session ends it (the `?`s on `client`).
        let nats = match crate::link::connect(nats_url).await {
            Ok(nats) => nats,
            Err(error) => {
                tracing::warn!(%error, "relay cannot reach NATS; retrying");
                client.execute("SELECT 1", &[]).await?;
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        match publish_loop(client, &nats, wake, &mut failures, limits).await {
            Ok(()) => return Ok(()),
            Err(RelayError::Database(error)) => return Err(error.into()),
            Err(RelayError::Nats(error)) => {
                tracing::warn!(%error, "relay publish failed; retrying from the checkpoint");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("nats: {0}")]
    Nats(String),
}

impl From<crate::store::ReadError> for RelayError {
    fn from(error: crate::store::ReadError) -> Self {
        match error {
            crate::store::ReadError::Query(e) => Self::Database(e),
            crate::store::ReadError::Unavailable(e) => Self::Nats(e.to_string()),
        }
    }
}

fn nats_error(error: impl std::fmt::Display) -> RelayError {
    RelayError::Nats(error.to_string())
}

/// How much of the log the stream keeps: the oldest messages go first once any limit is
/// reached. An instance that had not read them yet catches up from the hub's event feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct StreamLimits {
    /// Seconds the NATS stream keeps an event (default 7 days).
    #[arg(
        long = "events-max-age-seconds",
        env = "HUB_EVENTS_MAX_AGE_SECONDS",
        value_name = "HUB_EVENTS_MAX_AGE_SECONDS",
        default_value = "604800",
        value_parser = shared::config::positive_seconds,
        global = true
    )]
    pub max_age: Duration,
    /// Bytes the NATS stream keeps (default 1 GiB). JetStream refuses a stream whose limit
    /// exceeds the server's file store (by default 75% of the disk free at its start), so
    /// the default stays modest; raise it with the server's `max_file_store`.
    #[arg(
        long = "events-max-bytes",
        env = "HUB_EVENTS_MAX_BYTES",
        value_name = "HUB_EVENTS_MAX_BYTES",
        default_value = "1073741824",
        value_parser = shared::config::positive_i64,
        global = true
    )]
    pub max_bytes: i64,
    /// Messages the NATS stream keeps (default unlimited).
    #[arg(
        long = "events-max-messages",
        env = "HUB_EVENTS_MAX_MESSAGES",
        value_name = "HUB_EVENTS_MAX_MESSAGES",
        value_parser = shared::config::positive_i64,
        global = true
    )]
    pub max_messages: Option<i64>,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self { max_age: Duration::from_secs(7 * 24 * 3600), max_bytes: 1 << 30, max_messages: None }
    }
}

impl StreamLimits {
    fn config(&self) -> stream::Config {
        stream::Config {
            name: STREAM.to_owned(),
            subjects: vec![relayed::SUBJECTS.to_owned()],
            storage: stream::StorageType::File,
            // The server refuses a duplicate window longer than the age limit.
            duplicate_window: DUPLICATE_WINDOW.min(self.max_age),
            max_age: self.max_age,
            max_bytes: self.max_bytes,
            max_messages: self.max_messages.unwrap_or(-1),
            ..Default::default()
        }
    }
}

/// Creates the stream, or brings an existing one's limits to the configured ones.
async fn ensure_stream(js: &jetstream::Context, limits: &StreamLimits) -> Result<(), RelayError> {
    let wanted = limits.config();
    match js.get_stream(STREAM).await {
        Ok(mut existing) => {
            let current = existing.info().await.map_err(nats_error)?.config.clone();
            let differs = current.max_age != wanted.max_age
                || current.max_bytes != wanted.max_bytes
                || current.max_messages != wanted.max_messages
                || current.duplicate_window != wanted.duplicate_window;
            if differs {
                let updated = stream::Config {
                    max_age: wanted.max_age,
                    max_bytes: wanted.max_bytes,
                    max_messages: wanted.max_messages,
                    duplicate_window: wanted.duplicate_window,
                    ..current
                };
                js.update_stream(updated).await.map_err(nats_error)?;
                tracing::info!(?limits, "stream limits updated");
            }
        }
        Err(_) => {
            js.get_or_create_stream(wanted).await.map_err(nats_error)?;
        }
    }
    Ok(())
}

/// Refusals of one publish in a row after which the event goes as a reference.
const REFERENCE_AFTER: u32 = 3;
/// Room left in a message for its headers (`Nats-Msg-Id`, `traceparent`).
const HEADER_ROOM: usize = 1024;

/// Consecutive refusals of the event the relay is stuck on. Only refusals of the message
/// count (an error answer, a size limit): a timeout or a lost connection is NATS being
/// away, which a reference would not get through either.
#[derive(Default)]
struct Failures {
    event_id: Option<Uuid>,
    count: u32,
}

impl Failures {
    fn record(&mut self, event_id: Uuid, error: &jetstream::context::PublishError) {
        use jetstream::context::PublishErrorKind as Kind;
        if matches!(error.kind(), Kind::TimedOut | Kind::BrokenPipe | Kind::StreamNotFound) {
            return;
        }
        if self.event_id == Some(event_id) {
            self.count += 1;
        } else {
            *self = Self { event_id: Some(event_id), count: 1 };
        }
    }

    fn as_reference(&self, event_id: Uuid) -> bool {
        self.event_id == Some(event_id) && self.count >= REFERENCE_AFTER
    }
}

/// The message for `event`: the event itself, or a reference to it when it would not fit
/// the server's `max_payload` or NATS kept refusing it. Same `Nats-Msg-Id` either way, so
/// the stream keeps exactly one of the two.
fn message(event: &RecordedEvent, max_payload: usize, as_reference: bool) -> Result<PublishMessage, RelayError> {
    let mut headers = HeaderMap::new();
    headers.insert(relayed::MSG_ID_HEADER, event.event_id.to_string().as_str());
    // Stored metadata is bounded at the store; older events are checked again here.
    let traceparent = event.metadata.get("traceparent").and_then(|v| v.as_str());
    if let Some(traceparent) = traceparent.filter(|t| shared::metadata::is_traceparent(t)) {
        headers.insert("traceparent", traceparent);
    }
    let mut payload = serde_json::to_vec(event).map_err(nats_error)?;
    if as_reference || payload.len().saturating_add(HEADER_ROOM) > max_payload {
        tracing::warn!(
            position = event.position,
            event_id = %event.event_id,
            bytes = payload.len(),
            max_payload,
            "event published as a reference for the instances to fetch from the hub"
        );
        payload = serde_json::to_vec(&Relayed::reference(event)).map_err(nats_error)?;
    }
    Ok(PublishMessage::build().payload(payload.into()).headers(headers))
}

/// The span of one event's publish: a child of the request that caused the event, when
/// its metadata says which.
fn publish_span(event: &RecordedEvent) -> tracing::Span {
    let span = tracing::debug_span!(
        "relay.publish",
        otel.kind = "producer",
        event_id = %event.event_id,
        event_type = %event.event_type,
        position = event.position,
    );
    shared::telemetry::set_parent(&span, event.metadata.get("traceparent").and_then(|v| v.as_str()));
    span
}

async fn publish_loop(
    client: &Client,
    nats: &async_nats::Client,
    wake: &Notify,
    failures: &mut Failures,
    limits: &StreamLimits,
) -> Result<(), RelayError> {
    let js = jetstream::new(nats.clone());
    ensure_stream(&js, limits).await?;
    let mut checkpoint: i64 = client.query_one("SELECT position FROM relay_checkpoint", &[]).await?.get(0);
    loop {
        let events = crate::store::read_page(client, checkpoint, PAGE).await?;
        if events.is_empty() {
            let _ = tokio::time::timeout(IDLE, wake.notified()).await;
            continue;
        }
        let instances = placements(client, &events).await?;
        let mut acks = Vec::with_capacity(events.len());
        let mut refused = None;
        for event in &events {
            let instance = workspace_id(event).and_then(|id| instances.get(&id)).and_then(Option::as_deref);
            let as_reference = failures.as_reference(event.event_id);
            let message = message(event, nats.max_payload(), as_reference)?;
            let span = publish_span(event);
            match js.send_publish(subject(event, instance), message).instrument(span.clone()).await {
                // The span lasts until the stream acks the event.
                Ok(ack) => acks.push((event, ack, span)),
                Err(error) => {
                    refused = Some((event, error));
                    break;
                }
            }
        }
        // The checkpoint advances over the acked prefix of the page; the first refusal
        // ends the round (later acks may be in flight: they are deduplicated on retry).
        let mut acked = None;
        for (event, ack, span) in acks {
            match std::future::IntoFuture::into_future(ack).instrument(span).await {
                Ok(_) => acked = Some(event.position),
                Err(error) => {
                    refused = Some((event, error));
                    break;
                }
            }
        }
        if let Some(position) = acked {
            client.execute("UPDATE relay_checkpoint SET position = $1, updated_at = now()", &[&position]).await?;
            checkpoint = position;
        }
        if let Some((event, error)) = refused {
            failures.record(event.event_id, &error);
            return Err(RelayError::Nats(format!("event at position {}: {error}", event.position)));
        }
    }
}

/// Watches the relay's progress, for the log.
struct Watch {
    stall_after: Duration,
    warned_at: Option<std::time::Instant>,
}

/// How often the watch looks, and how often a stalled relay repeats its warning.
const WATCH_EVERY: Duration = Duration::from_secs(1);
const WARN_EVERY: Duration = Duration::from_secs(10);

impl Watch {
    fn new(stall_after: Duration) -> Self {
        Self { stall_after, warned_at: None }
    }

    /// Warns (at most every 10 s) while the relay is behind and has not progressed for
    /// `stall_after`; returns only when the database session fails.
    async fn run(&mut self, client: &Client) -> tokio_postgres::Error {
        loop {
            tokio::time::sleep(WATCH_EVERY).await;
            let status = match status(client).await {
                Ok(status) => status,
                Err(error) => return error,
            };
            if !status.is_stalled(self.stall_after) {
                self.warned_at = None;
                continue;
            }
            if self.warned_at.is_some_and(|at| at.elapsed() < WARN_EVERY) {
                continue;
            }
            self.warned_at = Some(std::time::Instant::now());
            tracing::warn!(
                position = status.position,
                lag = status.lag,
                stalled_seconds = status.stalled_seconds,
                "relay is behind the event log and not progressing"
            );
        }
    }
}

fn workspace_id(event: &RecordedEvent) -> Option<Uuid> {
    Workspace::id_of_stream(&event.stream_id)
}

/// The instance each workspace of the page is placed on.
async fn placements(
    client: &Client,
    events: &[RecordedEvent],
) -> Result<std::collections::HashMap<Uuid, Option<String>>, RelayError> {
    let ids: Vec<Uuid> = events.iter().filter_map(workspace_id).collect();
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let rows = client.query("SELECT id, instance_id FROM workspaces WHERE id = ANY($1)", &[&ids]).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The relay's position and how far it trails the log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RelayStatus {
    /// The position of the last event published.
    pub position: i64,
    /// Events committed but not yet published.
    pub lag: i64,
    /// How long the relay has been behind without progressing (0 when caught up): since
    /// its last progress or the first unpublished event, whichever is later.
    pub stalled_seconds: f64,
}

impl RelayStatus {
    pub fn is_stalled(&self, after: Duration) -> bool {
        self.lag > 0 && self.stalled_seconds >= after.as_secs_f64()
    }
}

pub async fn status(client: &impl tokio_postgres::GenericClient) -> Result<RelayStatus, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT r.position, h.position - r.position, \
             CASE WHEN h.position > r.position \
                  THEN greatest(0, extract(epoch FROM now() - greatest(r.updated_at, e.recorded_at)))::float8 \
                  ELSE 0 END \
             FROM relay_checkpoint r CROSS JOIN event_log_head h LEFT JOIN events e ON e.position = r.position + 1",
            &[],
        )
        .await?;
    Ok(RelayStatus { position: row.get(0), lag: row.get(1), stalled_seconds: row.get(2) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(stream_id: &str) -> RecordedEvent {
        RecordedEvent {
            position: 1,
            stream_id: stream_id.into(),
            stream_version: 1,
            event_id: Uuid::nil(),
            event_type: "X".into(),
            schema_version: 1,
            data: serde_json::json!({}),
            metadata: serde_json::json!({}),
            recorded_at: chrono::DateTime::from_timestamp(0, 0).unwrap(),
            prev_hash: vec![0; 32],
            hash: vec![0; 32],
        }
    }

    fn payload(message: PublishMessage) -> (Relayed, HeaderMap) {
        let outbound = message.outbound_message("hub.events.x");
        (serde_json::from_slice(&outbound.payload).unwrap(), outbound.headers.unwrap_or_default())
    }

    #[test]
    fn an_event_over_the_servers_max_payload_goes_as_a_reference_with_the_same_message_id() {
        let mut big = event("workspace-1");
        big.event_id = Uuid::now_v7();
        big.data = serde_json::json!({"settings": "x".repeat(100_000)});
        let (relayed, headers) = payload(message(&big, 1024 * 1024, false).unwrap());
        assert!(matches!(relayed, Relayed::Event(_)), "it fits 1 MiB");
        assert_eq!(headers.get("Nats-Msg-Id").unwrap().as_str(), big.event_id.to_string());
        let (relayed, headers) = payload(message(&big, 64 * 1024, false).unwrap());
        match relayed {
            Relayed::Reference { event_reference } => assert!(event_reference.matches(&big)),
            other => panic!("expected a reference, got {other:?}"),
        }
        assert_eq!(headers.get("Nats-Msg-Id").unwrap().as_str(), big.event_id.to_string());
        let (relayed, _) = payload(message(&event("workspace-1"), 1024 * 1024, true).unwrap());
        assert!(matches!(relayed, Relayed::Reference { .. }), "a refused event goes as a reference");
    }

    #[test]
    fn only_a_valid_stored_traceparent_becomes_a_header() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut traced = event("org-1");
        traced.metadata = serde_json::json!({"traceparent": valid});
        assert_eq!(payload(message(&traced, 1 << 20, false).unwrap()).1.get("traceparent").unwrap().as_str(), valid);
        traced.metadata = serde_json::json!({"traceparent": "\"".repeat(1000)});
        assert!(payload(message(&traced, 1 << 20, false).unwrap()).1.get("traceparent").is_none());
    }

    #[test]
    fn an_event_refused_three_times_in_a_row_goes_as_a_reference_but_timeouts_do_not_count() {
        use jetstream::context::{PublishError, PublishErrorKind};
        let (stuck, other) = (Uuid::now_v7(), Uuid::now_v7());
        let mut failures = Failures::default();
        for _ in 0..5 {
            failures.record(stuck, &PublishError::new(PublishErrorKind::TimedOut));
        }
        assert!(!failures.as_reference(stuck), "NATS being away is not the event's fault");
        failures.record(stuck, &PublishError::new(PublishErrorKind::Other));
        failures.record(stuck, &PublishError::new(PublishErrorKind::Other));
        assert!(!failures.as_reference(stuck));
        failures.record(stuck, &PublishError::new(PublishErrorKind::Other));
        assert!(failures.as_reference(stuck));
        assert!(!failures.as_reference(other));
        failures.record(other, &PublishError::new(PublishErrorKind::Other));
        assert!(!failures.as_reference(stuck), "a refusal of another event starts a new count");
    }

    #[test]
    fn a_relay_is_stalled_only_when_behind_for_the_whole_window() {
        let status = |lag, stalled_seconds| RelayStatus { position: 5, lag, stalled_seconds };
        let window = Duration::from_secs(60);
        assert!(status(3, 61.0).is_stalled(window));
        assert!(!status(3, 59.0).is_stalled(window));
        assert!(!status(0, 0.0).is_stalled(window));
    }
}
