//! Aggregates kept in memory with their version, so a command does not re-read its stream.
//!
//! An entry is the state an aggregate had at `version`. It is only ever a starting point:
//! every append still states the version it was decided on, so an entry that fell behind
//! (another hub wrote) makes the append conflict, and the retry reads just the events
//! after the entry's version. Entries follow this process's own commits as they happen
//! ([`AggregateCache::observe`]) and are marked stale when the log shows another hub's
//! write ([`AggregateCache::saw`]), so the next load catches up before deciding.
//!
//! The cache is bounded: least recently used entries leave first.

use std::any::Any;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use lru::LruCache;
use serde::Serialize;
use serde::de::DeserializeOwned;
use shared::domain::Aggregate;
use shared::{DecodeError, RecordedEvent};

/// An aggregate the hub caches and snapshots.
pub trait Cached: Aggregate + Serialize + DeserializeOwned {
    /// The shape of the state: a snapshot of another shape is ignored (raise it whenever
    /// the state's fields or `apply` change meaning).
    const STATE_VERSION: i32;

    /// Whether the event changes the read model's `updated_at` (the aggregate's
    /// last-modified time as the API shows it).
    fn touches_record(_event_type: &str) -> bool {
        true
    }
}

impl Cached for shared::domain::workspace::Workspace {
    const STATE_VERSION: i32 = 1;

    fn touches_record(event_type: &str) -> bool {
        // Membership and invitation events change the workspace's version, not its row.
        !event_type.starts_with("Invitation") && !event_type.starts_with("Member")
    }
}

impl Cached for shared::domain::organization::Organization {
    const STATE_VERSION: i32 = 1;
}

impl Cached for shared::domain::api_key::ApiKey {
    const STATE_VERSION: i32 = 1;
}

impl Cached for shared::domain::user::User {
    const STATE_VERSION: i32 = 1;
}

impl Cached for shared::domain::app::App {
    const STATE_VERSION: i32 = 1;
}

