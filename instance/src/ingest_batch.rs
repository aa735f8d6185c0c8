//! Group commit of accepted interactions: `POST /v1/interactions` hands each interaction,
//! once its body is read and checked, to a few writer tasks and waits for the answer. A
//! writer takes everything queued (at most [`MAX_BATCH`] interactions or about
//! [`MAX_BATCH_BYTES`] of payload) and stores the lot in one transaction with set-based
//! statements; then every waiting request is answered. While one writer commits, the next
//! batch fills and another writer takes it.
//!
//! In the transaction, in this order:
//! 1. the live workspaces holding the batch's keys are locked `FOR SHARE`, in id order
//!    (applies lock them `FOR UPDATE` in id order: no cycle);
//! 2. the keys are looked up again, by a statement of its own that starts once the locks
//!    are held: it reads what every apply it waited for committed, and nothing changes
//!    those workspaces until the commit. So a key revoked, or a workspace archived, by an
//!    event applied before is refused (401, 403, as the check before the body answers),
//!    and the deliveries go to the webhook URIs of the workspace at this moment: the same
//!    guarantee as one transaction per interaction holding its workspace's lock;
//! 3. the accepted interactions and their deliveries (one per webhook URI) are inserted
//!    with one statement;
//! 4. COMMIT (durable, `synchronous_commit` untouched): only then is any 202 sent.
//!
//! `BEGIN` and steps 1 and 2 go to the server together, as do steps 3 and 4: two round
//! trips a batch (see [`transaction`]).
//!
//! A database failure answers every request of the batch 503; none of them was stored.
//!
//! An answer always says what became of the interaction. A request that gives up (its
//! deadline passes, or its client goes away) while its interaction is still queued, or
//! waiting for its batch's locks, withdraws it: the writer takes each item, once the locks
//! are held, only if it was not withdrawn, and a request whose item is taken waits for the
//! commit's outcome however long that takes (the database's own lock and statement limits
//! bound it). So a 503 never stands for a stored interaction.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use deadpool_postgres::Pool;
use postgres_types::ToSql;
use tokio::sync::{Mutex, Notify, mpsc, oneshot};
use tokio::time::Instant;
use uuid::Uuid;

use crate::ingest::{DeliveryStatus, NewInteraction, Refused, known, usable};
use crate::interaction_keys::{LOCK_WORKSPACES, LOOKUP_KEYS, locked_keys};

/// The most interactions one transaction stores.
pub const MAX_BATCH: usize = 1000;
/// A batch stops growing once its bodies add up to this many bytes.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Writers, each committing its own batch (the pool has room for them and the rest).
pub const WRITERS: usize = 4;
/// Interactions waiting for a writer before requests wait to queue.
const QUEUE: usize = 4 * MAX_BATCH;
/// Bytes of bodies waiting for a writer or being stored, all items together: a parsed
/// body can take many times its size in memory, so a stalled database must not let
/// thousands of them pile up. Requests past it wait (within their deadline) to queue.
const QUEUED_BYTES: usize = 4 * MAX_BATCH_BYTES;

/// An interaction to store, with where its answer goes.
struct Item {
    key_hash: Vec<u8>,
    interaction: NewInteraction,
    /// The body's size, to bound a batch's.
    size: usize,
    reply: oneshot::Sender<Outcome>,
    /// The item's share of [`QUEUED_BYTES`], given back when the item is dropped.
    _bytes: tokio::sync::OwnedSemaphorePermit,
    /// [`QUEUED`], then [`TAKEN`] by the writer or [`WITHDRAWN`] by the request.
    claim: Arc<AtomicU8>,
}

/// The item waits for a writer (or for its batch's locks).
const QUEUED: u8 = 0;
/// A writer is storing the item: its request waits for the outcome.
const TAKEN: u8 = 1;
/// The request gave up first: the item is not stored.
const WITHDRAWN: u8 = 2;

/// Withdraws a queued item when its request ends without an answer (dropped by a client
/// that went away, or past its deadline).
struct Withdraw(Arc<AtomicU8>);

impl Withdraw {
    /// Whether the item is withdrawn now (it was not taken yet).
    fn now(&self) -> bool {
        self.0.compare_exchange(QUEUED, WITHDRAWN, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    }
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        self.now();
    }
}

/// What became of one interaction.
#[derive(Debug)]
pub enum Outcome {
    /// Stored (committed) with its deliveries.
    Stored { workspace_id: Uuid, interaction_key_id: Uuid, id: Uuid, deliveries: usize },
    /// Refused by the key's check under the lock; `identified` names the key's workspace
    /// and id when the key is one of this instance's.
    Refused { identified: Option<(Uuid, Uuid)>, refused: Refused },
    /// The database failed: nothing of the batch was stored.
    Unavailable,
    /// The deadline passed before a writer took the interaction: it was not stored.
    TimedOut,
}

