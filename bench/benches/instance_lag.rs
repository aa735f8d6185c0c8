//! Hub commit → instance applied lag, and instance rebuild throughput.
//!
//! One run starts PostgreSQL (default durability), nats-server, a hub (with the relay) and
//! one instance from the release binaries (`bench/run.sh` builds them), then:
//! (a) creates 1,000 workspaces on the instance, then at a steady 500 and then 2,000 writes
//!     per second (settings changes, one command and one event each) for `BENCH_SECONDS`
//!     (default 5), measures for each workspace's last write the time from its commit
//!     (`recorded_at`) to the instance's apply (`updated_at`), both read from the same
//!     PostgreSQL clock, and reports p50/p99 and the rate the hub reached;
//! (b) appends events until the log holds 100,000 of the instance's events, times how fast
//!     PostgreSQL itself reads the log (`COPY (SELECT <the feed's columns> FROM events ORDER
//!     BY position) TO STDOUT` on the hub's database, the faster of two runs), then times
//!     `instance rebuild` over them `BENCH_REBUILDS` times (default 3; events/s of each),
//!     and reports the median rebuild's rate as a share of PostgreSQL's (target: at least
//!     0.2), and the best's.

use std::collections::HashMap;
use std::pin::pin;
use std::time::{Duration, Instant};

use bench::cpu;
use e2e::postgres::{Durability, PgServer};
use e2e::{Api, HubProcess, InstanceProcess, NatsServer, OPERATOR_KEY};
use futures::StreamExt;
use hub::store::{EventStore, ExpectedVersion, NewEvent, WriterConfig};
use serde_json::json;
use shared::Metadata;
use shared::events::WorkspaceEvent;
use shared::events::workspace::WorkspaceUpdated;
use uuid::Uuid;

const REBUILD_EVENTS: i64 = 100_000;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

const WORKSPACES: usize = 1000;

/// Creates the workspaces the writes go to.
async fn workspaces(api: &Api, org: &str) -> Vec<Uuid> {
    let mut ids = Vec::with_capacity(WORKSPACES);
    for chunk in (0..WORKSPACES).collect::<Vec<_>>().chunks(32) {
        let requests = chunk.iter().map(|i| {
            let body = json!({"name": format!("w{i}"), "instance_id": "alpha", "organization_id": org});
            api.post("/v1/workspaces", body)
        });
        for reply in futures::future::join_all(requests).await {
            assert_eq!(reply.status, 201, "{}", reply.text);
            ids.push(reply.body["id"].as_str().unwrap().parse::<Uuid>().unwrap());
        }
    }
    ids
}

/// Changes the workspaces' settings at `rate` writes per second for `length`, round
/// robin; returns the rate of writes the hub applied and how many it refused with 409
/// (the same workspace changed concurrently: the API's answer under contention).
async fn steady(api: &Api, ids: &[Uuid], rate: u32, length: Duration) -> (f64, usize) {
    let tick = Duration::from_millis(10);
    let per_tick = (rate as f64 * tick.as_secs_f64()).round() as usize;
    let start = Instant::now();
    let mut handles = Vec::new();
    let mut ticker = tokio::time::interval(tick);
    let mut n = 0;
    while start.elapsed() < length {
        ticker.tick().await;
        for _ in 0..per_tick {
            let (api, id) = (api.clone(), ids[n % ids.len()]);
            n += 1;
            handles.push(tokio::spawn(async move {
                let reply = api.patch(&format!("/v1/workspaces/{id}"), json!({"settings": {"n": n}})).await;
                assert!(reply.status == 200 || reply.status == 409, "{}", reply.text);
                reply.status == 200
            }));
        }
    }
    let (mut applied, mut conflicts) = (0, 0);
    for handle in handles {
        if handle.await.expect("request task") {
            applied += 1;
        } else {
            conflicts += 1;
        }
    }
    (applied as f64 / start.elapsed().as_secs_f64(), conflicts)
}

