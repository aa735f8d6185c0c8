//! The event store: an append-only, hash-chained log in PostgreSQL.
//!
//! Commands reach the store as [`Commit`]s. One writer task per hub process gathers the
//! commits that arrive while it is busy into one transaction (group commit): conflicts are
//! decided per commit in memory under the log-head lock, so one commit's conflict never
//! sinks its batch-mates, and every caller gets its own result.

mod error;
mod pipeline;
mod read;
mod stats;
mod types;
mod writer;

pub use error::{AppendError, ReadError};
pub use stats::StoreStats;
pub use types::{Commit, ExpectedVersion, NewEvent, StreamAppend};
pub use writer::{WriterConfig, describe};

use std::sync::Arc;

use deadpool_postgres::Pool;
use shared::RecordedEvent;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::app::cache::AggregateCache;
use crate::projections::{NoProjections, Projector};

/// Called with each stream a commit of this process changed, before its caller hears of
/// it, and with each stream the log tail sees change (see [`EventStore::changed`]).
pub type StreamObserver = Arc<dyn Fn(&str) + Send + Sync>;

/// Aggregates each hub process keeps in memory (a workspace state is a few KiB).
pub const DEFAULT_CACHE_SIZE: usize = 20_000;

/// A handle to the event store. Cheap to clone; all clones share one writer task.
#[derive(Clone)]
pub struct EventStore {
    pool: Pool,
    jobs: mpsc::Sender<writer::Job>,
    committed: Arc<tokio::sync::Notify>,
    cache: Arc<AggregateCache>,
    observers: Arc<std::sync::RwLock<Vec<StreamObserver>>>,
    counters: Arc<stats::Counters>,
}

impl EventStore {
    /// Starts the writer task on the current tokio runtime, with no read models.
    pub fn start(pool: Pool, config: WriterConfig) -> Self {
        Self::start_with(pool, config, Arc::new(NoProjections))
    }

    /// Starts the writer task; `projector` updates read models in each append transaction.
    pub fn start_with(pool: Pool, config: WriterConfig, projector: Arc<dyn Projector>) -> Self {
        Self::start_supervised(pool, config, projector, &shared::supervise::Tasks::new())
    }

    /// [`EventStore::start_with`], the writer supervised in `tasks`: a writer that panics
    /// is restarted on the same queue (the commits of its batch are answered `Closed`).
    pub fn start_supervised(
        pool: Pool,
        config: WriterConfig,
        projector: Arc<dyn Projector>,
        tasks: &Arc<shared::supervise::Tasks>,
    ) -> Self {
        let (jobs, rx) = mpsc::channel(config.queue_capacity);
        let committed = Arc::new(tokio::sync::Notify::new());
        let counters = Arc::new(stats::Counters::default());
        // Shared, so a restarted writer takes over the same queue.
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        {
            let (pool, committed, counters) = (pool.clone(), committed.clone(), counters.clone());
            tasks.spawn("writer", move || {
                let (pool, rx, projector, committed, config, counters) =
                    (pool.clone(), rx.clone(), projector.clone(), committed.clone(), config.clone(), counters.clone());
                async move {
                    let mut rx = rx.lock().await;
                    writer::run(pool, &mut rx, config, projector, committed, &counters).await;
                    Ok(())
                }
            });
        }
        Self {
            pool,
            jobs,
            committed,
            cache: AggregateCache::new(DEFAULT_CACHE_SIZE),
            observers: Arc::default(),
            counters,
        }
    }

    /// The aggregates this process keeps in memory.
    pub fn cache(&self) -> &AggregateCache {
        &self.cache
    }

    /// Calls `observer` with the streams of each commit of this process (before the
    /// committing caller gets its answer) and of each change the log tail reports.
    pub fn observe_streams(&self, observer: StreamObserver) {
        self.observers.write().unwrap_or_else(std::sync::PoisonError::into_inner).push(observer);
    }

    /// The log tail saw `stream_id` reach `version` (possibly another hub's write).
    pub fn changed(&self, stream_id: &str, version: i64) {
        self.cache.saw(stream_id, version);
        self.notify(std::iter::once(stream_id));
    }

