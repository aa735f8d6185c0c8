//! The workspaces' data keys in the instance's own database.
//!
//! When a batch holds a workspace's creation or a secret rotation and the instance has no
//! key for that workspace yet, the key (sealed by the master key, as the hub keeps it) is
//! fetched from a hub before the batch is applied and stored in the batch's transaction:
//! a workspace is never served without its key, and a token check never asks a hub. The
//! deletion of a workspace erases its key in the transaction that applies it.

use std::collections::HashSet;

use anyhow::Context;
use futures::StreamExt;
use shared::RecordedEvent;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::apply::{Applied, DataKeys, Hashes, apply_batch_with_keys, workspace_id};
use crate::feed::HubFeed;

/// The events after which an instance needs the workspace's data key.
pub(crate) fn needs_key(event: &RecordedEvent) -> bool {
    matches!(event.event_type.as_str(), "WorkspaceCreated" | "WorkspaceSecretIssued")
}

/// Requests for data keys sent to the hubs at once, each for up to
/// [`shared::link::MAX_DATA_KEYS`] workspaces.
const FETCHES: usize = 4;

/// Applies `events` like [`crate::apply::apply_batch`], first fetching the data keys the
/// batch's new workspaces need. A workspace the batch also deletes needs none: its key
/// would be erased in the same transaction.
pub async fn apply_batch(
    client: &mut Client,
    feed: &HubFeed,
    events: &[RecordedEvent],
) -> anyhow::Result<(usize, Option<Applied>)> {
    apply_batch_fetching(client, events, Hashes::Check, |ids| fetch_keys(feed, ids)).await
}

/// [`apply_batch`], the keys the batch needs and the instance lacks asked of `fetch`, all
/// in one call (a rebuild hands over keys it asked for while reading ahead, and checks the
/// events' hashes as it reads them).
pub async fn apply_batch_fetching<F, Fut>(
    client: &mut Client,
    events: &[RecordedEvent],
    hashes: Hashes,
    fetch: F,
) -> anyhow::Result<(usize, Option<Applied>)>
where
    F: FnOnce(Vec<Uuid>) -> Fut,
    Fut: Future<Output = anyhow::Result<DataKeys>>,
{
    let deleted: HashSet<Uuid> =
        events.iter().filter(|e| e.event_type == "WorkspaceDeleted").filter_map(workspace_id).collect();
    let mut wanted: Vec<Uuid> =
        events.iter().filter(|e| needs_key(e)).filter_map(workspace_id).filter(|id| !deleted.contains(id)).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut keys = DataKeys::new();
    if !wanted.is_empty() {
        let held = client.query("SELECT workspace_id FROM data_keys WHERE workspace_id = ANY($1)", &[&wanted]).await?;
        let held: HashSet<Uuid> = held.iter().map(|r| r.get("workspace_id")).collect();
        let missing: Vec<Uuid> = wanted.into_iter().filter(|id| !held.contains(id)).collect();
        if !missing.is_empty() {
            let mut fetched = fetch(missing.clone()).await?;
            // A key the fetch did not give is one the hubs hold for no workspace of ours.
            keys.extend(missing.into_iter().map(|id| (id, fetched.remove(&id).flatten())));
        }
    }
    Ok(apply_batch_with_keys(client, events, &keys, hashes).await?)
}

/// The sealed data keys of `ids` from the hubs, in requests of up to
/// [`shared::link::MAX_DATA_KEYS`] workspaces ([`FETCHES`] at once). Each id has an entry:
/// `None` for a key destroyed, or one the hubs do not give (over NATS: a workspace placed
/// on another instance; over HTTP: one the hub has no key of), applied without a key: its
/// tokens are refused.
pub async fn fetch_keys(feed: &HubFeed, ids: Vec<Uuid>) -> anyhow::Result<DataKeys> {
    let chunks: Vec<Vec<Uuid>> = ids.chunks(shared::link::MAX_DATA_KEYS).map(<[Uuid]>::to_vec).collect();
    let mut requests = futures::stream::iter(chunks).map(|chunk| fetch_chunk(feed, chunk)).buffer_unordered(FETCHES);
    let mut keys = DataKeys::with_capacity(ids.len());
    while let Some(fetched) = requests.next().await {
        keys.extend(fetched?);
    }
    Ok(keys)
}

/// One request of [`fetch_keys`].
async fn fetch_chunk(feed: &HubFeed, ids: Vec<Uuid>) -> anyhow::Result<DataKeys> {
    let items = feed.sealed_data_keys(&ids).await?;
    let mut keys = DataKeys::with_capacity(ids.len());
    for item in items {
        let sealed = item.sealed_data_key.map(hex::decode).transpose().context("a data key that is not hex")?;
        keys.insert(item.workspace_id, sealed);
    }
    for id in ids {
        keys.entry(id).or_insert_with(|| {
            tracing::warn!(workspace = %id, "the hubs gave no data key of this workspace for this instance");
            None
        });
    }
    Ok(keys)
}

/// A workspace's sealed data key, from the instance's own database.
pub async fn sealed_data_key(client: &Client, workspace_id: Uuid) -> Result<Option<Vec<u8>>, tokio_postgres::Error> {
    let row =
        client.query_opt("SELECT sealed_data_key FROM data_keys WHERE workspace_id = $1", &[&workspace_id]).await?;
    Ok(row.map(|r| r.get("sealed_data_key")))
}

/// How long to wait before asking again for keys no hub gave.
const BACKFILL_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// Fetches, until it has them all, the keys of served workspaces that have none (applied
/// before this instance kept keys), so their tokens verify without a hub.
pub async fn backfill(mut client: Client, feed: HubFeed) {
    loop {
        match backfill_once(&mut client, &feed).await {
            Ok(0) => return,
            Ok(stored) => tracing::info!(stored, "data keys fetched for workspaces applied earlier"),
            Err(error) => tracing::warn!(error = %format!("{error:#}"), "data keys not fetched yet; retrying"),
        }
        if client.is_closed() {
            return;
        }
        tokio::time::sleep(BACKFILL_RETRY).await;
    }
}

/// One pass: how many keys it stored.
async fn backfill_once(client: &mut Client, feed: &HubFeed) -> anyhow::Result<usize> {
    let rows = client
        .query(
            "SELECT w.id FROM workspaces w WHERE w.state IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM data_keys k WHERE k.workspace_id = w.id)",
            &[],
        )
        .await?;
    let mut stored = 0;
    for row in rows {
        let id: Uuid = row.get("id");
        let Some(sealed) = feed.sealed_data_key(id).await? else { continue };
        // Kept only if the workspace still lives: the row lock waits for a deletion being
        // applied, which erases keys in its own transaction.
        let tx = client.transaction().await?;
        let live = tx
            .query_opt("SELECT 1 FROM workspaces WHERE id = $1 AND state IS NOT NULL FOR SHARE", &[&id])
            .await?
            .is_some();
        if live {
            stored += tx
                .execute(
                    "INSERT INTO data_keys (workspace_id, sealed_data_key) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&id, &sealed],
                )
                .await? as usize;
        }
        tx.commit().await?;
    }
    Ok(stored)
}
