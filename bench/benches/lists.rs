//! Lists of one large organization, against the first page of its workspace list.
//!
//! One run starts PostgreSQL (default durability) and a release `hub serve` (without the
//! embedded instance, which would spend the run applying the load), creates an
//! organization (its workspace quota raised) and an admin key, and loads
//! `BENCH_LIST_WORKSPACES` workspaces (default 1,000,000) into it by batched commits
//! straight through `hub::store::EventStore` with the hub's read models, 10,000 of them a
//! tree under one root (100 children of 99 children each). After `ANALYZE`, it times
//! `BENCH_LIST_SAMPLES` sequential requests (default 200) of each kind and reports each
//! p50 as a ratio to the p50 of page 1 of `GET /v1/workspaces?page_size=100`:
//! - a deep page number (the middle of the list: answered 422 `page_too_deep`);
//! - `sort_by=name`, page 1;
//! - a substring filter (`name=`), page 1;
//! - `/count`, `/count?status=archived` (the counters) and `/count?name=` (an index);
//! - the last pages of a full cursor walk (`next_cursor` to the end, 100 a page);
//! - the tree of the 10,000 nodes (`GET /v1/workspaces/{root}/tree`), in ms.
//!
//! Unexpected statuses are counted and shown, never fatal; the harness stops PostgreSQL
//! and the hub when the run ends.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use e2e::postgres::{Durability, PgServer};
use e2e::{Api, HubProcess, OPERATOR_KEY};
use hub::projections::ReadModels;
use hub::store::{Commit, EventStore, ExpectedVersion, NewEvent, StreamAppend, WriterConfig};
use serde_json::{Value, json};
use shared::Metadata;
use shared::events::WorkspaceEvent;
use shared::events::workspace::WorkspaceCreated;
use uuid::Uuid;

/// Workspaces appended per commit.
const BATCH: usize = 2_000;
/// Nodes of the tree below its root: `TREE_CHILDREN` children of `TREE_CHILDREN - 1`
/// children each, and the children themselves.
const TREE_CHILDREN: usize = 100;
const TREE_NODES: usize = 10_000;
/// Pages at the end of the cursor walk whose latency is reported.
const LAST_PAGES: usize = 100;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.replace('_', "").parse().ok()).unwrap_or(default)
}

/// Sequential timings of one request, and the statuses it was answered with.
struct Timed {
    ms: Vec<f64>,
    statuses: std::collections::BTreeMap<u16, usize>,
}

impl Timed {
    fn p50(&self) -> f64 {
        percentile(&self.ms, 0.5)
    }

    fn statuses(&self) -> String {
        self.statuses.iter().map(|(s, n)| format!("{s}×{n}")).collect::<Vec<_>>().join(" ")
    }
}

async fn time(api: &Api, path: &str, samples: usize) -> Timed {
    let mut timed = Timed { ms: Vec::with_capacity(samples), statuses: Default::default() };
    for _ in 0..samples {
        let started = Instant::now();
        let reply = api.get(path).await;
        timed.ms.push(started.elapsed().as_secs_f64() * 1000.0);
        *timed.statuses.entry(reply.status.as_u16()).or_default() += 1;
    }
    timed.ms.sort_by(f64::total_cmp);
    timed
}

fn created(organization_id: Uuid, parent_id: Option<Uuid>, name: String) -> WorkspaceEvent {
    WorkspaceEvent::WorkspaceCreated(WorkspaceCreated {
        organization_id,
        parent_id,
        instance_id: None,
        name,
        settings: json!({}),
        webhook_uris: Vec::new(),
        public_keys: Vec::new(),
    })
}

