//! Asking the hubs over NATS (core request/reply; any live hub answers, see
//! `shared::link`): sealed data keys, pages of this instance's events, heartbeats, usage
//! reports, and the durable consumer the hubs define for this instance.
//!
//! The connection uses this instance's own credentials (from `NATS_URL`) and its own inbox
//! prefix, `_INBOX.<instance_id>`, the only inbox its NATS user may subscribe to.

use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use serde::de::DeserializeOwned;
use shared::RecordedEvent;
use shared::link::{
    self, DataKey, DataKeyRequest, DataKeysReply, DataKeysRequest, EventsRequest, Heartbeat, HeartbeatReply, LinkError,
    Op, UsageReport,
};
use tokio::sync::OnceCell;
use uuid::Uuid;

/// How long a hub has to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A lazily connected link to the hubs.
pub struct Link {
    url: String,
    instance_id: String,
    nats: OnceCell<async_nats::Client>,
}

/// What asking the hubs may end in.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// A hub answered with a refusal.
    #[error("the hub refused: {0}")]
    Refused(LinkError),
    /// No hub answered (none is live, NATS is away, or the request timed out).
    #[error("no hub answered: {0}")]
    Unanswered(String),
}

/// A NATS connection of `instance_id`, whose replies arrive in its own inbox.
pub async fn connect(url: &str, instance_id: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
    let (url, options) = options(url, instance_id);
    options.connect(url).await
}

/// The server address and the options of this instance's NATS connections: its own
/// credentials and reply inbox.
pub fn options(url: &str, instance_id: &str) -> (String, async_nats::ConnectOptions) {
    let (url, credentials) = link::split_credentials(url);
    let options = match credentials {
        Some((user, password)) => async_nats::ConnectOptions::with_user_and_password(user, password),
        None => async_nats::ConnectOptions::new(),
    };
    (url.to_string(), options.custom_inbox_prefix(link::inbox_prefix(instance_id)).request_timeout(Some(TIMEOUT)))
}

impl Link {
    pub fn new(url: String, instance_id: String) -> Self {
        Self { url, instance_id, nats: OnceCell::new() }
    }

    /// The connection, opened on first use.
    pub async fn client(&self) -> anyhow::Result<&async_nats::Client> {
        self.nats
            .get_or_try_init(|| async { connect(&self.url, &self.instance_id).await.context("connecting to NATS") })
            .await
    }

    async fn ask<B: Serialize, T: DeserializeOwned>(&self, op: Op, body: &B) -> Result<T, AskError> {
        let unanswered = |e: &dyn std::fmt::Display| AskError::Unanswered(e.to_string());
        let client = self.client().await.map_err(|e| unanswered(&format!("{e:#}")))?;
        let body = serde_json::to_vec(body).map_err(|e| unanswered(&e))?;
        let answer =
            client.request(link::subject(&self.instance_id, op), body.into()).await.map_err(|e| unanswered(&e))?;
        let reply: link::Reply<T> = serde_json::from_slice(&answer.payload).map_err(|e| unanswered(&e))?;
        reply.map_err(AskError::Refused)
    }

    /// A workspace's data key sealed by the master key; `None` once destroyed.
    pub async fn sealed_data_key(&self, workspace_id: Uuid) -> Result<Option<Vec<u8>>, AskError> {
        let key: DataKey = self.ask(Op::DataKey, &DataKeyRequest { workspace_id }).await?;
        key.sealed_data_key
            .map(|hex| hex::decode(hex).map_err(|_| AskError::Unanswered("a data key that is not hex".into())))
            .transpose()
    }

    /// The data keys of `workspace_ids` (at most [`link::MAX_DATA_KEYS`]) that the hubs
    /// hold for this instance.
    pub async fn sealed_data_keys(&self, workspace_ids: &[Uuid]) -> Result<Vec<DataKey>, AskError> {
        let keys: DataKeysReply =
            self.ask(Op::DataKeys, &DataKeysRequest { workspace_ids: workspace_ids.to_vec() }).await?;
        Ok(keys.items)
    }

    /// Up to `limit` events after `after`, of one stream or of all this instance's.
    pub async fn events(
        &self,
        after: i64,
        stream_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, AskError> {
        self.ask(Op::Events, &EventsRequest { after, limit, stream_id: stream_id.map(str::to_owned) }).await
    }

    /// Reports progress; returns the log's head.
    pub async fn heartbeat(&self, applied_position: i64, workspace_count: i64) -> Result<i64, AskError> {
        let reply: HeartbeatReply = self.ask(Op::Heartbeat, &Heartbeat { applied_position, workspace_count }).await?;
        Ok(reply.head_position)
    }

    /// Hands a usage report to a hub (applied once however often it is sent).
    pub async fn report_usage(&self, report: &UsageReport) -> Result<(), AskError> {
        self.ask(Op::Usage, report).await
    }

    /// Has a hub create (or keep) this instance's durable consumer.
    pub async fn ensure_consumer(&self) -> Result<(), AskError> {
        self.ask(Op::Consumer, &serde_json::json!({})).await
    }
}
