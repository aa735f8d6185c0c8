//! The group-commit writer.
//!
//! Every append in every hub process takes the lock on the `event_log_head` row and keeps
//! it until commit; that is what makes positions dense and commit-ordered. It also
//! serializes commits, so one writer task per process gathers whatever commits queued up
//! while the previous transaction ran and writes them all in one transaction:
//!
//! 1. lock the head (last position and hash);
//! 2. read the current version of every stream the batch touches, in one query;
//! 3. decide each commit in memory, in arrival order, against those versions (a commit
//!    whose expectation fails gets its conflict and contributes nothing);
//! 4. insert every accepted event in one statement, advance the head, commit.
//!
//! The decision in step 3 is safe because no other transaction can append while the head
//! is locked. Should the database still refuse the batch (a constraint the writer cannot
//! foresee), each commit is retried alone, so only the offending caller gets the error.

use std::collections::HashMap;

use chrono::Utc;
use deadpool_postgres::Pool;
use shared::RecordedEvent;
use shared::hash::{ChainFields, to_micros};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};

use std::sync::Arc;

use super::{AppendError, Commit, ExpectedVersion, pipeline};
use crate::projections::{ProjectionError, Projector, SqlStep};

pub(super) struct Job {
    pub commit: Commit,
    pub reply: oneshot::Sender<Result<Vec<RecordedEvent>, AppendError>>,
}

#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Commits waiting for the writer before callers wait to enqueue.
    pub queue_capacity: usize,
    /// Most events written in one transaction.
    pub max_batch_events: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self { queue_capacity: 4096, max_batch_events: 2048 }
    }
}

