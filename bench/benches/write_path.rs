//! The hub's write path over HTTP, against the database's own commit rate.
//!
//! One run starts PostgreSQL (default durability, `pg_stat_statements` preloaded) and a
//! single-node hub from the release binaries (`bench/run.sh` builds them), creates an
//! organization and an admin key, then measures, each throughput phase `BENCH_SECONDS`
//! long (default 5):
//! - baseline: `pgbench`, 64 clients, one single-row `INSERT` per transaction, on the same
//!   server → commits/s;
//! - P1: `wrk`, 64 connections, `POST /v1/workspaces` with a new name each time → req/s,
//!   and P1 ÷ baseline; then where P1's time went: the group-commit writer's batches
//!   (commits per batch, ms per batch, share of the phase it was busy, from `/metrics`),
//!   the WAL per create and the flushes' time (`pg_stat_wal`), and the database's
//!   execution time per create by statement (`pg_stat_statements`, nested statements too),
//!   and the CPU the baseline's commits and P1's and P1c's requests cost, by program (PostgreSQL, the
//!   hub, the load generator), from `/proc`, with the rate the cores allow at that cost;
//! - P1c: the same with every 20th request reusing one existing sibling's name (409) →
//!   answered req/s (2xx and 409), and P1c ÷ P1; P1 starts checkpointed, P1c vacuumed,
//!   analyzed and checkpointed (else it would run beside the autovacuum of the rows P1
//!   wrote), and the autovacuum runs during each are reported;
//! - growth: sequential `PATCH /v1/workspaces/{id}` p50 on a workspace whose stream holds
//!   3,000 events against one on a new workspace, interleaved, and their ratio;
//! - round trips: the statements PostgreSQL executed per create and per PATCH on a warm
//!   hub (sequential requests, `pg_stat_statements`), split into the append transaction
//!   and everything else, with the most frequent statements.
//!
//! Nothing here panics on an unexpected status: failures are counted and reported, and
//! every wait is bounded. The harness stops PostgreSQL and the hub when the run ends.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bench::{cpu, wrk};
use e2e::postgres::{Durability, PgServer, SERVING_ROLE, pg_program};
use e2e::{Api, HubProcess, OPERATOR_KEY, TestDatabase};
use hub::projections::ReadModels;
use hub::store::{EventStore, ExpectedVersion, NewEvent, WriterConfig};
use serde_json::json;
use shared::Metadata;
use shared::events::WorkspaceEvent;
use shared::events::workspace::WorkspaceUpdated;

const CONNECTIONS: usize = 64;
/// Events in the grown workspace's stream before its PATCHes are timed.
const GROWN_EVENTS: usize = 3_000;
/// Timed PATCHes on each of the two workspaces of the growth phase.
const GROWTH_SAMPLES: usize = 300;
/// Sequential creates, then PATCHes, whose statements are counted.
const ROUND_TRIP_REQUESTS: usize = 200;
/// Every how many requests P1c reuses the fixed sibling name (5%).
const COLLIDE_EVERY: usize = 20;
const COLLIDING_NAME: &str = "bench-collide";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The database's own commit rate: `pgbench`, one single-row `INSERT` per transaction.
fn baseline(server: &PgServer, scratch: &TestDatabase, dir: &Path, seconds: u64) -> anyhow::Result<f64> {
    let script = dir.join("insert.sql");
    std::fs::write(&script, "INSERT INTO scratch (payload) VALUES ('{\"n\": 1}');\n")?;
    let out = wrk::run_bounded(
        Command::new(pg_program("pgbench")?)
            .args(["-h", "127.0.0.1", "-p", &server.port.to_string(), "-U", "postgres", "-n"])
            .args(["-c", &CONNECTIONS.to_string(), "-j", "2", "-T", &seconds.to_string(), "-f"])
            .arg(&script)
            .arg(&scratch.name),
        Duration::from_secs(seconds) + wrk::SLACK,
    )?;
    out.lines()
        .find_map(|line| line.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no tps in pgbench's report:\n{out}"))
}

/// A `wrk` script creating workspaces named `<prefix>-<thread>-<n>`; with `collide_every`
/// above 0, every such request of a thread reuses [`COLLIDING_NAME`] instead.
fn wrk_script(key: &str, prefix: &str, collide_every: usize) -> String {
    // `tid` is the thread's id, set by `wrk::COLLECT`'s `setup`.
    let requests = format!(
        r#"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
local prefix = "{prefix}"
local collide_every = {collide_every}

function init(args)
  counter = 0
end

function request()
  counter = counter + 1
  local name = prefix .. "-" .. tid .. "-" .. counter
  if collide_every > 0 and counter % collide_every == 0 then
    name = "{COLLIDING_NAME}"
  end
  return wrk.format(nil, "/v1/workspaces", nil, '{{"name":"' .. name .. '"}}')
end
"#
    );
    requests + wrk::COLLECT
}

/// Runs `wrk` against the hub, noting the warnings and errors the hub logged meanwhile.
fn wrk(hub: &HubProcess, dir: &Path, name: &str, script: &str, seconds: u64) -> anyhow::Result<wrk::Load> {
    let log_from = hub.logs().len();
    let mut load = wrk::run(&hub.url(""), CONNECTIONS, dir, name, script, seconds)?;
    let logs = hub.logs();
    let warnings: Vec<&str> = logs
        .get(log_from..)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains("WARN") || line.contains("ERROR"))
        .collect();
    if let Some(first) = warnings.first() {
        let first: String = without_colors(first).trim().chars().take(160).collect();
        load.notes.push(format!("hub logged {} warnings/errors, the first: {first}", warnings.len()));
    }
    Ok(load)
}

