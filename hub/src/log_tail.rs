//! Follows the log for changes made by other hubs: every few hundred milliseconds, the
//! streams of the events committed since the last look are reported to the event store
//! ([`EventStore::changed`]), which marks cached aggregates stale and drops cached keys.
//! This is what bounds how long a revocation through another hub takes to reach this one.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::store::EventStore;

/// How often the log is read.
pub const INTERVAL: Duration = Duration::from_millis(200);
/// Most events read per look (a burst is caught up over several).
const PAGE: i64 = 10_000;

/// Follows the log from `head` (read before the hub serves, so no cached key can predate
/// the tail's start), supervised in `tasks`.
pub fn spawn(tasks: &std::sync::Arc<shared::supervise::Tasks>, store: EventStore, head: i64) {
    // Where the tail is, kept across restarts so a failure skips no event.
    let position = std::sync::Arc::new(AtomicI64::new(head));
    tasks.spawn("log-tail", move || {
        let (store, position) = (store.clone(), position.clone());
        async move { follow(store, &position).await }
    });
}

async fn follow(store: EventStore, position: &AtomicI64) -> anyhow::Result<()> {
    let mut after = position.load(Ordering::Acquire);
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let client = store.pool().get().await?;
        let statement = client
            .prepare_cached(
                "SELECT position, stream_id, stream_version FROM events WHERE position > $1 ORDER BY position LIMIT $2",
            )
            .await?;
        let rows = client.query(&statement, &[&after, &PAGE]).await?;
        drop(client);
        for row in &rows {
            store.changed(row.get("stream_id"), row.get("stream_version"));
            after = row.get("position");
        }
        position.store(after, Ordering::Release);
    }
}
