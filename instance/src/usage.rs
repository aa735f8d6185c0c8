//! Usage counters: interactions accepted and refused, webhook deliveries succeeded and
//! failed, per workspace, interaction key and hour.
//!
//! Requests only add to a map in memory (no write per request). Every few seconds the
//! counts are added to the instance's `usage_counters` and written, in the same
//! transaction, as a report in the `usage_reports` outbox; the outbox is then sent to the
//! hubs (over the NATS link, or straight into the hub's tables for the instance embedded in
//! a single-node hub) and a report leaves it once a hub applied it. A report carries an id
//! that the hub records in the transaction that adds its counts, so a report sent again
//! (its acknowledgement lost) counts once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use deadpool_postgres::Pool;
use shared::link::{UsageCount, UsageReport};
use tokio_postgres::Transaction;
use uuid::Uuid;

/// How often the counts are written and reported (a request is counted by the hub well
/// within 15 seconds).
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(2);
/// The most counters one report carries (a report is one NATS message).
const REPORT_ROWS: usize = 1000;
/// Reports sent per round.
const REPORTS_PER_ROUND: i64 = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Bucket {
    workspace_id: Uuid,
    interaction_key_id: Uuid,
    /// Unix seconds of the hour's start.
    hour: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    accepted: i64,
    rejected: i64,
    succeeded: i64,
    failed: i64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.accepted += other.accepted;
        self.rejected += other.rejected;
        self.succeeded += other.succeeded;
        self.failed += other.failed;
    }
}

/// The counts since the last flush.
#[derive(Default)]
pub struct Usage {
    pending: Mutex<HashMap<Bucket, Counts>>,
}

impl Usage {
    /// An interaction accepted (202).
    pub fn accepted(&self, workspace_id: Uuid, interaction_key_id: Uuid) {
        self.add(workspace_id, interaction_key_id, Counts { accepted: 1, ..Counts::default() });
    }

    /// An interaction refused for a key this instance knows (expired key, archived
    /// workspace, a body refused after the key authenticated).
    pub fn rejected(&self, workspace_id: Uuid, interaction_key_id: Uuid) {
        self.add(workspace_id, interaction_key_id, Counts { rejected: 1, ..Counts::default() });
    }

    /// A webhook delivery that ended: delivered (`succeeded`), or failed for good.
    pub fn delivery(&self, workspace_id: Uuid, interaction_key_id: Uuid, succeeded: bool) {
        let counts = if succeeded {
            Counts { succeeded: 1, ..Counts::default() }
        } else {
            Counts { failed: 1, ..Counts::default() }
        };
        self.add(workspace_id, interaction_key_id, counts);
    }

    fn add(&self, workspace_id: Uuid, interaction_key_id: Uuid, counts: Counts) {
        let hour = Utc::now().timestamp().div_euclid(3600) * 3600;
        let bucket = Bucket { workspace_id, interaction_key_id, hour };
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).entry(bucket).or_default().add(counts);
    }

    fn take(&self) -> HashMap<Bucket, Counts> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Puts counts back after a failed flush, so none is lost.
    fn restore(&self, taken: HashMap<Bucket, Counts>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for (bucket, counts) in taken {
            pending.entry(bucket).or_default().add(counts);
        }
    }

    /// The counts since the last flush as report rows, in a stable order.
    fn rows(taken: &HashMap<Bucket, Counts>) -> Vec<UsageCount> {
        let mut rows: Vec<UsageCount> = taken
            .iter()
            .map(|(bucket, counts)| UsageCount {
                workspace_id: bucket.workspace_id,
                interaction_key_id: bucket.interaction_key_id,
                hour: Utc.timestamp_opt(bucket.hour, 0).single().unwrap_or_default(),
                interactions_accepted: counts.accepted,
                interactions_rejected: counts.rejected,
                deliveries_succeeded: counts.succeeded,
                deliveries_failed: counts.failed,
            })
            .collect();
        rows.sort_by_key(|r| (r.workspace_id, r.interaction_key_id, r.hour));
        rows
    }

    /// Adds the counts since the last flush to `usage_counters` and queues them as reports,
    /// in one transaction; on failure they stay in memory for the next flush.
    pub async fn flush(&self, pool: &Pool) -> anyhow::Result<()> {
        let taken = self.take();
        if taken.is_empty() {
            return Ok(());
        }
        let rows = Self::rows(&taken);
        let written = async {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            write(&tx, &rows).await?;
            tx.commit().await?;
            anyhow::Ok(())
        };
        if let Err(error) = written.await {
            self.restore(taken);
            return Err(error);
        }
        Ok(())
    }
}

