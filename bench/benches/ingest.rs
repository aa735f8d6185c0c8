//! The instance's ingest path over HTTP, against the same instance's cheapest route.
//!
//! One run starts PostgreSQL (default durability), nats-server, a release hub and a
//! release `instance serve` (its own database on the same server), creates an
//! organization, a workspace placed on the instance with one webhook URI, and an
//! interaction key, waits until the instance accepts the key, then measures, each phase
//! `BENCH_SECONDS` long (default 5), 64 connections on 2 threads:
//! - H: `wrk`, `GET /healthz` on the instance → answers/s, p50/p99;
//! - I: `wrk`, `POST /v1/interactions` with the key (a fixed small body) → 202s/s,
//!   p50/p99, and I ÷ H (target ≥ 0.5).
//!
//! Every status is counted and shown, never fatal; every wait is bounded, and the harness
//! stops the servers when the run ends.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use e2e::postgres::{Durability, PgServer};
use e2e::{Api, HubProcess, InstanceProcess, NatsServer, OPERATOR_KEY};
use serde_json::json;

const CONNECTIONS: usize = 64;
/// The most time `wrk` gets beyond its phase.
const SLACK: Duration = Duration::from_secs(120);
/// How long the key may take to reach the instance.
const KEY_ARRIVES_WITHIN: Duration = Duration::from_secs(60);
const BODY: &str = r#"{"type": "door.knocked", "payload": {"voter": 42, "answer": "yes"}}"#;

/// What `wrk` reported: answers by status, the phase's length and latency.
#[derive(Debug, Default)]
struct Load {
    statuses: BTreeMap<u16, u64>,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    socket_errors: String,
}

impl Load {
    fn rate(&self, accept: impl Fn(u16) -> bool) -> f64 {
        self.statuses.iter().filter(|(s, _)| accept(**s)).map(|(_, n)| n).sum::<u64>() as f64 / self.seconds
    }

    fn summary(&self) -> String {
        let statuses: Vec<String> = self.statuses.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        let mut text = statuses.join(", ");
        if !self.socket_errors.is_empty() {
            text.push_str(&format!("; {}", self.socket_errors));
        }
        text
    }
}

/// A `wrk` script sending one request, counting answers by status and printing latency.
fn wrk_script(method: &str, path: &str, key: Option<&str>, body: Option<&str>) -> String {
    let mut setup = format!("wrk.method = \"{method}\"\nwrk.path = \"{path}\"\n");
    if let Some(key) = key {
        setup.push_str(&format!("wrk.headers[\"Authorization\"] = \"Bearer {key}\"\n"));
    }
    if let Some(body) = body {
        setup.push_str("wrk.headers[\"Content-Type\"] = \"application/json\"\n");
        setup.push_str(&format!("wrk.body = [[{body}]]\n"));
    }
    format!(
        r#"{setup}
local threads = {{}}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {{}}
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      io.write(string.format("bench-status %d %d\n", status, n))
    end
  end
  io.write(string.format("bench-duration-us %d\n", summary.duration))
  io.write(string.format("bench-p50-us %d\n", latency:percentile(50)))
  io.write(string.format("bench-p99-us %d\n", latency:percentile(99)))
end
"#
    )
}

