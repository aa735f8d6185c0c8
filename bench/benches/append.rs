//! Event-store append throughput and latency against raw PostgreSQL commits.
//!
//! In one run, on one freshly started PostgreSQL server with default durability settings
//! (fsync and synchronous commit on), this measures at concurrency 1, 16 and 64:
//! (a) single-row `INSERT` commits per second into a plain table, one connection per task;
//! (b) event-store appends per second (one event per append, each awaited by its caller)
//! with p50/p99 latency; and prints their ratio. `BENCH_SECONDS` sets each phase's length
//! (default 5).

use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::postgres::{Durability, PgServer};
use hub::store::{EventStore, ExpectedVersion, NewEvent, WriterConfig};
use shared::Metadata;
use shared::events::organization::{OrganizationEvent, OrganizationUpdated};

const CONCURRENCY: [usize; 3] = [1, 16, 64];

struct Phase {
    ops: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let index = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        self.latencies[index]
    }
}

/// Runs `tasks` loops of `op` for `length`, timing each call.
async fn phase<F, Fut>(tasks: usize, length: Duration, op: F) -> Phase
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let deadline = start + length;
    let mut handles = Vec::new();
    for task in 0..tasks {
        let op = op.clone();
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                op(task, i).await;
                latencies.push(t.elapsed());
                i += 1;
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.await.expect("bench task"));
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    Phase { ops: latencies.len(), elapsed, latencies }
}

fn payload(task: usize, i: usize) -> OrganizationEvent {
    OrganizationEvent::OrganizationUpdated(OrganizationUpdated {
        name: Some(format!("organization {task}-{i}")),
        email: Some(format!("ops-{task}@example.test")),
        plan: Some("enterprise".into()),
    })
}

async fn raw_inserts(server: &PgServer, tasks: usize, length: Duration) -> anyhow::Result<Phase> {
    let db = server.empty_database().await;
    let setup = db.connect().await;
    setup
        .batch_execute(
            "CREATE TABLE raw_events (id bigserial PRIMARY KEY, stream_id text NOT NULL, data jsonb NOT NULL)",
        )
        .await?;
    let mut clients = Vec::new();
    for _ in 0..tasks {
        clients.push(Arc::new(db.connect().await));
    }
    let clients = Arc::new(clients);
    Ok(phase(tasks, length, move |task, i| {
        let client = clients[task].clone();
        async move {
            let data = serde_json::to_value(payload(task, i)).expect("payload");
            client
                .execute(
                    "INSERT INTO raw_events (stream_id, data) VALUES ($1, $2)",
                    &[&format!("org-{}", (task + i) % 500), &data],
                )
                .await
                .expect("raw insert");
        }
    })
    .await)
}

async fn store_appends(server: &PgServer, tasks: usize, length: Duration) -> anyhow::Result<Phase> {
    let db = server.migrated_database().await;
    let store = EventStore::start(db.pool(4), WriterConfig::default());
    Ok(phase(tasks, length, move |task, i| {
        let store = store.clone();
        async move {
            let event = NewEvent::new(&payload(task, i), &Metadata::system()).expect("event");
            store.append(format!("org-{}", (task + i) % 500), ExpectedVersion::Any, vec![event]).await.expect("append");
        }
    })
    .await)
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let length = Duration::from_secs(seconds);
    let server = tokio::task::spawn_blocking(|| PgServer::start(Durability::Default)).await??;
    server.create_template().await?;
    println!("append benchmark: PostgreSQL with default durability, {seconds} s per phase, {} cores", num_cpus());
    println!();
    println!(
        "{:>11} | {:>14} {:>9} {:>9} | {:>14} {:>9} {:>9} | {:>11}",
        "concurrency", "raw commits/s", "p50 ms", "p99 ms", "store evts/s", "p50 ms", "p99 ms", "store / raw"
    );
    let mut at_64 = None;
    for tasks in CONCURRENCY {
        let raw = raw_inserts(&server, tasks, length).await?;
        let store = store_appends(&server, tasks, length).await?;
        let ratio = store.rate() / raw.rate();
        println!(
            "{:>11} | {:>14.0} {:>9} {:>9} | {:>14.0} {:>9} {:>9} | {:>10.2}x",
            tasks,
            raw.rate(),
            ms(raw.percentile(0.5)),
            ms(raw.percentile(0.99)),
            store.rate(),
            ms(store.percentile(0.5)),
            ms(store.percentile(0.99)),
            ratio
        );
        if tasks == 64 {
            at_64 = Some(ratio);
        }
    }
    if let Some(ratio) = at_64 {
        println!();
        let verdict = if ratio >= 1.0 { "met" } else { "NOT met" };
        println!("target (store at concurrency 64 >= raw single-row commits at 64): {verdict}, {ratio:.2}x");
    }
    Ok(())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
