//! Webhook delivery throughput, and the time from an interaction's acceptance to the
//! first attempt at delivering it.
//!
//! One run starts PostgreSQL (default durability) and a release `hub serve --single-node`
//! (its embedded instance delivers, `WEBHOOK_ALLOW_PRIVATE=true`, retries after 1 s), and
//! a local receiver that answers 200, except 503 to one request in 100. For
//! `BENCH_SECONDS` (default 5) 32 clients post interactions to a workspace with that one
//! webhook URI; then it waits (bounded) until every interaction got its success and
//! reports deliveries/s (interactions delivered over the time from the first acceptance
//! to the last success), the attempts made, and p50/p99 from each interaction's 202 to
//! the receiver's first request for it (one process, one clock).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::postgres::{Durability, PgServer};
use e2e::receiver::Receiver;
use e2e::{Api, HubProcess, OPERATOR_KEY};
use serde_json::json;

const CLIENTS: usize = 32;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let server = tokio::task::spawn_blocking(|| {
        PgServer::start_with(
            Durability::Default,
            &[("shared_preload_libraries", "pg_stat_statements"), ("pg_stat_statements.track", "all")],
        )
    })
    .await??;
    server.create_template().await?;
    let db = server.migrated_database().await;
    let hub = HubProcess::spawn(
        &db.url,
        &["--single-node"],
        &[
            ("HUB_RATE_LIMIT_PER_MINUTE", "10000000"),
            ("WEBHOOK_ALLOW_PRIVATE", "true"),
            ("WEBHOOK_RETRY_SCHEDULE", "1,1,1,1,1"),
            ("RUST_LOG", "warn"),
        ],
    )
    .await;
    let receiver = Receiver::start(200).await;
    receiver.unavailable_every(100);

    let api = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let org = api.post("/v1/organizations", json!({"name": "Bench", "email": "b@b.test", "plan": "pro"})).await;
    let org = org.body["id"].as_str().expect("an organization").to_owned();
    let ws = api
        .post("/v1/workspaces", json!({"name": "w", "organization_id": org, "webhook_uris": [receiver.url("/hooks")]}))
        .await;
    let ws = ws.body["id"].as_str().expect("a workspace").to_owned();
    let external = api
        .post(
            &format!("/v1/workspaces/{ws}/external-keys"),
            json!({"provider": "van", "name": "VAN", "api_key": "van-credential-0001"}),
        )
        .await;
    let key = api
        .post(
            &format!("/v1/workspaces/{ws}/interaction-keys"),
            json!({"name": "bench", "destination": {"type": "external_key", "external_key_id": external.body["id"]}}),
        )
        .await;
    let ingest = Api::new(&hub.url(""), key.body["secret"].as_str());
    e2e::wait_until("the key to reach the instance", Duration::from_secs(30), || {
        let ingest = ingest.clone();
        async move {
            let reply = ingest.post("/v1/interactions", json!({"type": "warm.up", "payload": null})).await;
            (reply.status == 202).then_some(())
        }
    })
    .await;
    e2e::wait_until("the warm-up delivery", Duration::from_secs(30), || {
        let done = receiver.requests().iter().any(|r| r.answered == 200);
        async move { done.then_some(()) }
    })
    .await;
    let warm_up: Vec<String> = receiver.requests().into_iter().map(|r| r.id).collect();

    let admin = db.connect().await;
    admin.batch_execute("CREATE EXTENSION pg_stat_statements; SELECT pg_stat_statements_reset()").await?;
    println!("webhook delivery benchmark: release binaries, single-node hub, PostgreSQL with default durability,");
    println!(
        "{CLIENTS} clients posting interactions for {seconds} s, a local receiver answering 503 to 1 request in 100"
    );
    println!();
    let accepted: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let until = Instant::now() + Duration::from_secs(seconds);
    let first_accept = Instant::now();
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (ingest, accepted) = (ingest.clone(), accepted.clone());
        clients.push(tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < until {
                n += 1;
                let body = json!({"type": "door.knocked", "payload": {"client": client, "n": n}});
                let reply = ingest.post("/v1/interactions", body).await;
                if reply.status == 202 {
                    let id = reply.body["id"].as_str().expect("an id").to_owned();
                    accepted.lock().unwrap_or_else(|p| p.into_inner()).insert(id, Instant::now());
                }
            }
        }));
    }
    for client in clients {
        client.await?;
    }
    let accepted = accepted.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let posting = first_accept.elapsed();
    e2e::wait_until("every interaction delivered", Duration::from_secs(300), || {
        let delivered: std::collections::HashSet<String> =
            receiver.requests().into_iter().filter(|r| r.answered == 200).map(|r| r.id).collect();
        let done = accepted.keys().all(|id| delivered.contains(id));
        async move { done.then_some(()) }
    })
    .await;

    let requests: Vec<_> = receiver.requests().into_iter().filter(|r| !warm_up.contains(&r.id)).collect();
    let mut first: HashMap<&str, Instant> = HashMap::new();
    let mut last_success = first_accept;
    for request in &requests {
        first.entry(request.id.as_str()).or_insert(request.at);
        if request.answered == 200 {
            last_success = last_success.max(request.at);
        }
    }
    let mut waits: Vec<f64> = accepted
        .iter()
        .filter_map(|(id, at)| first.get(id.as_str()).map(|f| f.saturating_duration_since(*at).as_secs_f64() * 1e3))
        .collect();
    waits.sort_by(f64::total_cmp);
    let unavailable = requests.iter().filter(|r| r.answered == 503).count();
    let span = last_success.duration_since(first_accept).as_secs_f64();
    println!(
        "{:>12} | {:>12} | {:>12} | {:>9} | {:>13} | {:>20} | {:>20}",
        "accepted", "accepted/s", "delivered/s", "attempts", "503 answered", "accept→1st p50 ms", "accept→1st p99 ms"
    );
    println!(
        "{:>12} | {:>12.0} | {:>12.0} | {:>9} | {:>13} | {:>20.1} | {:>20.1}",
        accepted.len(),
        accepted.len() as f64 / posting.as_secs_f64(),
        accepted.len() as f64 / span,
        requests.len(),
        unavailable,
        percentile(&waits, 0.5),
        percentile(&waits, 0.99),
    );
    let statements = bench::statements(&admin).await?;
    bench::print_statements(&statements, accepted.len() as f64, "delivery", "the database (hub and embedded instance)");
    Ok(())
}
