//! Database connections of long-running processes (an instance, the hub, the embedded
//! instance): reconnecting pools, and session limits on every connection so a stalled
//! session cannot block others or hang a task forever.
//!
//! Limits (`0` turns one off), from the environment (or the matching flags):
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

/// The settings, `SET LOCAL` in a transaction, under which the hot statements of ingest and
/// of the webhook sender run: planned once per connection (a generic plan), not at every
/// call, and without whole-table scans or hash and merge joins. Each of those statements
/// reaches a few rows through an index; a generic plan is kept until the server's
/// statistics of its tables change, so one made while the tables were nearly empty (a
/// new instance) would otherwise scan whole tables at every call once they fill, until the
/// next `ANALYZE`. Without those plan shapes the plan is the same whatever the size.
pub const STABLE_PLANS: &str = "SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL enable_seqscan = off; \
                                SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off";

/// Session limits and keepalives applied to every connection of a long-running process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct SessionLimits {
    /// Longest statement of a long-running process's sessions, in seconds (0: no limit).
    #[arg(
        long = "database-statement-timeout-seconds",
        env = "DATABASE_STATEMENT_TIMEOUT_SECONDS",
        value_name = "DATABASE_STATEMENT_TIMEOUT_SECONDS",
        default_value = "300",
        value_parser = shared::config::seconds_or_off,
        global = true
    )]
    pub statement_timeout: Duration,
    /// Longest wait for a lock, in seconds (0: no limit).
    #[arg(
        long = "database-lock-timeout-seconds",
        env = "DATABASE_LOCK_TIMEOUT_SECONDS",
        value_name = "DATABASE_LOCK_TIMEOUT_SECONDS",
        default_value = "60",
        value_parser = shared::config::seconds_or_off,
        global = true
    )]
    pub lock_timeout: Duration,
    /// Seconds an open transaction may stay idle before the server ends it (0: no limit).
    #[arg(
        long = "database-idle-in-transaction-timeout-seconds",
        env = "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS",
        value_name = "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS",
        default_value = "120",
        value_parser = shared::config::seconds_or_off,
        global = true
    )]
    pub idle_in_transaction_timeout: Duration,
    /// TCP keepalive idle time of database connections, in seconds (0: no keepalives).
    #[arg(
        long = "database-keepalive-seconds",
        env = "DATABASE_KEEPALIVE_SECONDS",
        value_name = "DATABASE_KEEPALIVE_SECONDS",
        default_value = "15",
        value_parser = shared::config::seconds_or_off,
        global = true
    )]
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

    #[derive(clap::Parser)]
    struct Args {
        #[command(flatten)]
        limits: SessionLimits,
    }

    #[test]
    fn limits_default_like_the_documentation_and_zero_turns_one_off() {
        use clap::Parser;
        let defaults = Args::try_parse_from(["x"]).unwrap().limits;
        assert_eq!(defaults, SessionLimits::default());
        let args = ["x", "--database-statement-timeout-seconds", "0", "--database-lock-timeout-seconds", "5"];
        let limits = Args::try_parse_from(args).unwrap().limits;
        assert_eq!(limits.statement_timeout, Duration::ZERO);
        assert_eq!(limits.lock_timeout, Duration::from_secs(5));
        assert_eq!(limits.idle_in_transaction_timeout, SessionLimits::default().idle_in_transaction_timeout);
        let error = Args::try_parse_from(["x", "--database-keepalive-seconds", "soon"]).err().unwrap().to_string();
        assert!(error.contains("DATABASE_KEEPALIVE_SECONDS"), "{error}");
    }
}
