//! The sender loop: claims due deliveries (at most [`MAX_IN_FLIGHT`] at once and
//! [`PER_ENDPOINT`] per webhook URI), sends each as a signed Standard Webhooks request and
//! records its outcome.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use shared::config::Webhooks;
use shared::crypto;
use tokio::task::JoinSet;
use uuid::Uuid;

use super::outcome::{self, Attempt, Outcome};
use super::{guard, signature};
use crate::runtime::RuntimeState;

/// Requests in flight at once, all endpoints together.
pub const MAX_IN_FLIGHT: usize = 64;
/// Requests in flight at once to one webhook URI.
pub const PER_ENDPOINT: usize = 8;
/// Longest wait for a connection to a receiver.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request, connection and the read of the answer included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a claimed delivery is left alone: longer than a request and its recording may
/// take, so only a sender that died leaves a lease to run out.
const LEASE: Duration = Duration::from_secs(30);
/// The most of a receiver's answer that is read (then the connection is dropped).
const MAX_RESPONSE_BYTES: usize = 4 * 1024;
/// How often the outbox is looked at when nothing woke the sender.
const POLL: Duration = Duration::from_millis(200);
/// Attempts at recording an outcome while the database is away, within the lease.
const RECORD_TRIES: u32 = 5;

pub struct Sender {
    /// The workspaces' data keys (and the wake-up of accepted interactions).
    runtime: Arc<RuntimeState>,
    pool: deadpool_postgres::Pool,
    client: reqwest::Client,
    config: Webhooks,
}

/// A claimed delivery with what its request needs.
struct Claimed {
    attempt: Attempt,
    interaction_id: Uuid,
    workspace_id: Uuid,
    url: String,
    kind: String,
    payload: serde_json::Value,
    received_at: DateTime<Utc>,
    interaction_key_id: Uuid,
}