/// A log line without its terminal colour sequences (`ESC [ … letter`).
fn without_colors(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One sequential request's latency and whether it was answered with `expected`.
async fn timed_patch(api: &Api, id: &str, n: usize) -> (Duration, bool) {
    let started = Instant::now();
    let reply = api.patch(&format!("/v1/workspaces/{id}"), json!({"settings": {format!("k{n}"): n}})).await;
    (started.elapsed(), reply.status == 200)
}

async fn create_workspace(api: &Api, name: &str) -> anyhow::Result<String> {
    let reply = api.post("/v1/workspaces", json!({"name": name})).await;
    if reply.status != 201 {
        bail!("creating workspace {name}: {} {}", reply.status, reply.text);
    }
    reply.body["id"].as_str().map(str::to_owned).context("a created workspace has an id")
}

/// Appends `GROWN_EVENTS` settings changes to a workspace's stream directly, 100 per
/// commit, through the event store with the hub's read models.
async fn grow(hub_db: &TestDatabase, id: &str) -> anyhow::Result<()> {
    let store = EventStore::start_with(hub_db.pool(2), WriterConfig::default(), Arc::new(ReadModels));
    for chunk in (0..GROWN_EVENTS).collect::<Vec<_>>().chunks(100) {
        let events = chunk
            .iter()
            .map(|i| {
                let event = WorkspaceEvent::WorkspaceUpdated(WorkspaceUpdated {
                    settings: Some(json!({"fill": i})),
                    ..Default::default()
                });
                NewEvent::new(&event, &Metadata::system())
            })
            .collect::<Result<Vec<_>, _>>()?;
        store.append(format!("workspace-{id}"), ExpectedVersion::Any, events).await?;
    }
    Ok(())
}

/// Waits (bounded) until the embedded instance applied the workspace's last event, so its
/// catching up does not load the timed requests; a hub without one has nothing to wait for.
async fn embedded_caught_up(hub_db: &TestDatabase, id: &str) -> anyhow::Result<()> {
    let client = hub_db.connect().await;
    let id: uuid::Uuid = id.parse()?;
    let embedded: bool = client.query_one("SELECT to_regclass('instance.workspaces') IS NOT NULL", &[]).await?.get(0);
    if !embedded {
        return Ok(());
    }
    let stream = format!("workspace-{id}");
    let latest: i64 =
        client.query_one("SELECT max(stream_version) FROM events WHERE stream_id = $1", &[&stream]).await?.get(0);
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let applied: Option<i64> = client
            .query_opt("SELECT stream_version FROM instance.workspaces WHERE id = $1", &[&id])
            .await?
            .map(|row| row.get(0));
        if applied == Some(latest) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("(the embedded instance had not applied all {latest} events after 120 s; timing anyway)");
    Ok(())
}

/// The statements the hub's role ran in the hub's database since the last reset, most
/// frequent first (the `pg_stat_statements` queries, run as the superuser, are not theirs).
async fn statements(admin: &tokio_postgres::Client) -> anyhow::Result<Vec<(String, i64)>> {
    let rows = admin
        .query(
            "SELECT s.query, s.calls FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid \
             JOIN pg_database d ON d.oid = s.dbid \
             WHERE r.rolname = $1 AND d.datname = current_database() AND s.query NOT ILIKE '%pg_stat_statements%' \
             ORDER BY s.calls DESC, s.query",
            &[&SERVING_ROLE],
        )
        .await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// The group-commit writer's counters, read from the hub's `/metrics`.
/// Autovacuum and autoanalyze runs so far on the tables of `admin`'s database.
async fn vacuums(admin: &tokio_postgres::Client) -> anyhow::Result<i64> {
    // The statistics a backend reads are a snapshot taken at its first look in a
    // transaction: a fresh one each time.
    admin.batch_execute("SELECT pg_stat_clear_snapshot()").await?;
    let row = admin
        .query_one(
            "SELECT coalesce(sum(autovacuum_count + autoanalyze_count), 0)::bigint FROM pg_stat_user_tables",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// Starts a phase after the previous one's autovacuum debt is paid (else the autovacuum
/// its rows triggered runs during the next phase) and its WAL checkpointed, as P1 starts
/// checkpointed. Returns [`vacuums`] after that.
async fn settle(admin: &tokio_postgres::Client) -> anyhow::Result<i64> {
    admin.batch_execute("VACUUM (ANALYZE)").await?;
    admin.batch_execute("CHECKPOINT").await?;
    vacuums(admin).await
}

#[derive(Default)]
struct WriterSample {
    batches: f64,
    commits: f64,
    seconds: f64,
    /// Commits the database refused, found taken before writing, retried alone, and
    /// batches written isolated after a merged attempt was refused.
    refused: f64,
    taken: f64,
    solo: f64,
    fallbacks: f64,
}

impl WriterSample {
    async fn take(hub: &HubProcess) -> anyhow::Result<Self> {
        let text = reqwest::get(hub.url("/metrics")).await?.text().await?;
        let value = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
                .unwrap_or_default()
        };
        Ok(Self {
            batches: value(&format!("{}_count", shared::metrics::APPEND_BATCH_DURATION)),
            commits: value(&format!("{}_sum", shared::metrics::APPEND_BATCH_COMMITS)),
            seconds: value(&format!("{}_sum", shared::metrics::APPEND_BATCH_DURATION)),
            refused: value(shared::metrics::APPEND_REFUSED),
            taken: value(shared::metrics::APPEND_NAMES_TAKEN),
            solo: value(shared::metrics::APPEND_SOLO_RETRIES),
            fallbacks: value(shared::metrics::APPEND_MERGED_FALLBACKS),
        })
    }

    fn since(&self, before: &Self) -> Self {
        Self {
            batches: self.batches - before.batches,
            commits: self.commits - before.commits,
            seconds: self.seconds - before.seconds,
            refused: self.refused - before.refused,
            taken: self.taken - before.taken,
            solo: self.solo - before.solo,
            fallbacks: self.fallbacks - before.fallbacks,
        }
    }

    /// One line on the writer during a phase of `seconds`.
    fn print(&self, phase: &str, seconds: u64) {
        println!(
            "The writer during {phase}: {} batches, {:.1} commits per batch, {:.2} ms per batch (its transaction, \
             from BEGIN to COMMIT answered), busy {:.0}% of the phase; {} names found taken before writing, {} \
             commits refused by the database, {} retried alone, {} batches rewritten isolated",
            self.batches,
            self.commits / self.batches.max(1.0),
            self.seconds * 1000.0 / self.batches.max(1.0),
            self.seconds * 100.0 / seconds as f64,
            self.taken,
            self.refused,
            self.solo,
            self.fallbacks
        );
    }
}

/// The server's WAL counters (`pg_stat_wal`).
#[derive(Default)]
struct WalSample {
    bytes: f64,
    fpi: f64,
    writes: f64,
    syncs: f64,
    write_ms: f64,
    sync_ms: f64,
}

impl WalSample {
    async fn take(admin: &tokio_postgres::Client) -> anyhow::Result<Self> {
        let row = admin
            .query_one(
                "SELECT wal_bytes::float8, wal_fpi::float8, wal_write::float8, wal_sync::float8, wal_write_time, \
                 wal_sync_time FROM pg_stat_wal",
                &[],
            )
            .await?;
        Ok(Self {
            bytes: row.get(0),
            fpi: row.get(1),
            writes: row.get(2),
            syncs: row.get(3),
            write_ms: row.get(4),
            sync_ms: row.get(5),
        })
    }

    fn since(&self, before: &Self) -> Self {
        Self {
            bytes: self.bytes - before.bytes,
            fpi: self.fpi - before.fpi,
            writes: self.writes - before.writes,
            syncs: self.syncs - before.syncs,
            write_ms: self.write_ms - before.write_ms,
            sync_ms: self.sync_ms - before.sync_ms,
        }
    }
}

/// Every role's statements in the hub's database since the last reset, with their calls
/// and total execution time in ms, the longest first.
async fn time_by_statement(admin: &tokio_postgres::Client) -> anyhow::Result<Vec<(String, i64, f64)>> {
    let rows = admin
        .query(
            "SELECT s.query, s.calls, s.total_exec_time FROM pg_stat_statements s \
             JOIN pg_database d ON d.oid = s.dbid \
             WHERE d.datname = current_database() AND s.query NOT ILIKE '%pg_stat_statements%' \
             ORDER BY s.total_exec_time DESC",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1), row.get(2))).collect())
}

