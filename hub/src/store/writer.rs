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
//!    accepted commit's events, read-model statements and extra statements, the batch's
//!    own statements ([`Projector::batch_steps`]: the audit log's rows of all its events in
//!    one statement), advance the head, COMMIT.
//!
//! The decision is safe because no other transaction can append while the head is
//! locked. The database may still refuse a commit (a unique index, a tree or quota
//! trigger). A batch of several commits is first written merged (one insert of all its
//! events, then every commit's statements, the head's advance and COMMIT: the cheapest
//! transaction). Should the database refuse it, nothing is written, and the batch is
//! written again with each commit isolated; so are the batches of the next second, as
//! where commits are being refused a merged attempt is mostly wasted. Isolated, each
//! commit runs under its own savepoint, its deferred constraints checked before the
//! savepoint is released; a statement that fails aborts the transaction up to that
//! savepoint and every later statement fails with `25P02`. Such a batch's second round
//! trip therefore ends with `SAVEPOINT c; ROLLBACK TO SAVEPOINT c` and moves the head to
//! the last event actually inserted, and the COMMIT is a third request, sent once every
//! commit is answered: after a clean pass the rollback undoes nothing; after a refusal it
//! returns to the refused commit's savepoint, that commit is answered alone, and the
//! commits after it are decided again from the head its predecessors left and sent in
//! another pass of the same transaction. Positions stay gapless, the chain exact, and a
//! refusal costs one round trip, not a transaction. A batch of one commit needs no
//! savepoint: its COMMIT goes in the same round trip.

use std::collections::HashMap;

use chrono::Utc;
use deadpool_postgres::Pool;
use shared::RecordedEvent;
use shared::hash::{ChainFields, to_micros};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tracing::Instrument;

use std::sync::Arc;

use super::stats::Counters;
use super::{AppendError, Commit, ExpectedVersion, pipeline};
use crate::projections::{Projector, SqlStep, claims};

pub(super) struct Job {
    pub commit: Commit,
    pub reply: oneshot::Sender<Result<Vec<RecordedEvent>, AppendError>>,
    /// The caller's `append` span, which the batch's span links to.
    pub span: tracing::Span,
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
        let started = std::time::Instant::now();
        // One transaction for many requests' appends: linked to each, a child of none.
        let span = tracing::debug_span!(parent: None, "writer.batch", commits = batch.len(), events);
        batch.iter().for_each(|job| shared::telemetry::add_link(&span, &job.span));
        let results = write_isolated(&pool, &commits, projector.as_ref(), counters).instrument(span).await;
        metrics::histogram!(shared::metrics::APPEND_BATCH_DURATION).record(started.elapsed().as_secs_f64());
        metrics::histogram!(shared::metrics::APPEND_BATCH_COMMITS).record(commits.len() as f64);
        metrics::histogram!(shared::metrics::APPEND_BATCH_EVENTS).record(events as f64);
        Counters::add(&counters.commits, results.len());
        let refused = results.iter().filter(|r| matches!(r, Err(AppendError::Rejected(_)))).count();
        let taken = results.iter().filter(|r| matches!(r, Err(AppendError::Taken { .. }))).count();
        Counters::add(&counters.names_taken, taken);
        Counters::add(&counters.refused, refused);
        if refused > 0 {
            counters.refusal_seen();
        }
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

/// The server's message and constraint, without the values of the failed row: what may
/// be logged of a database error (never shown to a client).
pub fn describe(error: &tokio_postgres::Error) -> String {
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
    if commits.len() > 1 && counters.merge_next() {
        let client = pool.get().await?;
        match write_on(&client, commits, projector, counters, Mode::Merged).await {
            Ok((pass, true)) => return Ok(pass),
            Ok((pass, false)) => {
                drop(deadpool_postgres::Object::take(client));
                return Ok(pass);
            }
            Err(BatchError::Refused(error)) => {
                // Nothing was written (the COMMIT rolled the batch back): write it again,
                // each commit under its savepoint, so only the offender is refused.
                drop(deadpool_postgres::Object::take(client));
                counters.refusal_seen();
                Counters::add(&counters.merged_fallbacks, 1);
                tracing::debug!(error = %describe(&error), "merged batch refused; writing it with a savepoint per commit");
            }
            Err(error) => {
                drop(deadpool_postgres::Object::take(client));
                return Err(error);
            }
        }
    }
    let client = pool.get().await?;
    let outcome = write_on(&client, commits, projector, counters, Mode::Isolated).await;
    if !matches!(outcome, Ok((_, true))) {
        // A request failed: the transaction may still be open on this connection, never
        // hand it back.
        drop(deadpool_postgres::Object::take(client));
    }
    outcome.map(|(pass, _)| pass)
}

/// How a batch of several commits is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One transaction of set-based statements (one insert of all events): cheapest, but a
    /// refusal fails the whole batch, which is then written [`Mode::Isolated`].
    Merged,
    /// Each commit under its own savepoint (see the module documentation).
    Isolated,
}

