//! The sender loop: claims due deliveries (at most [`MAX_IN_FLIGHT`] at once,
//! [`PER_ENDPOINT`] per webhook URI and [`PER_WORKSPACE`] per workspace), sends each as a
//! signed Standard Webhooks request and records its outcome.
//!
//! Slots are shared fairly: no workspace holds more than a quarter of them, and each free
//! slot goes to the URI with the fewest requests in flight (then to the longest due), so
//! receivers that never answer, however many a workspace points at, delay other
//! workspaces' deliveries by at most their own share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use shared::config::Webhooks;
use shared::crypto;
use tokio::task::JoinSet;
use uuid::Uuid;

use super::outcome::{Attempt, Outcome};
use super::recorder::Recorder;
use super::{guard, signature};
use crate::runtime::RuntimeState;

/// Requests in flight at once, all endpoints together.
pub const MAX_IN_FLIGHT: usize = 64;
/// Requests in flight at once to one webhook URI.
pub const PER_ENDPOINT: usize = 8;
/// Requests in flight at once for one workspace's deliveries, all its URIs together.
pub const PER_WORKSPACE: usize = MAX_IN_FLIGHT / 4;
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

pub struct Sender {
    /// The workspaces' data keys (and the wake-up of accepted interactions).
    runtime: Arc<RuntimeState>,
    pool: deadpool_postgres::Pool,
    client: reqwest::Client,
    config: Webhooks,
    recorder: Recorder,
    /// Requests in flight by URI and workspace. Kept across the loop's restarts: the
    /// requests of a loop that failed go on (detached), and still hold their slots.
    endpoints: Endpoints,
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
    /// The workspace's sealed signing secrets as the claim read them; `None` when the
    /// workspace is gone.
    secrets: Option<Secrets>,
}

/// A workspace's sealed signing secrets (from its state).
struct Secrets {
    version: Option<i32>,
    sealed: Option<String>,
    previous: Option<String>,
    previous_until: Option<DateTime<Utc>>,
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
        let recorder = Recorder::spawn(pool.clone(), runtime.usage.clone(), config.retry_schedule.clone());
        Ok(Self { runtime, pool, client, config, recorder, endpoints: Endpoints::default() })
    }

    /// Claims, sends and records until the database fails (the supervisor restarts it).
    pub async fn run(self: Arc<Self>) -> anyhow::Result<()> {
        let mut in_flight: JoinSet<()> = JoinSet::new();
        let failed = self.drain(&mut in_flight).await;
        // Requests in flight finish and record their outcomes on their own (aborting one
        // that was answered 2xx would send that success again once its lease ends).
        in_flight.detach_all();
        failed
    }

    async fn drain(self: &Arc<Self>, in_flight: &mut JoinSet<()>) -> anyhow::Result<()> {
        let wake = self.runtime.deliveries_wake.clone();
        let endpoints = self.endpoints.clone();
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
                    // The slot comes back to this loop after one attempt (which wakes
                    // it), so the next delivery it serves is chosen fairly again.
                    let slot = endpoints.take(&delivery.url, delivery.workspace_id);
                    let sender = self.clone();
                    in_flight.spawn(async move { sender.deliver(delivery, slot).await });
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

    /// Claims up to `free` due deliveries within the free slots of each URI and
    /// workspace, the least busy URIs first: each claim counts its attempt and leases the
    /// row.
    async fn claim(&self, free: usize, busy: &Busy) -> anyhow::Result<Vec<Claimed>> {
        let saturated: Vec<&str> =
            busy.urls.iter().filter(|(_, n)| **n >= PER_ENDPOINT).map(|(url, _)| url.as_str()).collect();
        let full: Vec<Uuid> =
            busy.workspaces.iter().filter(|(_, n)| **n >= PER_WORKSPACE).map(|(workspace, _)| *workspace).collect();
        let client = self.pool.get().await.context("the webhook sender's database connection")?;
        let candidates = MAX_IN_FLIGHT.max(free * 2) as i64;
        let (ids, rows) = match transaction(&client, &saturated, candidates, &full, free, busy).await {
            Ok(claimed) => claimed,
            Err(error) => {
                if client.batch_execute("ROLLBACK").await.is_err() {
                    // Neither committed nor rolled back: this connection must not serve again.
                    drop(deadpool_postgres::Object::take(client));
                }
                return Err(error);
            }
        };
        if rows.len() < ids.len() {
            // The claim joins each delivery's interaction; one it did not return has none
            // (interactions deleted by hand). Left pending it would stay due forever and
            // hold its URL's slots: it fails, with nothing sent. Should that fail, the
            // claimed deliveries go out all the same, and the next claim finds these again.
            match client.execute(ORPHANS, &[&ids, &"its interaction no longer exists"]).await {
                Ok(orphaned) => {
                    tracing::warn!(orphaned, "deliveries whose interaction no longer exists were marked failed");
                }
                Err(error) => {
                    tracing::warn!(error = %error, "deliveries whose interaction no longer exists were not marked failed")
                }
            }
        }
        Ok(rows.iter().map(claimed).collect())
    }
}

