//! The group-commit writer.
//!
//! Every append in every hub process takes the lock on the `event_log_head` row and keeps
//! it until commit; that is what makes positions dense and commit-ordered. It also
//! serializes commits, so one writer task per process gathers whatever commits queued up
//! while the previous transaction ran and writes them all in one transaction, in two
//! pipelined round trips:
//!
//! 1. BEGIN, lock the head (last position and hash), read the current version of every
//!    stream the batch touches;
//! 2. decide each commit in memory, in arrival order, against those versions (a commit
//!    whose expectation fails gets its conflict and contributes nothing), then send each
//!    accepted commit's events, read-model statements and extra statements, advance the
//!    head, COMMIT.
//!
//! The decision is safe because no other transaction can append while the head is
//! locked. The database may still refuse a commit (a unique index, a tree or quota
//! trigger). So that the refusal costs only that commit, each commit of a batch of
//! several runs under its own savepoint, its deferred constraints checked before the
//! savepoint is released; a statement that fails aborts the transaction up to that
//! savepoint and every later statement fails with `25P02`. The COMMIT is already on its
//! way by then and would roll the whole transaction back, so the batch ends with
//! `SAVEPOINT c; ROLLBACK TO SAVEPOINT c`: after a clean run that rolls back nothing,
//! after a failure it rolls back to the failed commit's savepoint, and the head is then
//! advanced to the last event actually inserted. The commits before the refused one are
//! committed, the refused one is answered alone, and the ones after it are decided again
//! in the next transaction, from the new head, so positions stay gapless and the chain
//! exact.

use std::collections::HashMap;

use chrono::Utc;
use deadpool_postgres::Pool;
use shared::RecordedEvent;
use shared::hash::{ChainFields, to_micros};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};

use std::sync::Arc;

use super::stats::Counters;
use super::{AppendError, Commit, ExpectedVersion, pipeline};
use crate::projections::{Projector, SqlStep};

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
    counters: &Counters,
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
        Counters::add(&counters.batches, 1);
        let results = write_isolated(&pool, &commits, projector.as_ref(), counters).await;
        Counters::add(&counters.commits, results.len());
        Counters::add(&counters.refused, results.iter().filter(|r| matches!(r, Err(AppendError::Rejected(_)))).count());
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

/// Writes `commits`, in as many transactions as refusals require: each pass answers at
/// least one commit, and the commits it left unanswered are written in the next.
async fn write_isolated(
    pool: &Pool,
    commits: &[&Commit],
    projector: &dyn Projector,
    counters: &Counters,
) -> Vec<Outcome> {
    let mut answers: Vec<Option<Outcome>> = commits.iter().map(|_| None).collect();
    loop {
        let pending: Vec<usize> = (0..commits.len()).filter(|&i| answers[i].is_none()).collect();
        if pending.is_empty() {
            break;
        }
        let batch: Vec<&Commit> = pending.iter().map(|&i| commits[i]).collect();
        match write_batch(pool, &batch, projector, counters).await {
            Ok(pass) => {
                // `write_on` answers at least the commit it could not write; should it not,
                // the rest are answered `Closed` rather than tried forever.
                if pass.iter().all(Option::is_none) {
                    break;
                }
                for (&i, answer) in pending.iter().zip(pass) {
                    answers[i] = answer;
                }
            }
            Err(BatchError::Refused(_)) if batch.len() > 1 => {
                // Refused outside every commit's savepoint (at COMMIT): nothing was written
                // and the refusal names no commit, so each commit is tried alone.
                tracing::warn!(commits = batch.len(), "batch refused by the database; retrying its commits one by one");
                Counters::add(&counters.solo_retries, batch.len());
                for i in pending {
                    let answer = match write_batch(pool, &[commits[i]], projector, counters).await {
                        Ok(mut one) => one.pop().flatten().unwrap_or(Err(AppendError::Closed)),
                        Err(BatchError::Refused(error)) => refused(error),
                        Err(error) => Err(error.into()),
                    };
                    answers[i] = Some(answer);
                }
            }
            Err(BatchError::Refused(error)) => answers[pending[0]] = Some(refused(error)),
            Err(error) => {
                tracing::error!(error = %error, commits = batch.len(), "event store write failed");
                let message = error.to_string();
                for i in pending {
                    answers[i] = Some(Err(AppendError::Unavailable(message.clone().into())));
                }
            }
        }
    }
    answers.into_iter().map(|answer| answer.unwrap_or(Err(AppendError::Closed))).collect()
}

