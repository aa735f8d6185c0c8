//! Configuration (API.md, "Configuration"): every variable is also a flag of `instance`,
//! listed with its variable and default by `instance --help`; a flag wins over its
//! variable.
//!
//! Secrets (the database URL, which may hold a password, the hub key, the NATS URL, which
//! may hold credentials, and the master key) stay in `secrecy` types: their `Debug` is
//! redacted, `--help` never shows their values, and they are exposed only where they are
//! used. An empty variable counts as unset.

use std::net::SocketAddr;

use secrecy::{ExposeSecret, SecretString};
use shared::config::{Telemetry, Webhooks};

pub use shared::config::MasterKey;

/// Connections in a running instance's pool: the consumer, the heartbeat, readiness and
/// the runtime API's requests.
const POOL_SIZE: usize = 16;

/// The instance's configuration as given: each variable, or the flag of the same name.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// This instance's own PostgreSQL database (required).
    #[arg(
        long = "database-url",
        env = "INSTANCE_DATABASE_URL",
        value_name = "INSTANCE_DATABASE_URL",
        hide_env_values = true,
        global = true
    )]
    database_url: Option<SecretString>,
    /// The instance's name in subjects and placements: `[a-z0-9_-]{1,50}`, not `hub` (required).
    #[arg(long = "instance-id", env = "INSTANCE_ID", value_name = "INSTANCE_ID", global = true)]
    instance_id: Option<String>,
    /// Where the runtime API listens.
    #[arg(
        long = "listen-addr",
        env = "INSTANCE_LISTEN_ADDR",
        value_name = "INSTANCE_LISTEN_ADDR",
        default_value = "127.0.0.1:8081",
        global = true
    )]
    listen_addr: SocketAddr,
    /// The NATS server the events come from, possibly with this instance's credentials
    /// (`nats://user:password@host:port`).
    #[arg(long = "nats-url", env = "NATS_URL", value_name = "NATS_URL", hide_env_values = true, global = true)]
    nats_url: Option<SecretString>,
    /// A hub's base URL, asked over HTTP for the event feed when no hub answers over NATS.
    #[arg(long = "hub-url", env = "HUB_URL", value_name = "HUB_URL", global = true)]
    hub_url: Option<String>,
    /// The key presented to the hub at HUB_URL (not needed over NATS).
    #[arg(
        long = "hub-operator-key",
        env = "HUB_OPERATOR_KEY",
        value_name = "HUB_OPERATOR_KEY",
        hide_env_values = true,
        global = true
    )]
    hub_key: Option<SecretString>,
    /// The master key shared with the hub (32 bytes, base64): opens the workspaces' data keys.
    #[arg(
        long = "master-key",
        env = "HUB_MASTER_KEY",
        value_name = "HUB_MASTER_KEY",
        hide_env_values = true,
        global = true
    )]
    master_key: Option<SecretString>,
    /// Failed token checks per client address and minute before the address is refused.
    #[arg(
        long = "auth-failures-per-minute",
        env = "HUB_AUTH_FAILURES_PER_MINUTE",
        value_name = "HUB_AUTH_FAILURES_PER_MINUTE",
        default_value = "20",
        value_parser = shared::config::positive_u32,
        global = true
    )]
    auth_failures_per_minute: u32,
    /// Connections served at once.
    #[arg(
        long = "max-connections",
        env = "INSTANCE_MAX_CONNECTIONS",
        value_name = "INSTANCE_MAX_CONNECTIONS",
        default_value_t = shared::serve::DEFAULT_MAX_CONNECTIONS,
        value_parser = shared::config::positive_usize,
        global = true
    )]
    max_connections: usize,
    /// Seconds the consumer may leave messages waiting without acking any before
    /// `/readyz` answers 503.
    #[arg(
        long = "consumer-stall-seconds",
        env = "INSTANCE_CONSUMER_STALL_SECONDS",
        value_name = "INSTANCE_CONSUMER_STALL_SECONDS",
        default_value = "60",
        value_parser = shared::config::positive_seconds,
        global = true
    )]
    consumer_stall: std::time::Duration,
    #[command(flatten)]
    session_limits: crate::db::SessionLimits,
    #[command(flatten)]
    pub webhooks: Webhooks,
    #[command(flatten)]
    pub telemetry: Telemetry,
}

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
    /// `WEBHOOK_RETRY_SCHEDULE`, `WEBHOOK_ALLOW_PRIVATE`: how webhooks are delivered.
    pub webhooks: Webhooks,
}

/// A secret or text given empty counts as unset.
fn given<T: AsRef<str>>(value: Option<T>) -> Option<T> {
    value.filter(|v| !v.as_ref().trim().is_empty())
}

