//! Instances as witnesses of the log (`hub events verify --witness`).
//!
//! `hub events verify` proves the chain is consistent, not that it is the original: whoever
//! can write the table can rewrite an event and recompute every hash after it. Each
//! instance keeps, per workspace, the position, stream version and hash of the last event
//! it applied; the chain makes that hash cover every event before it. A log whose event at
//! that position is missing, belongs elsewhere or hashes differently was rewritten after
//! the instance applied it.

use shared::domain::Aggregate;
use shared::domain::workspace::Workspace;
use tokio_postgres::GenericClient;
use uuid::Uuid;

const PAGE: usize = 1000;

/// What an instance applied that the log now contradicts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contradiction {
    pub workspace: Uuid,
    pub position: i64,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    #[error("database error")]
    Database(#[from] tokio_postgres::Error),
    #[error("the witness database holds no instance state (no workspaces table with checkpoints)")]
    NotAnInstance,
}

/// Where a witness keeps its checkpoints: the schema `instance` of a single-node hub's
/// database, or the tables of a separate instance's own database.
async fn checkpoint_table(witness: &impl GenericClient) -> Result<&'static str, WitnessError> {
    let schema: Option<String> = witness
        .query_one(
            "SELECT CASE WHEN to_regclass('instance.workspaces') IS NOT NULL THEN 'instance' \
             WHEN EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'public' \
             AND table_name = 'workspaces' AND column_name = 'event_hash') THEN 'public' END",
            &[],
        )
        .await?
        .get(0);
    match schema.as_deref() {
        Some("instance") => Ok("instance.workspaces"),
        Some(_) => Ok("public.workspaces"),
        None => Err(WitnessError::NotAnInstance),
    }
}

/// Compares every checkpoint of the witness with the log, in position order. Returns how
/// many workspaces agree, or the first contradiction.
pub async fn check(
    log: &impl GenericClient,
    witness: &impl GenericClient,
) -> Result<Result<u64, Contradiction>, WitnessError> {
    let table = checkpoint_table(witness).await?;
    let rows = witness
        .query(&format!("SELECT id, stream_version, position, event_hash FROM {table} ORDER BY position, id"), &[])
        .await?;
    let checkpoints: Vec<(Uuid, i64, i64, Vec<u8>)> =
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
    for page in checkpoints.chunks(PAGE) {
        let positions: Vec<i64> = page.iter().map(|c| c.2).collect();
        let logged = log
            .query(
                "SELECT position, stream_id, stream_version, hash FROM events WHERE position = ANY($1)",
                &[&positions],
            )
            .await?;
        let logged: std::collections::HashMap<i64, (String, i64, Vec<u8>)> =
            logged.iter().map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3)))).collect();
        for (workspace, version, position, hash) in page {
            let contradiction = |reason: String| Contradiction { workspace: *workspace, position: *position, reason };
            let Some((stream_id, logged_version, logged_hash)) = logged.get(position) else {
                return Ok(Err(contradiction("the log has no event there".into())));
            };
            if *stream_id != Workspace::stream_id(*workspace) || logged_version != version {
                return Ok(Err(contradiction(format!(
                    "the instance applied version {version} of this workspace there, the log has version \
                     {logged_version} of {stream_id}"
                ))));
            }
            if logged_hash != hash {
                return Ok(Err(contradiction(format!(
                    "the instance applied hash {}, the log now has {}",
                    hex::encode(hash),
                    hex::encode(logged_hash)
                ))));
            }
        }
    }
    Ok(Ok(checkpoints.len() as u64))
}
