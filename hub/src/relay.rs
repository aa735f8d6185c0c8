//! The relay: publishes the event log to the JetStream stream `HUB_EVENTS`, in position
//! order, at least once.
//!
//! Exactly one relay runs across all hub processes: the one whose dedicated database
//! session holds the relay advisory lock (a crashed leader's session ends, and a standby
//! takes over within a second). The leader reads the log after its checkpoint, publishes a
//! page with every ack in flight (`Nats-Msg-Id` = event id, so a retried publish is
//! deduplicated by the stream), awaits the acks in order, then advances the checkpoint.
//! A commit in this process wakes it at once; a timer covers other hubs' commits.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage, stream};
use deadpool_postgres::tokio_postgres;
use shared::RecordedEvent;
use tokio::sync::Notify;
use tokio_postgres::Client;
use uuid::Uuid;

/// Key of the session advisory lock that elects the relay leader (an arbitrary number).
const RELAY_LOCK: i64 = 0x6875_625f_7265_6c61;
pub const STREAM: &str = "HUB_EVENTS";
/// Events published per round, all acks in flight.
const PAGE: i64 = 256;
/// Publishes retried within this window are deduplicated by the stream; it must exceed
/// the longest NATS outage the relay should absorb without duplicates.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(15 * 60);
const IDLE: Duration = Duration::from_millis(250);
const RETRY: Duration = Duration::from_secs(1);

/// The subject of an event: `hub.events.<instance_id>.<workspace_id>` for a workspace
/// placed on an instance, `hub.events.hub.<stream_id>` for everything else.
pub fn subject(event: &RecordedEvent, instance: Option<&str>) -> String {
    match (event.stream_id.strip_prefix("workspace-"), instance) {
        (Some(workspace), Some(instance)) => format!("hub.events.{instance}.{workspace}"),
        _ => format!("hub.events.hub.{}", event.stream_id),
    }
}

/// Runs the relay (as leader or standby) until the process ends.
pub fn spawn(db_config: tokio_postgres::Config, nats_url: String, wake: Arc<Notify>) {
    tokio::spawn(async move {
        loop {
            if let Err(error) = lead(&db_config, &nats_url, &wake).await {
                tracing::warn!(error = %format!("{error:#}"), "relay interrupted; retrying");
            }
            tokio::time::sleep(RETRY).await;
        }
    });
}

async fn lead(db_config: &tokio_postgres::Config, nats_url: &str, wake: &Notify) -> anyhow::Result<()> {
    let client = crate::db::connect(db_config).await?;
    loop {
        let locked: bool = client.query_one("SELECT pg_try_advisory_lock($1)", &[&RELAY_LOCK]).await?.get(0);
        if locked {
            break;
        }
        tokio::time::sleep(RETRY).await;
    }
    tracing::info!("relay leader elected");
    loop {
        // NATS trouble keeps the leadership and retries from the checkpoint; losing the
        // database session ends it (the `?`s on `client`).
        let nats = match async_nats::connect(nats_url).await {
            Ok(nats) => nats,
            Err(error) => {
                tracing::warn!(%error, "relay cannot reach NATS; retrying");
                client.execute("SELECT 1", &[]).await?;
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let js = jetstream::new(nats);
        match publish_loop(&client, &js, wake).await {
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

async fn ensure_stream(js: &jetstream::Context) -> Result<(), RelayError> {
    js.get_or_create_stream(stream::Config {
        name: STREAM.to_owned(),
        subjects: vec!["hub.events.>".to_owned()],
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    })
    .await
    .map_err(nats_error)?;
    Ok(())
}

async fn publish_loop(client: &Client, js: &jetstream::Context, wake: &Notify) -> Result<(), RelayError> {
    ensure_stream(js).await?;
    let mut checkpoint: i64 = client.query_one("SELECT position FROM relay_checkpoint", &[]).await?.get(0);
    loop {
        let events = crate::store::read_page(client, checkpoint, PAGE).await?;
        let Some(last) = events.last().map(|e| e.position) else {
            let _ = tokio::time::timeout(IDLE, wake.notified()).await;
            continue;
        };
        let instances = placements(client, &events).await?;
        let mut acks = Vec::with_capacity(events.len());
        for event in &events {
            let instance = workspace_id(event).and_then(|id| instances.get(&id)).and_then(Option::as_deref);
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", event.event_id.to_string().as_str());
            if let Some(traceparent) = event.metadata.get("traceparent").and_then(|v| v.as_str()) {
                headers.insert("traceparent", traceparent);
            }
            let payload = serde_json::to_vec(event).map_err(nats_error)?;
            let message = PublishMessage::build().payload(payload.into()).headers(headers);
            acks.push(js.send_publish(subject(event, instance), message).await.map_err(nats_error)?);
        }
        for ack in acks {
            ack.await.map_err(nats_error)?;
        }
        client.execute("UPDATE relay_checkpoint SET position = $1, updated_at = now()", &[&last]).await?;
        checkpoint = last;
    }
}

fn workspace_id(event: &RecordedEvent) -> Option<Uuid> {
    event.stream_id.strip_prefix("workspace-").and_then(|id| id.parse().ok())
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
pub async fn lag(client: &impl tokio_postgres::GenericClient) -> Result<(i64, i64), tokio_postgres::Error> {
    let row = client
        .query_one("SELECT r.position, h.position - r.position FROM relay_checkpoint r, event_log_head h", &[])
        .await?;
    Ok((row.get(0), row.get(1)))
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

    #[test]
    fn workspace_events_go_to_their_instance_and_the_rest_to_the_hub() {
        let ws = "workspace-0190b5c4-0000-7000-8000-000000000001";
        assert_eq!(subject(&event(ws), Some("alpha")), "hub.events.alpha.0190b5c4-0000-7000-8000-000000000001");
        assert_eq!(subject(&event(ws), None), format!("hub.events.hub.{ws}"));
        assert_eq!(subject(&event("org-1"), Some("alpha")), "hub.events.hub.org-1");
    }
}