/// An aggregate's state at a version, with the times the API shows for it.
#[derive(Debug, Clone)]
pub struct Loaded<A> {
    pub state: A,
    /// The stream's version this state includes (0: no events yet).
    pub version: i64,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl<A: Cached> Default for Loaded<A> {
    fn default() -> Self {
        Self { state: A::default(), version: 0, created_at: None, updated_at: None }
    }
}

impl<A: Cached> Loaded<A> {
    /// Applies events of the stream that follow `version`; events already included are
    /// skipped, so applying the same commit twice is harmless.
    pub fn advance(&mut self, events: &[RecordedEvent]) -> Result<(), DecodeError> {
        for event in events {
            if event.stream_version <= self.version {
                continue;
            }
            self.state.apply(&event.decode::<A::Event>()?);
            self.version = event.stream_version;
            if self.created_at.is_none() {
                self.created_at = Some(event.recorded_at);
            }
            if A::touches_record(&event.event_type) {
                self.updated_at = Some(event.recorded_at);
            }
        }
        Ok(())
    }
}

type Apply = fn(&mut (dyn Any + Send + Sync), &RecordedEvent) -> Result<(), DecodeError>;

struct Entry {
    loaded: Box<dyn Any + Send + Sync>,
    version: i64,
    /// The log holds events after `version` that the entry has not seen.
    stale: bool,
    apply: Apply,
}

fn apply_to<A: Cached>(loaded: &mut (dyn Any + Send + Sync), event: &RecordedEvent) -> Result<(), DecodeError> {
    match loaded.downcast_mut::<Loaded<A>>() {
        Some(loaded) => loaded.advance(std::slice::from_ref(event)),
        None => Ok(()),
    }
}

/// A cache hit: the state, and whether the log is known to hold more.
pub struct Hit<A> {
    pub loaded: Loaded<A>,
    pub stale: bool,
}

pub struct AggregateCache {
    entries: Mutex<LruCache<String, Entry>>,
    /// Commands on one stream in this process take turns (see [`AggregateCache::turn`]).
    turns: Vec<tokio::sync::Mutex<()>>,
}

/// Stripes of the per-stream turn: two streams share one rarely, and then only wait.
const TURN_STRIPES: usize = 4096;

impl AggregateCache {
    pub fn new(capacity: usize) -> Arc<Self> {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        let turns = (0..TURN_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect();
        Arc::new(Self { entries: Mutex::new(LruCache::new(capacity)), turns })
    }

    /// Waits for this process's turn to decide and append on `stream_id`. Commands on one
    /// aggregate through one hub then queue instead of deciding on the same version and
    /// conflicting at the append (which would cost each a retry, and under a burst more
    /// retries than a command gets); only other hubs' writes still conflict.
    pub async fn turn(&self, stream_id: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(stream_id);
        self.turns[(hash % TURN_STRIPES as u64) as usize].lock().await
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, LruCache<String, Entry>> {
        // A panic while holding the lock leaves only a cache behind: keep using it.
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn get<A: Cached>(&self, stream_id: &str) -> Option<Hit<A>> {
        let mut entries = self.entries();
        let entry = entries.get(stream_id)?;
        let loaded = entry.loaded.downcast_ref::<Loaded<A>>()?.clone();
        Some(Hit { loaded, stale: entry.stale })
    }

    /// Keeps `loaded` unless the cache already holds a later version of the stream.
    pub fn put<A: Cached>(&self, stream_id: &str, loaded: &Loaded<A>) {
        let mut entries = self.entries();
        if let Some(entry) = entries.get_mut(stream_id)
            && entry.version > loaded.version
        {
            return;
        }
        entries.put(
            stream_id.to_owned(),
            Entry { loaded: Box::new(loaded.clone()), version: loaded.version, stale: false, apply: apply_to::<A> },
        );
    }

    /// Follows this process's commits: an entry the events continue advances; one they
    /// do not continue (it missed events in between) becomes stale.
    pub fn observe(&self, events: &[RecordedEvent]) {
        let mut entries = self.entries();
        for event in events {
            let Some(entry) = entries.peek_mut(&event.stream_id) else { continue };
            if event.stream_version <= entry.version {
                continue;
            }
            if event.stream_version == entry.version + 1
                && !entry.stale
                && (entry.apply)(&mut *entry.loaded, event).is_ok()
            {
                entry.version = event.stream_version;
            } else {
                entry.stale = true;
            }
        }
    }

    /// The log holds `stream_id` at `version` (seen by tailing it): an entry behind it is
    /// stale.
    pub fn saw(&self, stream_id: &str, version: i64) {
        let mut entries = self.entries();
        if let Some(entry) = entries.peek_mut(stream_id)
            && entry.version < version
        {
            entry.stale = true;
        }
    }

    /// An append found the stream ahead of the entry.
    pub fn mark_stale(&self, stream_id: &str) {
        if let Some(entry) = self.entries().peek_mut(stream_id) {
            entry.stale = true;
        }
    }

    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::domain::user::{User, UserCommand};
    use shared::{Metadata, RecordedEvent};
    use uuid::Uuid;

    fn recorded(stream_id: &str, version: i64, event: &shared::events::UserEvent) -> RecordedEvent {
        let new = crate::store::NewEvent::new(event, &Metadata::system()).unwrap();
        RecordedEvent {
            position: version,
            stream_id: stream_id.to_owned(),
            stream_version: version,
            event_id: new.event_id,
            event_type: new.event_type,
            schema_version: new.schema_version,
            data: new.data,
            metadata: new.metadata,
            recorded_at: Utc::now(),
            prev_hash: Vec::new(),
            hash: Vec::new(),
        }
    }

    fn created() -> Vec<shared::events::UserEvent> {
        User::default()
            .decide(UserCommand::Create {
                organization_id: Uuid::now_v7(),
                email: "a@example.com".into(),
                name: "A".into(),
            })
            .unwrap()
    }

    #[test]
    fn an_entry_follows_the_commits_that_continue_it_and_goes_stale_on_a_gap() {
        let cache = AggregateCache::new(10);
        let mut loaded = Loaded::<User>::default();
        let first = recorded("user-1", 1, &created()[0]);
        loaded.advance(std::slice::from_ref(&first)).unwrap();
        cache.put("user-1", &loaded);

        let renamed = loaded.state.decide(UserCommand::Rename { name: "B".into() }).unwrap();
        cache.observe(&[recorded("user-1", 2, &renamed[0])]);
        let hit = cache.get::<User>("user-1").unwrap();
        assert_eq!((hit.loaded.version, hit.stale, hit.loaded.state.name.as_str()), (2, false, "B"));

        // Version 4 does not continue version 2: the entry must catch up from the log.
        cache.observe(&[recorded("user-1", 4, &renamed[0])]);
        let hit = cache.get::<User>("user-1").unwrap();
        assert_eq!((hit.loaded.version, hit.stale), (2, true));
    }

    #[test]
    fn an_older_state_never_replaces_a_newer_one() {
        let cache = AggregateCache::new(10);
        let mut newer = Loaded::<User>::default();
        let events = created();
        newer.advance(&[recorded("user-1", 1, &events[0])]).unwrap();
        cache.put("user-1", &newer);
        cache.put("user-1", &Loaded::<User>::default());
        assert_eq!(cache.get::<User>("user-1").unwrap().loaded.version, 1);
    }

    #[test]
    fn the_least_recently_used_entry_leaves_first() {
        let cache = AggregateCache::new(2);
        for id in ["user-1", "user-2"] {
            cache.put(id, &Loaded::<User>::default());
        }
        cache.get::<User>("user-1");
        cache.put("user-3", &Loaded::<User>::default());
        assert!(cache.get::<User>("user-2").is_none());
        assert!(cache.get::<User>("user-1").is_some());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn the_log_marks_entries_it_is_ahead_of() {
        let cache = AggregateCache::new(10);
        cache.put("user-1", &Loaded::<User>::default());
        cache.saw("user-1", 0);
        assert!(!cache.get::<User>("user-1").unwrap().stale);
        cache.saw("user-1", 3);
        assert!(cache.get::<User>("user-1").unwrap().stale);
    }
}
