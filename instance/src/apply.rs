//! Applying one event to the materialized state, with its checkpoint, in one transaction.

use shared::RecordedEvent;
use shared::domain::Aggregate;
use shared::domain::workspace::Workspace;
use shared::events::WorkspaceEvent;
use tokio_postgres::Client;
use uuid::Uuid;

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Applied,
    /// Already applied (a redelivery): nothing changed.
    Duplicate,
    /// Earlier events of the workspace are missing: fetch them after `position` first.
    Gap {
        position: i64,
    },
    /// Not a workspace event of this instance's.
    Ignored,
}

pub fn workspace_id(event: &RecordedEvent) -> Option<Uuid> {
    event.stream_id.strip_prefix("workspace-").and_then(|id| id.parse().ok())
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("event at position {0} fails its hash check")]
    Tampered(i64),
    #[error(transparent)]
    Decode(#[from] shared::DecodeError),
    #[error("stored state is unreadable: {0}")]
    State(#[from] serde_json::Error),
}

/// Applies one event in its own transaction.
pub async fn apply(client: &mut Client, event: &RecordedEvent) -> Result<Applied, ApplyError> {
    let (_, outcome) = apply_batch(client, std::slice::from_ref(event)).await?;
    Ok(outcome.unwrap_or(Applied::Ignored))
}

/// Applies events in order in one transaction (one commit for the lot), each with its
/// checkpoint. Stops at the first gap: returns how many events were handled before it
/// (they are committed) and the outcome of the last event looked at.
pub async fn apply_batch(
    client: &mut Client,
    events: &[RecordedEvent],
) -> Result<(usize, Option<Applied>), ApplyError> {
    let tx = client.transaction().await?;
    let mut handled = 0;
    let mut last = None;
    for event in events {
        let outcome = apply_in(&tx, event).await?;
        last = Some(outcome);
        if let Applied::Gap { .. } = outcome {
            break;
        }
        handled += 1;
    }
    tx.commit().await?;
    Ok((handled, last))
}

async fn apply_in(tx: &tokio_postgres::Transaction<'_>, event: &RecordedEvent) -> Result<Applied, ApplyError> {
    let Some(id) = workspace_id(event) else { return Ok(Applied::Ignored) };
    if !event.hash_is_valid() {
        return Err(ApplyError::Tampered(event.position));
    }
    let row =
        tx.query_opt("SELECT stream_version, position, state FROM workspaces WHERE id = $1 FOR UPDATE", &[&id]).await?;
    let (version, position, state): (i64, i64, Option<serde_json::Value>) =
        row.map_or((0, 0, None), |r| (r.get(0), r.get(1), r.get(2)));
    if event.stream_version <= version {
        return Ok(Applied::Duplicate);
    }
    if event.stream_version > version + 1 {
        return Ok(Applied::Gap { position });
    }
    let mut workspace: Workspace = match state {
        Some(state) => serde_json::from_value(state)?,
        None => Workspace::default(),
    };
    let decoded: WorkspaceEvent = event.decode()?;
    workspace.apply(&decoded);
    // A deleted workspace's state, secrets included, is dropped; its checkpoint stays.
    let state = if workspace.deleted { None } else { Some(serde_json::to_value(&workspace)?) };
    tx.execute(
        "INSERT INTO workspaces (id, stream_version, position, event_hash, state, updated_at) \
         VALUES ($1, $2, $3, $4, $5, clock_timestamp()) ON CONFLICT (id) DO UPDATE SET stream_version = $2, \
         position = $3, event_hash = $4, state = $5, updated_at = clock_timestamp()",
        &[&id, &event.stream_version, &event.position, &event.hash, &state],
    )
    .await?;
    tx.execute("UPDATE instance_state SET applied_position = GREATEST(applied_position, $1)", &[&event.position])
        .await?;
    Ok(Applied::Applied)
}

/// A digest of the whole materialized state: equal digests, equal states.
pub async fn digest(client: &Client) -> Result<String, tokio_postgres::Error> {
    use sha2::{Digest, Sha256};
    let rows = client.query("SELECT id, stream_version, state::text FROM workspaces ORDER BY id", &[]).await?;
    let mut hasher = Sha256::new();
    for row in rows {
        let (id, version, state): (Uuid, i64, Option<String>) = (row.get(0), row.get(1), row.get(2));
        hasher.update(format!("{id}|{version}|{}\n", state.unwrap_or_default()));
    }
    Ok(hex::encode(hasher.finalize()))
}