/// A commit accepted in memory, with its events positioned and its read-model statements.
struct Planned {
    index: usize,
    recorded: Vec<RecordedEvent>,
    rows: Rows,
    steps: Vec<SqlStep>,
    /// The head as the commit found it (where a refusal of it leaves the next).
    before: Head,
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

/// Writes one batch: (BEGIN, lock the head, read the streams' versions), then each
/// commit's statements and the head's advance, pipelined, then COMMIT (see the module
/// documentation).
/// tokio-postgres sends a request when its future is first polled. Also says whether
/// every request succeeded (the connection is clean).
async fn write_on(
    client: &deadpool_postgres::Client,
    commits: &[&Commit],
    projector: &dyn Projector,
    counters: &Counters,
    mode: Mode,
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
    let (claimed_by, names) = names_claimed(commits, projector);
    let (organizations, parents, names) = claims::holders_params(&names);
    let holder_params: [&(dyn ToSql + Sync); 3] = [&organizations, &parents, &names];
    // Sent after the head's lock in the same round trip, so the holders it finds stand
    // until COMMIT (see `projections::claims`).
    let read_holders = async {
        if claimed_by.is_empty() {
            return Ok(Vec::new());
        }
        let statement = client.prepare_cached(claims::HOLDERS_SQL).await?;
        client.query(&statement, &holder_params).await
    };
    let (_, head, version_rows, holder_rows) = futures::try_join!(
        client.batch_execute("BEGIN"),
        client.query_one(&lock_head, &[]),
        client.query(&read_versions, &version_params),
        read_holders,
    )?;
    let mut head = Head {
        position: head.get(0),
        prev_hash: head.get(1),
        versions: version_rows.iter().map(|row| (row.get(0), row.get(1))).collect(),
    };
    let recorded_at = to_micros(Utc::now());
    let mut answers: Pass = commits.iter().map(|_| None).collect();
    let taken = names_taken(commits.len(), &claimed_by, &holder_rows, &ids);
    for index in (0..commits.len()).filter(|&i| taken[i]) {
        answers[index] = Some(Err(AppendError::Taken { constraint: claims::SIBLING_NAME }));
    }
    let free = |range: std::ops::Range<usize>| range.filter(|&i| !taken[i]);
    let planned = plan(commits, free(0..commits.len()), &mut head, recorded_at, projector, &mut answers);
    if planned.is_empty() {
        client.batch_execute("ROLLBACK").await?;
        return Ok((answers, true));
    }
    if planned.len() == 1 {
        return write_one(client, commits, planned, &head, (&insert_events, &advance_head), projector, answers).await;
    }
    if mode == Mode::Merged {
        write_merged(client, commits, &planned, &head, (&insert_events, &advance_head), projector).await?;
        for plan in planned {
            answers[plan.index] = Some(Ok(plan.recorded));
        }
        return Ok((answers, true));
    }

    // Several commits, each under its savepoint. The passes leave the COMMIT out: after a
    // refusal the transaction goes on from the refused commit's savepoint, and the
    // commits after it are decided again against the head the commits before it left.
    let mut planned = planned;
    let mut written: Vec<Planned> = Vec::with_capacity(planned.len());
    loop {
        let (outcomes, groups, tail) =
            send_pass(client, commits, &planned, (&insert_events, &advance_head_to_last), projector).await?;
        let Some(failed) = outcomes.iter().position(|o| matches!(o, Some(Err(_)))) else {
            written.append(&mut planned);
            break;
        };
        let mut outcomes = outcomes;
        let Some(Some(Err(error))) = outcomes.get_mut(failed).map(Option::take) else {
            unreachable!("`failed` is the index of a failed request")
        };
        // The pass ends by rolling back to the newest savepoint and moving the head to the
        // last event inserted: unless that succeeded, the transaction is lost.
        let recovered = outcomes[tail..].iter().all(|o| matches!(o, Some(Ok(_))));
        let group = groups.iter().position(|g| g.contains(&failed));
        let (true, Some(g), true) = (recovered, group, is_refused(&error)) else {
            return Err(error.into());
        };
        Counters::add(&counters.savepoint_rollbacks, 1);
        tracing::warn!(
            error = %describe(&error),
            batch = commits.len(),
            "the database refused a commit; rolled back to its savepoint, its batch-mates kept"
        );
        let mut rest = planned.split_off(g);
        written.append(&mut planned);
        let offender = rest.remove(0);
        answers[offender.index] = Some(Err(AppendError::Rejected(error)));
        // Every commit after it was decided as if it were written (some may even have
        // conflicted with it): decide them all again.
        head = offender.before;
        let retry = offender.index + 1..commits.len();
        free(retry.clone()).for_each(|i| answers[i] = None);
        planned = plan(commits, free(retry), &mut head, recorded_at, projector, &mut answers);
        if planned.is_empty() {
            break;
        }
    }
    client.batch_execute("COMMIT").await?;
    for plan in written {
        answers[plan.index] = Some(Ok(plan.recorded));
    }
    Ok((answers, true))
}

/// The log's head and the versions of the batch's streams, as the commits decided so far
/// leave them.
#[derive(Clone)]
struct Head {
    position: i64,
    prev_hash: Vec<u8>,
    versions: HashMap<String, i64>,
}

/// Decides the commits `indices` in memory, in order, from `head` (advanced past each
/// accepted commit): a commit whose expectation fails, or whose events its reducer cannot
/// read, is answered in `answers` and contributes nothing.
fn plan(
    commits: &[&Commit],
    indices: impl Iterator<Item = usize>,
    head: &mut Head,
    recorded_at: chrono::DateTime<Utc>,
    projector: &dyn Projector,
    answers: &mut Pass,
) -> Vec<Planned> {
    let mut planned = Vec::new();
    for index in indices {
        let commit = commits[index];
        if let Err(conflict) = check_expectations(commit, &head.versions) {
            answers[index] = Some(Err(conflict));
            continue;
        }
        let before = head.clone();
        let mut recorded = Vec::with_capacity(commit.event_count());
        // A guard (an append of no events) only checked its stream's version above.
        for append in commit.appends.iter().filter(|a| !a.events.is_empty()) {
            let version = head.versions.entry(append.stream_id.clone()).or_insert(0);
            for event in &append.events {
                head.position += 1;
                *version += 1;
                let fields = ChainFields {
                    position: head.position,
                    stream_id: &append.stream_id,
                    stream_version: *version,
                    event_id: event.event_id,
                    event_type: &event.event_type,
                    schema_version: event.schema_version,
                    data: &event.data,
                    metadata: &event.metadata,
                    recorded_at,
                };
                let hash = fields.chain_hash(&head.prev_hash);
                recorded.push(RecordedEvent {
                    position: head.position,
                    stream_id: append.stream_id.clone(),
                    stream_version: *version,
                    event_id: event.event_id,
                    event_type: event.event_type.clone(),
                    schema_version: event.schema_version,
                    data: event.data.clone(),
                    metadata: event.metadata.clone(),
                    recorded_at,
                    prev_hash: std::mem::replace(&mut head.prev_hash, hash.clone()),
                    hash,
                });
            }
        }
        match projector.steps_all(&recorded) {
            Ok(steps) => {
                let mut rows = Rows::default();
                rows.extend(&recorded);
                planned.push(Planned { index, recorded, rows, steps, before });
            }
            Err(error) => {
                // A payload its own reducer cannot read: refuse this commit alone.
                *head = before;
                answers[index] = Some(Err(AppendError::Invalid(error.to_string())));
            }
        }
    }
    planned
}

/// Prepares the statements of the planned commits' steps (cached per connection).
async fn prepare_steps(
    client: &deadpool_postgres::Client,
    commits: &[&Commit],
    planned: &[Planned],
    batch_steps: &[&SqlStep],
) -> Result<HashMap<&'static str, tokio_postgres::Statement>, tokio_postgres::Error> {
    let mut sqls: Vec<&'static str> = planned
        .iter()
        .flat_map(|p| p.steps.iter().chain(&commits[p.index].extra))
        .chain(batch_steps.iter().copied())
        .map(|step| step.sql)
        .collect();
    sqls.sort_unstable();
    sqls.dedup();
    let prepared = futures::future::try_join_all(sqls.iter().map(|sql| client.prepare_cached(sql))).await?;
    Ok(sqls.into_iter().zip(prepared).collect())
}

