//! Admin keys and partner app keys as last read from the database, by the hash of the
//! presented secret, so authenticating a known key costs no query.
//!
//! What a record holds changes only through events (of the key, its organization or its
//! owner), and every hub sees every event: its own commits before their callers are
//! answered, other hubs' through the log tail (`crate::log_tail`) within a fraction of a
//! second. An event of one of those streams drops the records it may concern. A record is
//! also dropped after `MAX_AGE`, a bound should an event ever be missed. Time-dependent
//! rules (expiry, a rotation's grace) are judged on each request, not cached.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use uuid::Uuid;

const MAX_AGE: Duration = Duration::from_secs(60);
const CAPACITY: usize = 10_000;

/// A key's row with what authentication needs from its organization and owner.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub scopes: Vec<String>,
    pub workspace_ids: Vec<Uuid>,
    pub expires_at: Option<DateTime<Utc>>,
    pub allowed_ips: Vec<String>,
    pub revoked: bool,
    pub key_hash: Vec<u8>,
    pub previous_expires_at: Option<DateTime<Utc>>,
    pub organization_status: String,
    pub organization_rate_limit: Option<i32>,
    pub user_status: Option<String>,
    pub owner_user_id: Option<Uuid>,
    pub rate_limit_ceiling: Option<i32>,
}

impl KeyRecord {
    pub fn from_row(row: &tokio_postgres::Row) -> Self {
        Self {
            id: row.get("id"),
            organization_id: row.get("organization_id"),
            scopes: row.get("scopes"),
            workspace_ids: row.get("workspace_ids"),
            expires_at: row.get("expires_at"),
            allowed_ips: row.get("allowed_ips"),
            revoked: row.get("revoked"),
            key_hash: row.get("key_hash"),
            previous_expires_at: row.get("previous_expires_at"),
            organization_status: row.get("organization_status"),
            organization_rate_limit: row.get("organization_rate_limit"),
            user_status: row.get("user_status"),
            owner_user_id: row.get("owner_user_id"),
            rate_limit_ceiling: row.get("rate_limit_ceiling"),
        }
    }

    fn concerns(&self, id: Uuid) -> bool {
        self.id == id || self.organization_id == id || self.owner_user_id == Some(id)
    }
}

/// A partner app key's row: what authentication needs (an app's key changes only by the
/// events of its own stream).
#[derive(Debug, Clone)]
pub struct AppRecord {
    pub id: Uuid,
    pub kind: shared::events::app::AppKind,
    pub revoked: bool,
}

/// The query an app key's cache miss runs.
pub const APP_LOOKUP: &str = "SELECT id, kind, revoked_at IS NOT NULL AS revoked FROM apps WHERE key_hash = $1";

impl AppRecord {
    pub fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self { id: row.try_get("id")?, kind: row.try_get("kind")?, revoked: row.try_get("revoked")? })
    }
}

/// The query a cache miss runs (columns named for [`KeyRecord::from_row`]).
pub const LOOKUP: &str = "SELECT k.id, k.organization_id, k.scopes, k.workspace_ids, k.expires_at, k.allowed_ips, \
     k.revoked_at IS NOT NULL AS revoked, k.key_hash, k.previous_expires_at, o.status::text AS organization_status, \
     (o.settings->>'rate_limit_per_minute')::int AS organization_rate_limit, u.status::text AS user_status, \
     k.owner_user_id, o.rate_limit_ceiling_per_minute AS rate_limit_ceiling \
     FROM api_keys k JOIN organizations o ON o.id = k.organization_id \
     LEFT JOIN users u ON u.id = k.owner_user_id \
     WHERE k.key_hash = $1 OR k.previous_key_hash = $1";

#[derive(Default)]
pub struct KeyCache {
    records: Mutex<HashMap<Vec<u8>, (KeyRecord, Instant)>>,
    apps: Mutex<HashMap<Vec<u8>, (AppRecord, Instant)>>,
    /// Counts invalidations: a lookup that raced one does not store what it read.
    epoch: AtomicU64,
}

impl KeyCache {
    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, (KeyRecord, Instant)>> {
        self.records.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn get(&self, presented_hash: &[u8]) -> Option<KeyRecord> {
        let records = self.records();
        let (record, at) = records.get(presented_hash)?;
        (at.elapsed() < MAX_AGE).then(|| record.clone())
    }

    pub fn get_app(&self, presented_hash: &[u8]) -> Option<AppRecord> {
        let apps = self.apps.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (record, at) = apps.get(presented_hash)?;
        (at.elapsed() < MAX_AGE).then(|| record.clone())
    }

    /// As [`KeyCache::put`], for an app key.
    pub fn put_app(&self, presented_hash: Vec<u8>, record: AppRecord, epoch: u64) {
        let mut apps = self.apps.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if apps.len() >= CAPACITY {
            apps.retain(|_, (_, at)| at.elapsed() < MAX_AGE);
            if apps.len() >= CAPACITY {
                apps.clear();
            }
        }
        apps.insert(presented_hash, (record, Instant::now()));
    }

    /// Taken before a lookup, handed to [`KeyCache::put`] after it.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Stores a record read from the database, unless an event invalidated records since
    /// `epoch` (the read may predate it).
    pub fn put(&self, presented_hash: Vec<u8>, record: KeyRecord, epoch: u64) {
        let mut records = self.records();
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if records.len() >= CAPACITY {
            records.retain(|_, (_, at)| at.elapsed() < MAX_AGE);
            if records.len() >= CAPACITY {
                records.clear();
            }
        }
        records.insert(presented_hash, (record, Instant::now()));
    }

    /// An event of `stream_id` happened: drop what it may have changed.
    pub fn invalidate(&self, stream_id: &str) {
        let Some((category, id)) = stream_id.split_once('-') else { return };
        if !matches!(category, "key" | "org" | "user" | "app") {
            return;
        }
        let Ok(id) = id.parse::<Uuid>() else { return };
        if category == "app" {
            let mut apps = self.apps.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            self.epoch.fetch_add(1, Ordering::AcqRel);
            apps.retain(|_, (record, _)| record.id != id);
            return;
        }
        let mut records = self.records();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        records.retain(|_, (record, _)| !record.concerns(id));
    }
}