impl Sender {
    pub fn new(runtime: Arc<RuntimeState>, pool: deadpool_postgres::Pool, config: Webhooks) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(PER_ENDPOINT)
            .user_agent(concat!("admin-api-webhooks/", env!("CARGO_PKG_VERSION")));
        if !config.allow_private {
            builder = builder.dns_resolver(Arc::new(guard::PublicOnly));
        }
        let client = builder.build().context("building the webhook HTTP client")?;
        Ok(Self { runtime, pool, client, config })
    }

    /// Claims, sends and records until the database fails (the supervisor restarts it).
    pub async fn run(self: Arc<Self>) -> anyhow::Result<()> {
        let mut in_flight: JoinSet<()> = JoinSet::new();
        let stopping = Arc::new(AtomicBool::new(false));
        let failed = self.drain(&mut in_flight, &stopping).await;
        // Requests in flight finish and record their outcomes on their own (aborting one
        // that was answered 2xx would send that success again once its lease ends), and
        // claim nothing more: the restarted loop does.
        stopping.store(true, Ordering::SeqCst);
        in_flight.detach_all();
        failed
    }

    async fn drain(self: &Arc<Self>, in_flight: &mut JoinSet<()>, stopping: &Arc<AtomicBool>) -> anyhow::Result<()> {
        let wake = self.runtime.deliveries_wake.clone();
        let endpoints = Endpoints::default();
        loop {
            while let Some(done) = in_flight.try_join_next() {
                panicked(done);
            }
            let free = MAX_IN_FLIGHT - in_flight.len();
            let mut claimed = 0;
            if free > 0 {
                let busy = endpoints.snapshot();
                for delivery in self.claim(free, &busy).await? {
                    claimed += 1;
                    let slot = endpoints.take(&delivery.url);
                    let (sender, stopping) = (self.clone(), stopping.clone());
                    in_flight.spawn(async move {
                        // The slot goes on to the URI's next due delivery, claimed here
                        // rather than by this loop, so slots of one URI refill in parallel.
                        let mut next = Some(delivery);
                        while let Some(delivery) = next {
                            let url = delivery.url.clone();
                            sender.deliver(delivery).await;
                            if stopping.load(Ordering::SeqCst) {
                                break;
                            }
                            next = sender.claim_next(&url).await.unwrap_or_else(|error| {
                                tracing::warn!(error = %format!("{error:#}"), "the next webhook delivery was not claimed");
                                None
                            });
                        }
                        drop(slot);
                    });
                }
            }
            if claimed > 0 && claimed == free {
                continue;
            }
            tokio::select! {
                _ = wake.notified() => {}
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => panicked(done),
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Claims up to `free` due deliveries, none to a saturated URI and at most the free
    /// slots of each other one: each claim counts its attempt and leases the row.
    async fn claim(&self, free: usize, busy: &HashMap<String, usize>) -> anyhow::Result<Vec<Claimed>> {
        let saturated: Vec<&str> =
            busy.iter().filter(|(_, n)| **n >= PER_ENDPOINT).map(|(url, _)| url.as_str()).collect();
        let mut client = self.pool.get().await.context("the webhook sender's database connection")?;
        let tx = client.transaction().await?;
        // The claim need not wait for its WAL flush: only a crash of PostgreSQL itself can
        // lose it (then the attempt is made again, as after any crash mid-request), and the
        // outcome's synchronous commit flushes it anyway.
        tx.batch_execute("SET LOCAL synchronous_commit = off").await?;
        let due = tx.query(DUE, &[&saturated, &(free as i64), &(PER_ENDPOINT as i64)]).await?;
        let mut taken: HashMap<&str, usize> = HashMap::new();
        let mut ids: Vec<Uuid> = Vec::new();
        for row in &due {
            let url: &str = row.get("url");
            let slots = PER_ENDPOINT.saturating_sub(busy.get(url).copied().unwrap_or(0));
            let count = taken.entry(url).or_default();
            if *count < slots {
                *count += 1;
                ids.push(row.get("id"));
            }
        }
        if ids.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let rows =
            tx.query(&format!("{CLAIM} WHERE d.id = ANY($1) AND {CLAIMED}"), &[&ids, &LEASE.as_secs_f64()]).await?;
        tx.commit().await?;
        Ok(rows.iter().map(claimed).collect())
    }

    /// Claims the next due delivery to `url`, if any (one statement: the row is locked,
    /// skipped by other senders, counted and leased at once).
    async fn claim_next(&self, url: &str) -> anyhow::Result<Option<Claimed>> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.batch_execute("SET LOCAL synchronous_commit = off").await?;
        let row = tx
            .query_opt(
                &format!(
                    "{CLAIM} WHERE d.id = (SELECT id FROM deliveries WHERE status = 'pending' AND url = $1 \
                     AND next_attempt_at <= now() ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED) AND {CLAIMED}"
                ),
                &[&url, &LEASE.as_secs_f64()],
            )
            .await?;
        tx.commit().await?;
        Ok(row.as_ref().map(claimed))
    }
}

/// Up to `$2` due deliveries, earliest first, at most `$3` to each URI and none to the
/// saturated ones (`$1`), locked for the claim. The URIs with pending deliveries are found
/// by skipping through `deliveries_due_by_url` (one probe per URI), and each URI's due
/// rows are read from its start: the cost follows the number of URIs, not of the pending
/// rows, so a backlog for a slow receiver costs nothing while its slots are full.
pub const DUE: &str = "WITH RECURSIVE urls (url) AS ( \
        (SELECT url FROM deliveries WHERE status = 'pending' ORDER BY url LIMIT 1) \
        UNION ALL \
        SELECT (SELECT d.url FROM deliveries d WHERE d.status = 'pending' AND d.url > urls.url ORDER BY d.url LIMIT 1) \
        FROM urls WHERE urls.url IS NOT NULL) \
    SELECT due.id, due.url FROM urls CROSS JOIN LATERAL ( \
        SELECT d.id, d.url, d.next_attempt_at FROM deliveries d \
        WHERE d.status = 'pending' AND d.url = urls.url AND d.next_attempt_at <= now() \
        ORDER BY d.next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED) due \
    WHERE urls.url IS NOT NULL AND urls.url <> ALL($1) \
    ORDER BY due.next_attempt_at LIMIT $2";

/// Counts the attempt and leases the delivery for `$2` seconds (its `WHERE` follows).
const CLAIM: &str = "UPDATE deliveries d SET attempts = d.attempts + 1, updated_at = now(), \
                     next_attempt_at = now() + make_interval(secs => $2), \
                     claimed_until = now() + make_interval(secs => $2) FROM interactions i";
/// The rest of the claim's `WHERE`, and what it returns.
const CLAIMED: &str = "i.id = d.interaction_id RETURNING d.id, d.interaction_id, d.workspace_id, d.url, d.attempts, \
                       d.round_started_at_attempt, i.type, i.payload, i.received_at, i.interaction_key_id";

fn claimed(row: &tokio_postgres::Row) -> Claimed {
    Claimed {
        attempt: Attempt {
            delivery: row.get("id"),
            attempts: row.get("attempts"),
            round_start: row.get("round_started_at_attempt"),
        },
        interaction_id: row.get("interaction_id"),
        workspace_id: row.get("workspace_id"),
        url: row.get("url"),
        kind: row.get("type"),
        payload: row.get("payload"),
        received_at: row.get("received_at"),
        interaction_key_id: row.get("interaction_key_id"),
    }
}

impl Sender {
    /// One attempt of `delivery`, then its outcome recorded.
    async fn deliver(&self, delivery: Claimed) {
        let outcome = match self.signing_keys(delivery.workspace_id).await {
            Ok(Some(keys)) => self.send(&delivery, &keys).await,
            Ok(None) => Outcome::Failed { error: "the workspace no longer exists".into() },
            Err(error) => {
                tracing::warn!(delivery = %delivery.attempt.delivery, error = %format!("{error:#}"), "the workspace's secret is unavailable");
                Outcome::Retry { status: None, error: "the workspace's signing secret is unavailable".into() }
            }
        };
        tracing::debug!(delivery = %delivery.attempt.delivery, attempt = delivery.attempt.attempts, ?outcome, "webhook attempt");
        for tried in 1..=RECORD_TRIES {
            let recorded = async {
                let client = self.pool.get().await?;
                let usage = &self.runtime.usage;
                anyhow::Ok(
                    outcome::record(&client, usage, delivery.attempt, &outcome, &self.config.retry_schedule).await?,
                )
            };
            match recorded.await {
                Ok(_) => return,
                Err(error) if tried == RECORD_TRIES => {
                    tracing::warn!(delivery = %delivery.attempt.delivery, error = %format!("{error:#}"), "a webhook outcome was not recorded; the delivery is tried again once its lease ends");
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(u64::from(tried))).await,
            }
        }
    }

    /// The request, and what its answer means.
    async fn send(&self, delivery: &Claimed, keys: &[Vec<u8>]) -> Outcome {
        let Ok(url) = reqwest::Url::parse(&delivery.url) else {
            return Outcome::Failed { error: "the webhook URI is not a valid URL".into() };
        };
        if !self.config.allow_private
            && let Some(refused) = guard::refused_literal(&url)
        {
            return Outcome::Failed { error: refused.to_string() };
        }
        let body = serde_json::to_vec(&serde_json::json!({
            "type": delivery.kind,
            "timestamp": delivery.received_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            "data": {
                "interaction_id": delivery.interaction_id,
                "workspace_id": delivery.workspace_id,
                "interaction_key_id": delivery.interaction_key_id,
                "payload": delivery.payload,
            },
        }))
        .expect("JSON values serialize");
        let id = delivery.interaction_id.to_string();
        let timestamp = Utc::now().timestamp();
        let signature = signature::header(keys, &id, timestamp, &body);
        let request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body);
        match request.send().await {
            Ok(mut response) => {
                let status = response.status();
                // A little of the answer is read (a receiver may expect it), the rest dropped.
                let mut read = 0;
                while read < MAX_RESPONSE_BYTES {
                    match response.chunk().await {
                        Ok(Some(chunk)) => read += chunk.len(),
                        _ => break,
                    }
                }
                if status.is_success() {
                    Outcome::Succeeded { status: status.as_u16() }
                } else {
                    Outcome::Retry { status: Some(status.as_u16()), error: format!("the receiver answered {status}") }
                }
            }
            Err(error) => match guard::refusal(&error) {
                Some(refused) => Outcome::Failed { error: refused.to_string() },
                None => Outcome::Retry { status: None, error: describe(&error) },
            },
        }
    }

    /// The workspace's signing secrets, the current one first and the previous one while
    /// its grace period lasts; `None` when the workspace is gone.
    async fn signing_keys(&self, workspace_id: Uuid) -> anyhow::Result<Option<Vec<Vec<u8>>>> {
        // Only the secrets of the workspace's state, not the whole of it.
        let row = {
            let client = self.pool.get().await?;
            client
                .query_opt(
                    "SELECT (state->>'secret_version')::integer AS version, state->>'sealed_secret' AS sealed, \
                     state->>'previous_sealed_secret' AS previous, \
                     (state->>'previous_secret_valid_until')::timestamptz AS previous_until \
                     FROM workspaces WHERE id = $1 AND state IS NOT NULL",
                    &[&workspace_id],
                )
                .await?
        };
        let Some(row) = row else { return Ok(None) };
        let version: i32 = row.get::<_, Option<i32>>("version").context("the workspace has no secret version")?;
        let sealed: String = row.get::<_, Option<String>>("sealed").context("the workspace has no secret")?;
        let previous: Option<String> = row.get("previous");
        let previous_until: Option<DateTime<Utc>> = row.get("previous_until");
        let data_key = self.runtime.open_data_key(workspace_id).await?;
        let open = |sealed: &str, version: i32| -> anyhow::Result<Vec<u8>> {
            let sealed = hex::decode(sealed).context("a sealed secret is not hex")?;
            crypto::open(&data_key, &sealed, &crypto::secret_context(workspace_id, version))
                .map_err(|_| anyhow::anyhow!("the workspace's secret cannot be opened"))
        };
        let mut keys = vec![open(&sealed, version)?];
        if let (Some(previous), Some(until)) = (previous, previous_until)
            && until > Utc::now()
        {
            keys.push(open(&previous, version - 1)?);
        }
        Ok(Some(keys))
    }
}

fn panicked(done: Result<(), tokio::task::JoinError>) {
    if let Err(error) = done {
        tracing::error!(%error, "a webhook attempt panicked; its delivery is tried again once its lease ends");
    }
}

/// Requests in flight per webhook URI; a slot is given back when dropped (a panicking
/// attempt included).
#[derive(Default, Clone)]
struct Endpoints(Arc<Mutex<HashMap<String, usize>>>);

struct Slot {
    endpoints: Endpoints,
    url: String,
}

impl Endpoints {
    fn snapshot(&self) -> HashMap<String, usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn take(&self, url: &str) -> Slot {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()).entry(url.to_owned()).or_default() += 1;
        Slot { endpoints: self.clone(), url: url.to_owned() }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.endpoints.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.url) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.url);
            }
        }
    }
}

/// Why a request failed, without its URL (which may carry a receiver's token).
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "the request failed"
    };
    let cause = std::iter::successors(std::error::Error::source(error), |e| e.source()).last();
    match cause {
        Some(cause) => format!("{kind}: {cause}"),
        None => kind.to_owned(),
    }
}
