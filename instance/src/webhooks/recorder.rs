//! The outcomes of attempts, recorded together: each attempt hands its outcome to one
//! recorder task and waits until it is committed (or given up); the recorder takes
//! everything queued and writes the lot with one statement in one transaction, so a busy
//! sender commits once per batch of answers rather than once per answer. While one batch
//! commits, the next fills.
//!
//! What each outcome does to its delivery is [`super::outcome::next`]'s: the update names
//! the attempt it records (`attempts` as the claim left it) and applies only to a pending
//! delivery, so an outcome that arrives after the row was claimed again (its lease ran out)
//! or retried through the API changes nothing. A delivery that ends (succeeded, or failed
//! for good) is counted for usage once the transaction is committed.
//!
//! A failed write is tried again, [`RECORD_TRIES`] times in all, a second more each time;
//! then its outcomes are dropped with a warning, and their deliveries are tried again once
//! their leases run out (at least once, as after a crash).

use std::sync::Arc;
use std::time::Duration;

use postgres_types::ToSql;
use shared::config::RetrySchedule;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::outcome::{Attempt, Next, Outcome, next};
use crate::ingest::DeliveryStatus;
use crate::usage::Usage;

/// The most outcomes one transaction records.
const MAX_BATCH: usize = 256;
/// Outcomes waiting for the recorder before attempts wait to queue.
const QUEUE: usize = 4 * MAX_BATCH;
/// Writes of one batch while the database is away, within the deliveries' lease.
pub const RECORD_TRIES: u32 = 5;

/// An attempt's outcome, with what its usage count needs and whom to tell.
struct Entry {
    attempt: Attempt,
    outcome: Outcome,
    workspace_id: Uuid,
    interaction_key_id: Uuid,
    /// Dropped once the outcome is recorded or given up.
    _done: oneshot::Sender<()>,
}

/// The queue to the recorder task, which stops once this is dropped and the queue is empty.
pub struct Recorder {
    queue: mpsc::Sender<Entry>,
}

impl Recorder {
    /// Starts the recorder, writing through `pool` and counting ended deliveries in `usage`.
    pub fn spawn(pool: deadpool_postgres::Pool, usage: Arc<Usage>, schedule: RetrySchedule) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(write(pool, usage, schedule, receiver));
        Self { queue }
    }

    /// Records `outcome` of `attempt` (a delivery of `workspace_id`'s key
    /// `interaction_key_id`) with the next batch, and returns once that batch is committed
    /// or given up.
    pub async fn record(&self, attempt: Attempt, outcome: Outcome, workspace_id: Uuid, interaction_key_id: Uuid) {
        let (done, recorded) = oneshot::channel();
        let entry = Entry { attempt, outcome, workspace_id, interaction_key_id, _done: done };
        if self.queue.send(entry).await.is_ok() {
            // Nothing is ever sent: the sender half is dropped with the batch.
            let _ = recorded.await;
        }
    }
}

async fn write(
    pool: deadpool_postgres::Pool,
    usage: Arc<Usage>,
    schedule: RetrySchedule,
    mut receiver: mpsc::Receiver<Entry>,
) {
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            let Ok(entry) = receiver.try_recv() else { break };
            batch.push(entry);
        }
        for tried in 1..=RECORD_TRIES {
            match store(&pool, &batch, &schedule).await {
                Ok(ended) => {
                    for (entry, status) in ended {
                        usage.delivery(
                            entry.workspace_id,
                            entry.interaction_key_id,
                            status == DeliveryStatus::Succeeded,
                        );
                    }
                    break;
                }
                Err(error) if tried == RECORD_TRIES => {
                    tracing::warn!(outcomes = batch.len(), error = %format!("{error:#}"), "webhook outcomes were not recorded; their deliveries are tried again once their leases end");
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(u64::from(tried))).await,
            }
        }
    }
}

/// Records `batch` in one transaction: the entries whose deliveries it ended, with their
/// final status. A failed transaction is rolled back before the connection goes back to the
/// pool.
async fn store<'a>(
    pool: &deadpool_postgres::Pool,
    batch: &'a [Entry],
    schedule: &RetrySchedule,
) -> anyhow::Result<Vec<(&'a Entry, DeliveryStatus)>> {
    let client = pool.get().await?;
    let stored = transaction(&client, batch, schedule).await;
    if stored.is_err() && client.batch_execute("ROLLBACK").await.is_err() {
        // Neither committed nor rolled back: this connection must not serve again.
        drop(deadpool_postgres::Object::take(client));
    }
    stored
}