/// Appends `total` workspace creations of `organization_id`, `BATCH` per commit; the first
/// `TREE_NODES` form the tree under `root`.
async fn load(store: &EventStore, organization_id: Uuid, root: Uuid, total: usize) -> anyhow::Result<()> {
    let mut children = Vec::with_capacity(TREE_CHILDREN);
    let started = Instant::now();
    let mut n = 0;
    while n < total {
        let mut appends = Vec::with_capacity(BATCH);
        for _ in 0..BATCH.min(total - n) {
            let id = Uuid::new_v4();
            let parent_id = if n < TREE_CHILDREN {
                children.push(id);
                Some(root)
            } else if n < TREE_NODES {
                Some(children[n % TREE_CHILDREN])
            } else {
                None
            };
            let event = created(organization_id, parent_id, format!("ws-{n:07}"));
            appends.push(StreamAppend {
                stream_id: format!("workspace-{id}"),
                expected: ExpectedVersion::NoStream,
                events: vec![NewEvent::new(&event, &Metadata::system())?],
            });
            n += 1;
        }
        store.commit(Commit { appends, extra: Vec::new() }).await?;
        if n % 100_000 < BATCH {
            println!("  loaded {n} workspaces in {:.0} s", started.elapsed().as_secs_f64());
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let total = env("BENCH_LIST_WORKSPACES", 1_000_000).max(TREE_NODES + BATCH);
    let samples = env("BENCH_LIST_SAMPLES", 200);
    let server = tokio::task::spawn_blocking(|| PgServer::start_with(Durability::Default, &[])).await??;
    server.create_template().await?;
    let hub_db = server.migrated_database().await;
    let hub =
        HubProcess::spawn(&hub_db.url, &[], &[("HUB_RATE_LIMIT_PER_MINUTE", "100000000"), ("RUST_LOG", "warn")]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let org = operator
        .post(
            "/v1/organizations",
            json!({"name": "Bench", "email": "bench@example.test", "plan": "pro",
                   "quotas": {"workspaces": 100_000_000}}),
        )
        .await;
    let org: Uuid =
        org.body["id"].as_str().with_context(|| format!("creating the organization: {}", org.text))?.parse()?;
    let key = operator.post("/v1/api-keys", json!({"name": "bench", "scopes": ["*"], "organization_id": org})).await;
    let key = key.body["secret"].as_str().with_context(|| format!("creating the admin key: {}", key.text))?.to_owned();
    let api = Api::new(&hub.url(""), Some(&key));

    println!("lists benchmark: release hub, PostgreSQL with default durability, {total} workspaces, {samples} samples");
    let store = EventStore::start_with(hub_db.pool(2), WriterConfig::default(), Arc::new(ReadModels));
    let root = Uuid::new_v4();
    let created = created(org, None, "tree-root".into());
    let events = vec![NewEvent::new(&created, &Metadata::system())?];
    store.append(format!("workspace-{root}"), ExpectedVersion::NoStream, events).await?;
    let started = Instant::now();
    load(&store, org, root, total).await?;
    let loading = started.elapsed();
    hub_db.connect().await.batch_execute("VACUUM ANALYZE").await?;
    println!("  loaded in {:.0} s, then VACUUM ANALYZE", loading.as_secs_f64());

    // Warm-up: every kind of request once.
    let deep_page = (total / 100 / 2).max(2);
    let substring = "s-00042";
    let paths = [
        ("page 1", "/v1/workspaces?page_size=100".to_owned()),
        ("deep page", format!("/v1/workspaces?page_size=100&page={deep_page}")),
        ("sort_by=name", "/v1/workspaces?page_size=100&sort_by=name".to_owned()),
        ("name= substring", format!("/v1/workspaces?page_size=100&name={substring}")),
        ("/count", "/v1/workspaces/count".to_owned()),
        ("/count?status=archived", "/v1/workspaces/count?status=archived".to_owned()),
        ("/count?name=", format!("/v1/workspaces/count?name={substring}")),
    ];
    for (_, path) in &paths {
        api.get(path).await;
    }
    let mut results = Vec::new();
    for (what, path) in &paths {
        results.push((*what, path.clone(), time(&api, path, samples).await));
    }

    // A full walk by cursor; the last pages' latencies are kept.
    let mut walk_ms = Vec::new();
    let mut pages = 0usize;
    let mut items = 0usize;
    let mut path = "/v1/workspaces?page_size=100".to_owned();
    let walk_started = Instant::now();
    loop {
        let started = Instant::now();
        let reply = api.get(&path).await;
        walk_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        if reply.status != 200 {
            bail!("the cursor walk stopped at page {pages}: {} {}", reply.status, reply.text);
        }
        pages += 1;
        items += reply.body["items"].as_array().map_or(0, Vec::len);
        match reply.body["pagination"]["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/workspaces?page_size=100&cursor={cursor}"),
            None => break,
        }
    }
    let walk_took = walk_started.elapsed();
    let mut last: Vec<f64> = walk_ms.iter().rev().take(LAST_PAGES).copied().collect();
    last.sort_by(f64::total_cmp);

    let tree_samples = (samples / 10).max(5);
    let tree = time(&api, &format!("/v1/workspaces/{root}/tree"), tree_samples).await;
    let nodes = count_nodes(&api.get(&format!("/v1/workspaces/{root}/tree")).await.body);

    let base = results[0].2.p50();
    println!();
    println!("{:<26} | {:>8} | {:>8} | {:>7} | statuses", "request", "p50 ms", "p99 ms", "ratio");
    for (what, _, timed) in &results {
        println!(
            "{what:<26} | {:>8.2} | {:>8.2} | {:>6.2}× | {}",
            timed.p50(),
            percentile(&timed.ms, 0.99),
            timed.p50() / base,
            timed.statuses()
        );
    }
    println!(
        "{:<26} | {:>8.2} | {:>8.2} | {:>6.2}× | last {LAST_PAGES} of {pages} pages, {items} items, walk {:.0} s",
        "cursor walk, last pages",
        percentile(&last, 0.5),
        percentile(&last, 0.99),
        percentile(&last, 0.5) / base,
        walk_took.as_secs_f64()
    );
    println!(
        "{:<26} | {:>8.2} | {:>8.2} | {:>6.2}× | {} ({nodes} nodes below the root, {tree_samples} samples)",
        "tree of 10,000",
        tree.p50(),
        percentile(&tree.ms, 0.99),
        tree.p50() / base,
        tree.statuses()
    );
    for (what, path, _) in &results {
        println!("  {what}: GET {path}");
    }
    Ok(())
}

fn count_nodes(node: &Value) -> usize {
    node["children"].as_array().map_or(0, |children| children.iter().map(|c| 1 + count_nodes(c)).sum())
}
