//! Running the instance: migrate, consume, serve.

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use shared::supervise::Tasks;

use crate::config::Config;
use crate::feed::HubFeed;

struct AppState {
    pool: deadpool_postgres::Pool,
    nats: async_nats::Client,
    tasks: Arc<Tasks>,
    /// The log's head as the hub last reported it (for the lag in `/readyz`).
    head: std::sync::atomic::AtomicI64,
    instance_id: String,
    /// How long the consumer may be stuck before the instance is not ready.
    stall: std::time::Duration,
    /// Since when the consumer has had messages waiting without its ack floor moving.
    stuck: std::sync::Mutex<Stuck>,
}

/// The consumer's ack floor at the last look, and since when it has not moved while
/// messages were waiting.
#[derive(Default)]
struct Stuck {
    floor: u64,
    since: Option<std::time::Instant>,
}

/// Whether the consumer has been behind without progress for `INSTANCE_CONSUMER_STALL_SECONDS`.
async fn consumer_stalled(state: &AppState) -> anyhow::Result<bool> {
    let js = async_nats::jetstream::new(state.nats.clone());
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_consumer_from_stream(&shared::link::consumer_name(&state.instance_id), shared::relayed::STREAM)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let info = consumer.info().await?;
    let (floor, waiting) = (info.ack_floor.stream_sequence, info.num_pending + info.num_ack_pending as u64);
    let mut stuck = state.stuck.lock().unwrap_or_else(|p| p.into_inner());
    if waiting == 0 || floor != stuck.floor {
        *stuck = Stuck { floor, since: (waiting > 0).then(std::time::Instant::now) };
    } else if stuck.since.is_none() {
        stuck.since = Some(std::time::Instant::now());
    }
    Ok(stuck.since.is_some_and(|since| since.elapsed() >= state.stall))
}

/// The instance's applied position and live workspace count.
async fn progress(client: &tokio_postgres::Client) -> Result<(i64, i64), tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT applied_position, (SELECT count(*) FROM workspaces WHERE state IS NOT NULL) AS workspace_count \
             FROM instance_state",
            &[],
        )
        .await?;
    Ok((row.get("applied_position"), row.get("workspace_count")))
}

const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long `/readyz` waits for the database before calling it unreachable.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub async fn serve(config: Config) -> anyhow::Result<()> {
    shared::metrics::install();
    let mut client = config.connect().await.context("connecting to the instance database")?;
    crate::migrate::run(&mut client).await.context("migrating the instance database")?;
    drop(client);
    let pool = config.pool()?;
    let feed = HubFeed::new(&config)?;
    let nats_url = config.nats_url.as_ref().context("NATS_URL is not set")?.expose_secret().to_owned();
    // Connects in the background and reconnects forever: NATS being away at start is an
    // outage like any other, reported by `/readyz`.
    let (address, options) = crate::link::options(&nats_url, &config.instance_id);
    let nats = options.retry_on_initial_connect().connect(address).await.context("NATS_URL is not a NATS address")?;
    let tasks = Tasks::new();
    {
        let (nats, id, pool, feed) = (nats.clone(), config.instance_id.clone(), pool.clone(), feed.clone());
        tasks.spawn("consumer", move || crate::consumer::run(nats.clone(), id.clone(), pool.clone(), feed.clone()));
    }

    tokio::spawn(crate::keyring::backfill(config.connect().await?, feed.clone()));
    let keyring = crate::runtime::Keyring::Instance;
    let runtime = Arc::new(crate::runtime::RuntimeState::new(
        pool.clone(),
        keyring,
        config.master_key.clone(),
        config.auth_failures_per_minute,
    ));
    {
        let (usage, pool, sink) = (runtime.usage.clone(), pool.clone(), crate::usage::Sink::Link(feed.clone()));
        tasks.spawn("usage", move || crate::usage::run(usage.clone(), pool.clone(), sink.clone()));
    }
    crate::webhooks::spawn(&tasks, runtime.clone(), config.webhook_pool()?, config.webhooks.clone())?;
    let state = Arc::new(AppState {
        pool,
        nats,
        tasks: tasks.clone(),
        head: Default::default(),
        instance_id: config.instance_id.clone(),
        stall: config.consumer_stall,
        stuck: Default::default(),
    });
    {
        let (state, feed, id) = (state.clone(), feed, config.instance_id.clone());
        tasks.spawn("heartbeat", move || heartbeat(state.clone(), feed.clone(), id.clone()));
    }
    let router = Router::new()
        .route("/healthz", get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(|| async { shared::metrics::render() }))
        .route("/openapi.json", get(|| async { axum::Json(crate::openapi::standalone()) }))
        .layer(axum::middleware::from_fn(shared::serve::request_timeout))
        .with_state(state)
        .merge(crate::runtime::router(runtime))
        .layer(axum::middleware::from_fn(crate::request_id::request_id))
        .layer(axum::middleware::from_fn(shared::metrics::track));
    let listener =
        TcpListener::bind(config.listen_addr).await.with_context(|| format!("binding {}", config.listen_addr))?;
    tracing::info!(addr = %config.listen_addr, instance = %config.instance_id, "instance listening");
    shared::serve::serve(listener, router, config.max_connections, shared::telemetry::shutdown_signal())
        .await
        .context("serving HTTP")
}

