//! `last_used_at` of admin keys, recorded in memory and written in batches, so using a
//! key costs no write per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use uuid::Uuid;

#[derive(Default)]
pub struct UsageRecorder {
    pending: Mutex<HashMap<Uuid, DateTime<Utc>>>,
}

impl UsageRecorder {
    pub fn touch(&self, key_id: Uuid) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.insert(key_id, Utc::now());
    }

    fn take(&self) -> HashMap<Uuid, DateTime<Utc>> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Writes what was recorded since the last flush.
    pub async fn flush(&self, pool: &Pool) -> Result<(), crate::http::error::ApiError> {
        let batch = self.take();
        if batch.is_empty() {
            return Ok(());
        }
        let (ids, times): (Vec<Uuid>, Vec<DateTime<Utc>>) = batch.into_iter().unzip();
        let client = pool.get().await?;
        client
            .execute(
                "INSERT INTO api_key_usage (key_id, last_used_at) SELECT * FROM unnest($1::uuid[], $2::timestamptz[]) \
                 ON CONFLICT (key_id) DO UPDATE SET last_used_at = GREATEST(api_key_usage.last_used_at, EXCLUDED.last_used_at)",
                &[&ids, &times],
            )
            .await?;
        Ok(())
    }

    /// Flushes every `interval` until the process ends.
    pub fn spawn_flusher(self: Arc<Self>, pool: Pool, interval: Duration) {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            loop {
                ticker.tick().await;
                if let Err(error) = self.flush(&pool).await {
                    tracing::warn!(%error, "could not record key usage; will retry");
                }
            }
        });
    }
}