fn step_params(step: &SqlStep) -> Vec<&(dyn ToSql + Sync)> {
    step.params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()
}

/// A batch of one commit, in one pipelined round trip ending in COMMIT: a refusal is that
/// commit's alone.
async fn write_one(
    client: &deadpool_postgres::Client,
    commits: &[&Commit],
    mut planned: Vec<Planned>,
    head: &Head,
    statements: (&tokio_postgres::Statement, &tokio_postgres::Statement),
    projector: &dyn Projector,
    mut answers: Pass,
) -> Result<(Pass, bool), BatchError> {
    match write_merged(client, commits, &planned, head, statements, projector).await {
        Ok(()) => {
            let plan = planned.remove(0);
            answers[plan.index] = Some(Ok(plan.recorded));
            Ok((answers, true))
        }
        Err(BatchError::Refused(error)) => {
            let index = planned[0].index;
            answers[index] = Some(refused(error));
            // A commit after it that conflicted with it in memory is decided again (in
            // the next transaction).
            answers[index + 1..].fill_with(|| None);
            Ok((answers, false))
        }
        Err(error) => Err(error),
    }
}

/// Writes several commits as one: one insert of all their events, their statements in
/// order, the head's advance and COMMIT, in one pipelined round trip. Any failure fails
/// them all (and the COMMIT rolls the transaction back).
async fn write_merged(
    client: &deadpool_postgres::Client,
    commits: &[&Commit],
    planned: &[Planned],
    head: &Head,
    statements: (&tokio_postgres::Statement, &tokio_postgres::Statement),
    projector: &dyn Projector,
) -> Result<(), BatchError> {
    let (insert_events, advance_head) = statements;
    // The batch's own statements (one for all its commits) follow every commit's steps.
    let events: Vec<&RecordedEvent> = planned.iter().flat_map(|p| &p.recorded).collect();
    let batch_steps = projector.batch_steps(&events);
    let statements = prepare_steps(client, commits, planned, &batch_steps.iter().collect::<Vec<_>>()).await?;
    let steps: Vec<&SqlStep> =
        planned.iter().flat_map(|p| p.steps.iter().chain(&commits[p.index].extra)).chain(&batch_steps).collect();
    let params: Vec<Vec<&(dyn ToSql + Sync)>> = steps.iter().map(|step| step_params(step)).collect();
    let mut rows = Rows::default();
    planned.iter().for_each(|p| rows.extend(&p.recorded));
    let insert_params = rows.params();
    let head_params: [&(dyn ToSql + Sync); 2] = [&head.position, &head.prev_hash];
    let mut requests: Vec<pipeline::Request<'_>> = Vec::with_capacity(steps.len() + 3);
    requests.push(Box::pin(client.execute(insert_events, &insert_params)));
    for (step, params) in steps.iter().zip(&params) {
        let statement = statements[step.sql].clone();
        requests.push(Box::pin(async move { client.execute(&statement, params).await }));
    }
    requests.push(Box::pin(client.execute(advance_head, &head_params)));
    requests.push(Box::pin(async move { client.batch_execute("COMMIT").await.map(|()| 0) }));
    let mut outcomes = pipeline::in_order(requests).await;
    match outcomes.iter_mut().find_map(|o| o.take().filter(Result::is_err)) {
        None => Ok(()),
        Some(Err(error)) => Err(error.into()),
        Some(Ok(_)) => unreachable!("filtered on errors"),
    }
}