/// Reports to the hub every few seconds; a failed report is only logged (the hub being
/// away does not stop this instance from serving).
async fn heartbeat(state: Arc<AppState>, feed: HubFeed, id: String) -> anyhow::Result<()> {
    let mut ticker = tokio::time::interval(HEARTBEAT);
    loop {
        ticker.tick().await;
        let beat = async {
            let client = state.pool.get().await?;
            let (applied, workspaces) = progress(&client).await?;
            anyhow::Ok((feed.heartbeat(&id, applied, workspaces).await?, applied))
        };
        match beat.await {
            Ok((head, applied)) => {
                state.head.store(head, std::sync::atomic::Ordering::Relaxed);
                metrics::gauge!(shared::metrics::INSTANCE_APPLIED_POSITION).set(applied as f64);
                metrics::gauge!(shared::metrics::INSTANCE_LAG).set((head - applied).max(0) as f64);
            }
            Err(error) => tracing::warn!(error = %format!("{error:#}"), "heartbeat failed"),
        }
    }
}

fn not_ready(detail: &str) -> axum::response::Response {
    shared::problem::response(axum::http::StatusCode::SERVICE_UNAVAILABLE, "not_ready", detail)
}

/// Ready while the database and NATS answer, every background task runs and the consumer
/// is not stuck behind; otherwise a 503 problem saying what is wrong.
async fn readyz(State(state): State<Arc<AppState>>) -> Result<axum::Json<serde_json::Value>, axum::response::Response> {
    let down = state.tasks.down();
    if !down.is_empty() {
        return Err(not_ready(&format!("background tasks are down: {}", down.join(", "))));
    }
    if state.nats.connection_state() != async_nats::connection::State::Connected {
        return Err(not_ready("NATS is unreachable"));
    }
    let read = async {
        let client = state.pool.get().await.map_err(|e| e.to_string())?;
        progress(&client).await.map_err(|e| e.to_string())
    };
    let (applied, workspaces) = match tokio::time::timeout(READY_TIMEOUT, read).await {
        Ok(Ok(progress)) => progress,
        _ => return Err(not_ready("the instance database is unreachable")),
    };
    // The consumer's own view (NATS answered just above; a missing consumer is the
    // consumer task's business, reported as a task down).
    if let Ok(Ok(true)) = tokio::time::timeout(READY_TIMEOUT, consumer_stalled(&state)).await {
        return Err(not_ready("the consumer is behind and has not progressed"));
    }
    let head = state.head.load(std::sync::atomic::Ordering::Relaxed);
    Ok(axum::Json(serde_json::json!({
        "status": "ready",
        "applied_position": applied,
        "lag": (head - applied).max(0),
        "workspace_count": workspaces,
    })))
}

/// Drops the materialized state and replays this instance's workspaces from the hubs
/// (see [`crate::rebuild`]); returns how many events were applied.
pub async fn rebuild(config: Config) -> anyhow::Result<i64> {
    crate::rebuild::rebuild(config).await
}
