//! `hub projections rebuild`: recreate the read models from the log.
//!
//! Runs in one transaction holding the log-head lock, so no append interleaves: readers
//! keep seeing the old rows until the new ones commit.

use shared::RecordedEvent;
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use super::{Projector, ReadModels};

/// The tables the projections own (operational tables such as idempotency keys and key
/// usage are not derived from events and are left alone).
pub const TABLES: [&str; 10] = [
    "organizations",
    "api_keys",
    "workspaces",
    "users",
    "invitations",
    "members",
    "audit_log",
    "apps",
    "external_keys",
    "interaction_keys",
];

const PAGE: i64 = 1000;

/// Replays every event into empty read models; returns the number of events applied.
pub async fn rebuild(client: &mut Client) -> anyhow::Result<i64> {
    let tx = client.transaction().await?;
    tx.execute("SELECT position FROM event_log_head FOR UPDATE", &[]).await?;
    tx.batch_execute(&format!("TRUNCATE {}", TABLES.join(", "))).await?;
    // Snapshots are derived from the log too; the hubs take them again as they load.
    tx.batch_execute("TRUNCATE aggregate_snapshots").await?;
    // History is replayed as it happened: rules added later (the tree depth, quotas) judge
    // new commands, not the past; the usage counters of `organizations` come back through
    // the triggers on the rows they count.
    tx.batch_execute("SET LOCAL hub.replaying_history = 'on'").await?;
    let mut statements = std::collections::HashMap::new();
    let mut after = 0;
    loop {
        let page: Vec<RecordedEvent> = crate::store::read_page(&tx, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        let mut steps = Vec::new();
        for event in &page {
            steps.extend(ReadModels.steps(event)?);
        }
        // The page's audit rows in one statement, as the writer writes a batch's.
        steps.extend(ReadModels.batch_steps(&page.iter().collect::<Vec<_>>()));
        for step in steps {
            let params: Vec<&(dyn ToSql + Sync)> =
                step.params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
            if !statements.contains_key(step.sql) {
                statements.insert(step.sql, tx.prepare(step.sql).await?);
            }
            tx.execute(&statements[step.sql], &params).await?;
        }
    }
    tx.commit().await?;
    Ok(after)
}
