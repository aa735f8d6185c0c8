//! Configuration (API.md, "Configuration"): every variable is also a flag of `hub`,
//! listed with its variable and default by `hub --help`; a flag wins over its variable.
//!
//! Secrets (database URLs, the operator key, the master key, the SMTP and NATS URLs, which
//! may carry credentials) stay in `secrecy` types: their `Debug` is redacted, `--help`
//! never shows their values, and errors about them name the variable only. An empty
//! variable counts as unset.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use shared::config::{MasterKey, Telemetry, Webhooks};

/// The hub's configuration as given: each variable, or the flag of the same name.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// The hub's PostgreSQL database, as the serving role (required).
    #[arg(
        long = "database-url",
        env = "DATABASE_URL",
        value_name = "DATABASE_URL",
        hide_env_values = true,
        global = true
    )]
    database_url: Option<SecretString>,
    /// The same database as the owning role, for `hub migrate` and `hub projections
    /// rebuild`; DATABASE_URL is then the serving role's.
    #[arg(
        long = "migration-database-url",
        env = "HUB_MIGRATION_DATABASE_URL",
        value_name = "HUB_MIGRATION_DATABASE_URL",
        hide_env_values = true,
        global = true
    )]
    migration_database_url: Option<SecretString>,
    /// Where the API listens; port 0 picks a free port.
    #[arg(
        long = "listen-addr",
        env = "HUB_LISTEN_ADDR",
        value_name = "HUB_LISTEN_ADDR",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    listen_addr: SocketAddr,
    /// The operator key: any string of at least 32 characters.
    #[arg(
        long = "operator-key",
        env = "HUB_OPERATOR_KEY",
        value_name = "HUB_OPERATOR_KEY",
        hide_env_values = true,
        global = true
    )]
    operator_key: Option<SecretString>,
    /// The master key (32 bytes, base64): seals data keys; hub and instances share it.
    #[arg(
        long = "master-key",
        env = "HUB_MASTER_KEY",
        value_name = "HUB_MASTER_KEY",
        hide_env_values = true,
        global = true
    )]
    master_key: Option<SecretString>,
    /// Connections in the hub's database pool.
    #[arg(
        long = "database-pool-size",
        env = "HUB_DATABASE_POOL_SIZE",
        value_name = "HUB_DATABASE_POOL_SIZE",
        default_value = "16",
        value_parser = shared::config::positive_usize,
        global = true
    )]
    pool_size: usize,
    /// Requests per minute per key, unless its organization sets its own.
    #[arg(
        long = "rate-limit-per-minute",
        env = "HUB_RATE_LIMIT_PER_MINUTE",
        value_name = "HUB_RATE_LIMIT_PER_MINUTE",
        default_value = "500",
        value_parser = shared::config::positive_u32,
        global = true
    )]
    rate_limit_per_minute: u32,
    /// Failed authentications per client address and minute before the address is refused.
    #[arg(
        long = "auth-failures-per-minute",
        env = "HUB_AUTH_FAILURES_PER_MINUTE",
        value_name = "HUB_AUTH_FAILURES_PER_MINUTE",
        default_value = "20",
        value_parser = shared::config::positive_u32,
        global = true
    )]
    auth_failures_per_minute: u32,
    /// The mail server (e.g. `smtp://127.0.0.1:2525`); without it emails wait in the outbox.
    #[arg(long = "smtp-url", env = "SMTP_URL", value_name = "SMTP_URL", hide_env_values = true, global = true)]
    smtp_url: Option<SecretString>,
    /// The sender of the hub's emails.
    #[arg(
        long = "mail-from",
        env = "HUB_MAIL_FROM",
        value_name = "HUB_MAIL_FROM",
        default_value = "Admin API <no-reply@localhost>",
        global = true
    )]
    mail_from: String,
    /// The base of links in emails (http or https); default `http://<HUB_LISTEN_ADDR>`.
    #[arg(long = "public-url", env = "HUB_PUBLIC_URL", value_name = "HUB_PUBLIC_URL", global = true)]
    public_url: Option<String>,
    /// Where the relay publishes the log; unset in single-node mode (in-process bus). It
    /// may carry credentials (`nats://user:password@host:port`).
    #[arg(long = "nats-url", env = "NATS_URL", value_name = "NATS_URL", hide_env_values = true, global = true)]
    nats_url: Option<SecretString>,
    /// Connections served at once.
    #[arg(
        long = "max-connections",
        env = "HUB_MAX_CONNECTIONS",
        value_name = "HUB_MAX_CONNECTIONS",
        default_value_t = shared::serve::DEFAULT_MAX_CONNECTIONS,
        value_parser = shared::config::positive_usize,
        global = true
    )]
    max_connections: usize,
    /// Seconds the relay may stay behind the log without progressing before `/readyz`
    /// answers 503.
    #[arg(
        long = "relay-stall-seconds",
        env = "HUB_RELAY_STALL_SECONDS",
        value_name = "HUB_RELAY_STALL_SECONDS",
        default_value = "60",
        value_parser = shared::config::positive_seconds,
        global = true
    )]
    relay_stall: Duration,
    /// The VAN API (e.g. `https://api.securevan.com`): when set, a VAN external key is
    /// checked with `GET <VAN_API_URL>/v4/apiKeyProfiles` (HTTP Basic, the application name
    /// and the key) before it is stored; unset, keys are stored unchecked. An `https://`
    /// URL is verified against the Mozilla root certificates (webpki-roots).
    #[arg(
        long = "van-api-url",
        env = "VAN_API_URL",
        value_name = "VAN_API_URL",
        hide_env_values = true,
        global = true
    )]
    van_api_url: Option<String>,
    #[command(flatten)]
    session_limits: instance::db::SessionLimits,
    #[command(flatten)]
    stream_limits: crate::relay::StreamLimits,
    #[command(flatten)]
    pub webhooks: Webhooks,
    #[command(flatten)]
    pub telemetry: Telemetry,
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
    /// `HUB_DATABASE_POOL_SIZE`, default 16: connections in the hub's pool.
    pub pool_size: usize,
    /// `HUB_MASTER_KEY`: 32 bytes, base64. Seals data keys and derives the key pepper.
    pub master_key: Option<MasterKey>,
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
    pub relay_stall: Duration,
    /// `DATABASE_*_TIMEOUT_SECONDS`, `DATABASE_KEEPALIVE_SECONDS`: limits of every session
    /// of `hub serve` (see [`instance::db`]); one-shot commands run without them.
    pub session_limits: instance::db::SessionLimits,
    /// `HUB_EVENTS_MAX_AGE_SECONDS`, `HUB_EVENTS_MAX_BYTES`, `HUB_EVENTS_MAX_MESSAGES`: how
    /// much of the log the NATS stream keeps (see [`crate::relay::StreamLimits`]).
    pub stream_limits: crate::relay::StreamLimits,
    /// `WEBHOOK_RETRY_SCHEDULE`, `WEBHOOK_ALLOW_PRIVATE`: how the embedded instance of a
    /// single-node hub delivers webhooks.
    pub webhooks: Webhooks,
    /// `VAN_API_URL`: where VAN external keys are checked before they are stored (unset:
    /// unchecked). An `http://` or `https://` URL.
    pub van_api_url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