pub(super) async fn run(
    pool: Pool,
    jobs: &mut mpsc::Receiver<Job>,
    config: WriterConfig,
    projector: Arc<dyn Projector>,
    committed: Arc<tokio::sync::Notify>,
) {
    let mut carry: Option<Job> = None;
    loop {
        let first = match carry.take() {
            Some(job) => job,
            None => match jobs.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut events = first.commit.event_count();
        let mut batch = vec![first];
        while events < config.max_batch_events {
            match jobs.try_recv() {
                Ok(job) if events + job.commit.event_count() > config.max_batch_events => {
                    carry = Some(job);
                    break;
                }
                // The caller gave up (its request timed out): it was told nothing was
                // written, so nothing must be.
                Ok(job) if job.reply.is_closed() => {}
                Ok(job) => {
                    events += job.commit.event_count();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        let commits: Vec<&Commit> = batch.iter().map(|job| &job.commit).collect();
        let results = write_isolated(&pool, &commits, projector.as_ref()).await;
        if results.iter().any(|r| r.as_ref().is_ok_and(|events| !events.is_empty())) {
            // `notify_one` stores a permit when nobody waits, so no wake-up is lost.
            committed.notify_one();
        }
        for (job, result) in batch.into_iter().zip(results) {
            // A caller that went away (request cancelled) no longer needs its answer.
            let _ = job.reply.send(result);
        }
    }
}

type Outcome = Result<Vec<RecordedEvent>, AppendError>;

async fn write_isolated(pool: &Pool, commits: &[&Commit], projector: &dyn Projector) -> Vec<Outcome> {
    match write_batch(pool, commits, projector).await {
        Ok(results) => results,
        Err(BatchError::Refused(_)) if commits.len() > 1 => {
            tracing::warn!(commits = commits.len(), "batch refused by the database; retrying its commits one by one");
            let mut results = Vec::with_capacity(commits.len());
            for commit in commits {
                let outcome = match write_batch(pool, &[commit], projector).await {
                    Ok(mut one) => one.pop().unwrap_or(Err(AppendError::Closed)),
                    Err(error) => Err(error.into()),
                };
                results.push(outcome);
            }
            results
        }
        Err(BatchError::Refused(error)) => {
            tracing::warn!(error = %describe(&error), "the database refused a commit");
            vec![Err(AppendError::Rejected(error))]
        }
        Err(error) => {
            tracing::error!(error = %error, commits = commits.len(), "event store write failed");
            let message = error.to_string();
            commits.iter().map(|_| Err(AppendError::Unavailable(message.clone().into()))).collect()
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum BatchError {
    #[error("the database refused the batch: {}", describe(.0))]
    Refused(tokio_postgres::Error),
    #[error("database unavailable: {0}")]
    Unavailable(Box<dyn std::error::Error + Send + Sync>),
}

/// The server's message and constraint, without the values of the failed row.
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({}; constraint {:?})", db.message(), db.code().code(), db.constraint()),
        None => error.to_string(),
    }
}

impl From<tokio_postgres::Error> for BatchError {
    fn from(error: tokio_postgres::Error) -> Self {
        // A statement the server answered with a data or constraint error is the batch's
        // fault; anything else (I/O, shutdown, serialization) is the store's condition.
        let refused = error.code().is_some_and(|code| {
            let class = &code.code()[..2];
            matches!(class, "22" | "23" | "42") || *code == SqlState::INSUFFICIENT_PRIVILEGE
        });
        if refused { Self::Refused(error) } else { Self::Unavailable(Box::new(error)) }
    }
}

impl From<deadpool_postgres::PoolError> for BatchError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        Self::Unavailable(Box::new(error))
    }
}

impl From<BatchError> for AppendError {
    fn from(error: BatchError) -> Self {
        match error {
            BatchError::Refused(e) => AppendError::Rejected(e),
            BatchError::Unavailable(e) => AppendError::Unavailable(e),
        }
    }
}

async fn write_batch(pool: &Pool, commits: &[&Commit], projector: &dyn Projector) -> Result<Vec<Outcome>, BatchError> {
    let client = pool.get().await?;
    let outcome = write_on(&client, commits, projector).await;
    if outcome.is_err() {
        // The transaction may still be open on this connection: never hand it back.
        drop(deadpool_postgres::Object::take(client));
    }
    outcome
}

/// Writes one batch in two pipelined round trips: (BEGIN, lock the head, read the
/// streams' versions), then (INSERT the events, update the read models, advance the head,
/// COMMIT). tokio-postgres sends a request when its future is first polled.
async fn write_on(
    client: &deadpool_postgres::Client,
    commits: &[&Commit],
    projector: &dyn Projector,
) -> Result<Vec<Outcome>, BatchError> {
    let (lock_head, read_versions, insert_events, advance_head) = futures::try_join!(
        client.prepare_cached("SELECT position, hash FROM event_log_head FOR UPDATE"),
        client.prepare_typed_cached(
            "SELECT s.id, COALESCE((SELECT max(e.stream_version) FROM events e WHERE e.stream_id = s.id), 0) \
             FROM unnest($1::text[]) AS s(id)",
            &[Type::TEXT_ARRAY],
        ),
        client.prepare_typed_cached(INSERT_EVENTS, &INSERT_TYPES),
        client.prepare_typed_cached("UPDATE event_log_head SET position = $1, hash = $2", &[Type::INT8, Type::BYTEA]),
    )?;

    let ids = stream_ids(commits);
    let version_params: [&(dyn ToSql + Sync); 1] = [&ids];
    let (_, head, version_rows) = futures::try_join!(
        client.batch_execute("BEGIN"),
        client.query_one(&lock_head, &[]),
        client.query(&read_versions, &version_params),
    )?;
    let mut position: i64 = head.get(0);
    let mut prev_hash: Vec<u8> = head.get(1);
    let start_position = position;
    let mut versions: HashMap<String, i64> = version_rows.iter().map(|row| (row.get(0), row.get(1))).collect();

    let recorded_at = to_micros(Utc::now());
    let mut results = Vec::with_capacity(commits.len());
    let mut rows = Rows::default();
    let mut steps = Vec::new();
    let mut accepted: Vec<&Commit> = Vec::with_capacity(commits.len());
    for commit in commits {
        if let Err(conflict) = check_expectations(commit, &versions) {
            results.push(Err(conflict));
            continue;
        }
        let undo = (position, prev_hash.clone(), versions.clone());
        let mut recorded = Vec::with_capacity(commit.event_count());
        for append in &commit.appends {
            let version = versions.entry(append.stream_id.clone()).or_insert(0);
            for event in &append.events {
                position += 1;
                *version += 1;
                let fields = ChainFields {
                    position,
                    stream_id: &append.stream_id,
                    stream_version: *version,
                    event_id: event.event_id,
                    event_type: &event.event_type,
                    schema_version: event.schema_version,
                    data: &event.data,
                    metadata: &event.metadata,
                    recorded_at,
                };
                let hash = fields.chain_hash(&prev_hash);
                recorded.push(RecordedEvent {
                    position,
                    stream_id: append.stream_id.clone(),
                    stream_version: *version,
                    event_id: event.event_id,
                    event_type: event.event_type.clone(),
                    schema_version: event.schema_version,
                    data: event.data.clone(),
                    metadata: event.metadata.clone(),
                    recorded_at,
                    prev_hash: std::mem::replace(&mut prev_hash, hash.clone()),
                    hash,
                });
            }
        }
        let commit_steps: Result<Vec<SqlStep>, ProjectionError> = projector.steps_all(&recorded);
        match commit_steps {
            Ok(commit_steps) => {
                steps.extend(commit_steps);
                accepted.push(commit);
                rows.extend(&recorded);
                results.push(Ok(recorded));
            }
            Err(error) => {
                // A payload its own reducer cannot read: refuse this commit alone.
                (position, prev_hash, versions) = undo;
                results.push(Err(AppendError::Invalid(error.to_string())));
            }
        }
    }

    if position == start_position {
        client.batch_execute("ROLLBACK").await?;
        return Ok(results);
    }
    let steps: Vec<&SqlStep> = steps.iter().chain(accepted.iter().flat_map(|c| c.extra.iter())).collect();
    let mut sqls: Vec<&'static str> = steps.iter().map(|step| step.sql).collect();
    sqls.sort_unstable();
    sqls.dedup();
    let prepared = futures::future::try_join_all(sqls.iter().map(|sql| client.prepare_cached(sql))).await?;
    let statement = |sql: &str| prepared[sqls.binary_search(&sql).unwrap_or_default()].clone();

    // Should any statement fail, the server skips the rest of the transaction and turns
    // the COMMIT into a rollback; `in_order` returns the first error.
    let insert_params = rows.params();
    let head_params: [&(dyn ToSql + Sync); 2] = [&position, &prev_hash];
    let step_params: Vec<Vec<&(dyn ToSql + Sync)>> =
        steps.iter().map(|step| step.params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()).collect();
    let mut requests: Vec<pipeline::Request<'_>> = Vec::with_capacity(steps.len() + 3);
    requests.push(Box::pin(client.execute(&insert_events, &insert_params)));
    for (step, params) in steps.iter().copied().zip(&step_params) {
        let statement = statement(step.sql);
        requests.push(Box::pin(async move { client.execute(&statement, params).await }));
    }
    requests.push(Box::pin(client.execute(&advance_head, &head_params)));
    requests.push(Box::pin(async { client.batch_execute("COMMIT").await.map(|()| 0) }));
    pipeline::in_order(requests).await?;
    Ok(results)
}

fn stream_ids<'a>(commits: &[&'a Commit]) -> Vec<&'a str> {
    let mut ids: Vec<&str> = commits.iter().flat_map(|c| c.appends.iter().map(|a| a.stream_id.as_str())).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn check_expectations(commit: &Commit, versions: &HashMap<String, i64>) -> Result<(), AppendError> {
    for append in &commit.appends {
        let actual = versions.get(&append.stream_id).copied().unwrap_or(0);
        let ok = match append.expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exact(expected) => actual == expected,
        };
        if !ok {
            return Err(AppendError::Conflict {
                stream_id: append.stream_id.clone(),
                expected: append.expected,
                actual,
            });
        }
    }
    Ok(())
}