/// The answer to a commit the database refused, logged without the values it held.
fn refused(error: tokio_postgres::Error) -> Outcome {
    tracing::warn!(error = %describe(&error), "the database refused a commit");
    Err(AppendError::Rejected(error))
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

/// A statement the server answered with a data or constraint error, or that a trigger
/// raised (class P0), is the commit's fault; anything else (I/O, shutdown, serialization,
/// `25P02` after another statement's failure) is the store's condition.
fn is_refused(error: &tokio_postgres::Error) -> bool {
    error.code().is_some_and(|code| {
        let class = &code.code()[..2];
        matches!(class, "22" | "23" | "42" | "P0") || *code == SqlState::INSUFFICIENT_PRIVILEGE
    })
}

impl From<tokio_postgres::Error> for BatchError {
    fn from(error: tokio_postgres::Error) -> Self {
        if is_refused(&error) { Self::Refused(error) } else { Self::Unavailable(Box::new(error)) }
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

/// One transaction's answers, aligned with its commits: `None` for a commit to decide and
/// write again. A pass that wrote nothing answers at least the commit that stopped it.
type Pass = Vec<Option<Outcome>>;

async fn write_batch(
    pool: &Pool,
    commits: &[&Commit],
    projector: &dyn Projector,
    counters: &Counters,
) -> Result<Pass, BatchError> {
    let client = pool.get().await?;
    let outcome = write_on(&client, commits, projector, counters).await;
    if !matches!(outcome, Ok((_, true))) {
        // A request failed: the transaction may still be open on this connection, never
        // hand it back.
        drop(deadpool_postgres::Object::take(client));
    }
    outcome.map(|(pass, _)| pass)
}

/// A commit accepted in memory, with its events positioned and its read-model statements.
struct Planned {
    index: usize,
    recorded: Vec<RecordedEvent>,
    rows: Rows,
    steps: Vec<SqlStep>,
}

/// The savepoint each commit of a batch of several runs under. Savepoints of one name
/// stack; `RELEASE` and `ROLLBACK TO` take the newest.
const SAVEPOINT: &str = "SAVEPOINT c";
/// Runs the commit's deferred constraint triggers now, inside its savepoint, so that a
/// refusal names this commit rather than surfacing at COMMIT; then defers them again for
/// the next commit (every deferrable constraint of the schema is initially deferred).
const RELEASE: &str = "SET CONSTRAINTS ALL IMMEDIATE; SET CONSTRAINTS ALL DEFERRED; RELEASE SAVEPOINT c";
const ROLLBACK_TO: &str = "ROLLBACK TO SAVEPOINT c";
/// The head after a batch that may have lost its tail: the last event actually inserted.
const ADVANCE_HEAD_TO_LAST: &str = "UPDATE event_log_head SET position = last.position, hash = last.hash \
     FROM (SELECT position, hash FROM events ORDER BY position DESC LIMIT 1) AS last";

/// Writes one batch in two pipelined round trips: (BEGIN, lock the head, read the
/// streams' versions), then (each commit's statements, advance the head, COMMIT).
/// tokio-postgres sends a request when its future is first polled. Also says whether
/// every request succeeded (the connection is clean).
async fn write_on(
    client: &deadpool_postgres::Client,
    commits: &[&Commit],
    projector: &dyn Projector,
    counters: &Counters,
) -> Result<(Pass, bool), BatchError> {
    let (lock_head, read_versions, insert_events, advance_head, advance_head_to_last) = futures::try_join!(
        client.prepare_cached("SELECT position, hash FROM event_log_head FOR UPDATE"),
        client.prepare_typed_cached(
            "SELECT s.id, COALESCE((SELECT max(e.stream_version) FROM events e WHERE e.stream_id = s.id), 0) \
             FROM unnest($1::text[]) AS s(id)",
            &[Type::TEXT_ARRAY],
        ),
        client.prepare_typed_cached(INSERT_EVENTS, &INSERT_TYPES),
        client.prepare_typed_cached("UPDATE event_log_head SET position = $1, hash = $2", &[Type::INT8, Type::BYTEA]),
        client.prepare_cached(ADVANCE_HEAD_TO_LAST),
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
    let mut versions: HashMap<String, i64> = version_rows.iter().map(|row| (row.get(0), row.get(1))).collect();

    let recorded_at = to_micros(Utc::now());
    let mut answers: Pass = Vec::with_capacity(commits.len());
    let mut planned: Vec<Planned> = Vec::with_capacity(commits.len());
    for (index, commit) in commits.iter().enumerate() {
        if let Err(conflict) = check_expectations(commit, &versions) {
            answers.push(Some(Err(conflict)));
            continue;
        }
        let undo = (position, prev_hash.clone(), versions.clone());
        let mut recorded = Vec::with_capacity(commit.event_count());
        // A guard (an append of no events) only checked its stream's version above.
        for append in commit.appends.iter().filter(|a| !a.events.is_empty()) {
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
        match projector.steps_all(&recorded) {
            Ok(steps) => {
                let mut rows = Rows::default();
                rows.extend(&recorded);
                planned.push(Planned { index, recorded, rows, steps });
                answers.push(None);
            }
            Err(error) => {
                // A payload its own reducer cannot read: refuse this commit alone.
                (position, prev_hash, versions) = undo;
                answers.push(Some(Err(AppendError::Invalid(error.to_string()))));
            }
        }
    }

    if planned.is_empty() {
        client.batch_execute("ROLLBACK").await?;
        return Ok((answers, true));
    }
    // Each commit's statements: its read-model steps, then its extra steps.
    let steps: Vec<Vec<&SqlStep>> =
        planned.iter().map(|p| p.steps.iter().chain(&commits[p.index].extra).collect()).collect();
    let mut sqls: Vec<&'static str> = steps.iter().flatten().map(|step| step.sql).collect();
    sqls.sort_unstable();
    sqls.dedup();
    let prepared = futures::future::try_join_all(sqls.iter().map(|sql| client.prepare_cached(sql))).await?;
    let statement = |sql: &str| prepared[sqls.binary_search(&sql).unwrap_or_default()].clone();

    let savepoints = planned.len() > 1;
    let insert_params: Vec<[&(dyn ToSql + Sync); 11]> = planned.iter().map(|p| p.rows.params()).collect();
    let head_params: [&(dyn ToSql + Sync); 2] = [&position, &prev_hash];
    let step_params: Vec<Vec<Vec<&(dyn ToSql + Sync)>>> = steps
        .iter()
        .map(|commit| {
            commit.iter().map(|step| step.params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()).collect()
        })
        .collect();
    let simple = |sql: &'static str| -> pipeline::Request<'_> {
        Box::pin(async move { client.batch_execute(sql).await.map(|()| 0) })
    };
    let mut requests: Vec<pipeline::Request<'_>> = Vec::new();
    // The requests of each planned commit, by index in `requests`.
    let mut groups: Vec<std::ops::Range<usize>> = Vec::with_capacity(planned.len());
    for (g, commit_steps) in steps.iter().enumerate() {
        let start = requests.len();
        if savepoints {
            requests.push(simple(SAVEPOINT));
        }
        requests.push(Box::pin(client.execute(&insert_events, &insert_params[g])));
        for (step, params) in commit_steps.iter().zip(&step_params[g]) {
            let statement = statement(step.sql);
            requests.push(Box::pin(async move { client.execute(&statement, params).await }));
        }
        if savepoints {
            requests.push(simple(RELEASE));
        }
        groups.push(start..requests.len());
    }
    // From here on, every request must succeed for the transaction to commit: a COMMIT in
    // a failed transaction rolls it back (and reports no error).
    let must_succeed = if savepoints {
        requests.push(simple(SAVEPOINT));
        let rollback_to = requests.len();
        requests.push(simple(ROLLBACK_TO));
        requests.push(Box::pin(client.execute(&advance_head_to_last, &[])));
        rollback_to
    } else {
        let advance = requests.len();
        requests.push(Box::pin(client.execute(&advance_head, &head_params)));
        advance
    };
    requests.push(simple("COMMIT"));

    let mut outcomes = pipeline::in_order(requests).await;
    let Some(failed) = outcomes.iter().position(|o| matches!(o, Some(Err(_)))) else {
        for plan in planned {
            answers[plan.index] = Some(Ok(plan.recorded));
        }
        return Ok((answers, true));
    };
    let committed = outcomes[must_succeed..].iter().all(|o| matches!(o, Some(Ok(_))));
    let Some(Some(Err(error))) = outcomes.get_mut(failed).map(Option::take) else {
        unreachable!("`failed` is the index of a failed request")
    };
    // A refusal at COMMIT (a deferred constraint) of a lone commit is that commit's.
    let group = groups.iter().position(|g| g.contains(&failed)).or((planned.len() == 1).then_some(0));
    let Some(g) = group else { return Err(error.into()) };
    let offender = planned[g].index;
    if committed {
        // The commits before the offender are written; it was rolled back to its
        // savepoint; nothing after it ran.
        for plan in planned.into_iter().take(g) {
            answers[plan.index] = Some(Ok(plan.recorded));
        }
        if is_refused(&error) {
            Counters::add(&counters.savepoint_rollbacks, 1);
            tracing::warn!(
                error = %describe(&error),
                batch = commits.len(),
                "the database refused a commit; rolled back to its savepoint, its batch-mates kept"
            );
            answers[offender] = Some(Err(AppendError::Rejected(error)));
            // Decided in memory as if the offender were written (a conflict with it is
            // none): the commits after it are decided again.
            answers[offender + 1..].fill_with(|| None);
        } else {
            // Not the commit's fault: it and the commits after it fail as the batch would.
            tracing::error!(error = %describe(&error), "event store write failed after a partial batch");
            let message = error.to_string();
            answers[offender..].fill_with(|| Some(Err(AppendError::Unavailable(message.clone().into()))));
        }
        Ok((answers, false))
    } else if is_refused(&error) {
        // Nothing is written: the offender is answered, every other commit is decided again.
        answers.fill_with(|| None);
        answers[offender] = Some(refused(error));
        Ok((answers, false))
    } else {
        Err(error.into())
    }
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