async fn lags(hub_db: &e2e::TestDatabase, instance_db: &e2e::TestDatabase, ids: &[Uuid]) -> Vec<f64> {
    let streams: Vec<String> = ids.iter().map(|id| format!("workspace-{id}")).collect();
    let hub = hub_db.connect().await;
    // The last event of each workspace: its version and commit time.
    let latest: HashMap<Uuid, (i64, chrono::DateTime<chrono::Utc>)> = hub
        .query(
            "SELECT DISTINCT ON (stream_id) stream_id, stream_version, recorded_at FROM events \
             WHERE stream_id = ANY($1) ORDER BY stream_id, stream_version DESC",
            &[&streams],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let stream: String = r.get(0);
            (stream["workspace-".len()..].parse().unwrap(), (r.get(1), r.get(2)))
        })
        .collect();
    let instance = instance_db.connect().await;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let rows =
            instance.query("SELECT id, stream_version FROM workspaces WHERE id = ANY($1)", &[&ids]).await.unwrap();
        let caught_up = rows.iter().filter(|r| latest.get(&r.get::<_, Uuid>(0)).map(|l| l.0) == Some(r.get(1))).count();
        if caught_up == ids.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = instance
        .query("SELECT id, stream_version, updated_at FROM workspaces WHERE id = ANY($1)", &[&ids])
        .await
        .unwrap();
    let mut lags: Vec<f64> = rows
        .iter()
        .filter_map(|r| {
            let (version, committed) = latest.get(&r.get::<_, Uuid>(0))?;
            let applied: chrono::DateTime<chrono::Utc> = r.get(2);
            if r.get::<_, i64>(1) != *version {
                return None;
            }
            (applied - *committed).num_microseconds().map(|us| us as f64 / 1000.0)
        })
        .collect();
    lags.sort_by(f64::total_cmp);
    lags
}