/// Sends one pass of several commits, each under its savepoint, then rolls back to the
/// newest savepoint (a no-op after a clean pass) and moves the head to the last event
/// inserted. Returns every request's outcome, each commit's range of requests, and where
/// the closing requests start.
async fn send_pass(
    client: &deadpool_postgres::Client,
    commits: &[&Commit],
    planned: &[Planned],
    statements: (&tokio_postgres::Statement, &tokio_postgres::Statement),
    projector: &dyn Projector,
) -> Result<(Vec<pipeline::Outcome>, Vec<std::ops::Range<usize>>, usize), BatchError> {
    let (insert_events, advance_head_to_last) = statements;
    // Each commit's batch statements inside its own savepoint, so a refusal takes them too.
    let batch_steps: Vec<Vec<SqlStep>> =
        planned.iter().map(|p| projector.batch_steps(&p.recorded.iter().collect::<Vec<_>>())).collect();
    let statements = prepare_steps(client, commits, planned, &batch_steps.iter().flatten().collect::<Vec<_>>()).await?;
    let steps: Vec<Vec<&SqlStep>> = planned
        .iter()
        .zip(&batch_steps)
        .map(|(p, batch)| p.steps.iter().chain(&commits[p.index].extra).chain(batch).collect())
        .collect();
    let params: Vec<Vec<Vec<&(dyn ToSql + Sync)>>> =
        steps.iter().map(|commit| commit.iter().map(|step| step_params(step)).collect()).collect();
    let insert_params: Vec<[&(dyn ToSql + Sync); 11]> = planned.iter().map(|p| p.rows.params()).collect();
    let simple = |sql: &'static str| -> pipeline::Request<'_> {
        Box::pin(async move { client.batch_execute(sql).await.map(|()| 0) })
    };
    let mut requests: Vec<pipeline::Request<'_>> = Vec::new();
    let mut groups = Vec::with_capacity(planned.len());
    for (g, commit_steps) in steps.iter().enumerate() {
        let start = requests.len();
        requests.push(simple(SAVEPOINT));
        requests.push(Box::pin(client.execute(insert_events, &insert_params[g])));
        for (step, params) in commit_steps.iter().zip(&params[g]) {
            let statement = statements[step.sql].clone();
            requests.push(Box::pin(async move { client.execute(&statement, params).await }));
        }
        requests.push(simple(RELEASE));
        groups.push(start..requests.len());
    }
    requests.push(simple(SAVEPOINT));
    let tail = requests.len();
    requests.push(simple(ROLLBACK_TO));
    requests.push(Box::pin(client.execute(advance_head_to_last, &[])));
    Ok((pipeline::in_order(requests).await, groups, tail))
}