/// Runs `wrk` against `target` to its end (killed past the phase and its slack).
fn wrk(target: &InstanceProcess, dir: &Path, name: &str, script: &str, seconds: u64) -> anyhow::Result<Load> {
    let path = dir.join(format!("{name}.lua"));
    std::fs::write(&path, script)?;
    let program = e2e::process::find_program("wrk", &[])
        .context("`wrk` not found: install it (bench/run.sh does, with apt-get)")?;
    let child = Command::new(program)
        .args(["-c", &CONNECTIONS.to_string(), "-t", "2", "-d", &format!("{seconds}s"), "--timeout", "30s", "-s"])
        .arg(&path)
        .arg(target.url(""))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting wrk")?;
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = done.send(());
        out
    });
    if finished.recv_timeout(Duration::from_secs(seconds) + SLACK).is_err() {
        e2e::process::signal(pid, "KILL");
    }
    let out = waiter.join().map_err(|_| anyhow::anyhow!("waiting for wrk"))??;
    if !out.status.success() {
        bail!("wrk failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    let out = String::from_utf8_lossy(&out.stdout);
    let mut load = Load::default();
    for line in out.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["bench-status", status, n] => *load.statuses.entry(status.parse()?).or_default() += n.parse::<u64>()?,
            ["bench-duration-us", us] => load.seconds = us.parse::<f64>()? / 1e6,
            ["bench-p50-us", us] => load.p50_ms = us.parse::<f64>()? / 1e3,
            ["bench-p99-us", us] => load.p99_ms = us.parse::<f64>()? / 1e3,
            _ if line.trim_start().starts_with("Socket errors") => load.socket_errors = line.trim().to_owned(),
            _ => {}
        }
    }
    if load.seconds <= 0.0 {
        bail!("no summary in wrk's report:\n{out}");
    }
    Ok(load)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let server = tokio::task::spawn_blocking(|| PgServer::start(Durability::Default)).await??;
    server.create_template().await?;
    let hub_db = server.migrated_database().await;
    let instance_db = server.empty_database().await;
    let nats = tokio::task::spawn_blocking(NatsServer::start).await??;
    let hub = HubProcess::spawn(&hub_db.url, &[], &[("NATS_URL", &nats.url()), ("RUST_LOG", "warn")]).await;
    let instance =
        HubProcess::instance_with_env("alpha", &instance_db.url, &nats.url(), &hub.url(""), &[("RUST_LOG", "warn")])
            .await;

    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let org = operator
        .post("/v1/organizations", json!({"name": "Bench", "email": "bench@example.test", "plan": "pro"}))
        .await;
    let org = org.body["id"].as_str().with_context(|| format!("creating the organization: {}", org.text))?.to_owned();
    let workspace = operator
        .post(
            "/v1/workspaces",
            json!({"name": "Field", "organization_id": org, "instance_id": "alpha",
                   "webhook_uris": ["https://hooks.example.test/interactions"]}),
        )
        .await;
    let workspace = workspace.body["id"]
        .as_str()
        .with_context(|| format!("creating the workspace: {}", workspace.text))?
        .to_owned();
    let external = operator
        .post(
            &format!("/v1/workspaces/{workspace}/external-keys"),
            json!({"provider": "van", "name": "VAN", "api_key": "van-credential-0001"}),
        )
        .await;
    let key = operator
        .post(
            &format!("/v1/workspaces/{workspace}/interaction-keys"),
            json!({"name": "Bench", "destination": {"type": "external_key", "external_key_id": external.body["id"]}}),
        )
        .await;
    let key =
        key.body["secret"].as_str().with_context(|| format!("creating the interaction key: {}", key.text))?.to_owned();
    let ingest = Api::new(&instance.url(""), Some(&key));
    let body: serde_json::Value = serde_json::from_str(BODY)?;
    e2e::wait_until("the key to reach the instance", KEY_ARRIVES_WITHIN, || {
        let (ingest, body) = (ingest.clone(), body.clone());
        async move { (ingest.post("/v1/interactions", body).await.status == 202).then_some(()) }
    })
    .await;

    let dir = e2e::process::new_dir("ingest");
    println!(
        "ingest benchmark: release hub and instance (over NATS), PostgreSQL with default durability, {seconds} s per \
         phase, {CONNECTIONS} connections"
    );
    let health = wrk(&instance, &dir, "healthz", &wrk_script("GET", "/healthz", None, None), seconds)?;
    let posts =
        wrk(&instance, &dir, "interactions", &wrk_script("POST", "/v1/interactions", Some(&key), Some(BODY)), seconds)?;
    let (h, i) = (health.rate(|s| s == 200), posts.rate(|s| s == 202));
    println!(
        "H  GET /healthz:           {h:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ({})",
        health.p50_ms,
        health.p99_ms,
        health.summary()
    );
    println!(
        "I  POST /v1/interactions:  {i:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ({})",
        posts.p50_ms,
        posts.p99_ms,
        posts.summary()
    );
    let ratio = i / h;
    println!("I / H = {ratio:.3} (target >= 0.5): {}", if ratio >= 0.5 { "met" } else { "NOT met" });
    Ok(())
}
