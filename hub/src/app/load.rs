//! Loading an aggregate for a command: from the cache when it holds the stream, else from
//! the latest snapshot and the events after it; a stale entry reads only what it missed.

use shared::RecordedEvent;
use uuid::Uuid;

use super::cache::{Cached, Loaded};
use super::snapshots;
use crate::http::error::ApiError;
use crate::store::EventStore;

/// The aggregate as this hub knows it, caught up with the log when the cache knows it is
/// behind. The state may still be behind another hub's latest write: the append's
/// expected version catches that.
pub async fn load<A: Cached>(store: &EventStore, id: Uuid) -> Result<Loaded<A>, ApiError> {
    let stream_id = A::stream_id(id);
    match store.cache().get::<A>(&stream_id) {
        Some(hit) if !hit.stale => Ok(hit.loaded),
        Some(hit) => catch_up(store, &stream_id, hit.loaded).await,
        None => cold(store, &stream_id).await,
    }
}

/// The aggregate caught up with the log: one read (of what the cache missed, or of the
/// stream from its snapshot), for callers that decide outside `commands::run` and so get
/// no retry on a stale state.
pub async fn latest<A: Cached>(store: &EventStore, id: Uuid) -> Result<Loaded<A>, ApiError> {
    let stream_id = A::stream_id(id);
    match store.cache().get::<A>(&stream_id) {
        Some(hit) => catch_up(store, &stream_id, hit.loaded).await,
        None => cold(store, &stream_id).await,
    }
}

/// Reads the events after `loaded.version` and applies them.
pub async fn refresh<A: Cached>(store: &EventStore, id: Uuid, loaded: Loaded<A>) -> Result<Loaded<A>, ApiError> {
    catch_up(store, &A::stream_id(id), loaded).await
}

async fn catch_up<A: Cached>(
    store: &EventStore,
    stream_id: &str,
    mut loaded: Loaded<A>,
) -> Result<Loaded<A>, ApiError> {
    let events = store.read_stream(stream_id, loaded.version).await?;
    loaded.advance(&events)?;
    if loaded.version > 0 {
        store.cache().put(stream_id, &loaded);
    }
    Ok(loaded)
}

async fn cold<A: Cached>(store: &EventStore, stream_id: &str) -> Result<Loaded<A>, ApiError> {
    let client = store.pool().get().await?;
    let mut loaded = snapshots::read::<A>(&**client, stream_id).await?.unwrap_or_default();
    let events: Vec<RecordedEvent> = crate::store::read_stream_after(&**client, stream_id, loaded.version).await?;
    loaded.advance(&events)?;
    if snapshots::worth_taking(&events)
        && let Err(error) = snapshots::write(&**client, stream_id, &loaded).await
    {
        tracing::warn!(stream_id, error = %crate::store::describe(&error), "could not store a snapshot");
    }
    // A stream with no events (an id that names nothing) takes no room in the cache.
    if loaded.version > 0 {
        store.cache().put(stream_id, &loaded);
    }
    Ok(loaded)
}

/// The state of a stream this command creates: nothing to read.
pub fn fresh<A: Cached>() -> Loaded<A> {
    Loaded::default()
}
