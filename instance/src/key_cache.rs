//! Interaction keys recently found usable, kept in memory for a short while so the check
//! `POST /v1/interactions` makes before reading a body costs no round trip to the database
//! when the same keys post again and again.
//!
//! Only that early check reads it: the transaction that stores an interaction looks the key
//! up again under its workspace's lock (see [`crate::ingest_batch`]), so a key revoked, or a
//! workspace archived, while an entry lives is still refused, with the same answer. Only
//! usable keys are kept: an unknown key is looked up every time (it answers 401 and counts
//! for the failed-authentication throttle), and so is an expired key or one of an archived
//! workspace (an unarchived workspace is served again as soon as its event is applied).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::interaction_keys::Found;

/// How long an entry serves.
pub const TTL: Duration = Duration::from_secs(2);
/// The most entries kept (each a few hundred bytes).
pub const CAPACITY: usize = 10_000;

/// Usable keys by peppered hash, each with when it was looked up.
#[derive(Default)]
pub struct KeyCache {
    entries: Mutex<HashMap<Vec<u8>, (Instant, Found)>>,
}

impl KeyCache {
    /// The key `hash` names, when it was found usable less than [`TTL`] ago.
    pub fn get(&self, hash: &[u8]) -> Option<Found> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(hash).filter(|(at, _)| at.elapsed() < TTL).map(|(_, found)| found.clone())
    }

    /// Keeps a key just found usable. When full, expired entries go first, then all.
    pub fn insert(&self, found: &Found) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= CAPACITY && !entries.contains_key(&found.key_hash) {
            entries.retain(|_, (at, _)| at.elapsed() < TTL);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(found.key_hash.clone(), (Instant::now(), found.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn key(hash: u8) -> Found {
        Found {
            id: Uuid::now_v7(),
            key_hash: vec![hash],
            workspace_id: Uuid::now_v7(),
            expires_at: None,
            archived: false,
            webhook_uris: vec![],
        }
    }

    #[test]
    fn a_kept_key_is_found_by_its_hash_and_no_other() {
        let cache = KeyCache::default();
        let found = key(1);
        cache.insert(&found);
        assert_eq!(cache.get(&[1]).map(|k| k.id), Some(found.id));
        assert!(cache.get(&[2]).is_none());
    }

    #[test]
    fn a_full_cache_makes_room_and_stays_bounded() {
        let cache = KeyCache::default();
        for n in 0..CAPACITY {
            cache.insert(&Found { key_hash: n.to_be_bytes().to_vec(), ..key(0) });
        }
        cache.insert(&key(7));
        assert!(cache.entries.lock().unwrap().len() <= CAPACITY);
        assert!(cache.get(&[7]).is_some());
    }
}
