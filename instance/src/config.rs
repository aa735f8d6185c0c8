//! Configuration from the environment (API.md, "Configuration").
//!
//! Secrets (the database URL, which may hold a password, the hub key, the NATS URL, which
//! may hold credentials, and the master key) stay in `secrecy` types: their `Debug` is
//! redacted, and they are exposed only where they are used.

use std::net::SocketAddr;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretBox, SecretString};

/// Connections in a running instance's pool: the consumer, the heartbeat, readiness and
/// the runtime API's requests.
const POOL_SIZE: usize = 16;

/// The master key shared with the hub.
pub type MasterKey = Arc<SecretBox<[u8; 32]>>;

#[derive(Debug, Clone)]
pub struct Config {
    /// `INSTANCE_DATABASE_URL`: this instance's own database.
    pub database_url: SecretString,
    /// `INSTANCE_ID`: the instance's name in subjects and placements (`[a-z0-9_-]`).
    pub instance_id: String,
    /// `INSTANCE_LISTEN_ADDR`, default `127.0.0.1:8081`.
    pub listen_addr: SocketAddr,
    /// `NATS_URL`, possibly with this instance's credentials (`nats://user:password@…`).
    pub nats_url: Option<SecretString>,
    /// `HUB_URL`: optional, a hub asked over HTTP when none answers over NATS.
    pub hub_url: Option<String>,
    /// `HUB_OPERATOR_KEY`: presented to the hub at `HUB_URL` (not needed over NATS).
    pub hub_key: Option<SecretString>,
    /// `HUB_MASTER_KEY` (32 bytes, base64): opens the workspaces' data keys.
    pub master_key: Option<MasterKey>,
    /// `HUB_AUTH_FAILURES_PER_MINUTE`, default 20: failed token checks per client address
    /// before it is refused.
    pub auth_failures_per_minute: u32,
    /// `INSTANCE_MAX_CONNECTIONS`, default 1024: connections served at once.
    pub max_connections: usize,
    /// `INSTANCE_CONSUMER_STALL_SECONDS`, default 60: how long the consumer may leave
    /// messages waiting without acking any before `/readyz` answers 503.
    pub consumer_stall: std::time::Duration,
    /// `DATABASE_*_TIMEOUT_SECONDS`, `DATABASE_KEEPALIVE_SECONDS` (see [`crate::db`]).
    pub session_limits: crate::db::SessionLimits,
}

fn parse_master_key(text: &str) -> anyhow::Result<MasterKey> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| anyhow::anyhow!("HUB_MASTER_KEY must be 32 bytes, base64-encoded"))?;
    let key: [u8; 32] =
        bytes.try_into().map_err(|_| anyhow::anyhow!("HUB_MASTER_KEY must be 32 bytes, base64-encoded"))?;
    Ok(Arc::new(SecretBox::new(Box::new(key))))
}

/// `HUB_AUTH_FAILURES_PER_MINUTE` (shared with the hub), default 20.
pub fn auth_failures_per_minute(value: Option<String>) -> anyhow::Result<u32> {
    match value {
        None => Ok(20),
        Some(text) => text
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| anyhow::anyhow!("HUB_AUTH_FAILURES_PER_MINUTE must be a positive integer")),
    }
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `var` (the environment, or a table in tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let var = |name: &str| var(name).filter(|v| !v.is_empty());
        let database_url =
            var("INSTANCE_DATABASE_URL").ok_or_else(|| anyhow::anyhow!("INSTANCE_DATABASE_URL is not set"))?;
        let instance_id = var("INSTANCE_ID").ok_or_else(|| anyhow::anyhow!("INSTANCE_ID is not set"))?;
        shared::domain::values::instance_id("INSTANCE_ID", &instance_id)
            .map_err(|_| anyhow::anyhow!("INSTANCE_ID must match [a-z0-9_-]{{1,50}} and not be `hub`"))?;
        let listen_addr = match var("INSTANCE_LISTEN_ADDR") {
            Some(text) => text.parse().map_err(|_| anyhow::anyhow!("INSTANCE_LISTEN_ADDR is not an address:port"))?,
            None => SocketAddr::from(([127, 0, 0, 1], 8081)),
        };
        Ok(Self {
            database_url: SecretString::from(database_url),
            instance_id,
            listen_addr,
            nats_url: var("NATS_URL").map(SecretString::from),
            hub_url: var("HUB_URL").map(|u| u.trim_end_matches('/').to_owned()),
            hub_key: var("HUB_OPERATOR_KEY").map(SecretString::from),
            master_key: match var("HUB_MASTER_KEY") {
                Some(text) => Some(parse_master_key(&text)?),
                None => None,
            },
            auth_failures_per_minute: auth_failures_per_minute(var("HUB_AUTH_FAILURES_PER_MINUTE"))?,
            max_connections: shared::serve::max_connections_from(
                "INSTANCE_MAX_CONNECTIONS",
                var("INSTANCE_MAX_CONNECTIONS"),
            )
            .map_err(anyhow::Error::msg)?,
            consumer_stall: match var("INSTANCE_CONSUMER_STALL_SECONDS") {
                Some(text) => text
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .map(std::time::Duration::from_secs)
                    .ok_or_else(|| anyhow::anyhow!("INSTANCE_CONSUMER_STALL_SECONDS must be a positive integer"))?,
                None => std::time::Duration::from_secs(60),
            },
            session_limits: crate::db::SessionLimits::from_vars(var).map_err(anyhow::Error::msg)?,
        })
    }

    fn database_config(&self) -> anyhow::Result<tokio_postgres::Config> {
        self.database_url.expose_secret().parse().map_err(|_| anyhow::anyhow!("INSTANCE_DATABASE_URL is invalid"))
    }

    /// The reconnecting pool of a running instance, every session limited.
    pub fn pool(&self) -> anyhow::Result<deadpool_postgres::Pool> {
        Ok(crate::db::pool(self.session_limits.apply(self.database_config()?), POOL_SIZE))
    }

    /// One connection without session limits, for migrations and one-shot commands.
    pub async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, connection) =
            tokio_postgres::connect(self.database_url.expose_secret(), tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "database connection closed");
            }
        });
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_debug_output_of_the_configuration_shows_no_secret() {
        let vars = [
            ("INSTANCE_DATABASE_URL", "postgres://instance:db-password-4711@localhost/alpha"),
            ("INSTANCE_ID", "alpha"),
            ("HUB_OPERATOR_KEY", "operator-key-that-nobody-may-see-0123456789"),
            ("HUB_MASTER_KEY", "c2VjcmV0LW1hc3Rlci1rZXktMzItYnl0ZXMtbG9uZyE="),
            ("NATS_URL", "nats://alpha:nats-password-1234@localhost:4222"),
            ("HUB_URL", "http://127.0.0.1:8080"),
        ];
        let config =
            Config::from_vars(|name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned())).unwrap();
        let debug = format!("{config:?}");
        for secret in ["db-password-4711", "operator-key-that-nobody", "c2VjcmV0", "nats-password-1234"] {
            assert!(!debug.contains(secret), "{secret} shows in {debug}");
        }
        // The raw bytes of the master key do not show either.
        let master = config.master_key.as_ref().unwrap();
        assert!(!debug.contains(&format!("{:?}", master.expose_secret())));
        assert_eq!(config.auth_failures_per_minute, 20);
    }
}
