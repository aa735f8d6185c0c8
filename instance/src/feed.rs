//! The hub's event feed (`GET /v1/events`): where gaps are filled and rebuilds replay from.

use secrecy::{ExposeSecret, SecretString};
use shared::RecordedEvent;

use crate::config::Config;

#[derive(Clone)]
pub struct HubFeed {
    base: String,
    key: SecretString,
    http: reqwest::Client,
}

#[derive(serde::Deserialize)]
struct Page {
    items: Vec<RecordedEvent>,
}

pub const PAGE: i64 = 1000;

#[derive(serde::Deserialize)]
struct KeyringEntry {
    sealed_data_key: String,
}

#[derive(serde::Deserialize)]
struct HeartbeatReply {
    head_position: i64,
}

impl HubFeed {
    /// Reports this instance to the hub; returns the log's head.
    pub async fn heartbeat(
        &self,
        instance_id: &str,
        applied_position: i64,
        workspace_count: i64,
    ) -> anyhow::Result<i64> {
        let response = self
            .http
            .post(format!("{}/v1/instances/{instance_id}/heartbeat", self.base))
            .bearer_auth(self.key.expose_secret())
            .json(&serde_json::json!({"applied_position": applied_position, "workspace_count": workspace_count}))
            .send()
            .await?;
        if !response.status().is_success() {
            anyhow::bail!("the hub refused the heartbeat: {}", response.status());
        }
        Ok(response.json::<HeartbeatReply>().await?.head_position)
    }

    /// A workspace's data key, sealed by the master key, from the hub's keyring.
    pub async fn sealed_data_key(&self, workspace_id: uuid::Uuid) -> anyhow::Result<Vec<u8>> {
        let response = self
            .http
            .get(format!("{}/v1/internal/keyring/{workspace_id}", self.base))
            .bearer_auth(self.key.expose_secret())
            .send()
            .await?;
        if !response.status().is_success() {
            anyhow::bail!("the hub's keyring answered {}", response.status());
        }
        Ok(hex::decode(response.json::<KeyringEntry>().await?.sealed_data_key)?)
    }

    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let base = config.hub_url.clone().ok_or_else(|| anyhow::anyhow!("HUB_URL is not set"))?;
        let key = config.hub_key.clone().ok_or_else(|| anyhow::anyhow!("HUB_OPERATOR_KEY is not set"))?;
        let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build()?;
        Ok(Self { base, key, http })
    }

    /// Up to `PAGE` events after `after`, of one stream or of the whole log.
    pub async fn page(&self, after: i64, stream_id: Option<&str>) -> anyhow::Result<Vec<RecordedEvent>> {
        self.events(after, stream_id, PAGE).await
    }

    /// The first event of `stream_id` after `after` (what a relayed reference names).
    pub async fn next_event(&self, after: i64, stream_id: &str) -> anyhow::Result<Option<RecordedEvent>> {
        Ok(self.events(after, Some(stream_id), 1).await?.into_iter().next())
    }

    async fn events(&self, after: i64, stream_id: Option<&str>, limit: i64) -> anyhow::Result<Vec<RecordedEvent>> {
        let mut request = self
            .http
            .get(format!("{}/v1/events", self.base))
            .bearer_auth(self.key.expose_secret())
            .query(&[("after", after.to_string()), ("limit", limit.to_string())]);
        if let Some(stream) = stream_id {
            request = request.query(&[("stream_id", stream)]);
        }
        let response = request.send().await?;
        let status = response.status();
        if !status.is_success() {
            anyhow::bail!("the hub's event feed answered {status}");
        }
        Ok(response.json::<Page>().await?.items)
    }
}