/// The queue to the writers.
pub struct Writers {
    queue: mpsc::Sender<Item>,
    bytes: Arc<tokio::sync::Semaphore>,
}

impl Writers {
    /// Starts [`WRITERS`] writers storing into `pool`, waking the webhook sender through
    /// `wake` after a commit that brought deliveries. They stop when this is dropped.
    pub fn spawn(pool: Pool, wake: Arc<Notify>) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..WRITERS {
            tokio::spawn(write(pool.clone(), receiver.clone(), wake.clone()));
        }
        Self { queue, bytes: Arc::new(tokio::sync::Semaphore::new(QUEUED_BYTES)) }
    }

    /// Stores `interaction` for the key whose peppered hash is `key_hash` in the next
    /// batch, and answers once that batch is committed (or failed). Past `deadline`, an
    /// interaction no writer has taken yet is withdrawn ([`Outcome::TimedOut`]); one being
    /// stored is waited for.
    pub async fn store(
        &self,
        key_hash: Vec<u8>,
        interaction: NewInteraction,
        size: usize,
        deadline: Instant,
    ) -> Outcome {
        let (reply, mut answer) = oneshot::channel();
        let claim = Arc::new(AtomicU8::new(QUEUED));
        let withdraw = Withdraw(claim.clone());
        let share = u32::try_from(size.min(QUEUED_BYTES)).unwrap_or(u32::MAX);
        let bytes = match tokio::time::timeout_at(deadline, self.bytes.clone().acquire_many_owned(share)).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Outcome::Unavailable,
            Err(_) => return Outcome::TimedOut,
        };
        let item = Item { key_hash, interaction, size, reply, _bytes: bytes, claim };
        match tokio::time::timeout_at(deadline, self.queue.send(item)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Outcome::Unavailable,
            Err(_) => return Outcome::TimedOut,
        }
        match tokio::time::timeout_at(deadline, &mut answer).await {
            Ok(outcome) => outcome.unwrap_or(Outcome::Unavailable),
            Err(_) if withdraw.now() => Outcome::TimedOut,
            Err(_) => answer.await.unwrap_or(Outcome::Unavailable),
        }
    }
}

/// One writer: takes what is queued, stores it, answers, again, until the queue closes.
async fn write(pool: Pool, receiver: Arc<Mutex<mpsc::Receiver<Item>>>, wake: Arc<Notify>) {
    loop {
        let batch = {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else { return };
            let mut bytes = first.size;
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                let Ok(item) = receiver.try_recv() else { break };
                bytes += item.size;
                batch.push(item);
            }
            batch
        };
        let outcomes = match store(&pool, &batch).await {
            Ok(outcomes) => outcomes,
            Err(error) => {
                tracing::warn!(error = %cause(&error), interactions = batch.len(), "a batch of interactions was not stored");
                batch.iter().map(|_| Outcome::Unavailable).collect()
            }
        };
        if outcomes.iter().any(|o| matches!(o, Outcome::Stored { deliveries, .. } if *deliveries > 0)) {
            wake.notify_one();
        }
        for (item, outcome) in batch.into_iter().zip(outcomes) {
            // A request that gave up waiting has nobody to answer; what was stored stays.
            let _ = item.reply.send(outcome);
        }
    }
}

/// The columns of the rows a batch inserts.
#[derive(Default)]
struct Rows<'a> {
    ids: Vec<Uuid>,
    workspaces: Vec<Uuid>,
    keys: Vec<Uuid>,
    types: Vec<&'a str>,
    payloads: Vec<&'a serde_json::Value>,
    delivery_ids: Vec<Uuid>,
    delivery_interactions: Vec<Uuid>,
    delivery_workspaces: Vec<Uuid>,
    delivery_urls: Vec<&'a str>,
}

/// Why a batch failed, as a log line may say it: the database's message, code and
/// constraint, never the values of the rows (payloads are the tenants' data).
fn cause(error: &anyhow::Error) -> String {
    match error.downcast_ref::<tokio_postgres::Error>().and_then(tokio_postgres::Error::as_db_error) {
        Some(db) => format!("{} ({}; constraint {:?})", db.message(), db.code().code(), db.constraint()),
        None => format!("{error:#}"),
    }
}

/// Stores a batch in one transaction: each item's outcome, in order. A failed transaction
/// is rolled back before the connection goes back to the pool.
async fn store(pool: &Pool, batch: &[Item]) -> Result<Vec<Outcome>, anyhow::Error> {
    let client = pool.get().await?;
    let stored = transaction(&client, batch).await;
    if stored.is_err() && client.batch_execute("ROLLBACK").await.is_err() {
        // Neither committed nor rolled back: this connection must not serve again.
        drop(deadpool_postgres::Object::take(client));
    }
    stored
}

