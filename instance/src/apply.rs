//! Applying one event to the materialized state, with its checkpoint, in one transaction.

use shared::RecordedEvent;
use shared::domain::Aggregate;
use shared::domain::workspace::Workspace;
use shared::events::WorkspaceEvent;
use std::collections::HashMap;
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
    Workspace::id_of_stream(&event.stream_id)
}

/// Whether an apply checks each workspace event's hash, or the caller already did (a
/// rebuild checks them with [`check_hashes`] while it reads, on other cores).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hashes {
    Check,
    Checked,
}

/// Checks the hash of every workspace event of `events`: the first that fails is named.
pub fn check_hashes(events: &[RecordedEvent]) -> Result<(), ApplyError> {
    match events.iter().find(|e| workspace_id(e).is_some() && !e.hash_is_valid()) {
        Some(tampered) => Err(ApplyError::Tampered(tampered.position)),
        None => Ok(()),
    }
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

/// Applies events in order in one transaction (one commit for the lot), each checked
/// against its workspace's checkpoint. Each workspace of the batch is loaded once, folded
/// in memory and written once. Stops at the first gap: returns how many events were
/// handled before it (they are committed) and the outcome of the last event looked at.
pub async fn apply_batch(
    client: &mut Client,
    events: &[RecordedEvent],
) -> Result<(usize, Option<Applied>), ApplyError> {
    apply_batch_with_keys(client, events, &DataKeys::new(), Hashes::Check).await
}

/// Sealed data keys to keep with a batch: `None` for a key the hub already destroyed.
pub type DataKeys = HashMap<Uuid, Option<Vec<u8>>>;

/// [`apply_batch`], also keeping `keys` (fetched for the batch's new workspaces) in the
/// same transaction, and erasing the key of every workspace the batch deletes.
pub async fn apply_batch_with_keys(
    client: &mut Client,
    events: &[RecordedEvent],
    keys: &DataKeys,
    hashes: Hashes,
) -> Result<(usize, Option<Applied>), ApplyError> {
    struct Entry {
        version: i64,
        position: i64,
        hash: Vec<u8>,
        state: Workspace,
        /// The state as loaded, to write only the interaction keys that changed.
        before: Workspace,
        dirty: bool,
    }
    let tx = client.transaction().await?;
    let mut ids: Vec<Uuid> = events.iter().filter_map(workspace_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let rows = tx
        .query(
            "SELECT id, stream_version, position, event_hash, state FROM workspaces WHERE id = ANY($1) ORDER BY id \
             FOR UPDATE",
            &[&ids],
        )
        .await?;
    let mut entries: HashMap<Uuid, Entry> = HashMap::with_capacity(ids.len());
    for row in rows {
        let state: Option<serde_json::Value> = row.get("state");
        let state = match state {
            Some(state) => serde_json::from_value(state)?,
            None => Workspace { deleted: true, ..Workspace::default() },
        };
        entries.insert(
            row.get("id"),
            Entry {
                version: row.get("stream_version"),
                position: row.get("position"),
                hash: row.get("event_hash"),
                before: state.clone(),
                state,
                dirty: false,
            },
        );
    }
    let (mut handled, mut last, mut applied_position, mut applied) = (0, None, 0, 0u64);
    // Each event's span lasts until the batch is committed.
    let mut spans = Vec::with_capacity(events.len());
    for event in events {
        spans.push(apply_span(event));
        let Some(id) = workspace_id(event) else {
            handled += 1;
            last = Some(Applied::Ignored);
            continue;
        };
        if hashes == Hashes::Check && !event.hash_is_valid() {
            return Err(ApplyError::Tampered(event.position));
        }
        let entry = entries.entry(id).or_insert_with(|| Entry {
            version: 0,
            position: 0,
            hash: Vec::new(),
            state: Workspace::default(),
            before: Workspace::default(),
            dirty: false,
        });
        let outcome = if event.stream_version <= entry.version {
            Applied::Duplicate
        } else if event.stream_version > entry.version + 1 {
            Applied::Gap { position: entry.position }
        } else {
            entry.state.apply(&event.decode::<WorkspaceEvent>()?);
            entry.version = event.stream_version;
            entry.position = event.position;
            entry.hash.clone_from(&event.hash);
            entry.dirty = true;
            applied_position = applied_position.max(event.position);
            applied += 1;
            Applied::Applied
        };
        if let Some(span) = spans.last() {
            span.record("outcome", tracing::field::debug(outcome));
        }
        last = Some(outcome);
        if let Applied::Gap { .. } = outcome {
            break;
        }
        handled += 1;
    }
    // The batch's final states, written together: one statement however many workspaces.
    let dirty: Vec<(&Uuid, &Entry)> = entries.iter().filter(|(_, e)| e.dirty).collect();
    if !dirty.is_empty() {
        let mut columns = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (id, entry) in &dirty {
            // A deleted workspace's state, secrets included, is dropped; its checkpoint stays.
            let state = if entry.state.deleted { None } else { Some(serde_json::to_value(&entry.state)?) };
            columns.0.push(**id);
            columns.1.push(entry.version);
            columns.2.push(entry.position);
            columns.3.push(entry.hash.as_slice());
            columns.4.push(state);
        }
        tx.execute(
            "INSERT INTO workspaces (id, stream_version, position, event_hash, state, updated_at) \
             SELECT id, stream_version, position, event_hash, state, clock_timestamp() \
             FROM unnest($1::uuid[], $2::int8[], $3::int8[], $4::bytea[], $5::jsonb[]) \
             AS t(id, stream_version, position, event_hash, state) \
             ON CONFLICT (id) DO UPDATE SET stream_version = excluded.stream_version, position = excluded.position, \
             event_hash = excluded.event_hash, state = excluded.state, updated_at = excluded.updated_at",
            &[&columns.0, &columns.1, &columns.2, &columns.3, &columns.4],
        )
        .await?;
        crate::interaction_keys::sync(&tx, dirty.iter().map(|(id, e)| (**id, &e.before, &e.state))).await?;
    }
    let (mut kept, mut sealed_keys) = (Vec::new(), Vec::new());
    for (id, sealed) in keys {
        let deleted = entries.get(id).is_some_and(|e| e.state.deleted);
        if let (Some(sealed), false) = (sealed, deleted) {
            kept.push(*id);
            sealed_keys.push(sealed.as_slice());
        }
    }
    if !kept.is_empty() {
        tx.execute(
            "INSERT INTO data_keys (workspace_id, sealed_data_key) SELECT * FROM unnest($1::uuid[], $2::bytea[]) \
             ON CONFLICT (workspace_id) DO UPDATE SET sealed_data_key = excluded.sealed_data_key, fetched_at = now()",
            &[&kept, &sealed_keys],
        )
        .await?;
    }
    // Deleting a workspace erases its data key here too (crypto-shredding).
    let deleted: Vec<Uuid> = entries.iter().filter(|(_, e)| e.dirty && e.state.deleted).map(|(id, _)| *id).collect();
    if !deleted.is_empty() {
        tx.execute("DELETE FROM data_keys WHERE workspace_id = ANY($1)", &[&deleted]).await?;
        // Its interactions and their deliveries go with it.
        tx.execute("DELETE FROM deliveries WHERE workspace_id = ANY($1)", &[&deleted]).await?;
        tx.execute("DELETE FROM interactions WHERE workspace_id = ANY($1)", &[&deleted]).await?;
    }
    let mut position = None;
    if applied_position > 0 {
        let row = tx
            .query_one(
                "UPDATE instance_state SET applied_position = GREATEST(applied_position, $1) RETURNING applied_position",
                &[&applied_position],
            )
            .await?;
        position = Some(row.get::<_, i64>("applied_position"));
    }
    tx.commit().await?;
    if let Some(position) = position {
        metrics::gauge!(shared::metrics::INSTANCE_APPLIED_POSITION).set(position as f64);
    }
    metrics::counter!(shared::metrics::INSTANCE_APPLIED_EVENTS).increment(applied);
    drop(spans);
    Ok((handled, last))
}

/// The span of one event's apply: a child of the request that caused the event, when its
/// metadata says which.
fn apply_span(event: &RecordedEvent) -> tracing::Span {
    let span = tracing::debug_span!(
        "instance.apply",
        otel.kind = "consumer",
        event_id = %event.event_id,
        event_type = %event.event_type,
        position = event.position,
        outcome = tracing::field::Empty,
    );
    shared::telemetry::set_parent(&span, event.metadata.get("traceparent").and_then(|v| v.as_str()));
    span
}

/// A digest of the whole materialized state: equal digests, equal states.
pub async fn digest(client: &Client) -> Result<String, tokio_postgres::Error> {
    use sha2::{Digest, Sha256};
    let rows = client.query("SELECT id, stream_version, state::text AS state FROM workspaces ORDER BY id", &[]).await?;
    let mut hasher = Sha256::new();
    for row in rows {
        let (id, version, state): (Uuid, i64, Option<String>) =
            (row.get("id"), row.get("stream_version"), row.get("state"));
        hasher.update(format!("{id}|{version}|{}\n", state.unwrap_or_default()));
    }
    for line in crate::interaction_keys::digest_lines(client).await? {
        hasher.update(line);
    }
    Ok(hex::encode(hasher.finalize()))
}