/// Where the statement log of the round-trip phase starts its lines: `%p` the backend,
/// `%u` the role, `%v` the (virtual) transaction.
const LOG_PREFIX: &str = "bench-stmt|%p|%u|%v| ";

/// Logs every statement (with [`LOG_PREFIX`]) or stops logging them.
async fn log_statements(admin: &tokio_postgres::Client, on: bool) -> anyhow::Result<()> {
    let settings: &[&str] = if on {
        &["ALTER SYSTEM SET log_statement = 'all'", &format!("ALTER SYSTEM SET log_line_prefix = '{LOG_PREFIX}'")]
    } else {
        &["ALTER SYSTEM RESET log_statement", "ALTER SYSTEM RESET log_line_prefix"]
    };
    for sql in settings {
        admin.batch_execute(sql).await?;
    }
    admin.batch_execute("SELECT pg_reload_conf()").await?;
    Ok(())
}

fn one_line(query: &str) -> String {
    query.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A statement's text with every constant and parameter as `?`, on one line:
/// `pg_stat_statements` shows constants as parameters, the log shows them as written.
fn shape(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    let text = one_line(query);
    let mut chars = text.chars().peekable();
    let mut previous = ' ';
    while let Some(c) = chars.next() {
        let starts_number = c.is_ascii_digit() && !(previous.is_alphanumeric() || previous == '_');
        if c == '\'' {
            while chars.next().is_some_and(|c| c != '\'') {}
            out.push('?');
        } else if (c == '$' && chars.peek().is_some_and(char::is_ascii_digit)) || starts_number {
            while chars.next_if(|c| c.is_ascii_digit() || *c == '.').is_some() {}
            out.push('?');
        } else {
            out.push(c);
        }
        previous = c;
    }
    out
}

/// The statements the hub sent, from a stretch of the server log.
#[derive(Default)]
struct Sent {
    /// Statements in transactions that appended (they lock `event_log_head`).
    inside: usize,
    /// Statements in any other transaction (or none).
    outside: usize,
    /// The texts of each, on one line.
    inside_texts: HashSet<String>,
    outside_texts: HashSet<String>,
}

/// Groups the hub's statements in a stretch of the server log by transaction, and counts
/// those inside transactions that appended and those outside.
fn split_by_transaction(log: &str) -> Sent {
    let mut transactions: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut last: Option<(String, String)> = None;
    for line in log.lines() {
        let Some(rest) = line.strip_prefix("bench-stmt|") else {
            // A statement's continuation line (or another message's).
            if let Some(text) = last.as_ref().and_then(|k| transactions.get_mut(k)).and_then(|s| s.last_mut()) {
                text.push(' ');
                text.push_str(line.trim());
            }
            continue;
        };
        last = None;
        let fields: Vec<&str> = rest.splitn(4, '|').collect();
        let [pid, role, vxid, message] = fields[..] else { continue };
        if role != SERVING_ROLE {
            continue;
        }
        let text = if let Some(text) = message.split_once("LOG:  statement: ").map(|(_, t)| t) {
            text
        } else if let Some((_, named)) = message.split_once("LOG:  execute ") {
            named.split_once(": ").map_or(named, |(_, t)| t)
        } else {
            continue;
        };
        let key = (pid.to_owned(), vxid.to_owned());
        transactions.entry(key.clone()).or_default().push(text.to_owned());
        last = Some(key);
    }
    let mut sent = Sent::default();
    for statements in transactions.values() {
        let texts = statements.iter().map(|s| shape(s));
        if statements.iter().any(|s| s.contains("event_log_head")) {
            sent.inside += statements.len();
            sent.inside_texts.extend(texts);
        } else {
            sent.outside += statements.len();
            sent.outside_texts.extend(texts);
        }
    }
    sent
}

/// Statements per request of one kind of request.
struct RoundTrips {
    all: f64,
    outside: f64,
}

/// Resets the counters, runs `requests` one after another with every statement logged,
/// then prints the statements they caused: the totals from `pg_stat_statements`, the
/// split into append transaction and the rest from the log.
async fn count_round_trips<F, Fut>(
    admin: &tokio_postgres::Client,
    log_path: &Path,
    what: &str,
    requests: F,
) -> anyhow::Result<RoundTrips>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let from = std::fs::metadata(log_path)?.len();
    admin.batch_execute("SELECT pg_stat_statements_reset()").await?;
    let mut failed = 0;
    for i in 0..ROUND_TRIP_REQUESTS {
        if !requests(i).await {
            failed += 1;
        }
    }
    let counted = statements(admin).await?;
    let log = std::fs::read(log_path)?;
    let sent = split_by_transaction(&String::from_utf8_lossy(log.get(from as usize..).unwrap_or_default()));
    let n = ROUND_TRIP_REQUESTS as f64;
    let total: i64 = counted.iter().map(|(_, calls)| calls).sum();
    let server_side = total as f64 - (sent.inside + sent.outside) as f64;
    println!();
    println!("{what}: {ROUND_TRIP_REQUESTS} sequential requests, {failed} not answered as expected; per request:");
    println!("  {:>6.2} statements executed (pg_stat_statements), of which", total as f64 / n);
    println!(
        "  {:>6.2} sent by the hub in its append transactions (the writer's frame and read models)",
        sent.inside as f64 / n
    );
    println!("  {:>6.2} sent by the hub outside them (round trips besides the append)", sent.outside as f64 / n);
    println!("  {:>6.2} run by the server itself (triggers, e.g. deferred constraints at COMMIT)", server_side / n);
    println!("{:>8} | {:<7} | statement (top 20 by calls)", "per req", "where");
    for (query, calls) in counted.iter().take(20) {
        let text = one_line(query);
        let place = if sent.inside_texts.contains(&shape(query)) {
            "append"
        } else if sent.outside_texts.contains(&shape(query)) {
            "outside"
        } else {
            "server"
        };
        let shown: String = text.chars().take(120).collect();
        println!("{:>8.2} | {place:<7} | {shown}", *calls as f64 / n);
    }
    Ok(RoundTrips { all: total as f64 / n, outside: sent.outside as f64 / n })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let server = tokio::task::spawn_blocking(|| {
        PgServer::start_with(
            Durability::Default,
            &[
                ("shared_preload_libraries", "pg_stat_statements"),
                ("pg_stat_statements.track", "all"),
                ("track_wal_io_timing", "on"),
            ],
        )
    })
    .await??;
    server.create_template().await?;
    let hub_db = server.migrated_database().await;
    let admin = hub_db.connect().await;
    admin.batch_execute("CREATE EXTENSION pg_stat_statements").await?;
    let scratch = server.empty_database().await;
    scratch
        .connect()
        .await
        .batch_execute("CREATE TABLE scratch (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload jsonb)")
        .await?;
    let hub = HubProcess::spawn(
        &hub_db.url,
        &["--single-node"],
        &[("HUB_RATE_LIMIT_PER_MINUTE", "100000000"), ("RUST_LOG", "warn")],
    )
    .await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let org = operator
        .post(
            "/v1/organizations",
            json!({"name": "Bench", "email": "bench@example.test", "plan": "pro",
                   "quotas": {"workspaces": 100_000_000}}),
        )
        .await;
    let org = org.body["id"].as_str().with_context(|| format!("creating the organization: {}", org.text))?.to_owned();
    let key = operator.post("/v1/api-keys", json!({"name": "bench", "scopes": ["*"], "organization_id": org})).await;
    let key = key.body["secret"].as_str().with_context(|| format!("creating the admin key: {}", key.text))?.to_owned();
    let api = Api::new(&hub.url(""), Some(&key));
    create_workspace(&api, COLLIDING_NAME).await?;
    let dir = e2e::process::new_dir("write-path");
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();

    println!(
        "write path benchmark: release hub (single node), PostgreSQL with default durability, {seconds} s per \
         throughput phase, {CONNECTIONS} connections"
    );
    let cpu_before = cpu::Reading::take();
    let baseline = baseline(&server, &scratch, &dir, seconds)?;
    let baseline_cpu = cpu_before.to(&cpu::Reading::take());
    // Checkpointed only: statistics taken of the nearly empty tables would plan P1's
    // statements for empty tables (a sequential scan per create as they fill).
    admin.batch_execute("CHECKPOINT").await?;
    let vacuums_before = vacuums(&admin).await?;
    admin.batch_execute("SELECT pg_stat_statements_reset()").await?;
    let writer_before = WriterSample::take(&hub).await?;
    let wal_before = WalSample::take(&admin).await?;
    let cpu_before = cpu::Reading::take();
    let p1 = wrk(&hub, &dir, "p1", &wrk_script(&key, &format!("p1-{run}"), 0), seconds)?;
    let p1_cpu = cpu_before.to(&cpu::Reading::take());
    let p1_time = time_by_statement(&admin).await?;
    let writer = WriterSample::take(&hub).await?.since(&writer_before);
    let wal = WalSample::take(&admin).await?.since(&wal_before);
    let p1_vacuums = vacuums(&admin).await? - vacuums_before;
    let vacuums_before = settle(&admin).await?;
    let writer_before = WriterSample::take(&hub).await?;
    let cpu_before = cpu::Reading::take();
    let p1c = wrk(&hub, &dir, "p1c", &wrk_script(&key, &format!("p1c-{run}"), COLLIDE_EVERY), seconds)?;
    let p1c_cpu = cpu_before.to(&cpu::Reading::take());
    let p1c_writer = WriterSample::take(&hub).await?.since(&writer_before);
    let p1c_vacuums = vacuums(&admin).await? - vacuums_before;

    // Growth: a workspace with a long stream against a new one, PATCHed in turns.
    let grown = create_workspace(&api, &format!("grown-{run}")).await?;
    grow(&hub_db, &grown).await?;
    let fresh = create_workspace(&api, &format!("fresh-{run}")).await?;
    for id in [&grown, &fresh] {
        timed_patch(&api, id, 0).await;
    }
    embedded_caught_up(&hub_db, &grown).await?;
    let (mut grown_ms, mut fresh_ms, mut growth_failed) = (Vec::new(), Vec::new(), 0);
    for n in 1..=GROWTH_SAMPLES {
        for (id, samples) in [(&grown, &mut grown_ms), (&fresh, &mut fresh_ms)] {
            let (took, ok) = timed_patch(&api, id, n).await;
            if ok { samples.push(ms(took)) } else { growth_failed += 1 }
        }
    }
    grown_ms.sort_by(f64::total_cmp);
    fresh_ms.sort_by(f64::total_cmp);

    // Round trips, on a warm hub: the same binary serving the same database, without the
    // embedded instance (whose own transactions would mix with the request path's), and
    // naming the embedded instance as a single-node hub does by default.
    // Every statement of its sessions is logged (they start after the setting).
    drop(hub);
    log_statements(&admin, true).await?;
    let hub =
        HubProcess::spawn(&hub_db.url, &[], &[("HUB_RATE_LIMIT_PER_MINUTE", "100000000"), ("RUST_LOG", "warn")]).await;
    let api = Api::new(&hub.url(""), Some(&key));
    let create = |name: String| {
        let api = api.clone();
        async move {
            let body = json!({"name": name, "instance_id": hub::startup::EMBEDDED_INSTANCE_ID});
            let reply = api.post("/v1/workspaces", body).await;
            (reply.status == 201).then(|| reply.body["id"].as_str().unwrap_or_default().to_owned())
        }
    };
    let patched = create(format!("patched-{run}")).await.context("creating the PATCHed workspace")?;
    for n in 0..10 {
        timed_patch(&api, &patched, n).await;
        create(format!("warm-{run}-{n}")).await;
    }
    let log_path = server.dir.join("postgres.log");
    let creates = count_round_trips(&admin, &log_path, "creates", |i| {
        let done = create(format!("rt-{run}-{i}"));
        async move { done.await.is_some() }
    })
    .await?;
    let patches = count_round_trips(&admin, &log_path, "PATCHes", |i| {
        let (api, patched) = (api.clone(), patched.clone());
        async move { timed_patch(&api, &patched, 1000 + i).await.1 }
    })
    .await?;
    log_statements(&admin, false).await?;

    let ok = |s: u16| (200..300).contains(&s);
    let answered = |s: u16| (200..300).contains(&s) || s == 409;
    let p1_rate = p1.rate(ok);
    let p1c_rate = p1c.rate(answered);
    let growth = percentile(&grown_ms, 0.5) / percentile(&fresh_ms, 0.5);
    println!();
    println!("{:<12} | {:>12} | {:>8} | {:>8} | {:>14} | answers", "phase", "rate /s", "p50 ms", "p99 ms", "ratio");
    println!("{:<12} | {:>12.0} | {:>8} | {:>8} | {:>14} | commits", "baseline", baseline, "", "", "");
    println!(
        "{:<12} | {:>12.0} | {:>8.1} | {:>8.1} | {:>14} | {}",
        "P1 create",
        p1_rate,
        p1.p50_ms,
        p1.p99_ms,
        format!("{:.2} (≥ 0.5)", p1_rate / baseline),
        p1.summary()
    );
    println!(
        "{:<12} | {:>12.0} | {:>8.1} | {:>8.1} | {:>14} | {}",
        "P1c 5% 409",
        p1c_rate,
        p1c.p50_ms,
        p1c.p99_ms,
        format!("{:.2} (≥ 0.8)", p1c_rate / p1_rate),
        p1c.summary()
    );
    println!(
        "{:<12} | {:>12} | {:>8.1} | {:>8.1} | {:>14} | {} + {} PATCHes, {growth_failed} not 200",
        "growth",
        "",
        percentile(&grown_ms, 0.5),
        percentile(&grown_ms, 0.99),
        format!("{growth:.2} (≤ 1.5)"),
        grown_ms.len(),
        fresh_ms.len()
    );
    println!(
        "{:<12} | {:>12} | {:>8.1} | {:>8.1} | {:>14} | the new workspace's PATCHes",
        "  (fresh)",
        "",
        percentile(&fresh_ms, 0.5),
        percentile(&fresh_ms, 0.99),
        ""
    );
    let p1_creates = p1.count(ok) as f64;
    println!();
    writer.print("P1", seconds);
    p1c_writer.print("P1c", seconds);
    println!(
        "Autovacuum and autoanalyze runs on the hub's tables during P1: {p1_vacuums}; during P1c: {p1c_vacuums} \
         (P1 starts checkpointed, P1c vacuumed, analyzed and checkpointed)"
    );
    println!(
        "WAL during P1: {:.0} bytes and {:.2} full-page images per create; {:.0} flushes ({:.2} ms each), \
         {:.0} writes ({:.2} ms each)",
        wal.bytes / p1_creates,
        wal.fpi / p1_creates,
        wal.syncs,
        wal.sync_ms / wal.syncs.max(1.0),
        wal.writes,
        wal.write_ms / wal.writes.max(1.0)
    );
    baseline_cpu.print("the baseline", baseline * seconds as f64, "commit", None);
    p1_cpu.print("P1", p1_creates, "create", Some(baseline));
    p1c_cpu.print("P1c", p1c.count(answered) as f64, "answer", Some(baseline));
    println!("Where the database's time went during P1, per 2xx create (every role, nested statements too:");
    println!("a trigger's statements are counted in their own line and in the statement that fired them):");
    println!("{:>9} | {:>8} | statement (top 15 by execution time)", "µs/create", "calls");
    for (query, calls, total_ms) in p1_time.iter().take(15) {
        let shown: String = one_line(query).chars().take(110).collect();
        println!("{:>9.1} | {:>8.2} | {shown}", total_ms * 1000.0 / p1_creates, *calls as f64 / p1_creates);
    }
    println!();
    for (what, trips) in [("create", &creates), ("PATCH", &patches)] {
        println!(
            "{:<12} | {:>12} | {:>8} | {:>8} | {:>14} | round trips per {what}: the append + {:.2} other statements \
             ({:.2} statements executed in all)",
            format!("{what} trips"),
            "",
            "",
            "",
            format!("{:.2} (= 1)", 1.0 + trips.outside),
            trips.outside,
            trips.all
        );
    }
    Ok(())
}
