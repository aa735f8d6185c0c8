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
    /// `HUB_MIGRATION_DATABASE_URL`: the same database as the owning role, for `hub migrate`
    /// and `hub projections rebuild`; `DATABASE_URL` is then the serving role's.
    pub migration_database_url: Option<SecretString>,
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
    /// `NATS_URL`: where the relay publishes; absent in single-node mode. It may carry
    /// credentials.
    pub nats_url: Option<SecretString>,
    /// `HUB_AUTH_FAILURES_PER_MINUTE`, default 20: failed authentications per client
    /// address before it is refused.
    pub auth_failures_per_minute: u32,
    /// `HUB_MAX_CONNECTIONS`, default 1024: connections served at once.
    pub max_connections: usize,
    /// `HUB_RELAY_STALL_SECONDS`, default 60: how long the relay may stay behind the log
    /// without progressing before `/readyz` answers 503.
    pub relay_stall: std::time::Duration,
    /// `DATABASE_*_TIMEOUT_SECONDS`, `DATABASE_KEEPALIVE_SECONDS`: limits of every session
    /// of `hub serve` (see [`instance::db`]); one-shot commands run without them.
    pub session_limits: instance::db::SessionLimits,
    /// `HUB_EVENTS_MAX_AGE_SECONDS`, `HUB_EVENTS_MAX_BYTES`, `HUB_EVENTS_MAX_MESSAGES`: how
    /// much of the log the NATS stream keeps (see [`crate::relay::StreamLimits`]).
    pub stream_limits: crate::relay::StreamLimits,
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
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `var` (the environment, or a table in tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let database_url = var("DATABASE_URL").ok_or(ConfigError::Missing("DATABASE_URL"))?;
        let listen_addr = match var("HUB_LISTEN_ADDR") {
            Some(text) => text.parse().map_err(|e: std::net::AddrParseError| ConfigError::Invalid {
                name: "HUB_LISTEN_ADDR",
                reason: e.to_string(),
            })?,
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };
        let operator_key = match var("HUB_OPERATOR_KEY") {
            Some(key) if key.chars().count() < 32 => {
                return Err(ConfigError::Invalid {
                    name: "HUB_OPERATOR_KEY",
                    reason: "must be at least 32 characters".into(),
                });
            }
            Some(key) => Some(SecretString::from(key)),
            None => None,
        };
        let pool_size = match var("HUB_DATABASE_POOL_SIZE") {
            Some(text) => text.parse().map_err(|_| ConfigError::Invalid {
                name: "HUB_DATABASE_POOL_SIZE",
                reason: "must be a positive integer".into(),
            })?,
            None => 16,
        };
        let master_key = match var("HUB_MASTER_KEY") {
            Some(text) => Some(parse_master_key(&text)?),
            None => None,
        };
        let rate_limit_per_minute = match var("HUB_RATE_LIMIT_PER_MINUTE") {
            Some(text) => text.parse().ok().filter(|n| *n > 0).ok_or(ConfigError::Invalid {
                name: "HUB_RATE_LIMIT_PER_MINUTE",
                reason: "must be a positive integer".into(),
            })?,
            None => 500,
        };
        let auth_failures_per_minute = match var("HUB_AUTH_FAILURES_PER_MINUTE") {
            Some(text) => text.trim().parse().ok().filter(|n| *n > 0).ok_or(ConfigError::Invalid {
                name: "HUB_AUTH_FAILURES_PER_MINUTE",
                reason: "must be a positive integer".into(),
            })?,
            None => 20,
        };
        let max_connections = shared::serve::max_connections_from("HUB_MAX_CONNECTIONS", var("HUB_MAX_CONNECTIONS"))
            .map_err(|reason| ConfigError::Invalid { name: "HUB_MAX_CONNECTIONS", reason })?;
        let public_url = var("HUB_PUBLIC_URL").unwrap_or_else(|| format!("http://{listen_addr}"));
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            return Err(ConfigError::Invalid { name: "HUB_PUBLIC_URL", reason: "must be an http(s) URL".into() });
        }
        let relay_stall = match var("HUB_RELAY_STALL_SECONDS") {
            Some(text) => text.parse().ok().filter(|n| *n > 0).map(std::time::Duration::from_secs).ok_or(
                ConfigError::Invalid { name: "HUB_RELAY_STALL_SECONDS", reason: "must be a positive integer".into() },
            )?,
            None => std::time::Duration::from_secs(60),
        };
        let session_limits = instance::db::SessionLimits::from_vars(&var)
            .map_err(|reason| ConfigError::Invalid { name: "DATABASE_*_SECONDS", reason })?;
        let stream_limits = crate::relay::StreamLimits::from_vars(&var)?;
        Ok(Self {
            session_limits,
            stream_limits,
            relay_stall,
            smtp_url: var("SMTP_URL").map(SecretString::from),
            nats_url: var("NATS_URL").filter(|u| !u.is_empty()).map(SecretString::from),
            mail_from: var("HUB_MAIL_FROM").unwrap_or_else(|| "Admin API <no-reply@localhost>".into()),
            public_url: public_url.trim_end_matches('/').to_owned(),
            database_url: SecretString::from(database_url),
            migration_database_url: var("HUB_MIGRATION_DATABASE_URL").filter(|u| !u.is_empty()).map(SecretString::from),
            listen_addr,
            operator_key,
            pool_size,
            master_key: master_key.map(Arc::new),
            rate_limit_per_minute,
            auth_failures_per_minute,
            max_connections,
        })
    }

    /// The pepper that keys the hashes of every key the hub hands out.
    pub fn key_pepper(&self) -> Result<Vec<u8>, ConfigError> {
        let master = self.master_key.as_ref().ok_or(ConfigError::Missing("HUB_MASTER_KEY"))?;
        Ok(shared::keys::KeyHasher::new(master.expose_secret()).hash("admin-api/key-pepper/v1"))
    }

    /// The owning role's connection: `HUB_MIGRATION_DATABASE_URL`, else `DATABASE_URL`.
    pub fn migration_database_config(&self) -> Result<tokio_postgres::Config, ConfigError> {
        match &self.migration_database_url {
            Some(url) => url.expose_secret().parse().map_err(|_| ConfigError::Invalid {
                name: "HUB_MIGRATION_DATABASE_URL",
                reason: "not a PostgreSQL connection string".into(),
            }),
            None => self.database_config(),
        }
    }

    /// The role `hub migrate` grants the serving rights to: `DATABASE_URL`'s user, when
    /// the owner migrates through `HUB_MIGRATION_DATABASE_URL` as another user.
    pub fn serving_role(&self) -> Result<Option<String>, ConfigError> {
        if self.migration_database_url.is_none() {
            return Ok(None);
        }
        let owner = self.migration_database_config()?;
        let serving = self.database_config()?;
        Ok(serving.get_user().filter(|user| Some(*user) != owner.get_user()).map(str::to_owned))
    }

    /// The database configuration of `hub serve`'s sessions: with the session limits.
    pub fn session_config(&self) -> Result<tokio_postgres::Config, ConfigError> {
        Ok(self.session_limits.apply(self.database_config()?))
    }

    /// The database configuration as given (migrations and one-shot commands).
    pub fn database_config(&self) -> Result<tokio_postgres::Config, ConfigError> {
        self.database_url.expose_secret().parse().map_err(|_| ConfigError::Invalid {
            name: "DATABASE_URL",
            reason: "not a PostgreSQL connection string".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_debug_output_of_the_configuration_shows_no_secret() {
        let vars = [
            ("DATABASE_URL", "postgres://hub:db-password-4711@localhost/hub"),
            ("HUB_MIGRATION_DATABASE_URL", "postgres://owner:owner-password-2024@localhost/hub"),
            ("HUB_OPERATOR_KEY", "operator-key-that-nobody-may-see-0123456789"),
            ("HUB_MASTER_KEY", "c2VjcmV0LW1hc3Rlci1rZXktMzItYnl0ZXMtbG9uZyE="),
            ("SMTP_URL", "smtp://mailer:smtp-password-0815@localhost:2525"),
            ("NATS_URL", "nats://relay:nats-password-1234@localhost:4222"),
        ];
        let config =
            Config::from_vars(|name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned())).unwrap();
        let debug = format!("{config:?}");
        for secret in [
            "owner-password-2024",
            "db-password-4711",
            "operator-key-that-nobody",
            "c2VjcmV0",
            "smtp-password-0815",
            "nats-password-1234",
        ] {
            assert!(!debug.contains(secret), "{secret} shows in {debug}");
        }
        assert_eq!(config.serving_role().unwrap().as_deref(), Some("hub"));
        assert_eq!(config.auth_failures_per_minute, 20);
        assert_eq!(config.max_connections, shared::serve::DEFAULT_MAX_CONNECTIONS);
    }

    #[test]
    fn the_relay_stall_comes_from_the_given_variables() {
        let vars = [("DATABASE_URL", "postgres://hub@localhost/hub"), ("HUB_RELAY_STALL_SECONDS", "7")];
        let config =
            Config::from_vars(|name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned())).unwrap();
        assert_eq!(config.relay_stall, std::time::Duration::from_secs(7));
        let refused = Config::from_vars(|name| match name {
            "DATABASE_URL" => Some("postgres://hub@localhost/hub".to_owned()),
            "HUB_RELAY_STALL_SECONDS" => Some("0".to_owned()),
            _ => None,
        });
        assert!(refused.is_err());
    }
}
