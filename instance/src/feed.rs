//! The hubs, as this instance reaches them: over NATS (any live hub answers, see
//! [`crate::link`]) and, when `HUB_URL` is set, over HTTP as a fallback (`GET /v1/events`,
//! `GET /v1/internal/keyring/{id}`, `POST /v1/internal/keyring`,
//! `POST /v1/instances/{id}/heartbeat`, with the operator key). Gaps are filled, rebuilds
//! replayed and data keys fetched through it.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use shared::RecordedEvent;
use shared::feed::{FeedPage, FeedQuery};
use shared::link::{DataKey, DataKeysReply, DataKeysRequest, Heartbeat, HeartbeatReply, KeyringEntry};
use uuid::Uuid;

use crate::config::Config;
use crate::link::{AskError, Link};

#[derive(Clone)]
pub struct HubFeed {
    link: Option<Arc<Link>>,
    http: Option<Http>,
}

/// One hub over HTTP, with the operator key.
#[derive(Clone)]
struct Http {
    base: String,
    key: SecretString,
    client: reqwest::Client,
}

/// Events asked for in one page.
pub const PAGE: i64 = shared::feed::MAX_LIMIT;

/// Asks over NATS first; falls back to HTTP when no hub answered there and `HUB_URL` is set.
macro_rules! ask {
    ($self:ident, $link:ident => $over_nats:expr, $http:ident => $over_http:expr) => {{
        let mut unanswered = None;
        if let Some($link) = &$self.link {
            match $over_nats.await {
                Ok(value) => return Ok(value),
                Err(AskError::Refused(error)) if $self.http.is_none() => return Err(error.into()),
                Err(error) => unanswered = Some(error),
            }
        }
        match &$self.http {
            Some($http) => {
                if let Some(error) = &unanswered {
                    tracing::debug!(%error, "asking the hub over HTTP instead");
                }
                $over_http.await
            }
            None => Err(unanswered.map_or_else(|| anyhow::anyhow!("no way to reach a hub"), anyhow::Error::from)),
        }
    }};
}

impl HubFeed {
    /// Over NATS when `NATS_URL` is set, over HTTP when `HUB_URL` is (with `HUB_OPERATOR_KEY`).
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let http = match (&config.hub_url, &config.hub_key) {
            (Some(base), Some(key)) => Some(Http {
                base: base.clone(),
                key: key.clone(),
                client: reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build()?,
            }),
            (Some(_), None) => anyhow::bail!("HUB_URL is set but HUB_OPERATOR_KEY is not"),
            (None, _) => None,
        };
        let link = config
            .nats_url
            .as_ref()
            .map(|url| Arc::new(Link::new(url.expose_secret().to_owned(), config.instance_id.clone())));
        anyhow::ensure!(link.is_some() || http.is_some(), "set NATS_URL (or HUB_URL) to reach the hubs");
        Ok(Self { link, http })
    }

    /// The NATS link to the hubs, if configured.
    pub fn link(&self) -> Option<&Link> {
        self.link.as_deref()
    }

    /// Reports this instance to the hubs; returns the log's head.
    pub async fn heartbeat(
        &self,
        instance_id: &str,
        applied_position: i64,
        workspace_count: i64,
    ) -> anyhow::Result<i64> {
        ask!(self, link => link.heartbeat(applied_position, workspace_count),
             http => http.heartbeat(instance_id, applied_position, workspace_count))
    }

    /// A workspace's data key, sealed by the master key; `None` once it was destroyed.
    pub async fn sealed_data_key(&self, workspace_id: Uuid) -> anyhow::Result<Option<Vec<u8>>> {
        ask!(self, link => link.sealed_data_key(workspace_id), http => http.sealed_data_key(workspace_id))
    }

    /// The data keys of `workspace_ids` (at most [`shared::link::MAX_DATA_KEYS`]) the hubs
    /// hold for this instance, sealed by the master key (hex, `None` once destroyed); the
    /// other workspaces are left out.
    pub async fn sealed_data_keys(&self, workspace_ids: &[Uuid]) -> anyhow::Result<Vec<DataKey>> {
        ask!(self, link => link.sealed_data_keys(workspace_ids), http => http.sealed_data_keys(workspace_ids))
    }

    /// Up to `PAGE` events after `after`, of one stream or of all this instance's workspaces
    /// (over HTTP: of the whole log).
    pub async fn page(&self, after: i64, stream_id: Option<&str>) -> anyhow::Result<Vec<RecordedEvent>> {
        self.events(after, stream_id, PAGE).await
    }

    /// The first event of `stream_id` after `after` (what a relayed reference names).
    pub async fn next_event(&self, after: i64, stream_id: &str) -> anyhow::Result<Option<RecordedEvent>> {
        Ok(self.events(after, Some(stream_id), 1).await?.into_iter().next())
    }

    async fn events(&self, after: i64, stream_id: Option<&str>, limit: i64) -> anyhow::Result<Vec<RecordedEvent>> {
        ask!(self, link => link.events(after, stream_id, limit), http => http.events(after, stream_id, limit))
    }
}

impl Http {
    async fn heartbeat(&self, instance_id: &str, applied_position: i64, workspace_count: i64) -> anyhow::Result<i64> {
        let response = self
            .client
            .post(format!("{}/v1/instances/{instance_id}/heartbeat", self.base))
            .bearer_auth(self.key.expose_secret())
            .json(&Heartbeat { applied_position, workspace_count })
            .send()
            .await?;
        if !response.status().is_success() {
            anyhow::bail!("the hub refused the heartbeat: {}", response.status());
        }
        Ok(response.json::<HeartbeatReply>().await?.head_position)
    }

    async fn sealed_data_key(&self, workspace_id: Uuid) -> anyhow::Result<Option<Vec<u8>>> {
        let response = self
            .client
            .get(format!("{}/v1/internal/keyring/{workspace_id}", self.base))
            .bearer_auth(self.key.expose_secret())
            .send()
            .await?;
        if response.status() == reqwest::StatusCode::GONE {
            return Ok(None);
        }
        if !response.status().is_success() {
            anyhow::bail!("the hub's keyring answered {}", response.status());
        }
        Ok(Some(hex::decode(response.json::<KeyringEntry>().await?.sealed_data_key)?))
    }

    async fn sealed_data_keys(&self, workspace_ids: &[Uuid]) -> anyhow::Result<Vec<DataKey>> {
        let response = self
            .client
            .post(format!("{}/v1/internal/keyring", self.base))
            .bearer_auth(self.key.expose_secret())
            .json(&DataKeysRequest { workspace_ids: workspace_ids.to_vec() })
            .send()
            .await?;
        if !response.status().is_success() {
            anyhow::bail!("the hub's keyring answered {}", response.status());
        }
        Ok(response.json::<DataKeysReply>().await?.items)
    }

    async fn events(&self, after: i64, stream_id: Option<&str>, limit: i64) -> anyhow::Result<Vec<RecordedEvent>> {
        let query = FeedQuery { after: Some(after), limit: Some(limit), stream_id: stream_id.map(str::to_owned) };
        let response = self
            .client
            .get(format!("{}{}", self.base, shared::feed::PATH))
            .bearer_auth(self.key.expose_secret())
            .query(&query)
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            anyhow::bail!("the hub's event feed answered {status}");
        }
        Ok(response.json::<FeedPage>().await?.items)
    }
}
