//! Persisted aggregate states (`aggregate_snapshots`): derived data that spares a cold
//! load of a long stream from reading it from the start.

use shared::RecordedEvent;
use tokio_postgres::GenericClient;

use super::cache::{Cached, Loaded};

/// A load that had to read at least this many events leaves a snapshot behind.
pub const SNAPSHOT_AFTER_EVENTS: usize = 200;

/// The stream's snapshot, if there is one of the current shape.
pub async fn read<A: Cached>(
    client: &impl GenericClient,
    stream_id: &str,
) -> Result<Option<Loaded<A>>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT version, state FROM aggregate_snapshots WHERE stream_id = $1 AND state_version = $2",
            &[&stream_id, &A::STATE_VERSION],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let snapshot: Snapshot<A> = match serde_json::from_value(row.get("state")) {
        Ok(snapshot) => snapshot,
        Err(error) => {
            // A snapshot is only a shortcut: read the stream instead. (The error's kind
            // only: its message may quote the state.)
            tracing::warn!(stream_id, kind = ?error.classify(), "ignoring an unreadable snapshot");
            return Ok(None);
        }
    };
    Ok(Some(Loaded {
        state: snapshot.state,
        version: row.get("version"),
        created_at: snapshot.created_at,
        updated_at: snapshot.updated_at,
    }))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Snapshot<A> {
    state: A,
    created_at: Option<chrono::DateTime<chrono::Utc>>,
    updated_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Stores `loaded` unless a later snapshot of the stream exists.
pub async fn write<A: Cached>(
    client: &impl GenericClient,
    stream_id: &str,
    loaded: &Loaded<A>,
) -> Result<(), tokio_postgres::Error> {
    let snapshot = Snapshot { state: &loaded.state, created_at: loaded.created_at, updated_at: loaded.updated_at };
    let state = serde_json::to_value(&snapshot).unwrap_or_default();
    client
        .execute(
            "INSERT INTO aggregate_snapshots (stream_id, version, state_version, state) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version, state_version = EXCLUDED.state_version, \
             state = EXCLUDED.state, taken_at = now() \
             WHERE aggregate_snapshots.version < EXCLUDED.version OR aggregate_snapshots.state_version <> EXCLUDED.state_version",
            &[&stream_id, &loaded.version, &A::STATE_VERSION, &state],
        )
        .await?;
    Ok(())
}

/// Whether a load that read `events` should leave a snapshot.
pub fn worth_taking(events: &[RecordedEvent]) -> bool {
    events.len() >= SNAPSHOT_AFTER_EVENTS
}
