//! Running a command: load the aggregate from its stream, `decide`, append the events
//! expecting the version that was loaded. A concurrent change makes the append conflict;
//! the command is then decided again on the new state, unless the client pinned the
//! version with `If-Match`, which turns the conflict into a 412.

use shared::domain::{Aggregate, DomainError};
use shared::{Metadata, RecordedEvent};
use uuid::Uuid;

use crate::http::error::ApiError;
use crate::projections::SqlStep;
use crate::store::{AppendError, Commit, EventStore, ExpectedVersion, NewEvent, StreamAppend};

const ATTEMPTS: usize = 5;
/// Streams read per query when loading many aggregates: a whole organization or subtree
/// costs a few round trips, and no query grows without bound.
const BATCH: usize = 1_000;

/// The aggregate after the command.
pub struct Executed<A> {
    pub state: A,
    pub version: i64,
    pub events: Vec<RecordedEvent>,
}

pub async fn load<A: Aggregate>(store: &EventStore, id: Uuid) -> Result<(A, i64), ApiError> {
    let history = store.read_stream(&A::stream_id(id), 0).await?;
    let mut state = A::default();
    for event in &history {
        state.apply(&event.decode::<A::Event>()?);
    }
    Ok((state, history.last().map_or(0, |e| e.stream_version)))
}

/// Loads several aggregates of one kind, one read per `BATCH` of them, in the order of
/// `ids` (an aggregate with no events is its default state at version 0).
pub async fn load_all<A: Aggregate>(store: &EventStore, ids: &[Uuid]) -> Result<Vec<(A, i64)>, ApiError> {
    let mut loaded = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(BATCH) {
        let stream_ids: Vec<String> = chunk.iter().map(|id| A::stream_id(*id)).collect();
        let refs: Vec<&str> = stream_ids.iter().map(String::as_str).collect();
        let mut histories = store.read_streams(&refs).await?;
        for stream_id in &stream_ids {
            let history = histories.remove(stream_id).unwrap_or_default();
            let mut state = A::default();
            for event in &history {
                state.apply(&event.decode::<A::Event>()?);
            }
            loaded.push((state, history.last().map_or(0, |e| e.stream_version)));
        }
    }
    Ok(loaded)
}

/// Marks the request's idempotency key as committed, in the command's own transaction.
pub fn idempotency_mark(metadata: &Metadata) -> Option<SqlStep> {
    let key = metadata.idempotency_key.clone()?;
    let subject = crate::http::auth::subject_of(metadata.actor.kind, metadata.actor.id.as_deref());
    Some(SqlStep::new(
        "UPDATE idempotency_keys SET committed = true WHERE principal = $1 AND key = $2",
        crate::projections::params![subject, key],
    ))
}

pub fn encode<E: shared::DomainEvent>(events: &[E], metadata: &Metadata) -> Result<Vec<NewEvent>, ApiError> {
    events.iter().map(|e| NewEvent::new(e, metadata).map_err(ApiError::internal)).collect()
}

/// Runs a command on one aggregate.
pub async fn execute<A: Aggregate>(
    store: &EventStore,
    id: Uuid,
    if_match: Option<i64>,
    metadata: &Metadata,
    decide: impl Fn(&A) -> Result<Vec<A::Event>, DomainError>,
) -> Result<Executed<A>, ApiError> {
    execute_with(store, id, if_match, metadata, decide, Vec::new).await
}

/// Runs a command on one aggregate; `extra` gives statements that commit with its events
/// (called again on each attempt).
pub async fn execute_with<A: Aggregate>(
    store: &EventStore,
    id: Uuid,
    if_match: Option<i64>,
    metadata: &Metadata,
    decide: impl Fn(&A) -> Result<Vec<A::Event>, DomainError>,
    extra: impl Fn() -> Vec<SqlStep>,
) -> Result<Executed<A>, ApiError> {
    for _ in 0..ATTEMPTS {
        let (mut state, version) = load::<A>(store, id).await?;
        if if_match.is_some_and(|expected| expected != version) {
            return Err(ApiError::PreconditionFailed);
        }
        let events = decide(&state)?;
        if events.is_empty() {
            return Ok(Executed { state, version, events: Vec::new() });
        }
        let expected = if version == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(version) };
        let mut commit = Commit::single(A::stream_id(id), expected, encode(&events, metadata)?);
        commit.extra = extra();
        commit.extra.extend(idempotency_mark(metadata));
        match store.commit(commit).await {
            Ok(recorded) => {
                events.iter().for_each(|e| state.apply(e));
                let version = recorded.last().map_or(version, |e| e.stream_version);
                return Ok(Executed { state, version, events: recorded });
            }
            Err(AppendError::Conflict { .. }) if if_match.is_some() => return Err(ApiError::PreconditionFailed),
            Err(AppendError::Conflict { .. }) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(AppendError::Conflict { stream_id: A::stream_id(id), expected: ExpectedVersion::Any, actual: 0 }.into())
}

/// Runs a command on several aggregates of one kind, atomically (a subtree archive, a
/// cascading delete). `if_match` pins the version of `ids[0]`. The aggregates are loaded
/// with one read and written with one commit, so the cost is a few round trips however
/// many there are.
pub async fn execute_all<A: Aggregate>(
    store: &EventStore,
    ids: &[Uuid],
    if_match: Option<i64>,
    metadata: &Metadata,
    decide: impl Fn(Uuid, &A) -> Result<Vec<A::Event>, DomainError>,
    extra: impl Fn() -> Vec<SqlStep>,
) -> Result<Vec<RecordedEvent>, ApiError> {
    'attempt: for _ in 0..ATTEMPTS {
        let mut appends = Vec::new();
        let loaded = load_all::<A>(store, ids).await?;
        for (i, (id, (state, version))) in ids.iter().zip(loaded).enumerate() {
            if i == 0 && if_match.is_some_and(|expected| expected != version) {
                return Err(ApiError::PreconditionFailed);
            }
            let events = decide(*id, &state)?;
            if !events.is_empty() {
                appends.push(StreamAppend {
                    stream_id: A::stream_id(*id),
                    expected: ExpectedVersion::Exact(version),
                    events: encode(&events, metadata)?,
                });
            }
        }
        if appends.is_empty() {
            return Ok(Vec::new());
        }
        let mut extra = extra();
        extra.extend(idempotency_mark(metadata));
        match store.commit(Commit { appends, extra }).await {
            Ok(recorded) => return Ok(recorded),
            Err(AppendError::Conflict { .. }) if if_match.is_some() => return Err(ApiError::PreconditionFailed),
            Err(AppendError::Conflict { .. }) => continue 'attempt,
            Err(error) => return Err(error.into()),
        }
    }
    Err(ApiError::Conflict {
        code: "concurrent_modification",
        detail: "the resources changed concurrently; retry".into(),
    })
}
