//! Building and running the hub process.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::Config;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use shared::keys::KeyHasher;

use crate::http::auth::Authenticator;
use crate::http::usage::UsageRecorder;
use crate::http::{self, AppState, HttpConfig};
use crate::projections::ReadModels;
use crate::store::{EventStore, WriterConfig};

/// How the hub runs: alone with an embedded instance, or beside separate instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    SingleNode,
    MultiInstance,
}

/// The instance id of the embedded instance of a single-node hub.
pub const EMBEDDED_INSTANCE_ID: &str = "embedded";

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    mode: Mode,
    max_connections: usize,
}

impl Application {
    /// Migrates the database when serving as its owner (else checks `hub migrate` did),
    /// connects the pool, starts the writer and binds the port.
    pub async fn build(config: Config, mode: Mode) -> anyhow::Result<Self> {
        shared::metrics::install();
        let db_config = config.database_config()?;
        let mut client = crate::db::connect(&db_config).await.context("connecting to the database")?;
        if crate::migrate::may_migrate(&client).await.context("checking the database's owner")? {
            crate::migrate::run(&mut client).await.context("migrating the database")?;
        } else if !crate::migrate::is_current(&client).await.context("checking the schema version")? {
            anyhow::bail!(
                "the database schema is older than this hub (version {}): run `hub migrate` as the owning role \
                 (HUB_MIGRATION_DATABASE_URL) first",
                crate::migrate::latest_version()
            );
        }
        drop(client);

        let pepper = config.key_pepper()?;
        let pool = crate::db::pool(config.session_config()?, config.pool_size);
        let tasks = shared::supervise::Tasks::new();
        drop(pool.get().await.context("opening the connection pool")?);
        let store = EventStore::start_supervised(pool.clone(), WriterConfig::default(), Arc::new(ReadModels), &tasks);
        let commit_signal = store.commit_signal();
        match (&config.nats_url, mode) {
            (Some(url), Mode::MultiInstance) => {
                crate::relay::spawn(
                    &tasks,
                    config.session_config()?,
                    url.expose_secret().to_owned(),
                    store.commit_signal(),
                    config.relay_stall,
                    config.stream_limits,
                );
                crate::link::spawn(pool.clone(), url.expose_secret().to_owned());
            }
            (None, Mode::MultiInstance) => tracing::warn!("NATS_URL is not set: no relay publishes the events"),
            (_, Mode::SingleNode) => {}
        }
        let usage = Arc::new(UsageRecorder::default());
        usage.clone().spawn_flusher(pool.clone(), Duration::from_secs(2));
        crate::http::idempotency::spawn_sweeper(pool.clone());
        let mail_wake = Arc::new(tokio::sync::Notify::new());
        match &config.smtp_url {
            Some(url) => {
                let mailer = crate::mail::Mailer::new(url.expose_secret(), &config.mail_from)?;
                crate::mail::spawn_sender(&tasks, pool.clone(), Arc::new(mailer), mail_wake.clone());
                crate::mail::spawn_sweeper(pool.clone());
            }
            None => tracing::warn!("SMTP_URL is not set: emails stay queued in the outbox"),
        }
        let state = AppState::new(crate::http::Services {
            pool,
            store,
            config: Arc::new(HttpConfig {
                rate_limit_per_minute: config.rate_limit_per_minute,
                auth_failures_per_minute: config.auth_failures_per_minute,
                default_instance_id: (mode == Mode::SingleNode).then(|| EMBEDDED_INSTANCE_ID.to_owned()),
                public_url: config.public_url.clone(),
                relay_stall: (config.nats_url.is_some() && mode == Mode::MultiInstance).then_some(config.relay_stall),
                van_api_url: config.van_api_url.clone(),
            }),
            auth: Arc::new(Authenticator::new(KeyHasher::new(&pepper), config.operator_key.as_ref())),
            rate_limiter: Arc::default(),
            usage,
            mail_wake,
            tasks: tasks.clone(),
            master_key: config.master_key.clone().ok_or(crate::config::ConfigError::Missing("HUB_MASTER_KEY"))?,
            placement: Arc::default(),
        });
        // Caches follow this hub's commits as they happen and other hubs' through the log.
        let auth = state.auth.clone();
        state.store.observe_streams(Arc::new(move |stream_id| auth.keys().invalidate(stream_id)));
        let head = state.store.head_position().await.context("reading the log's head")?;
        crate::log_tail::spawn(&tasks, state.store.clone(), head);
        let mut router = http::router(state);
        if mode == Mode::SingleNode {
            let master = config.master_key.as_ref().ok_or(crate::config::ConfigError::Missing("HUB_MASTER_KEY"))?;
            let embedded = instance::embedded::start(
                config.session_config()?,
                EMBEDDED_INSTANCE_ID.to_owned(),
                master.clone(),
                config.auth_failures_per_minute,
                config.webhooks.clone(),
                commit_signal,
                &tasks,
            )
            .await
            .context("starting the embedded instance")?;
            router = router.merge(embedded);
        }
        let listener =
            TcpListener::bind(config.listen_addr).await.with_context(|| format!("binding {}", config.listen_addr))?;
        Ok(Self { listener, router, mode, max_connections: config.max_connections })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until SIGTERM or Ctrl-C, then drains in-flight requests. Slow clients and
    /// connections past `HUB_MAX_CONNECTIONS` are held off (see [`shared::serve`]).
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr()?, mode = ?self.mode, "hub listening");
        shared::serve::serve(self.listener, self.router, self.max_connections, shared::telemetry::shutdown_signal())
            .await
            .context("serving HTTP")
    }
}
