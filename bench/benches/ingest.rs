//! The instance's ingest path over HTTP, against the same instance's cheapest route.
//!
//! One run starts PostgreSQL (default durability, `pg_stat_statements` preloaded),
//! nats-server, a release hub and a
//! release `instance serve` (its own database on the same server), creates an
//! organization, a workspace placed on the instance with one webhook URI, and an
//! interaction key, waits until the instance accepts the key, then measures, each phase
//! `BENCH_SECONDS` long (default 5), 64 connections on 2 threads:
//! - H: `wrk`, `GET /healthz` on the instance → answers/s, p50/p99;
//! - I: `wrk`, `POST /v1/interactions` with the key (a fixed small body) → 202s/s,
//!   p50/p99, and I ÷ H (target ≥ 0.5);
//! - the CPU each phase cost per answer, by program (PostgreSQL, the instance, the hub,
//!   nats-server, `wrk`), from `/proc`, and the rate the machine's cores allow at that cost;
//! - the statements the instance's database ran during phase I (`pg_stat_statements`):
//!   calls per accepted interaction and share of the execution time, most time first (the
//!   webhook sender's and the usage reporter's statements included: they run beside ingest).
//!
//! Every status is counted and shown, never fatal; every wait is bounded, and the harness
//! stops the servers when the run ends.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use bench::{cpu, wrk};
use e2e::postgres::{Durability, PgServer};
use e2e::{Api, HubProcess, InstanceProcess, NatsServer, OPERATOR_KEY};
use serde_json::json;

const CONNECTIONS: usize = 64;
/// How long the key may take to reach the instance.
const KEY_ARRIVES_WITHIN: Duration = Duration::from_secs(60);
const BODY: &str = r#"{"type": "door.knocked", "payload": {"voter": 42, "answer": "yes"}}"#;

/// A `wrk` script sending one request, counting answers by status and printing latency.
fn wrk_script(method: &str, path: &str, key: Option<&str>, body: Option<&str>) -> String {
    let mut script = format!("wrk.method = \"{method}\"\nwrk.path = \"{path}\"\n");
    if let Some(key) = key {
        script.push_str(&format!("wrk.headers[\"Authorization\"] = \"Bearer {key}\"\n"));
    }
    if let Some(body) = body {
        script.push_str("wrk.headers[\"Content-Type\"] = \"application/json\"\n");
        script.push_str(&format!("wrk.body = [[{body}]]\n"));
    }
    script.push_str(wrk::COLLECT);
    script
}

/// Runs `wrk` against `target` to its end (killed past the phase and its slack).
fn wrk(target: &InstanceProcess, dir: &Path, name: &str, script: &str, seconds: u64) -> anyhow::Result<wrk::Load> {
    wrk::run(&target.url(""), CONNECTIONS, dir, name, script, seconds)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let server = tokio::task::spawn_blocking(|| {
        PgServer::start_with(
            Durability::Default,
            &[("shared_preload_libraries", "pg_stat_statements"), ("pg_stat_statements.track_planning", "on")],
        )
    })
    .await??;
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
    let admin = instance_db.connect().await;
    admin.batch_execute("CREATE EXTENSION pg_stat_statements").await?;
    let cpu_before = cpu::Reading::take();
    let health = wrk(&instance, &dir, "healthz", &wrk_script("GET", "/healthz", None, None), seconds)?;
    let health_cpu = cpu_before.to(&cpu::Reading::take());
    admin.batch_execute("SELECT pg_stat_statements_reset()").await?;
    let cpu_before = cpu::Reading::take();
    let posts =
        wrk(&instance, &dir, "interactions", &wrk_script("POST", "/v1/interactions", Some(&key), Some(BODY)), seconds)?;
    let posts_cpu = cpu_before.to(&cpu::Reading::take());
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
    let accepted = posts.count(|s| s == 202).max(1) as f64;
    health_cpu.print("H", health.count(|s| s == 200) as f64, "answer", None);
    posts_cpu.print("I", accepted, "interaction", Some(h));
    let statements = bench::statements(&admin).await?;
    bench::print_statements(&statements, accepted, "interaction", "the instance's database during I");
    Ok(())
}