    fn notify<'a>(&self, streams: impl Iterator<Item = &'a str> + Clone) {
        let observers = self.observers.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        for observer in observers {
            streams.clone().for_each(|stream_id| observer(stream_id));
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The writer's counters, read now.
    pub fn stats(&self) -> StoreStats {
        self.counters.read(self.jobs.max_capacity() - self.jobs.capacity())
    }

    /// Signalled after every commit of this process's writer (a wake-up hint).
    pub fn commit_signal(&self) -> Arc<tokio::sync::Notify> {
        self.committed.clone()
    }

    /// Appends events to one stream, checking its expected version.
    pub async fn append(
        &self,
        stream_id: impl Into<String>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, AppendError> {
        self.commit(Commit::single(stream_id, expected, events)).await
    }

    /// Commits appends to one or more streams atomically.
    pub async fn commit(&self, commit: Commit) -> Result<Vec<RecordedEvent>, AppendError> {
        commit.validate()?;
        // A child of the request's span; the writer's batch links to it.
        let span = tracing::debug_span!("append", events = commit.event_count());
        let (reply, answer) = oneshot::channel();
        let job = writer::Job { commit, reply, span: span.clone() };
        let answered = async {
            self.jobs.send(job).await.map_err(|_| AppendError::Closed)?;
            answer.await.map_err(|_| AppendError::Closed)
        };
        let recorded = match answered.instrument(span).await? {
            Ok(recorded) => recorded,
            Err(error) => {
                // The log is ahead of whatever state this commit was decided on.
                if let AppendError::Conflict { stream_id, actual, .. } = &error {
                    self.cache.saw(stream_id, *actual);
                }
                return Err(error);
            }
        };
        self.cache.observe(&recorded);
        let mut streams: Vec<&str> = recorded.iter().map(|e| e.stream_id.as_str()).collect();
        streams.dedup();
        self.notify(streams.iter().copied());
        Ok(recorded)
    }

    /// Events of one stream with `stream_version > after_version`, in order.
    pub async fn read_stream(&self, stream_id: &str, after_version: i64) -> Result<Vec<RecordedEvent>, ReadError> {
        let client = self.pool.get().await?;
        Ok(read::stream(&**client, stream_id, after_version).await?)
    }

    /// The events of several streams, in one query: each stream's events in version order
    /// (a stream with no events is absent from the map).
    pub async fn read_streams(
        &self,
        stream_ids: &[&str],
    ) -> Result<std::collections::HashMap<String, Vec<RecordedEvent>>, ReadError> {
        let client = self.pool.get().await?;
        let mut streams: std::collections::HashMap<String, Vec<RecordedEvent>> = std::collections::HashMap::new();
        for event in read::streams(&**client, stream_ids).await? {
            streams.entry(event.stream_id.clone()).or_default().push(event);
        }
        Ok(streams)
    }

    /// Up to `limit` events with `position > after`, in position order.
    pub async fn read_all(&self, after: i64, limit: i64) -> Result<Vec<RecordedEvent>, ReadError> {
        let client = self.pool.get().await?;
        Ok(read::all(&**client, after, limit).await?)
    }

    /// The last committed position (0 for an empty log).
    pub async fn head_position(&self) -> Result<i64, ReadError> {
        let client = self.pool.get().await?;
        head_position(&**client).await
    }
}

/// The events of one stream after `after_version`, on a connection the caller holds.
pub async fn read_stream_after(
    client: &impl tokio_postgres::GenericClient,
    stream_id: &str,
    after_version: i64,
) -> Result<Vec<RecordedEvent>, ReadError> {
    Ok(read::stream(client, stream_id, after_version).await?)
}

/// Up to `limit` events after `after`, on a connection the caller holds.
pub async fn read_page(
    client: &impl tokio_postgres::GenericClient,
    after: i64,
    limit: i64,
) -> Result<Vec<RecordedEvent>, ReadError> {
    Ok(read::all(client, after, limit).await?)
}

/// [`read_page`] and [`read_stream_page`] (with a stream) with the payloads left as the
/// database's JSON text: what the feed serves, written out without parsing them.
pub async fn read_feed_page(
    client: &impl tokio_postgres::GenericClient,
    stream_id: Option<&str>,
    after: i64,
    limit: i64,
) -> Result<Vec<shared::feed::RawEvent>, ReadError> {
    Ok(match stream_id {
        Some(stream) => read::stream_page_raw(client, stream, after, limit).await?,
        None => read::all_raw(client, after, limit).await?,
    })
}

/// The last committed position, on a connection the caller holds.
pub async fn head_position(client: &impl tokio_postgres::GenericClient) -> Result<i64, ReadError> {
    Ok(read::head_position(client).await?)
}

/// Up to `limit` events of one stream with `position > after`, in order.
pub async fn read_stream_page(
    client: &impl tokio_postgres::GenericClient,
    stream_id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<RecordedEvent>, ReadError> {
    Ok(read::stream_page(client, stream_id, after, limit).await?)
}

/// Up to `limit` events after `after` of the workspaces placed on `instance_id`, in order.
pub async fn read_placed_page(
    client: &impl tokio_postgres::GenericClient,
    instance_id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<RecordedEvent>, ReadError> {
    Ok(read::placed_page(client, instance_id, after, limit).await?)
}
