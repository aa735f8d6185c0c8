//! Events of the keys that live in a workspace's stream: external (third-party) credentials
//! and Interactions API keys. They hold sealed ciphertext and peppered hashes, never a
//! plaintext credential or secret.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::metadata::Actor;

/// The third party an external key is a credential for. Grows one variant per provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(feature = "postgres", derive(postgres_types::ToSql, postgres_types::FromSql))]
#[cfg_attr(feature = "postgres", postgres(name = "external_provider"))]
#[serde(rename_all = "snake_case")]
pub enum ExternalProvider {
    #[cfg_attr(feature = "postgres", postgres(name = "van"))]
    Van,
}

impl ExternalProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Van => "van",
        }
    }
}

/// A third-party credential, sealed under the workspace's data key: deleting the workspace
/// shreds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalKeyAdded {
    pub external_key_id: Uuid,
    pub provider: ExternalProvider,
    pub name: String,
    /// The credential's last 4 characters.
    pub key_hint: String,
    /// Hex of `nonce ‖ AES-256-GCM ciphertext` of the credential under the workspace's data key.
    pub sealed_api_key: String,
    pub settings: serde_json::Value,
    pub created_by: Actor,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalKeyDeleted {
    pub external_key_id: Uuid,
}

/// Where the interactions authenticated by an interaction key go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Destination {
    /// An external key of the same workspace.
    ExternalKey { external_key_id: Uuid },
    /// A technology partner app of kind `destination`.
    App { app_id: Uuid },
}

/// An Interactions API key. With a source app its secret is withheld: sealed under a data key
/// of its own (keyring entry named by the key's id), destroyed when the app claims it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InteractionKeyCreated {
    pub interaction_key_id: Uuid,
    pub name: String,
    pub destination: Destination,
    pub source_app_id: Option<Uuid>,
    /// Hex of the peppered SHA-256 of the key.
    pub key_hash: String,
    pub partial_key_hint: String,
    pub expires_at: Option<DateTime<Utc>>,
    /// Hex of `nonce ‖ AES-256-GCM ciphertext` of the key under its own data key; present
    /// only with a source app.
    pub sealed_secret: Option<String>,
    pub created_by: Actor,
}

/// The source app took the one-time secret; its data key is gone with this event's commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InteractionKeySecretClaimed {
    pub interaction_key_id: Uuid,
    pub app_id: Uuid,
    /// The client address the claim came from.
    pub ip: Option<String>,
}

/// Why an interaction key stopped working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InteractionKeyRevocation {
    /// `DELETE .../interaction-keys/{id}`.
    Deleted,
    /// Its source or destination app was deleted.
    AppDeleted,
    /// Its destination external key was deleted.
    DestinationDeleted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InteractionKeyRevoked {
    pub interaction_key_id: Uuid,
    pub reason: InteractionKeyRevocation,
}