/// The batch's events as column arrays, inserted with one `unnest` statement.
#[derive(Default)]
struct Rows {
    position: Vec<i64>,
    stream_id: Vec<String>,
    stream_version: Vec<i64>,
    event_id: Vec<uuid::Uuid>,
    event_type: Vec<String>,
    schema_version: Vec<i32>,
    data: Vec<serde_json::Value>,
    metadata: Vec<serde_json::Value>,
    recorded_at: Vec<chrono::DateTime<Utc>>,
    prev_hash: Vec<Vec<u8>>,
    hash: Vec<Vec<u8>>,
}

impl Rows {
    fn extend(&mut self, events: &[RecordedEvent]) {
        for e in events {
            self.position.push(e.position);
            self.stream_id.push(e.stream_id.clone());
            self.stream_version.push(e.stream_version);
            self.event_id.push(e.event_id);
            self.event_type.push(e.event_type.clone());
            self.schema_version.push(e.schema_version);
            self.data.push(e.data.clone());
            self.metadata.push(e.metadata.clone());
            self.recorded_at.push(e.recorded_at);
            self.prev_hash.push(e.prev_hash.clone());
            self.hash.push(e.hash.clone());
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 11] {
        [
            &self.position,
            &self.stream_id,
            &self.stream_version,
            &self.event_id,
            &self.event_type,
            &self.schema_version,
            &self.data,
            &self.metadata,
            &self.recorded_at,
            &self.prev_hash,
            &self.hash,
        ]
    }
}

const INSERT_EVENTS: &str = "INSERT INTO events (position, stream_id, stream_version, event_id, event_type, \
     schema_version, data, metadata, recorded_at, prev_hash, hash) \
     SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::uuid[], $5::text[], \
     $6::int[], $7::jsonb[], $8::jsonb[], $9::timestamptz[], $10::bytea[], $11::bytea[])";

const INSERT_TYPES: [Type; 11] = [
    Type::INT8_ARRAY,
    Type::TEXT_ARRAY,
    Type::INT8_ARRAY,
    Type::UUID_ARRAY,
    Type::TEXT_ARRAY,
    Type::INT4_ARRAY,
    Type::JSONB_ARRAY,
    Type::JSONB_ARRAY,
    Type::TIMESTAMPTZ_ARRAY,
    Type::BYTEA_ARRAY,
    Type::BYTEA_ARRAY,
];