/// The batch's transaction: the update prepared (planned for the table as it is), then
/// `BEGIN`, the update and `COMMIT` sent together in one round trip (an update that fails aborts the transaction, and the `COMMIT` behind it then
/// rolls back; the update's error is what is returned).
async fn transaction<'a>(
    client: &deadpool_postgres::Client,
    batch: &'a [Entry],
    schedule: &RetrySchedule,
) -> anyhow::Result<Vec<(&'a Entry, DeliveryStatus)>> {
    let mut ids = Vec::with_capacity(batch.len());
    let mut attempts = Vec::with_capacity(batch.len());
    let mut statuses = Vec::with_capacity(batch.len());
    let mut codes: Vec<Option<i32>> = Vec::with_capacity(batch.len());
    let mut errors: Vec<Option<&str>> = Vec::with_capacity(batch.len());
    let mut waits: Vec<Option<f64>> = Vec::with_capacity(batch.len());
    let mut rounds = Vec::with_capacity(batch.len());
    let mut first_waits: Vec<Option<f64>> = Vec::with_capacity(batch.len());
    for entry in batch {
        let (code, error) = match &entry.outcome {
            Outcome::Succeeded { status } => (Some(i32::from(*status)), None),
            Outcome::Retry { status, error } => (status.map(i32::from), Some(error.as_str())),
            Outcome::Failed { error } => (None, Some(error.as_str())),
        };
        let (status, wait) = match next(&entry.outcome, entry.attempt, schedule) {
            Next::Succeeded => (DeliveryStatus::Succeeded, None),
            Next::Failed => (DeliveryStatus::Failed, None),
            Next::RetryAfter(wait) => (DeliveryStatus::Pending, Some(wait.as_secs_f64())),
        };
        ids.push(entry.attempt.delivery);
        attempts.push(entry.attempt.attempts);
        statuses.push(status);
        codes.push(code);
        errors.push(error);
        waits.push(wait);
        rounds.push(entry.attempt.round_start);
        // Where a retry asked for meanwhile started a new round, this attempt is its first.
        let retryable = matches!(entry.outcome, Outcome::Retry { .. });
        first_waits.push(schedule.0.first().filter(|_| retryable).map(Duration::as_secs_f64));
    }
    // Prepared for this batch, so planned for the table as it is now (see [`RECORD`]).
    let statement = client.prepare(RECORD).await?;
    let params: [&(dyn ToSql + Sync); 8] = [&ids, &attempts, &statuses, &codes, &errors, &waits, &rounds, &first_waits];
    let begin = format!("BEGIN; {}", crate::db::STABLE_PLANS);
    let (_, rows, _) = futures::try_join!(
        client.batch_execute(&begin),
        client.query(&statement, &params),
        client.batch_execute("COMMIT")
    )?;
    let mut ended = Vec::new();
    for row in rows {
        let id: Uuid = row.try_get("id")?;
        let status: DeliveryStatus = row.try_get("status")?;
        if status != DeliveryStatus::Pending
            && let Some(entry) = batch.iter().find(|entry| entry.attempt.delivery == id)
        {
            ended.push((entry, status));
        }
    }
    Ok(ended)
}

/// Each outcome `$1`…`$8` (delivery, its attempt, the status it leaves, the answer's code,
/// the error, the wait before a retry, the round the attempt was made in, and the wait
/// after a first attempt that did not succeed when the outcome allows a retry), applied to
/// its delivery if that attempt is still the delivery's last and the delivery is pending. A
/// retry waits its schedule's entry with ±10% jitter, which spreads the retries of
/// deliveries that failed together. Where the delivery's round changed while the attempt
/// was in flight (a retry was asked for), the attempt is the new round's first: a failure
/// waits the schedule's first entry, whatever it would have done in the old round.
///
/// The rows are reached by id, whatever the statistics say: pending is said as neither
/// ended status, because `status = 'pending'` matches the partial index of pending
/// deliveries, which statistics taken when nothing was pending (or a plan made on an empty
/// table) make look like the cheapest way in, and which then reads every pending delivery
/// to find the batch's few. Planned for each batch, not once per connection.
pub const RECORD: &str = "UPDATE deliveries d SET \
     status = CASE WHEN d.round_started_at_attempt <> o.round AND o.first_wait IS NOT NULL \
     THEN 'pending'::delivery_status ELSE o.status END, \
     last_status_code = o.code, last_error = o.error, updated_at = now(), claimed_until = NULL, \
     next_attempt_at = CASE \
     WHEN d.round_started_at_attempt <> o.round AND o.first_wait IS NOT NULL \
     THEN now() + make_interval(secs => o.first_wait * (0.9 + random() * 0.2)) \
     WHEN o.wait IS NULL THEN d.next_attempt_at \
     ELSE now() + make_interval(secs => o.wait * (0.9 + random() * 0.2)) END \
     FROM unnest($1::uuid[], $2::int4[], $3::delivery_status[], $4::int4[], $5::text[], $6::float8[], \
     $7::int4[], $8::float8[]) AS o (id, attempts, status, code, error, wait, round, first_wait) \
     WHERE d.id = ANY($1) AND d.id = o.id AND d.attempts = o.attempts \
     AND d.status <> 'succeeded' AND d.status <> 'failed' \
     RETURNING d.id, d.status";
