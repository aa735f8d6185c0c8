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
use deadpool_postgres::Pool;
use futures::{FutureExt, StreamExt};
use shared::RecordedEvent;
use shared::relayed::{EventReference, Relayed, STREAM};
use tokio_postgres::Client;

use crate::apply::Applied;
use crate::feed::HubFeed;
use crate::keyring::apply_batch;

/// Longest pause between two attempts at a batch while the database is away.
const DATABASE_RETRY: Duration = Duration::from_secs(2);

/// Consumes until something fails (the caller supervises and restarts it): the
/// database connection comes from the pool afresh on each run, and NATS reconnects by
/// itself.
pub async fn run(nats: async_nats::Client, instance_id: String, pool: Pool, feed: HubFeed) -> anyhow::Result<()> {
    consume(&nats, &instance_id, &pool, &feed).await
}

async fn consume(nats: &async_nats::Client, instance_id: &str, pool: &Pool, feed: &HubFeed) -> anyhow::Result<()> {
    let mut client = pool.get().await?;
    let js = jetstream::new(nats.clone());
    let mut consumer = durable_consumer(&js, instance_id, feed).await?;
    // Messages this consumer never acked were discarded by the stream's limits: what they
    // held comes from the hub's feed instead (anything also still in the stream is then a
    // harmless redelivery).
    let first = js.get_stream(STREAM).await?.info().await?.state.first_sequence;
    let acked = consumer.info().await?.ack_floor.stream_sequence;
    if first > acked + 1 {
        tracing::warn!(
            first,
            acked,
            "the stream discarded messages this instance never read; catching up from the hub"
        );
        catch_up(&mut client, feed, instance_id).await?;
    }
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
        // A lost database connection keeps the batch in hand (a message handed back now
        // could go to this run's abandoned pull request and wait out the ack wait) and is
        // retried on a fresh connection once the database is back.
        loop {
            match apply_with_gaps(&mut client, feed, &events).await {
                Ok(()) => break,
                Err(error) if client.is_closed() => {
                    tracing::warn!(error = %format!("{error:#}"), "instance database lost; retrying the batch");
                    client = loop {
                        tokio::time::sleep(DATABASE_RETRY).await;
                        match pool.get().await {
                            Ok(client) => break client,
                            Err(error) => tracing::debug!(%error, "instance database still unreachable"),
                        }
                    };
                }
                Err(error) => {
                    let nak = jetstream::AckKind::Nak(None);
                    futures::future::join_all(ready.iter().map(|m| m.ack_with(nak))).await;
                    return Err(error);
                }
            }
        }
        // Acked only once committed; the acks of a batch go out together.
        let acks = futures::future::join_all(ready.iter().map(|m| m.ack())).await;
        if let Some(error) = acks.into_iter().find_map(Result::err) {
            anyhow::bail!("ack failed: {error}");
        }
    }
    anyhow::bail!("the consumer's message stream ended")
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

/// Applies from the hub's feed every event of this instance's workspaces after its applied
/// position (a workspace is this instance's once its creation names it).
async fn catch_up(client: &mut Client, feed: &HubFeed, instance_id: &str) -> anyhow::Result<()> {
    let mut after: i64 =
        client.query_one("SELECT applied_position FROM instance_state", &[]).await?.get("applied_position");
    let mut owned: std::collections::HashSet<uuid::Uuid> =
        client.query("SELECT id FROM workspaces", &[]).await?.iter().map(|row| row.get("id")).collect();
    loop {
        let page = feed.page(after, None).await?;
        let Some(last) = page.last().map(|e| e.position) else { return Ok(()) };
        let mut mine = Vec::new();
        for event in page {
            let Some(id) = crate::apply::workspace_id(&event) else { continue };
            if event.event_type == "WorkspaceCreated"
                && event.data.get("instance_id").and_then(|v| v.as_str()) == Some(instance_id)
            {
                owned.insert(id);
            }
            if owned.contains(&id) {
                mine.push(event);
            }
        }
        apply_with_gaps(client, feed, &mine).await?;
        after = last;
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
