//! Configuration from the environment (API.md, "Configuration").

use std::net::SocketAddr;

#[derive(Debug, Clone)]
pub struct Config {
    /// `INSTANCE_DATABASE_URL`: this instance's own database.
    pub database_url: String,
    /// `INSTANCE_ID`: the instance's name in subjects and placements (`[a-z0-9_-]`).
    pub instance_id: String,
    /// `INSTANCE_LISTEN_ADDR`, default `127.0.0.1:8081`.
    pub listen_addr: SocketAddr,
    /// `NATS_URL`.
    pub nats_url: Option<String>,
    /// `HUB_URL`: the hub whose event feed fills gaps and rebuilds.
    pub hub_url: Option<String>,
    /// `HUB_OPERATOR_KEY`: presented to the hub's event feed.
    pub hub_key: Option<String>,
    /// `HUB_MASTER_KEY` (32 bytes, base64): opens the workspaces' data keys.
    pub master_key: Option<[u8; 32]>,
}

fn parse_master_key(text: &str) -> anyhow::Result<[u8; 32]> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| anyhow::anyhow!("HUB_MASTER_KEY must be 32 bytes, base64-encoded"))?;
    bytes.try_into().map_err(|_| anyhow::anyhow!("HUB_MASTER_KEY must be 32 bytes, base64-encoded"))
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        let database_url =
            var("INSTANCE_DATABASE_URL").ok_or_else(|| anyhow::anyhow!("INSTANCE_DATABASE_URL is not set"))?;
        let instance_id = var("INSTANCE_ID").ok_or_else(|| anyhow::anyhow!("INSTANCE_ID is not set"))?;
        shared::domain::values::token("INSTANCE_ID", &instance_id)
            .map_err(|_| anyhow::anyhow!("INSTANCE_ID must match [a-z0-9_-]{{1,50}}"))?;
        let listen_addr = match var("INSTANCE_LISTEN_ADDR") {
            Some(text) => text.parse().map_err(|_| anyhow::anyhow!("INSTANCE_LISTEN_ADDR is not an address:port"))?,
            None => SocketAddr::from(([127, 0, 0, 1], 8081)),
        };
        Ok(Self {
            database_url,
            instance_id,
            listen_addr,
            nats_url: var("NATS_URL"),
            hub_url: var("HUB_URL").map(|u| u.trim_end_matches('/').to_owned()),
            hub_key: var("HUB_OPERATOR_KEY"),
            master_key: match var("HUB_MASTER_KEY") {
                Some(text) => Some(parse_master_key(&text)?),
                None => None,
            },
        })
    }

    pub async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, connection) = tokio_postgres::connect(&self.database_url, tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "database connection closed");
            }
        });
        Ok(client)
    }
}