/// The claim's transaction, in two round trips: `BEGIN`, its settings and the look-up of
/// due deliveries sent together; then, the deliveries chosen ([`fair_share`]), their claim
/// sent with `COMMIT`. The chosen ids and the claimed rows.
async fn transaction(
    client: &deadpool_postgres::Client,
    saturated: &[&str],
    candidates: i64,
    full: &[Uuid],
    free: usize,
    busy: &Busy,
) -> anyhow::Result<(Vec<Uuid>, Vec<tokio_postgres::Row>)> {
    let due = client.prepare_cached(DUE).await?;
    let claim = client.prepare_cached(&claim_statement()).await?;
    // The claim need not wait for its WAL flush: only a crash of PostgreSQL itself can
    // lose it (then the attempt is made again, as after any crash mid-request), and the
    // outcome's synchronous commit flushes it anyway.
    let begin = format!("BEGIN; SET LOCAL synchronous_commit = off; {CLAIM_PLANS}");
    let params: [&(dyn postgres_types::ToSql + Sync); 4] = [&saturated, &candidates, &(PER_ENDPOINT as i64), &full];
    let (_, due) = futures::try_join!(client.batch_execute(&begin), client.query(&due, &params))?;
    let due: Vec<Due> = due
        .iter()
        .map(|row| Due { id: row.get("id"), url: row.get("url"), workspace: row.get("workspace_id") })
        .collect();
    let ids = fair_share(&due, free, busy);
    if ids.is_empty() {
        client.batch_execute("COMMIT").await?;
        return Ok((ids, Vec::new()));
    }
    // A claim that fails aborts the transaction, and the `COMMIT` behind it then rolls
    // back; the claim's error is what is returned.
    let lease = LEASE.as_secs_f64();
    let params: [&(dyn postgres_types::ToSql + Sync); 2] = [&ids, &lease];
    let (rows, _) = futures::try_join!(client.query(&claim, &params), client.batch_execute("COMMIT"))?;
    Ok((ids, rows))
}

/// Fails the deliveries `$1` that are pending and whose interaction no longer exists, with
/// the error `$2`. Pending is said as neither ended status, so that statistics taken when
/// nothing was pending cannot make the partial index of pending deliveries (all of them,
/// read whole) look like the way in: the rows are found by id.
pub const ORPHANS: &str = "UPDATE deliveries d SET status = 'failed', last_error = $2, updated_at = now(), \
     claimed_until = NULL WHERE d.id = ANY($1) AND d.status <> 'succeeded' AND d.status <> 'failed' \
     AND NOT EXISTS (SELECT 1 FROM interactions i WHERE i.id = d.interaction_id)";

/// A due delivery the claim may take.
struct Due {
    id: Uuid,
    url: String,
    workspace: Uuid,
}

/// Requests in flight by URI and by workspace.
#[derive(Debug, Default, Clone)]
struct Busy {
    urls: HashMap<String, usize>,
    workspaces: HashMap<Uuid, usize>,
}

/// Which of `due` (each URI's rows earliest first) to take for `free` slots: one at a
/// time, each to the URI with the fewest requests in flight or taken, earliest due first
/// among equals, never past a URI's or a workspace's share.
fn fair_share(due: &[Due], free: usize, busy: &Busy) -> Vec<Uuid> {
    let mut load: HashMap<&str, usize> = HashMap::new();
    let mut per_workspace: HashMap<Uuid, usize> = HashMap::new();
    let mut queues: Vec<(&str, std::collections::VecDeque<&Due>)> = Vec::new();
    for row in due {
        match queues.iter_mut().find(|(url, _)| *url == row.url) {
            Some((_, queue)) => queue.push_back(row),
            None => {
                load.insert(&row.url, busy.urls.get(&row.url).copied().unwrap_or(0));
                queues.push((&row.url, std::collections::VecDeque::from([row])));
            }
        }
    }
    let mut taken = Vec::new();
    while taken.len() < free {
        // The URIs in the order their first rows were due: the first least loaded wins.
        let next = queues
            .iter_mut()
            .filter(|(url, queue)| !queue.is_empty() && load[url] < PER_ENDPOINT)
            .min_by_key(|(url, _)| load[url]);
        let Some((url, queue)) = next else { break };
        let url = *url;
        let row = queue.pop_front().expect("a queue that is not empty");
        let workspace_load = per_workspace
            .entry(row.workspace)
            .or_insert_with(|| busy.workspaces.get(&row.workspace).copied().unwrap_or(0));
        if *workspace_load >= PER_WORKSPACE {
            continue;
        }
        *workspace_load += 1;
        *load.get_mut(url).expect("a known URI") += 1;
        taken.push(row.id);
    }
    taken
}

