//! Events of an admin API key (stream `key-<uuid>`). They hold the key's peppered hash and
//! hint, never the key.

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{DecodeError, DomainEvent, decode_tagged};
use crate::metadata::Actor;
use crate::scope::Scopes;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyCreated {
    pub organization_id: Uuid,
    pub name: String,
    pub scopes: Scopes,
    pub workspace_ids: Vec<Uuid>,
    pub expires_at: Option<DateTime<Utc>>,
    pub allowed_ips: Vec<IpNet>,
    pub owner_user_id: Option<Uuid>,
    pub created_by: Actor,
    /// Hex of the peppered SHA-256 of the key.
    pub key_hash: String,
    pub partial_key_hint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyUpdated {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Scopes>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyRotated {
    pub key_hash: String,
    pub partial_key_hint: String,
    /// Until when the previous key keeps working.
    pub previous_key_expires_at: DateTime<Utc>,
}

/// Deleted workspaces leave a key restricted to several: it keeps the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyWorkspacesRemoved {
    pub workspace_ids: Vec<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApiKeyEvent {
    ApiKeyCreated(ApiKeyCreated),
    ApiKeyUpdated(ApiKeyUpdated),
    ApiKeyRotated(ApiKeyRotated),
    ApiKeyRevoked {},
    ApiKeyWorkspacesRemoved(ApiKeyWorkspacesRemoved),
}

impl DomainEvent for ApiKeyEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::ApiKeyCreated(_) => "ApiKeyCreated",
            Self::ApiKeyUpdated(_) => "ApiKeyUpdated",
            Self::ApiKeyRotated(_) => "ApiKeyRotated",
            Self::ApiKeyRevoked {} => "ApiKeyRevoked",
            Self::ApiKeyWorkspacesRemoved(_) => "ApiKeyWorkspacesRemoved",
        }
    }

    fn decode(event_type: &str, schema_version: i32, data: &serde_json::Value) -> Result<Self, DecodeError> {
        if schema_version != 1 {
            return Err(DecodeError::UnsupportedVersion { event_type: event_type.to_owned(), version: schema_version });
        }
        decode_tagged(event_type, data)
    }
}