impl From<shared::config::InvalidMasterKey> for ConfigError {
    fn from(_: shared::config::InvalidMasterKey) -> Self {
        Self::Invalid { name: "HUB_MASTER_KEY", reason: "must be 32 bytes, base64-encoded".into() }
    }
}

/// A secret given empty counts as unset.
fn given(value: Option<SecretString>) -> Option<SecretString> {
    value.filter(|v| !v.expose_secret().trim().is_empty())
}

impl Config {
    /// Checks what clap could not (required values, secrets, the public URL) and builds
    /// the configuration.
    pub fn from_args(args: ConfigArgs) -> Result<Self, ConfigError> {
        let database_url = given(args.database_url).ok_or(ConfigError::Missing("DATABASE_URL"))?;
        let operator_key = given(args.operator_key);
        if operator_key.as_ref().is_some_and(|key| key.expose_secret().chars().count() < 32) {
            return Err(ConfigError::Invalid {
                name: "HUB_OPERATOR_KEY",
                reason: "must be at least 32 characters".into(),
            });
        }
        let master_key = given(args.master_key).map(|key| shared::config::master_key(&key)).transpose()?;
        let public_url =
            args.public_url.filter(|u| !u.trim().is_empty()).unwrap_or_else(|| format!("http://{}", args.listen_addr));
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            return Err(ConfigError::Invalid { name: "HUB_PUBLIC_URL", reason: "must be an http(s) URL".into() });
        }
        let van_api_url = args.van_api_url.filter(|u| !u.trim().is_empty());
        if let Some(url) = &van_api_url
            && !(url.starts_with("https://") || is_loopback_http(url))
        {
            return Err(ConfigError::Invalid {
                name: "VAN_API_URL",
                reason: "must be an https:// URL (plain http:// only to a loopback address): it carries credentials"
                    .into(),
            });
        }
        Ok(Self {
            database_url,
            migration_database_url: given(args.migration_database_url),
            listen_addr: args.listen_addr,
            operator_key,
            pool_size: args.pool_size,
            master_key,
            rate_limit_per_minute: args.rate_limit_per_minute,
            smtp_url: given(args.smtp_url),
            mail_from: args.mail_from,
            public_url: public_url.trim_end_matches('/').to_owned(),
            nats_url: given(args.nats_url),
            auth_failures_per_minute: args.auth_failures_per_minute,
            max_connections: args.max_connections,
            relay_stall: args.relay_stall,
            session_limits: args.session_limits,
            stream_limits: args.stream_limits,
            webhooks: args.webhooks,
            van_api_url: van_api_url.map(|u| u.trim_end_matches('/').to_owned()),
        })
    }

    /// The pepper that keys the hashes of every key the hub hands out.
    pub fn key_pepper(&self) -> Result<Vec<u8>, ConfigError> {
        let master = self.master_key.as_ref().ok_or(ConfigError::Missing("HUB_MASTER_KEY"))?;
        Ok(shared::keys::key_pepper(master.expose_secret()))
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

/// An `http://` URL whose host is this machine's loopback (where credentials never
/// leave the machine in cleartext).
fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else { return false };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Args {
        #[command(flatten)]
        config: ConfigArgs,
    }

    fn parse(args: &[&str]) -> Result<Config, String> {
        use clap::Parser;
        let args =
            Args::try_parse_from(std::iter::once("hub").chain(args.iter().copied())).map_err(|e| e.to_string())?;
        Config::from_args(args.config).map_err(|e| e.to_string())
    }

    #[test]
    fn the_debug_output_of_the_configuration_shows_no_secret() {
        let config = parse(&[
            "--database-url=postgres://hub:db-password-4711@localhost/hub",
            "--migration-database-url=postgres://owner:owner-password-2024@localhost/hub",
            "--operator-key=operator-key-that-nobody-may-see-0123456789",
            "--master-key=c2VjcmV0LW1hc3Rlci1rZXktMzItYnl0ZXMtbG9uZyE=",
            "--smtp-url=smtp://mailer:smtp-password-0815@localhost:2525",
            "--nats-url=nats://relay:nats-password-1234@localhost:4222",
        ])
        .unwrap();
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
        assert_eq!(config.rate_limit_per_minute, 500);
        assert_eq!(config.max_connections, shared::serve::DEFAULT_MAX_CONNECTIONS);
        assert_eq!(config.public_url, "http://127.0.0.1:8080");
        assert_eq!(config.stream_limits, crate::relay::StreamLimits::default());
    }

    #[test]
    fn the_relay_stall_comes_from_the_given_value_and_zero_is_refused() {
        let config = parse(&["--database-url=postgres://hub@localhost/hub", "--relay-stall-seconds=7"]).unwrap();
        assert_eq!(config.relay_stall, Duration::from_secs(7));
        let error = parse(&["--database-url=postgres://hub@localhost/hub", "--relay-stall-seconds=0"]).unwrap_err();
        assert!(error.contains("HUB_RELAY_STALL_SECONDS"), "{error}");
    }

    #[test]
    fn the_van_api_url_is_optional_and_https_unless_it_is_on_this_machine() {
        let url = "--database-url=postgres://hub@localhost/hub";
        assert_eq!(parse(&[url]).unwrap().van_api_url, None);
        assert_eq!(parse(&[url, "--van-api-url="]).unwrap().van_api_url, None);
        let config = parse(&[url, "--van-api-url=http://127.0.0.1:8080/"]).unwrap();
        assert_eq!(config.van_api_url.as_deref(), Some("http://127.0.0.1:8080"));
        assert!(parse(&[url, "--van-api-url=http://localhost/van"]).is_ok());
        for cleartext in ["http://van-proxy.internal:8080/", "http://127.0.0.1.example.test/", "http://localhostx/"] {
            let error = parse(&[url, &format!("--van-api-url={cleartext}")]).unwrap_err();
            assert!(error.contains("VAN_API_URL"), "{cleartext}: {error}");
        }
        let config = parse(&[url, "--van-api-url=https://api.securevan.com"]).unwrap();
        assert_eq!(config.van_api_url.as_deref(), Some("https://api.securevan.com"));
        let error = parse(&[url, "--van-api-url=ftp://api.securevan.com"]).unwrap_err();
        assert!(error.contains("VAN_API_URL"), "{error}");
    }

    #[test]
    fn missing_and_invalid_secrets_are_refused_by_name_without_their_value() {
        assert_eq!(parse(&["--database-url="]).unwrap_err(), "DATABASE_URL is not set");
        let url = "--database-url=postgres://hub@localhost/hub";
        let error = parse(&[url, "--operator-key=short-operator-key"]).unwrap_err();
        assert!(error.contains("HUB_OPERATOR_KEY") && !error.contains("short-operator-key"), "{error}");
        let error = parse(&[url, "--master-key=c2hvcnQtbWFzdGVy"]).unwrap_err();
        assert!(error.contains("HUB_MASTER_KEY") && !error.contains("c2hvcnQtbWFzdGVy"), "{error}");
        let error = parse(&[url, "--public-url=ftp://example.com"]).unwrap_err();
        assert!(error.contains("HUB_PUBLIC_URL"), "{error}");
        let error = parse(&[url, "--events-max-messages=-3"]).unwrap_err();
        assert!(error.contains("HUB_EVENTS_MAX_MESSAGES"), "{error}");
    }
}