/// How fast PostgreSQL itself reads the whole log, every column the feed serves, in
/// position order: events/s of the faster of two `COPY … TO STDOUT` runs.
async fn copy_rate(hub_db: &e2e::TestDatabase) -> anyhow::Result<f64> {
    let client = hub_db.connect().await;
    let mut best = 0.0_f64;
    for _ in 0..2 {
        let started = Instant::now();
        let mut rows = 0_usize;
        let mut out = pin!(
            client
                .copy_out(
                    "COPY (SELECT position, stream_id, stream_version, event_id, event_type, schema_version, data, \
                     metadata, recorded_at, prev_hash, hash FROM events ORDER BY position) TO STDOUT",
                )
                .await?
        );
        while let Some(bytes) = out.next().await {
            // One line per row (a newline inside a value is escaped).
            rows += bytes?.iter().filter(|b| **b == b'\n').count();
        }
        best = best.max(rows as f64 / started.elapsed().as_secs_f64());
    }
    Ok(best)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let server = tokio::task::spawn_blocking(|| PgServer::start(Durability::Default)).await??;
    server.create_template().await?;
    let nats = NatsServer::start()?;
    let hub_db = server.migrated_database().await;
    let hub = HubProcess::spawn(
        &hub_db.url,
        &[],
        &[("NATS_URL", &nats.url()), ("HUB_RATE_LIMIT_PER_MINUTE", "10000000"), ("RUST_LOG", "warn")],
    )
    .await;
    let instance_db = server.empty_database().await;
    let instance = InstanceProcess::instance("alpha", &instance_db.url, &nats.url(), &hub.url("")).await;
    let api = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let org = api.post("/v1/organizations", json!({"name": "Bench", "email": "b@b.test", "plan": "pro"})).await;
    let org = org.body["id"].as_str().expect("an organization").to_owned();

    println!("instance lag benchmark: release binaries, PostgreSQL with default durability, {seconds} s per rate");
    println!();
    println!(
        "{:>14} | {:>12} | {:>9} | {:>10} | {:>10} | {:>10}",
        "target writes/s", "applied/s", "409s", "lag p50 ms", "lag p99 ms", "samples"
    );
    let all_ids = workspaces(&api, &org).await;
    for rate in [500, 2000] {
        let (reached, conflicts) = steady(&api, &all_ids, rate, Duration::from_secs(seconds)).await;
        let lags = lags(&hub_db, &instance_db, &all_ids).await;
        println!(
            "{:>15} | {:>12.0} | {:>9} | {:>10.1} | {:>10.1} | {:>10}",
            rate,
            reached,
            conflicts,
            percentile(&lags, 0.5),
            percentile(&lags, 0.99),
            lags.len()
        );
    }

    // (b) Fill the log with the instance's events, then time a rebuild.
    let store = EventStore::start(hub_db.pool(8), WriterConfig::default());
    let current: i64 = hub_db.connect().await.query_one("SELECT count(*) FROM events", &[]).await?.get(0);
    let missing = (REBUILD_EVENTS - current).max(0) as usize;
    let fill = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..32 {
        let (store, ids) = (store.clone(), all_ids.clone());
        tasks.push(tokio::spawn(async move {
            for i in (task..missing).step_by(32) {
                let id = ids[i % ids.len()];
                let event = WorkspaceEvent::WorkspaceUpdated(WorkspaceUpdated {
                    settings: Some(json!({"i": i})),
                    ..Default::default()
                });
                let new = NewEvent::new(&event, &Metadata::system()).expect("event");
                store.append(format!("workspace-{id}"), ExpectedVersion::Any, vec![new]).await.expect("append");
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let fill_rate = missing as f64 / fill.elapsed().as_secs_f64();
    drop(instance);
    let copy = copy_rate(&hub_db).await?;
    let runs: usize = std::env::var("BENCH_REBUILDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3).max(1);
    let cpu_before = cpu::Reading::take();
    let mut times = Vec::with_capacity(runs);
    let mut applied = 0.0;
    for _ in 0..runs {
        let started = Instant::now();
        let out = std::process::Command::new(e2e::binaries::binary("instance"))
            .arg("rebuild")
            .env("INSTANCE_ID", "alpha")
            .env("INSTANCE_DATABASE_URL", &instance_db.url)
            .env("HUB_URL", hub.url(""))
            .env("HUB_OPERATOR_KEY", OPERATOR_KEY)
            .env("RUST_LOG", "warn")
            .output()?;
        times.push(started.elapsed().as_secs_f64());
        anyhow::ensure!(out.status.success(), "rebuild failed: {}", String::from_utf8_lossy(&out.stderr));
        let report = String::from_utf8_lossy(&out.stdout);
        applied = report.split_whitespace().nth(2).and_then(|n| n.parse().ok()).unwrap_or(0.0);
    }
    let rebuild_cpu = cpu_before.to(&cpu::Reading::take());
    println!();
    println!("log filled to {REBUILD_EVENTS} events by direct appends at {fill_rate:.0} events/s");
    println!("PostgreSQL reads the log (COPY … TO STDOUT): {copy:.0} events/s");
    let shown: Vec<String> = times.iter().map(|t| format!("{t:.2} s")).collect();
    times.sort_by(f64::total_cmp);
    let (median, best) = (percentile(&times, 0.5), times[0]);
    println!(
        "instance rebuild ({runs} runs, from the hub's feed over HTTP): {applied:.0} events in {}; median {:.0} events/s \
         = {:.2} × PostgreSQL's read rate (target ≥ 0.2), best {:.0} events/s = {:.2} ×",
        shown.join(", "),
        applied / median,
        applied / median / copy,
        applied / best,
        applied / best / copy,
    );
    let applied = applied * runs as f64;
    rebuild_cpu.print("the rebuild", applied, "event", Some(copy));
    Ok(())
}