/// Due deliveries for the claim to choose from: at most `$3` to each URI, none to the
/// saturated URIs (`$1`) or for the workspaces at their share (`$4`), locked; each URI's
/// first row before any URI's second, earliest due first, `$2` at most. The URIs with
/// pending deliveries are found by skipping through `deliveries_due_by_url` (one probe per
/// URI), and each URI's due rows are read from its start: the cost follows the number of
/// URIs, not of the pending rows, so a backlog for a slow receiver costs nothing while its
/// slots are full.
pub const DUE: &str = "WITH RECURSIVE urls (url) AS ( \
        (SELECT url FROM deliveries WHERE status = 'pending' ORDER BY url LIMIT 1) \
        UNION ALL \
        SELECT (SELECT d.url FROM deliveries d WHERE d.status = 'pending' AND d.url > urls.url ORDER BY d.url LIMIT 1) \
        FROM urls WHERE urls.url IS NOT NULL) \
    SELECT due.id, due.url, due.workspace_id FROM urls CROSS JOIN LATERAL ( \
        SELECT d.id, d.url, d.workspace_id, d.next_attempt_at FROM deliveries d \
        WHERE d.status = 'pending' AND d.url = urls.url AND d.next_attempt_at <= now() \
        AND d.workspace_id <> ALL($4) \
        ORDER BY d.next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED) due \
    WHERE urls.url IS NOT NULL AND urls.url <> ALL($1) \
    ORDER BY row_number() OVER (PARTITION BY due.url ORDER BY due.next_attempt_at), due.next_attempt_at \
    LIMIT $2";

/// How the claim's statements are planned: once per connection (see
/// [`crate::db::STABLE_PLANS`]). Left to choose, the server plans [`DUE`] anew at every
/// claim (a plan for the given arrays looks cheaper than the generic one), which under load
/// cost more than running it; the generic plan skips through the same index (the webhooks
/// tests check both).
pub const CLAIM_PLANS: &str = crate::db::STABLE_PLANS;

/// Counts the attempt and leases the delivery for `$2` seconds (its `WHERE` follows).
/// With each delivery come its interaction and its workspace's signing secrets (only those,
/// not the whole state).
const CLAIM: &str = "UPDATE deliveries d SET attempts = d.attempts + 1, updated_at = now(), \
                     next_attempt_at = now() + make_interval(secs => $2), \
                     claimed_until = now() + make_interval(secs => $2) \
                     FROM interactions i LEFT JOIN workspaces w ON w.id = i.workspace_id AND w.state IS NOT NULL";
/// The rest of the claim's `WHERE`, and what it returns.
const CLAIMED: &str = "i.id = d.interaction_id RETURNING d.id, d.interaction_id, d.workspace_id, d.url, d.attempts, \
                       d.round_started_at_attempt, i.type, i.payload, i.received_at, i.interaction_key_id, \
                       w.id IS NOT NULL AS workspace_live, (w.state->>'secret_version')::integer AS secret_version, \
                       w.state->>'sealed_secret' AS sealed_secret, w.state->>'previous_sealed_secret' AS previous_secret, \
                       (w.state->>'previous_secret_valid_until')::timestamptz AS previous_secret_until";

/// The claim of the deliveries `$1`, leased for `$2` seconds.
pub fn claim_statement() -> String {
    format!("{CLAIM} WHERE d.id = ANY($1) AND {CLAIMED}")
}

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
        secrets: row.get::<_, bool>("workspace_live").then(|| Secrets {
            version: row.get("secret_version"),
            sealed: row.get("sealed_secret"),
            previous: row.get("previous_secret"),
            previous_until: row.get("previous_secret_until"),
        }),
    }
}

