//! Usage the hub records in memory and writes in batches, so a request costs no write:
//! `last_used_at` of admin keys, and the admin requests counted per organization,
//! workspace and hour for `GET /v1/usage` (see [`super::usage_report`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use deadpool_postgres::Pool;
use uuid::Uuid;

/// How long a hub keeps the ids of the instances' usage reports it applied (a report
/// retried later than this would count again).
const APPLIED_REPORTS_KEPT_DAYS: i32 = 30;
/// How often those ids are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// An organization's admin requests of one hour, of one workspace or of the organization
/// as a whole.
type RequestBucket = (Uuid, Option<Uuid>, i64);

#[derive(Default)]
pub struct UsageRecorder {
    pending: Mutex<HashMap<Uuid, DateTime<Utc>>>,
    requests: Mutex<HashMap<RequestBucket, i64>>,
}

impl UsageRecorder {
    pub fn touch(&self, key_id: Uuid) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.insert(key_id, Utc::now());
    }

    /// Counts an admin request of `organization_id`, for `workspace_id` when it named one.
    pub fn admin_request(&self, organization_id: Uuid, workspace_id: Option<Uuid>) {
        let hour = Utc::now().timestamp().div_euclid(3600) * 3600;
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((organization_id, workspace_id, hour))
            .or_default() += 1;
    }

    fn take(&self) -> HashMap<Uuid, DateTime<Utc>> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn take_requests(&self) -> HashMap<RequestBucket, i64> {
        std::mem::take(&mut *self.requests.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Writes what was recorded since the last flush.
    pub async fn flush(&self, pool: &Pool) -> Result<(), crate::http::error::ApiError> {
        let requests = self.take_requests();
        if let Err(error) = self.flush_requests(pool, &requests).await {
            // Kept for the next flush: counts are not lost to a database outage.
            let mut pending = self.requests.lock().unwrap_or_else(|p| p.into_inner());
            for (bucket, count) in requests {
                *pending.entry(bucket).or_default() += count;
            }
            return Err(error);
        }
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

    async fn flush_requests(
        &self,
        pool: &Pool,
        requests: &HashMap<RequestBucket, i64>,
    ) -> Result<(), crate::http::error::ApiError> {
        if requests.is_empty() {
            return Ok(());
        }
        let mut rows: Vec<_> = requests.iter().collect();
        rows.sort();
        let organizations: Vec<Uuid> = rows.iter().map(|((o, _, _), _)| *o).collect();
        let workspaces: Vec<Option<Uuid>> = rows.iter().map(|((_, w, _), _)| *w).collect();
        let hours: Vec<DateTime<Utc>> =
            rows.iter().map(|((_, _, h), _)| Utc.timestamp_opt(*h, 0).single().unwrap_or_default()).collect();
        let counts: Vec<i64> = rows.iter().map(|(_, n)| **n).collect();
        let client = pool.get().await?;
        // In a fixed order: hubs flushing at once lock the same rows in the same order.
        client
            .execute(
                "INSERT INTO usage_counters AS u (organization_id, workspace_id, hour, admin_requests) \
                 SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::int8[]) ORDER BY 1, 2, 3 \
                 ON CONFLICT ON CONSTRAINT usage_counters_bucket DO UPDATE SET \
                 admin_requests = u.admin_requests + EXCLUDED.admin_requests",
                &[&organizations, &workspaces, &hours, &counts],
            )
            .await?;
        Ok(())
    }

    /// Forgets the ids of usage reports applied long ago.
    async fn sweep(pool: &Pool) -> Result<(), crate::http::error::ApiError> {
        pool.get()
            .await?
            .execute(
                "DELETE FROM usage_reports_applied WHERE applied_at < now() - make_interval(days => $1)",
                &[&APPLIED_REPORTS_KEPT_DAYS],
            )
            .await?;
        Ok(())
    }

    /// Flushes every `interval` until the process ends.
    pub fn spawn_flusher(self: Arc<Self>, pool: Pool, interval: Duration) {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            let mut swept: Option<Instant> = None;
            loop {
                ticker.tick().await;
                if let Err(error) = self.flush(&pool).await {
                    tracing::warn!(%error, "could not record key usage; will retry");
                }
                if swept.is_none_or(|at| at.elapsed() >= SWEEP_EVERY) {
                    swept = Some(Instant::now());
                    if let Err(error) = Self::sweep(&pool).await {
                        tracing::warn!(%error, "could not sweep applied usage reports; will retry");
                    }
                }
            }
        });
    }
}

/// The workspace a request's path names (`/v1/workspaces/{id}` and below), if any.
pub fn workspace_in_path(path: &str) -> Option<Uuid> {
    let rest = path.strip_prefix("/v1/workspaces/")?;
    rest.split('/').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workspace_is_read_from_its_routes_only() {
        let id = Uuid::now_v7();
        assert_eq!(workspace_in_path(&format!("/v1/workspaces/{id}")), Some(id));
        assert_eq!(workspace_in_path(&format!("/v1/workspaces/{id}/interaction-keys")), Some(id));
        assert_eq!(workspace_in_path("/v1/workspaces"), None);
        assert_eq!(workspace_in_path("/v1/workspaces/count"), None);
        assert_eq!(workspace_in_path(&format!("/v1/api-keys/{id}")), None);
    }

    #[test]
    fn admin_requests_add_up_per_organization_workspace_and_hour() {
        let usage = UsageRecorder::default();
        let (org, ws) = (Uuid::now_v7(), Uuid::now_v7());
        usage.admin_request(org, None);
        usage.admin_request(org, Some(ws));
        usage.admin_request(org, Some(ws));
        let taken = usage.take_requests();
        assert_eq!(taken.len(), 2);
        assert_eq!(taken.iter().find(|((_, w, _), _)| *w == Some(ws)).map(|(_, n)| *n), Some(2));
        assert!(usage.take_requests().is_empty());
    }
}
