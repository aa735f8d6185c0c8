//! The durable JetStream consumer of this instance's subjects.
//!
//! Messages are acked only once applied (with their checkpoint). A redelivered message is a
//! no-op; a message ahead of its workspace's checkpoint (one was lost, or a redelivery
//! overtook it) makes the instance fetch the missing events from the hub first. A message
//! may carry a reference instead of the event (the relay sends one for an event NATS
//! refused, e.g. over the server's `max_payload`): the event is fetched from the hub's
//! feed before it is applied, in its place in the batch.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::{FutureExt, StreamExt};
use shared::RecordedEvent;
use shared::relayed::{EventReference, Relayed};
use tokio_postgres::Client;

use crate::apply::Applied;
use crate::feed::HubFeed;
use crate::keyring::apply_batch;

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
    let nats = crate::link::connect(nats_url, instance_id).await?;
    let js = jetstream::new(nats);
    let consumer = durable_consumer(&js, instance_id, feed).await?;
    let mut messages = consumer.messages().await?;
    while let Some(first) = messages.next().await {
        // Whatever else is already here joins this batch: one commit for all of them.
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match messages.next().now_or_never() {
                Some(Some(message)) => batch.push(message),
                _ => break,
            }
        }
        let mut ready = Vec::with_capacity(batch.len());
        let mut events = Vec::with_capacity(batch.len());
        for message in batch {
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    // Heartbeats missed while the server is away are transient.
                    tracing::debug!(%error, "consumer stream error");
                    continue;
                }
            };
            match serde_json::from_slice::<Relayed>(&message.payload) {
                Ok(Relayed::Event(event)) => events.push(*event),
                Ok(Relayed::Reference { event_reference }) => events.push(resolve(feed, &event_reference).await?),
                Err(error) => tracing::error!(%error, subject = %message.subject, "unreadable message; skipped"),
            }
            ready.push(message);
        }
        apply_with_gaps(client, feed, &events).await?;
        // Acked only once committed; the acks of a batch go out together.
        let acks = futures::future::join_all(ready.iter().map(|m| m.ack())).await;
        if let Some(error) = acks.into_iter().find_map(Result::err) {
            anyhow::bail!("ack failed: {error}");
        }
    }
    Ok(())
}

/// The durable consumer of `instance_id` (created by the hubs, see `hub::link`).
pub fn config(instance_id: &str) -> consumer::pull::Config {
    let name = shared::link::consumer_name(instance_id);
    consumer::pull::Config {
        durable_name: Some(name),
        filter_subject: shared::link::consumer_filter(instance_id),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 1000,
        ..Default::default()
    }
}

/// This instance's consumer. Its NATS user may read it but not define it: when it does not
/// exist yet, a hub creates it; a NATS server without permissions lets the instance do that
/// itself when no hub answers.
async fn durable_consumer(
    js: &jetstream::Context,
    instance_id: &str,
    feed: &HubFeed,
) -> anyhow::Result<consumer::PullConsumer> {
    let name = shared::link::consumer_name(instance_id);
    if let Ok(consumer) = js.get_consumer_from_stream(&name, STREAM).await {
        return Ok(consumer);
    }
    if let Some(link) = feed.link() {
        match link.ensure_consumer().await {
            Ok(()) => return Ok(js.get_consumer_from_stream(&name, STREAM).await?),
            Err(error) => tracing::debug!(%error, "no hub created the consumer"),
        }
    }
    Ok(js.get_stream(STREAM).await?.get_or_create_consumer(&name, config(instance_id)).await?)
}

/// The event a reference names, from the hub's feed.
pub async fn resolve(feed: &HubFeed, reference: &EventReference) -> anyhow::Result<RecordedEvent> {
    match feed.next_event(reference.position - 1, &reference.stream_id).await? {
        Some(event) if reference.matches(&event) => Ok(event),
        _ => anyhow::bail!(
            "the hub's feed has no event {} at position {} of {}",
            reference.event_id,
            reference.position,
            reference.stream_id
        ),
    }
}

/// Most messages applied in one transaction.
const BATCH: usize = 256;

/// Applies events in order, first fetching from the hub whatever a workspace is missing.
pub async fn apply_with_gaps(client: &mut Client, feed: &HubFeed, events: &[RecordedEvent]) -> anyhow::Result<()> {
    let mut rest = events;
    while !rest.is_empty() {
        let (handled, outcome) = apply_batch(client, feed, rest).await?;
        rest = &rest[handled..];
        if let Some(Applied::Gap { position }) = outcome {
            let event = &rest[0];
            tracing::info!(stream = %event.stream_id, after = position, "gap detected; fetching from the hub");
            let missing = feed.page(position, Some(&event.stream_id)).await?;
            let earlier: Vec<RecordedEvent> = missing.into_iter().take_while(|e| e.position < event.position).collect();
            if earlier.is_empty() {
                anyhow::bail!("the hub has no events of {} after {position}", event.stream_id);
            }
            apply_batch(client, feed, &earlier).await?;
        }
    }
    Ok(())
}
