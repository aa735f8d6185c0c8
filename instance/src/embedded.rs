//! The instance embedded in a single-node hub: no NATS, no second database.
//!
//! It keeps its state in the schema `instance` of the hub's database and reads the hub's
//! log directly (woken by the hub's writer after each commit, with a timer fallback),
//! applying the events of the workspaces placed on it with the same checkpointed `apply`
//! as a separate instance.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use deadpool_postgres::Pool;
use shared::RecordedEvent;
use shared::supervise::Tasks;
use tokio::sync::Notify;
use tokio_postgres::Client;

use crate::apply::{apply_batch, workspace_id};
use crate::runtime::{Keyring, RuntimeState};

const PAGE: i64 = 500;
/// Connections of the embedded instance: its tailer and the runtime API's requests.
const POOL_SIZE: usize = 8;

/// Prepares the schema, starts the tailer and the webhook sender (supervised in `tasks`)
/// and returns the runtime API's routes. `hub_database` carries the hub's session limits.
pub async fn start(
    hub_database: tokio_postgres::Config,
    instance_id: String,
    master_key: crate::config::MasterKey,
    auth_failures_per_minute: u32,
    webhooks: shared::config::Webhooks,
    wake: Arc<Notify>,
    tasks: &Arc<Tasks>,
) -> anyhow::Result<Router> {
    let config = schema_config(hub_database);
    {
        let client = crate::db::connect(&config).await.context("connecting the embedded instance")?;
        if !crate::migrate::is_current(&client).await? {
            // A hub serving as the owning role prepares the schema itself; any other role
            // needs `hub migrate` to have done it.
            prepare_schema(&config).await.context("preparing the embedded instance's schema (run `hub migrate`)")?;
        }
    }
    let webhook_pool = crate::db::pool(config.clone(), crate::webhooks::POOL_SIZE);
    let pool = crate::db::pool(config, POOL_SIZE);
    let embedded_id = instance_id.clone();
    {
        let pool = pool.clone();
        tasks.spawn("embedded instance", move || tail(pool.clone(), instance_id.clone(), wake.clone()));
    }
    let runtime = Arc::new(RuntimeState::new(pool, Keyring::Database, Some(master_key), auth_failures_per_minute));
    {
        let (usage, pool) = (runtime.usage.clone(), runtime.pool.clone());
        let sink = crate::usage::Sink::Hub { instance_id: embedded_id };
        tasks.spawn("embedded usage", move || crate::usage::run(usage.clone(), pool.clone(), sink.clone()));
    }
    crate::webhooks::spawn(tasks, runtime.clone(), webhook_pool, webhooks)?;
    // Merged after the hub's own layers, so it carries its own `Request-Id`.
    // The hub serves its own `/openapi.json`: the runtime API's document is beside its routes.
    let document = axum::routing::get(|| async { axum::Json(crate::openapi::runtime()) });
    Ok(crate::runtime::router(runtime)
        .route("/v1/runtime/openapi.json", document)
        .layer(axum::middleware::from_fn(crate::request_id::request_id))
        .layer(axum::middleware::from_fn(shared::metrics::track)))
}

/// The hub's database, with the embedded instance's schema first on the search path (the
/// session limits in its options are kept).
fn schema_config(hub_database: tokio_postgres::Config) -> tokio_postgres::Config {
    let mut config = hub_database;
    let options = match config.get_options() {
        Some(existing) if !existing.contains("search_path=instance") => format!("-c search_path=instance {existing}"),
        Some(existing) => existing.to_owned(),
        None => "-c search_path=instance".to_owned(),
    };
    config.options(&options);
    config
}

/// Creates and migrates the embedded instance's schema (as a role that may create it).
pub async fn prepare_schema(hub_database: &tokio_postgres::Config) -> anyhow::Result<()> {
    crate::db::connect(hub_database).await?.batch_execute("CREATE SCHEMA IF NOT EXISTS instance").await?;
    let mut client = crate::db::connect(&schema_config(hub_database.clone())).await?;
    crate::migrate::run(&mut client).await.context("migrating the embedded instance")
}

/// Follows the hub's log until the database fails (the supervisor starts it again on a
/// fresh connection).
async fn tail(pool: Pool, instance_id: String, wake: Arc<Notify>) -> anyhow::Result<()> {
    let mut tail = pool.get().await?;
    let mut last_heartbeat: Option<std::time::Instant> = None;
    loop {
        if last_heartbeat.is_none_or(|at| at.elapsed() >= HEARTBEAT) {
            heartbeat(&tail, &instance_id).await.context("embedded instance heartbeat")?;
            last_heartbeat = Some(std::time::Instant::now());
        }
        if follow(&mut tail, &instance_id).await.context("embedded instance could not apply")? {
            continue;
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), wake.notified()).await;
    }
}

/// Applies the next page of the log; `Ok(true)` when a full page was read.
async fn follow(client: &mut Client, instance_id: &str) -> anyhow::Result<bool> {
    let after: i64 = client.query_one("SELECT tail_position FROM instance_state", &[]).await?.get("tail_position");

    let rows = client
        .query(
            "SELECT position, stream_id, stream_version, event_id, event_type, schema_version, data, metadata, \
             recorded_at, prev_hash, hash FROM public.events WHERE position > $1 ORDER BY position LIMIT $2",
            &[&after, &PAGE],
        )
        .await?;
    let Some(last) = rows.last().map(|r| r.get::<_, i64>("position")) else { return Ok(false) };
    let mut mine = Vec::new();
    for row in &rows {
        let event = RecordedEvent {
            position: row.get("position"),
            stream_id: row.get("stream_id"),
            stream_version: row.get("stream_version"),
            event_id: row.get("event_id"),
            event_type: row.get("event_type"),
            schema_version: row.get("schema_version"),
            data: row.get("data"),
            metadata: row.get("metadata"),
            recorded_at: row.get("recorded_at"),
            prev_hash: row.get("prev_hash"),
            hash: row.get("hash"),
        };
        if owned(client, &event, instance_id, &mine).await? {
            mine.push(event);
        }
    }
    // The log itself, in order: a page has no gaps.
    apply_batch(client, &mine).await?;
    client.execute("UPDATE instance_state SET tail_position = $1", &[&last]).await?;
    Ok(rows.len() as i64 == PAGE)
}

const HEARTBEAT: Duration = Duration::from_secs(5);

/// Reports the embedded instance straight into the hub's `instances` table.
async fn heartbeat(client: &Client, instance_id: &str) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO public.instances (id, last_heartbeat_at, applied_position, workspace_count) \
             SELECT $1, now(), applied_position, (SELECT count(*) FROM workspaces WHERE state IS NOT NULL) \
             FROM instance_state ON CONFLICT (id) DO UPDATE SET last_heartbeat_at = now(), \
             applied_position = EXCLUDED.applied_position, workspace_count = EXCLUDED.workspace_count",
            &[&instance_id],
        )
        .await?;
    Ok(())
}

/// Whether the event belongs to a workspace placed on this instance.
async fn owned(
    client: &Client,
    event: &RecordedEvent,
    instance_id: &str,
    earlier_in_page: &[RecordedEvent],
) -> anyhow::Result<bool> {
    let Some(id) = workspace_id(event) else { return Ok(false) };
    if event.event_type == "WorkspaceCreated" {
        return Ok(event.data.get("instance_id").and_then(|v| v.as_str()) == Some(instance_id));
    }
    if earlier_in_page.iter().any(|e| e.stream_id == event.stream_id) {
        return Ok(true);
    }
    Ok(client.query_opt("SELECT 1 FROM workspaces WHERE id = $1", &[&id]).await?.is_some())
}