async fn write(tx: &Transaction<'_>, rows: &[UsageCount]) -> anyhow::Result<()> {
    let column = |f: fn(&UsageCount) -> i64| rows.iter().map(f).collect::<Vec<i64>>();
    let workspaces: Vec<Uuid> = rows.iter().map(|r| r.workspace_id).collect();
    let keys: Vec<Uuid> = rows.iter().map(|r| r.interaction_key_id).collect();
    let hours: Vec<DateTime<Utc>> = rows.iter().map(|r| r.hour).collect();
    tx.execute(
        "INSERT INTO usage_counters AS u (workspace_id, interaction_key_id, hour, interactions_accepted, \
         interactions_rejected, deliveries_succeeded, deliveries_failed) \
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::int8[], $5::int8[], $6::int8[], $7::int8[]) \
         ON CONFLICT (workspace_id, interaction_key_id, hour) DO UPDATE SET \
         interactions_accepted = u.interactions_accepted + EXCLUDED.interactions_accepted, \
         interactions_rejected = u.interactions_rejected + EXCLUDED.interactions_rejected, \
         deliveries_succeeded = u.deliveries_succeeded + EXCLUDED.deliveries_succeeded, \
         deliveries_failed = u.deliveries_failed + EXCLUDED.deliveries_failed",
        &[
            &workspaces,
            &keys,
            &hours,
            &column(|r| r.interactions_accepted),
            &column(|r| r.interactions_rejected),
            &column(|r| r.deliveries_succeeded),
            &column(|r| r.deliveries_failed),
        ],
    )
    .await?;
    for chunk in rows.chunks(REPORT_ROWS) {
        let counts = serde_json::to_value(chunk)?;
        tx.execute("INSERT INTO usage_reports (id, counts) VALUES ($1, $2)", &[&Uuid::now_v7(), &counts]).await?;
    }
    Ok(())
}

/// Where reports go.
#[derive(Clone)]
pub enum Sink {
    /// To the hubs over NATS (a separate instance, whose `NATS_URL` is required).
    Link(crate::feed::HubFeed),
    /// Into the hub's tables in the same database (the instance of a single-node hub).
    Hub { instance_id: String },
}

/// Flushes and reports every [`FLUSH_INTERVAL`] until the database fails (the supervisor
/// starts it again).
pub async fn run(usage: Arc<Usage>, pool: Pool, sink: Sink) -> anyhow::Result<()> {
    let mut ticker = tokio::time::interval(FLUSH_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        usage.flush(&pool).await?;
        if let Err(error) = send(&pool, &sink).await {
            // The hubs being away is not this instance's failure: the outbox keeps the reports.
            tracing::warn!(error = %format!("{error:#}"), "usage reports not sent; will retry");
        }
    }
}

/// Sends the outbox, oldest first, until it is empty or a report is not acknowledged.
async fn send(pool: &Pool, sink: &Sink) -> anyhow::Result<()> {
    loop {
        let mut client = pool.get().await?;
        let rows =
            client.query("SELECT id, counts FROM usage_reports ORDER BY id LIMIT $1", &[&REPORTS_PER_ROUND]).await?;
        if rows.is_empty() {
            return Ok(());
        }
        for row in &rows {
            let report = UsageReport { id: row.get("id"), counts: serde_json::from_value(row.get("counts"))? };
            match sink {
                Sink::Link(feed) => {
                    let link = feed.link().ok_or_else(|| anyhow::anyhow!("no NATS link to the hubs"))?;
                    link.report_usage(&report).await?;
                    client.execute("DELETE FROM usage_reports WHERE id = $1", &[&report.id]).await?;
                }
                Sink::Hub { instance_id } => {
                    let tx = client.transaction().await?;
                    apply_report(&tx, instance_id, &report).await?;
                    tx.execute("DELETE FROM usage_reports WHERE id = $1", &[&report.id]).await?;
                    tx.commit().await?;
                }
            }
        }
        if (rows.len() as i64) < REPORTS_PER_ROUND {
            return Ok(());
        }
    }
}

