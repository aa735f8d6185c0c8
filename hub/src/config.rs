//! Configuration from the environment (names in API.md, "Configuration").

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use secrecy::{ExposeSecret, SecretBox, SecretString};

fn parse_master_key(text: &str) -> Result<SecretBox<[u8; 32]>, ConfigError> {
    let invalid = || ConfigError::Invalid { name: "HUB_MASTER_KEY", reason: "must be 32 bytes, base64-encoded".into() };
    let bytes = base64::engine::general_purpose::STANDARD.decode(text.trim()).map_err(|_| invalid())?;
    let key: [u8; 32] = bytes.try_into().map_err(|_| invalid())?;
    Ok(SecretBox::new(Box::new(key)))
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `DATABASE_URL`: a libpq-style URL or key/value string.
    pub database_url: SecretString,
    /// `HUB_LISTEN_ADDR`, default `127.0.0.1:8080`; port 0 picks a free port.
    pub listen_addr: SocketAddr,
    /// `HUB_OPERATOR_KEY`: at least 32 characters.
    pub operator_key: Option<SecretString>,
    /// Connections in the hub's pool.
    pub pool_size: usize,
    /// `HUB_MASTER_KEY`: 32 bytes, base64. Seals data keys and derives the key pepper.
    pub master_key: Option<Arc<SecretBox<[u8; 32]>>>,
    /// `HUB_RATE_LIMIT_PER_MINUTE`, default 500.
    pub rate_limit_per_minute: u32,
    /// `SMTP_URL` (e.g. `smtp://127.0.0.1:2525`); without it emails wait in the outbox.
    pub smtp_url: Option<SecretString>,
    /// `HUB_MAIL_FROM`, default `Admin API <no-reply@localhost>`.
    pub mail_from: String,
    /// `HUB_PUBLIC_URL`: the base of links in emails; default `http://<HUB_LISTEN_ADDR>`.
    pub public_url: String,
    /// `NATS_URL`: where the relay publishes; absent in single-node mode.
    pub nats_url: Option<String>,
    /// `HUB_RELAY_STALL_SECONDS`, default 60: how long the relay may stay behind the log
    /// without progressing before `/readyz` answers 503.
    pub relay_stall: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let database_url = std::env::var("DATABASE_URL").map_err(|_| ConfigError::Missing("DATABASE_URL"))?;
        let listen_addr = match std::env::var("HUB_LISTEN_ADDR") {
            Ok(text) => text.parse().map_err(|e: std::net::AddrParseError| ConfigError::Invalid {
                name: "HUB_LISTEN_ADDR",
                reason: e.to_string(),
            })?,
            Err(_) => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };
        let operator_key = match std::env::var("HUB_OPERATOR_KEY") {
            Ok(key) if key.chars().count() < 32 => {
                return Err(ConfigError::Invalid {
                    name: "HUB_OPERATOR_KEY",
                    reason: "must be at least 32 characters".into(),
                });
            }
            Ok(key) => Some(SecretString::from(key)),
            Err(_) => None,
        };
        let pool_size = match std::env::var("HUB_DATABASE_POOL_SIZE") {
            Ok(text) => text.parse().map_err(|_| ConfigError::Invalid {
                name: "HUB_DATABASE_POOL_SIZE",
                reason: "must be a positive integer".into(),
            })?,
            Err(_) => 16,
        };
        let master_key = match std::env::var("HUB_MASTER_KEY") {
            Ok(text) => Some(parse_master_key(&text)?),
            Err(_) => None,
        };
        let rate_limit_per_minute = match std::env::var("HUB_RATE_LIMIT_PER_MINUTE") {
            Ok(text) => text.parse().ok().filter(|n| *n > 0).ok_or(ConfigError::Invalid {
                name: "HUB_RATE_LIMIT_PER_MINUTE",
                reason: "must be a positive integer".into(),
            })?,
            Err(_) => 500,
        };
        let public_url = std::env::var("HUB_PUBLIC_URL").unwrap_or_else(|_| format!("http://{listen_addr}"));
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            return Err(ConfigError::Invalid { name: "HUB_PUBLIC_URL", reason: "must be an http(s) URL".into() });
        }
        let relay_stall = match std::env::var("HUB_RELAY_STALL_SECONDS") {
            Ok(text) => text.parse().ok().filter(|n| *n > 0).map(std::time::Duration::from_secs).ok_or(
                ConfigError::Invalid { name: "HUB_RELAY_STALL_SECONDS", reason: "must be a positive integer".into() },
            )?,
            Err(_) => std::time::Duration::from_secs(60),
        };
        Ok(Self {
            relay_stall,
            smtp_url: std::env::var("SMTP_URL").ok().map(SecretString::from),
            nats_url: std::env::var("NATS_URL").ok().filter(|u| !u.is_empty()),
            mail_from: std::env::var("HUB_MAIL_FROM").unwrap_or_else(|_| "Admin API <no-reply@localhost>".into()),
            public_url: public_url.trim_end_matches('/').to_owned(),
            database_url: SecretString::from(database_url),
            listen_addr,
            operator_key,
            pool_size,
            master_key: master_key.map(Arc::new),
            rate_limit_per_minute,
        })
    }

    /// The pepper that keys the hashes of every key the hub hands out.
    pub fn key_pepper(&self) -> Result<Vec<u8>, ConfigError> {
        let master = self.master_key.as_ref().ok_or(ConfigError::Missing("HUB_MASTER_KEY"))?;
        Ok(shared::keys::KeyHasher::new(master.expose_secret()).hash("admin-api/key-pepper/v1"))
    }

    pub fn database_config(&self) -> Result<tokio_postgres::Config, ConfigError> {
        self.database_url.expose_secret().parse().map_err(|_| ConfigError::Invalid {
            name: "DATABASE_URL",
            reason: "not a PostgreSQL connection string".into(),
        })
    }
}
