//! Database connections of long-running processes (an instance, the hub, the embedded
//! instance): reconnecting pools, and session limits on every connection so a stalled
//! session cannot block others or hang a task forever.
//!
//! Limits (`0` turns one off), from the environment:
//! - `DATABASE_STATEMENT_TIMEOUT_SECONDS`, default 300: longest statement. Well above the
//!   largest legitimate commit (a subtree of 10,000 workspaces); one-shot commands
//!   (migrations, `hub projections rebuild`, `instance rebuild`) run without it.
//! - `DATABASE_LOCK_TIMEOUT_SECONDS`, default 60: longest wait for a lock.
//! - `DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS`, default 120: an open transaction
//!   left idle this long is ended by the server, releasing its locks.
//! - `DATABASE_KEEPALIVE_SECONDS`, default 15: TCP keepalive idle time; a peer silent for
//!   about three times this (or unacknowledged data that long) ends the connection.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{Client, NoTls};

/// Session limits and keepalives applied to every connection of a long-running process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    pub statement_timeout: Duration,
    pub lock_timeout: Duration,
    pub idle_in_transaction_timeout: Duration,
    pub keepalive: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            statement_timeout: Duration::from_secs(300),
            lock_timeout: Duration::from_secs(60),
            idle_in_transaction_timeout: Duration::from_secs(120),
            keepalive: Duration::from_secs(15),
        }
    }
}

impl SessionLimits {
    /// Reads the limits through `var`; the error names the variable at fault.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let seconds = |name: &str, default: Duration| match var(name).filter(|v| !v.trim().is_empty()) {
            None => Ok(default),
            Some(text) => text
                .trim()
                .parse::<u64>()
                .map(Duration::from_secs)
                .map_err(|_| format!("{name} must be a whole number of seconds (0 turns it off)")),
        };
        let default = Self::default();
        Ok(Self {
            statement_timeout: seconds("DATABASE_STATEMENT_TIMEOUT_SECONDS", default.statement_timeout)?,
            lock_timeout: seconds("DATABASE_LOCK_TIMEOUT_SECONDS", default.lock_timeout)?,
            idle_in_transaction_timeout: seconds(
                "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS",
                default.idle_in_transaction_timeout,
            )?,
            keepalive: seconds("DATABASE_KEEPALIVE_SECONDS", default.keepalive)?,
        })
    }

    /// `config` with the limits set (after whatever options it already carries).
    pub fn apply(&self, mut config: tokio_postgres::Config) -> tokio_postgres::Config {
        let limits = format!(
            "-c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout={}",
            self.statement_timeout.as_millis(),
            self.lock_timeout.as_millis(),
            self.idle_in_transaction_timeout.as_millis()
        );
        let options = match config.get_options() {
            Some(existing) if !existing.trim().is_empty() => format!("{existing} {limits}"),
            _ => limits,
        };
        config.options(&options);
        if !self.keepalive.is_zero() {
            config
                .keepalives(true)
                .keepalives_idle(self.keepalive)
                .keepalives_interval(self.keepalive / 3)
                .keepalives_retries(3)
                // Keepalives do not cover a request in flight: unacknowledged data this
                // long ends the connection too.
                .tcp_user_timeout(self.keepalive * 2);
        }
        config
    }
}

/// A single connection outside any pool.
pub async fn connect(config: &tokio_postgres::Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "database connection closed");
        }
    });
    Ok(client)
}

/// A pool that replaces broken connections (checked before each use) with new ones.
/// Build it after migrating: cached statements do not survive DDL.
pub fn pool(config: tokio_postgres::Config, size: usize) -> Pool {
    let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(size.max(2))
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .expect("a pool with a runtime and valid timeouts always builds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limits_are_appended_to_the_options_a_connection_already_has() {
        let mut config: tokio_postgres::Config = "postgres://u@localhost/db".parse().unwrap();
        config.options("-c search_path=instance");
        let config = SessionLimits::default().apply(config);
        assert_eq!(
            config.get_options(),
            Some(
                "-c search_path=instance -c statement_timeout=300000 -c lock_timeout=60000 \
                 -c idle_in_transaction_session_timeout=120000"
            )
        );
        assert!(config.get_keepalives());
    }

    #[test]
    fn limits_come_from_the_environment_and_zero_turns_one_off() {
        let vars = [("DATABASE_STATEMENT_TIMEOUT_SECONDS", "0"), ("DATABASE_LOCK_TIMEOUT_SECONDS", "5")];
        let limits =
            SessionLimits::from_vars(|n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| (*v).to_owned())).unwrap();
        assert_eq!(limits.statement_timeout, Duration::ZERO);
        assert_eq!(limits.lock_timeout, Duration::from_secs(5));
        assert_eq!(limits.idle_in_transaction_timeout, SessionLimits::default().idle_in_transaction_timeout);
        let error = SessionLimits::from_vars(|n| (n == "DATABASE_KEEPALIVE_SECONDS").then(|| "soon".to_owned()));
        assert!(error.unwrap_err().contains("DATABASE_KEEPALIVE_SECONDS"));
    }
}
