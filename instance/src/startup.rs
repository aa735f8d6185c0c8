//! Building and running the instance process.

use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;

pub async fn serve() -> anyhow::Result<()> {
    let addr: SocketAddr = match std::env::var("INSTANCE_LISTEN_ADDR") {
        Ok(text) => text.parse().context("INSTANCE_LISTEN_ADDR is not an address:port")?,
        Err(_) => SocketAddr::from(([127, 0, 0, 1], 8081)),
    };
    let router = Router::new().route("/healthz", get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }));
    let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    tracing::info!(%addr, "instance listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(shared::telemetry::shutdown_signal())
        .await
        .context("serving HTTP")
}