/// The names the commits' events take: which commit claims each, and the names in the
/// same order.
fn names_claimed(commits: &[&Commit], projector: &dyn Projector) -> (Vec<usize>, Vec<claims::SiblingName>) {
    let mut claimed_by = Vec::new();
    let mut names = Vec::new();
    for (index, commit) in commits.iter().enumerate() {
        for append in &commit.appends {
            for event in &append.events {
                if let Some(name) = projector.claim(&append.stream_id, &event.event_type, &event.data) {
                    claimed_by.push(index);
                    names.push(name);
                }
            }
        }
    }
    (claimed_by, names)
}

/// Which commits take a name whose live holder no commit of the batch changes.
fn names_taken(commits: usize, claimed_by: &[usize], holder_rows: &[tokio_postgres::Row], ids: &[&str]) -> Vec<bool> {
    let mut taken = vec![false; commits];
    for row in holder_rows {
        let (ordinal, holder): (i64, uuid::Uuid) = (row.get(0), row.get(1));
        let changed_in_batch = ids.binary_search(&claims::holder_stream(holder).as_str()).is_ok();
        if let Some(&index) = usize::try_from(ordinal - 1).ok().and_then(|i| claimed_by.get(i))
            && !changed_in_batch
        {
            taken[index] = true;
        }
    }
    taken
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