/// Adds a report of `instance_id` to the hub's `usage_counters` in `tx`, once: `false` when
/// it was applied before. Only the counts of workspaces placed on that instance count (an
/// instance reports about its own tenants only); each is filed under its workspace's
/// organization. Used by the hubs answering the link and by the embedded instance.
pub async fn apply_report(
    tx: &Transaction<'_>,
    instance_id: &str,
    report: &UsageReport,
) -> Result<bool, tokio_postgres::Error> {
    let fresh = tx
        .execute(
            "INSERT INTO public.usage_reports_applied (id, instance_id) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
            &[&report.id, &instance_id],
        )
        .await?;
    if fresh == 0 {
        return Ok(false);
    }
    let rows = &report.counts;
    let column = |f: fn(&UsageCount) -> i64| rows.iter().map(f).collect::<Vec<i64>>();
    let workspaces: Vec<Uuid> = rows.iter().map(|r| r.workspace_id).collect();
    let keys: Vec<Uuid> = rows.iter().map(|r| r.interaction_key_id).collect();
    let hours: Vec<DateTime<Utc>> = rows.iter().map(|r| r.hour).collect();
    // Grouped (a bucket appears once per statement) and in a fixed order (concurrent
    // reports lock rows in the same order).
    tx.execute(
        "INSERT INTO public.usage_counters AS u (organization_id, workspace_id, interaction_key_id, hour, \
         interactions_accepted, interactions_rejected, deliveries_succeeded, deliveries_failed) \
         SELECT w.organization_id, c.workspace_id, c.key_id, date_trunc('hour', c.hour), \
                sum(greatest(c.accepted, 0)), sum(greatest(c.rejected, 0)), \
                sum(greatest(c.succeeded, 0)), sum(greatest(c.failed, 0)) \
         FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::int8[], $5::int8[], $6::int8[], $7::int8[]) \
              AS c (workspace_id, key_id, hour, accepted, rejected, succeeded, failed) \
         JOIN public.workspaces w ON w.id = c.workspace_id AND w.instance_id = $8 \
         GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4 \
         ON CONFLICT ON CONSTRAINT usage_counters_bucket DO UPDATE SET \
         interactions_accepted = u.interactions_accepted + EXCLUDED.interactions_accepted, \
         interactions_rejected = u.interactions_rejected + EXCLUDED.interactions_rejected, \
         deliveries_succeeded = u.deliveries_succeeded + EXCLUDED.deliveries_succeeded, \
         deliveries_failed = u.deliveries_failed + EXCLUDED.deliveries_failed",
        &[
            &workspaces,
            &keys,
            &hours,
            &column(|r| r.interactions_accepted),
            &column(|r| r.interactions_rejected),
            &column(|r| r.deliveries_succeeded),
            &column(|r| r.deliveries_failed),
            &instance_id,
        ],
    )
    .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_per_workspace_key_and_hour() {
        let usage = Usage::default();
        let (ws, key, other) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        usage.accepted(ws, key);
        usage.accepted(ws, key);
        usage.rejected(ws, key);
        usage.delivery(ws, key, true);
        usage.delivery(ws, key, false);
        usage.delivery(ws, key, false);
        usage.accepted(ws, other);
        let taken = usage.take();
        let rows = Usage::rows(&taken);
        assert_eq!(rows.len(), 2);
        let mine = rows.iter().find(|r| r.interaction_key_id == key).unwrap();
        assert_eq!(
            (mine.interactions_accepted, mine.interactions_rejected, mine.deliveries_succeeded, mine.deliveries_failed),
            (2, 1, 1, 2)
        );
        assert_eq!(mine.hour.timestamp() % 3600, 0, "bucketed by the hour");
        assert!(Utc::now() - mine.hour < chrono::Duration::hours(1));
        assert!(usage.take().is_empty(), "taken once");

        usage.delivery(ws, key, true);
        usage.restore(taken);
        let rows = Usage::rows(&usage.take());
        let mine = rows.iter().find(|r| r.interaction_key_id == key).unwrap();
        assert_eq!((mine.interactions_accepted, mine.deliveries_succeeded), (2, 2), "restored counts are kept");
    }
}