impl Sender {
    /// One attempt of `delivery`, holding `slot` until the answer is in; then its outcome
    /// recorded.
    async fn deliver(&self, delivery: Claimed, slot: Slot) {
        let outcome = match self.signing_keys(delivery.workspace_id, &delivery.secrets).await {
            Ok(Some(keys)) => self.send(&delivery, &keys).await,
            Ok(None) => Outcome::Failed { error: "the workspace no longer exists".into() },
            Err(error) => {
                tracing::warn!(delivery = %delivery.attempt.delivery, error = %format!("{error:#}"), "the workspace's secret is unavailable");
                Outcome::Retry { status: None, error: "the workspace's signing secret is unavailable".into() }
            }
        };
        tracing::debug!(delivery = %delivery.attempt.delivery, attempt = delivery.attempt.attempts, ?outcome, "webhook attempt");
        // The URI's slot is free once its request is over: the loop may send it the next
        // delivery while this outcome is recorded (the lease keeps this one from being
        // claimed again meanwhile).
        drop(slot);
        self.runtime.deliveries_wake.notify_one();
        self.recorder.record(delivery.attempt, outcome, delivery.workspace_id, delivery.interaction_key_id).await;
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
    /// its grace period lasts, opened from `secrets`; `None` when the workspace is gone.
    async fn signing_keys(
        &self,
        workspace_id: Uuid,
        secrets: &Option<Secrets>,
    ) -> anyhow::Result<Option<Vec<Vec<u8>>>> {
        let Some(secrets) = secrets else { return Ok(None) };
        let version = secrets.version.context("the workspace has no secret version")?;
        let sealed = secrets.sealed.as_deref().context("the workspace has no secret")?;
        let data_key = self.runtime.open_data_key(workspace_id).await?;
        let open = |sealed: &str, version: i32| -> anyhow::Result<Vec<u8>> {
            let sealed = hex::decode(sealed).context("a sealed secret is not hex")?;
            crypto::open(&data_key, &sealed, &crypto::secret_context(workspace_id, version))
                .map_err(|_| anyhow::anyhow!("the workspace's secret cannot be opened"))
        };
        let mut keys = vec![open(sealed, version)?];
        if let (Some(previous), Some(until)) = (&secrets.previous, secrets.previous_until)
            && until > Utc::now()
        {
            keys.push(open(previous, version - 1)?);
        }
        Ok(Some(keys))
    }
}

fn panicked(done: Result<(), tokio::task::JoinError>) {
    if let Err(error) = done {
        tracing::error!(%error, "a webhook attempt panicked; its delivery is tried again once its lease ends");
    }
}

/// Requests in flight per webhook URI and per workspace; a slot is given back when
/// dropped (a panicking attempt included).
#[derive(Default, Clone)]
struct Endpoints(Arc<Mutex<Busy>>);

struct Slot {
    endpoints: Endpoints,
    url: String,
    workspace: Uuid,
}

impl Endpoints {
    fn snapshot(&self) -> Busy {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn take(&self, url: &str, workspace: Uuid) -> Slot {
        let mut busy = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *busy.urls.entry(url.to_owned()).or_default() += 1;
        *busy.workspaces.entry(workspace).or_default() += 1;
        Slot { endpoints: self.clone(), url: url.to_owned(), workspace }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        fn give_back<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
            if let Some(count) = counts.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(key);
                }
            }
        }
        let mut busy = self.endpoints.0.lock().unwrap_or_else(|p| p.into_inner());
        give_back(&mut busy.urls, &self.url);
        give_back(&mut busy.workspaces, &self.workspace);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn due(url: &str, workspace: u128) -> Due {
        Due { id: Uuid::now_v7(), url: url.to_owned(), workspace: Uuid::from_u128(workspace) }
    }

    #[test]
    fn free_slots_go_to_the_least_busy_uris_and_no_workspace_takes_more_than_its_share() {
        // Workspace 1 points eight URIs at a receiver that never answers, one request in
        // flight to each; its rows were due first. Workspace 2's one URI has none in flight.
        let mut busy = Busy::default();
        let hung: Vec<String> = (0..8).map(|n| format!("http://hung/{n}")).collect();
        for url in &hung {
            busy.urls.insert(url.clone(), 1);
        }
        busy.workspaces.insert(Uuid::from_u128(1), 8);
        let mut rows: Vec<Due> = hung.iter().flat_map(|url| (0..8).map(|_| due(url, 1))).collect();
        rows.push(due("http://ok/", 2));
        rows.push(due("http://ok/", 2));
        let taken = fair_share(&rows, 64, &busy);
        let of = |id: &Uuid| rows.iter().find(|r| r.id == *id).unwrap();
        // The idle URI first; then, at equal load, the earliest due; workspace 1 stops at
        // its share of 16 while workspace 2 gets both its rows.
        assert_eq!(of(&taken[0]).url, "http://ok/");
        assert_eq!(taken.iter().filter(|id| of(id).url == "http://ok/").count(), 2);
        let of_one = taken.iter().filter(|id| of(id).workspace == Uuid::from_u128(1)).count();
        assert_eq!(of_one, PER_WORKSPACE - 8);
        // Within a workspace's share, the URIs take turns.
        let mut per_url: HashMap<&str, usize> = HashMap::new();
        for id in &taken {
            *per_url.entry(of(id).url.as_str()).or_default() += 1;
        }
        assert!(hung.iter().all(|url| per_url[url.as_str()] == 1), "{per_url:?}");
        // Never more than the free slots, nor past a URI's bound.
        assert_eq!(fair_share(&rows, 1, &busy).len(), 1);
        busy.urls.insert("http://ok/".into(), PER_ENDPOINT);
        let taken = fair_share(&rows, 64, &busy);
        assert!(taken.iter().all(|id| of(id).url != "http://ok/"));
    }
}
