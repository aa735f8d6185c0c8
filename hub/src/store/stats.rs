//! Counters of the group-commit writer, read through [`EventStore::stats`](super::EventStore::stats).

use std::sync::atomic::{AtomicU64, Ordering};

/// What the writer has done since the store started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Batches taken from the queue (each one transaction, or more after a refusal).
    pub batches: u64,
    /// Commits answered, whatever the answer.
    pub commits: u64,
    /// Commits the database refused (answered `AppendError::Rejected`).
    pub refused: u64,
    /// Refused commits undone by rolling back to their own savepoint, their batch-mates kept.
    pub savepoint_rollbacks: u64,
    /// Commits retried alone because a refusal could not be charged to one commit.
    pub solo_retries: u64,
    /// Batches written as one merged transaction that the database refused, then written
    /// again with a savepoint per commit.
    pub merged_fallbacks: u64,
    /// Commits answered `AppendError::Taken`: a name they take was found held before
    /// their batch was written (not counted in `refused`: the database refused nothing).
    pub names_taken: u64,
    /// Commits waiting in the queue right now.
    pub queued: u64,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub batches: AtomicU64,
    pub commits: AtomicU64,
    pub refused: AtomicU64,
    pub savepoint_rollbacks: AtomicU64,
    pub solo_retries: AtomicU64,
    pub merged_fallbacks: AtomicU64,
    pub names_taken: AtomicU64,
    /// When the database last refused a commit (ms since the Unix epoch).
    pub last_refusal_ms: AtomicU64,
}

/// After a refusal, batches go straight to a savepoint per commit for this long: where
/// commits are being refused, a merged attempt would mostly be wasted.
const ISOLATE_AFTER_REFUSAL_MS: u64 = 1_000;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Counters {
    pub fn refusal_seen(&self) {
        self.last_refusal_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Whether to write the next batch merged (no refusal lately).
    pub fn merge_next(&self) -> bool {
        now_ms().saturating_sub(self.last_refusal_ms.load(Ordering::Relaxed)) > ISOLATE_AFTER_REFUSAL_MS
    }

    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn read(&self, queued: usize) -> StoreStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        StoreStats {
            batches: get(&self.batches),
            commits: get(&self.commits),
            refused: get(&self.refused),
            savepoint_rollbacks: get(&self.savepoint_rollbacks),
            solo_retries: get(&self.solo_retries),
            merged_fallbacks: get(&self.merged_fallbacks),
            names_taken: get(&self.names_taken),
            queued: queued as u64,
        }
    }
}