fn given_secret(value: Option<SecretString>) -> Option<SecretString> {
    value.filter(|v| !v.expose_secret().trim().is_empty())
}

impl Config {
    /// Checks what clap could not (required values, secrets) and builds the configuration.
    pub fn from_args(args: ConfigArgs) -> anyhow::Result<Self> {
        let database_url =
            given_secret(args.database_url).ok_or_else(|| anyhow::anyhow!("INSTANCE_DATABASE_URL is not set"))?;
        let instance_id = given(args.instance_id).ok_or_else(|| anyhow::anyhow!("INSTANCE_ID is not set"))?;
        shared::domain::values::instance_id("INSTANCE_ID", &instance_id)
            .map_err(|_| anyhow::anyhow!("INSTANCE_ID must match [a-z0-9_-]{{1,50}} and not be `hub`"))?;
        let master_key = given_secret(args.master_key).map(|key| shared::config::master_key(&key)).transpose()?;
        Ok(Self {
            database_url,
            instance_id,
            listen_addr: args.listen_addr,
            nats_url: given_secret(args.nats_url),
            hub_url: given(args.hub_url).map(|u| u.trim_end_matches('/').to_owned()),
            hub_key: given_secret(args.hub_key),
            master_key,
            auth_failures_per_minute: args.auth_failures_per_minute,
            max_connections: args.max_connections,
            consumer_stall: args.consumer_stall,
            session_limits: args.session_limits,
            webhooks: args.webhooks,
        })
    }

    fn database_config(&self) -> anyhow::Result<tokio_postgres::Config> {
        self.database_url.expose_secret().parse().map_err(|_| anyhow::anyhow!("INSTANCE_DATABASE_URL is invalid"))
    }

    /// The reconnecting pool of a running instance, every session limited.
    pub fn pool(&self) -> anyhow::Result<deadpool_postgres::Pool> {
        Ok(crate::db::pool(self.session_limits.apply(self.database_config()?), POOL_SIZE))
    }

    /// The webhook sender's own connections (requests never leave it waiting for one).
    pub fn webhook_pool(&self) -> anyhow::Result<deadpool_postgres::Pool> {
        Ok(crate::db::pool(self.session_limits.apply(self.database_config()?), crate::webhooks::POOL_SIZE))
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

    #[derive(clap::Parser)]
    struct Args {
        #[command(flatten)]
        config: ConfigArgs,
    }

    fn parse(args: &[&str]) -> anyhow::Result<Config> {
        use clap::Parser;
        Config::from_args(Args::try_parse_from(std::iter::once("instance").chain(args.iter().copied()))?.config)
    }

    #[test]
    fn the_debug_output_of_the_configuration_shows_no_secret() {
        let config = parse(&[
            "--database-url=postgres://instance:db-password-4711@localhost/alpha",
            "--instance-id=alpha",
            "--hub-operator-key=operator-key-that-nobody-may-see-0123456789",
            "--master-key=c2VjcmV0LW1hc3Rlci1rZXktMzItYnl0ZXMtbG9uZyE=",
            "--nats-url=nats://alpha:nats-password-1234@localhost:4222",
            "--hub-url=http://127.0.0.1:8080/",
        ])
        .unwrap();
        let debug = format!("{config:?}");
        for secret in ["db-password-4711", "operator-key-that-nobody", "c2VjcmV0", "nats-password-1234"] {
            assert!(!debug.contains(secret), "{secret} shows in {debug}");
        }
        // The raw bytes of the master key do not show either.
        let master = config.master_key.as_ref().unwrap();
        assert!(!debug.contains(&format!("{:?}", master.expose_secret())));
        assert_eq!(config.auth_failures_per_minute, 20);
        assert_eq!(config.hub_url.as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(config.webhooks.retry_schedule.0.len(), 6);
        assert!(!config.webhooks.allow_private);
    }

    #[test]
    fn missing_and_invalid_values_are_refused_by_name() {
        let error = parse(&["--instance-id=alpha"]).unwrap_err().to_string();
        assert!(error.contains("INSTANCE_DATABASE_URL is not set"), "{error}");
        let error = parse(&["--database-url=postgres://x@y/z", "--instance-id=Hub!"]).unwrap_err().to_string();
        assert!(error.contains("INSTANCE_ID"), "{error}");
        let error = parse(&["--database-url=postgres://x@y/z", "--instance-id=a", "--master-key=secret-text-123"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("HUB_MASTER_KEY") && !error.contains("secret-text-123"), "{error}");
        let error = parse(&["--consumer-stall-seconds=0"]).unwrap_err().to_string();
        assert!(error.contains("INSTANCE_CONSUMER_STALL_SECONDS"), "{error}");
    }
}
