//! Running a command: load the aggregate from its stream, `decide`, append the events
//! expecting the version that was loaded. A concurrent change makes the append conflict;
//! the command is then decided again on the new state, unless the client pinned the
//! version with `If-Match`, which turns the conflict into a 412.

use shared::domain::{Aggregate, DomainError};

use crate::app::cache::{Cached, Loaded};
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

/// The aggregate and its version, caught up with the log (see [`crate::app::load::latest`]).
pub async fn load<A: Cached>(store: &EventStore, id: Uuid) -> Result<(A, i64), ApiError> {
    let loaded = crate::app::load::latest::<A>(store, id).await?;
    Ok((loaded.state, loaded.version))
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
pub async fn execute<A: Cached>(
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
pub async fn execute_with<A: Cached>(
    store: &EventStore,
    id: Uuid,
    if_match: Option<i64>,
    metadata: &Metadata,
    decide: impl Fn(&A) -> Result<Vec<A::Event>, DomainError>,
    extra: impl Fn() -> Vec<SqlStep>,
) -> Result<Executed<A>, ApiError> {
    let loaded = crate::app::load::load::<A>(store, id).await?;
    let done = run(store, id, loaded, if_match, metadata, |state| Ok((decide(state)?, extra()))).await?;
    Ok(Executed { state: done.loaded.state, version: done.loaded.version, events: done.events })
}

/// A command's outcome: the aggregate after it (with its times), and what it recorded.
pub struct Done<A> {
    pub loaded: Loaded<A>,
    pub events: Vec<RecordedEvent>,
}

/// Decides on `loaded` and appends, expecting its version: the one database round trip of
/// a command on a warm cache. A conflict reads only the events the state missed and
/// decides again; with `If-Match` it is a 412 instead. `decide` returns the events and the
/// statements that commit with them.
pub async fn run<A: Cached>(
    store: &EventStore,
    id: Uuid,
    mut loaded: Loaded<A>,
    if_match: Option<i64>,
    metadata: &Metadata,
    decide: impl Fn(&A) -> Result<(Vec<A::Event>, Vec<SqlStep>), ApiError>,
) -> Result<Done<A>, ApiError> {
    let stream_id = A::stream_id(id);
    let _turn = store.cache().turn(&stream_id).await;
    // A command of this process that ran while this one waited left a later state.
    if let Some(hit) = store.cache().get::<A>(&stream_id)
        && hit.loaded.version > loaded.version
        && !hit.stale
    {
        loaded = hit.loaded;
    }
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            loaded = crate::app::load::refresh(store, id, loaded).await?;
        }
        if let Some(expected) = if_match
            && expected != loaded.version
        {
            // The cache may be behind the version the client saw on another hub.
            if expected > loaded.version && attempt == 0 {
                loaded = crate::app::load::refresh(store, id, loaded).await?;
            }
            if expected != loaded.version {
                return Err(ApiError::PreconditionFailed);
            }
        }
        let mut decided = decide(&loaded.state);
        if attempt == 0 && !matches!(&decided, Ok((events, _)) if !events.is_empty()) {
            // A refusal or a no-op may come from a cached state another hub has since
            // changed: it stands only on the log's latest state.
            let read = crate::app::load::refresh(store, id, loaded.clone()).await?;
            if read.version != loaded.version {
                decided = decide(&read.state);
            }
            loaded = read;
            if if_match.is_some_and(|expected| expected != loaded.version) {
                return Err(ApiError::PreconditionFailed);
            }
        }
        let (events, extra) = decided?;
        if events.is_empty() {
            return Ok(Done { loaded, events: Vec::new() });
        }
        let expected =
            if loaded.version == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(loaded.version) };
        let mut commit = Commit::single(stream_id.clone(), expected, encode(&events, metadata)?);
        commit.extra = extra;
        commit.extra.extend(idempotency_mark(metadata));
        match store.commit(commit).await {
            Ok(recorded) => {
                loaded.advance(&recorded)?;
                store.cache().put(&stream_id, &loaded);
                return Ok(Done { loaded, events: recorded });
            }
            Err(AppendError::Conflict { .. }) if if_match.is_some() => return Err(ApiError::PreconditionFailed),
            Err(AppendError::Conflict { .. }) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(ApiError::Conflict {
        code: "concurrent_modification",
        detail: "the resource was changed concurrently; retry".into(),
    })
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
