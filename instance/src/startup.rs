//! Running the instance: migrate, consume, serve.

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tower_http::timeout::TimeoutLayer;

use crate::config::Config;
use crate::feed::HubFeed;

struct AppState {
    client: tokio_postgres::Client,
    /// The log's head as the hub last reported it (for the lag in `/readyz`).
    head: std::sync::atomic::AtomicI64,
}

/// The instance's applied position and live workspace count.
async fn progress(client: &tokio_postgres::Client) -> Result<(i64, i64), tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT applied_position, (SELECT count(*) FROM workspaces WHERE state IS NOT NULL) FROM instance_state",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a request may take.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub async fn serve(config: Config) -> anyhow::Result<()> {
    let mut client = config.connect().await.context("connecting to the instance database")?;
    crate::migrate::run(&mut client).await.context("migrating the instance database")?;
    let feed = HubFeed::new(&config)?;
    let nats_url = config.nats_url.as_ref().context("NATS_URL is not set")?.expose_secret().to_owned();
    let consumer_client = config.connect().await?;
    tokio::spawn(crate::consumer::run(nats_url, config.instance_id.clone(), consumer_client, feed.clone()));

    tokio::spawn(crate::keyring::backfill(config.connect().await?, feed.clone()));
    let keyring = crate::runtime::Keyring::Instance;
    let runtime = Arc::new(crate::runtime::RuntimeState::new(
        config.connect().await?,
        keyring,
        config.master_key.clone(),
        config.auth_failures_per_minute,
    ));
    let state = Arc::new(AppState { client, head: Default::default() });
    {
        let (state, feed, id) = (state.clone(), feed, config.instance_id.clone());
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(HEARTBEAT);
            loop {
                ticker.tick().await;
                let beat = async {
                    let (applied, workspaces) = progress(&state.client).await?;
                    anyhow::Ok(feed.heartbeat(&id, applied, workspaces).await?)
                };
                match beat.await {
                    Ok(head) => state.head.store(head, std::sync::atomic::Ordering::Relaxed),
                    Err(error) => tracing::warn!(error = %format!("{error:#}"), "heartbeat failed"),
                }
            }
        });
    }
    let router = Router::new()
        .route("/healthz", get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::SERVICE_UNAVAILABLE, REQUEST_TIMEOUT))
        .with_state(state)
        .merge(crate::runtime::router(runtime))
        .layer(axum::middleware::from_fn(crate::request_id::request_id));
    let listener =
        TcpListener::bind(config.listen_addr).await.with_context(|| format!("binding {}", config.listen_addr))?;
    tracing::info!(addr = %config.listen_addr, instance = %config.instance_id, "instance listening");
    shared::serve::serve(listener, router, config.max_connections, shared::telemetry::shutdown_signal())
        .await
        .context("serving HTTP")
}

async fn readyz(State(state): State<Arc<AppState>>) -> Result<axum::Json<serde_json::Value>, axum::http::StatusCode> {
    let (applied, workspaces) =
        progress(&state.client).await.map_err(|_| axum::http::StatusCode::SERVICE_UNAVAILABLE)?;
    let head = state.head.load(std::sync::atomic::Ordering::Relaxed);
    Ok(axum::Json(serde_json::json!({
        "status": "ready",
        "applied_position": applied,
        "lag": (head - applied).max(0),
        "workspace_count": workspaces,
    })))
}

/// Drops the materialized state and replays this instance's workspaces from the hubs.
pub async fn rebuild(config: Config) -> anyhow::Result<i64> {
    let mut client = config.connect().await.context("connecting to the instance database")?;
    crate::migrate::run(&mut client).await?;
    let feed = HubFeed::new(&config)?;
    client.batch_execute("TRUNCATE workspaces, data_keys; UPDATE instance_state SET applied_position = 0").await?;
    let mut owned = std::collections::HashSet::new();
    let mut after = 0;
    let mut applied = 0;
    loop {
        let page = feed.page(after, None).await?;
        let Some(last) = page.last().map(|e| e.position) else { break };
        let mut mine = Vec::new();
        for event in page {
            let Some(id) = crate::apply::workspace_id(&event) else { continue };
            if event.event_type == "WorkspaceCreated"
                && event.data.get("instance_id").and_then(|v| v.as_str()) == Some(config.instance_id.as_str())
            {
                owned.insert(id);
            }
            if owned.contains(&id) {
                mine.push(event);
            }
        }
        // The feed is the whole log in order: a replay has no gaps.
        let (handled, _) = crate::keyring::apply_batch(&mut client, &feed, &mine).await?;
        anyhow::ensure!(handled == mine.len(), "the hub's feed skipped events of a workspace");
        applied += handled as i64;
        after = last;
    }
    Ok(applied)
}
