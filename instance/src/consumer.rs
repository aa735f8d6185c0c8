//! The durable JetStream consumer of this instance's subjects.
//!
//! Messages are acked only once applied (with their checkpoint). A redelivered message is a
//! no-op; a message ahead of its workspace's checkpoint (one was lost, or a redelivery
//! overtook it) makes the instance fetch the missing events from the hub first.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use shared::RecordedEvent;
use tokio_postgres::Client;

use crate::apply::{Applied, apply};
use crate::feed::HubFeed;

pub const STREAM: &str = "HUB_EVENTS";

/// Consumes until the process ends, reconnecting after failures.
pub async fn run(nats_url: String, instance_id: String, mut client: Client, feed: HubFeed) {
    loop {
        if let Err(error) = consume(&nats_url, &instance_id, &mut client, &feed).await {
            tracing::warn!(error = %format!("{error:#}"), "consumer interrupted; retrying");
            if client.is_closed() {
                // The database is gone: the process supervisor restarts us with a new connection.
                tracing::error!("instance database connection lost");
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn consume(nats_url: &str, instance_id: &str, client: &mut Client, feed: &HubFeed) -> anyhow::Result<()> {
    let nats = async_nats::connect(nats_url).await?;
    let js = jetstream::new(nats);
    let stream = js.get_stream(STREAM).await?;
    let name = format!("instance-{instance_id}");
    let consumer = stream
        .get_or_create_consumer(
            &name,
            consumer::pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: format!("hub.events.{instance_id}.>"),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 1000,
                ..Default::default()
            },
        )
        .await?;
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                // Heartbeats missed while the server is away are transient.
                tracing::debug!(%error, "consumer stream error");
                continue;
            }
        };
        let event: RecordedEvent = match serde_json::from_slice(&message.payload) {
            Ok(event) => event,
            Err(error) => {
                tracing::error!(%error, subject = %message.subject, "unreadable message; skipped");
                message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
                continue;
            }
        };
        apply_with_gaps(client, feed, &event).await?;
        message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(())
}

/// Applies an event, first fetching from the hub whatever its workspace is missing.
pub async fn apply_with_gaps(client: &mut Client, feed: &HubFeed, event: &RecordedEvent) -> anyhow::Result<()> {
    loop {
        match apply(client, event).await? {
            Applied::Gap { position } => {
                tracing::info!(stream = %event.stream_id, after = position, "gap detected; fetching from the hub");
                let missing = feed.page(position, Some(&event.stream_id)).await?;
                if missing.is_empty() {
                    anyhow::bail!("the hub has no events of {} after {position}", event.stream_id);
                }
                for earlier in missing.iter().take_while(|e| e.position < event.position) {
                    apply(client, earlier).await?;
                }
            }
            _ => return Ok(()),
        }
    }
}
