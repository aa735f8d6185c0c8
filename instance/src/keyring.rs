//! The workspaces' data keys in the instance's own database.
//!
//! When a batch holds a workspace's creation or a secret rotation and the instance has no
//! key for that workspace yet, the key (sealed by the master key, as the hub keeps it) is
//! fetched from a hub before the batch is applied and stored in the batch's transaction:
//! a workspace is never served without its key, and a token check never asks a hub. The
//! deletion of a workspace erases its key in the transaction that applies it.

use shared::RecordedEvent;
use shared::link::LinkError;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::apply::{Applied, DataKeys, apply_batch_with_keys, workspace_id};
use crate::feed::HubFeed;

/// The events after which an instance needs the workspace's data key.
fn needs_key(event: &RecordedEvent) -> bool {
    matches!(event.event_type.as_str(), "WorkspaceCreated" | "WorkspaceSecretIssued")
}

/// Applies `events` like [`crate::apply::apply_batch`], first fetching the data keys the
/// batch's new workspaces need.
pub async fn apply_batch(
    client: &mut Client,
    feed: &HubFeed,
    events: &[RecordedEvent],
) -> anyhow::Result<(usize, Option<Applied>)> {
    let mut wanted: Vec<Uuid> = events.iter().filter(|e| needs_key(e)).filter_map(workspace_id).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut keys = DataKeys::new();
    if !wanted.is_empty() {
        let held = client.query("SELECT workspace_id FROM data_keys WHERE workspace_id = ANY($1)", &[&wanted]).await?;
        let held: Vec<Uuid> = held.iter().map(|r| r.get(0)).collect();
        for id in wanted.into_iter().filter(|id| !held.contains(id)) {
            let sealed = match feed.sealed_data_key(id).await {
                Ok(sealed) => sealed,
                // Not this instance's to hold: applied without a key (its tokens are refused).
                Err(error) if error.downcast_ref::<LinkError>().is_some_and(|e| e.code == "not_placed_here") => {
                    tracing::warn!(workspace = %id, "the hubs hold this workspace's key for another instance");
                    None
                }
                Err(error) => return Err(error),
            };
            keys.insert(id, sealed);
        }
    }
    Ok(apply_batch_with_keys(client, events, &keys).await?)
}

/// A workspace's sealed data key, from the instance's own database.
pub async fn sealed_data_key(client: &Client, workspace_id: Uuid) -> Result<Option<Vec<u8>>, tokio_postgres::Error> {
    let row =
        client.query_opt("SELECT sealed_data_key FROM data_keys WHERE workspace_id = $1", &[&workspace_id]).await?;
    Ok(row.map(|r| r.get(0)))
}