/// The batch's transaction, in two round trips: `BEGIN`, the locks and the keys' look-up
/// are sent together (the server runs them in order, each statement after the one before
/// has finished, so the look-up starts once the locks are held); then, the items taken,
/// one statement inserting the interactions and their deliveries, sent with `COMMIT`.
/// Pipelined rather than awaited one by one: on a busy machine each round trip costs a
/// wake-up of the server's backend and of this task, which made up most of a batch's time.
async fn transaction(client: &deadpool_postgres::Client, batch: &[Item]) -> Result<Vec<Outcome>, anyhow::Error> {
    let lock = client.prepare_cached(LOCK_WORKSPACES).await?;
    let lookup = client.prepare_cached(LOOKUP_KEYS).await?;
    let insert = client.prepare_cached(INSERT).await?;
    let mut hashes: Vec<&[u8]> = batch.iter().map(|item| item.key_hash.as_slice()).collect();
    hashes.sort_unstable();
    hashes.dedup();
    let params: [&(dyn ToSql + Sync); 1] = [&hashes];
    let begin = format!("BEGIN; {PLANS}");
    let (_, locked, found) =
        futures::try_join!(client.batch_execute(&begin), client.query(&lock, &params), client.query(&lookup, &params))?;
    let found: HashMap<Vec<u8>, _> =
        locked_keys(&locked, found).into_iter().map(|key| (key.key_hash.clone(), key)).collect();

    let mut rows = Rows::default();
    let mut outcomes = Vec::with_capacity(batch.len());
    for item in batch {
        // Taken now, after the locks, unless its request gave up meanwhile.
        if item.claim.compare_exchange(QUEUED, TAKEN, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            outcomes.push(Outcome::TimedOut);
            continue;
        }
        let key = found.get(&item.key_hash);
        let key = match usable(key, &item.key_hash) {
            Ok(key) => key,
            Err(refused) => {
                outcomes.push(Outcome::Refused { identified: known(key, &item.key_hash), refused });
                continue;
            }
        };
        let id = Uuid::now_v7();
        rows.ids.push(id);
        rows.workspaces.push(key.workspace_id);
        rows.keys.push(key.id);
        rows.types.push(&item.interaction.kind);
        rows.payloads.push(&item.interaction.payload);
        for url in &key.webhook_uris {
            rows.delivery_ids.push(Uuid::now_v7());
            rows.delivery_interactions.push(id);
            rows.delivery_workspaces.push(key.workspace_id);
            rows.delivery_urls.push(url);
        }
        outcomes.push(Outcome::Stored {
            workspace_id: key.workspace_id,
            interaction_key_id: key.id,
            id,
            deliveries: key.webhook_uris.len(),
        });
    }
    if rows.ids.is_empty() {
        client.batch_execute("COMMIT").await?;
    } else {
        // An insert that fails aborts the transaction, and the `COMMIT` behind it then
        // rolls back; the insert's error is what is returned.
        let params: [&(dyn ToSql + Sync); 10] = [
            &rows.ids,
            &rows.workspaces,
            &rows.keys,
            &rows.types,
            &rows.payloads,
            &rows.delivery_ids,
            &rows.delivery_interactions,
            &rows.delivery_workspaces,
            &rows.delivery_urls,
            &DeliveryStatus::Pending,
        ];
        futures::try_join!(client.execute(&insert, &params), client.batch_execute("COMMIT"))?;
    }
    Ok(outcomes)
}

/// How a batch's two look-ups are planned: once per connection (see
/// [`crate::db::STABLE_PLANS`]). Left to choose, the server plans them anew at each call (a
/// plan for the given hashes looks cheaper than the generic one), which cost more than
/// running them.
pub const PLANS: &str = crate::db::STABLE_PLANS;

/// The accepted interactions and their deliveries, in one statement.
const INSERT: &str = "WITH i AS (\
     INSERT INTO interactions (id, workspace_id, interaction_key_id, type, payload, received_at) \
     SELECT id, workspace_id, interaction_key_id, type, payload, clock_timestamp() \
     FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::jsonb[]) \
     AS i (id, workspace_id, interaction_key_id, type, payload)) \
     INSERT INTO deliveries (id, interaction_id, workspace_id, url, status) \
     SELECT id, interaction_id, workspace_id, url, $10 \
     FROM unnest($6::uuid[], $7::uuid[], $8::uuid[], $9::text[]) AS d (id, interaction_id, workspace_id, url)";
