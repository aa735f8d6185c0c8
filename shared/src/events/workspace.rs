//! Events of the workspace aggregate (stream `workspace-<uuid>`).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{DecodeError, DomainEvent, decode_tagged};
pub use crate::events::workspace_keys::{
    Destination, ExternalKeyAdded, ExternalKeyDeleted, ExternalProvider, InteractionKeyCreated,
    InteractionKeyRevocation, InteractionKeyRevoked, InteractionKeySecretClaimed,
};

/// A public key registered on a workspace (PEM, SubjectPublicKeyInfo).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublicKey {
    pub id: String,
    pub algorithm: KeyAlgorithm,
    pub key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyAlgorithm {
    Ed25519,
    Es256,
    Rs256,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceCreated {
    pub organization_id: Uuid,
    pub parent_id: Option<Uuid>,
    pub instance_id: Option<String>,
    pub name: String,
    pub settings: serde_json::Value,
    pub webhook_uris: Vec<String>,
    pub public_keys: Vec<PublicKey>,
}

/// The changed fields, with their new whole values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceUpdated {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_uris: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_keys: Option<Vec<PublicKey>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceMoved {
    pub parent_id: Option<Uuid>,
}

/// A member's role in a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(feature = "postgres", derive(postgres_types::ToSql, postgres_types::FromSql))]
#[cfg_attr(feature = "postgres", postgres(name = "member_role"))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    #[cfg_attr(feature = "postgres", postgres(name = "owner"))]
    Owner,
    #[cfg_attr(feature = "postgres", postgres(name = "admin"))]
    Admin,
    #[cfg_attr(feature = "postgres", postgres(name = "member"))]
    Member,
    #[cfg_attr(feature = "postgres", postgres(name = "viewer"))]
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Member => "member",
            Self::Viewer => "viewer",
        }
    }
}

/// An invitation to join the workspace. Holds the token's peppered hash, never the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvitationCreated {
    pub invitation_id: Uuid,
    pub email: String,
    pub role: Role,
    pub token_hash: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvitationAccepted {
    pub invitation_id: Uuid,
    pub user_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvitationClosed {
    pub invitation_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberAdded {
    pub user_id: Uuid,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberRemoved {
    pub user_id: Uuid,
}

/// A new signing secret, sealed under the workspace's data key (never in plaintext). The
/// previous secret keeps verifying tokens until `previous_valid_until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceSecretIssued {
    pub version: i32,
    /// Hex of `nonce ‖ AES-256-GCM ciphertext`.
    pub sealed_secret: String,
    pub previous_valid_until: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkspaceEvent {
    WorkspaceCreated(WorkspaceCreated),
    WorkspaceUpdated(WorkspaceUpdated),
    WorkspaceMoved(WorkspaceMoved),
    WorkspaceArchived {},
    WorkspaceRestored {},
    WorkspaceDeleted {},
    InvitationCreated(InvitationCreated),
    InvitationAccepted(InvitationAccepted),
    InvitationDeclined(InvitationClosed),
    InvitationRevoked(InvitationClosed),
    MemberAdded(MemberAdded),
    MemberRoleChanged(MemberAdded),
    MemberRemoved(MemberRemoved),
    WorkspaceSecretIssued(WorkspaceSecretIssued),
    ExternalKeyAdded(ExternalKeyAdded),
    ExternalKeyDeleted(ExternalKeyDeleted),
    InteractionKeyCreated(InteractionKeyCreated),
    InteractionKeySecretClaimed(InteractionKeySecretClaimed),
    InteractionKeyRevoked(InteractionKeyRevoked),
}

impl DomainEvent for WorkspaceEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::WorkspaceCreated(_) => "WorkspaceCreated",
            Self::WorkspaceUpdated(_) => "WorkspaceUpdated",
            Self::WorkspaceMoved(_) => "WorkspaceMoved",
            Self::WorkspaceArchived {} => "WorkspaceArchived",
            Self::WorkspaceRestored {} => "WorkspaceRestored",
            Self::WorkspaceDeleted {} => "WorkspaceDeleted",
            Self::InvitationCreated(_) => "InvitationCreated",
            Self::InvitationAccepted(_) => "InvitationAccepted",
            Self::InvitationDeclined(_) => "InvitationDeclined",
            Self::InvitationRevoked(_) => "InvitationRevoked",
            Self::MemberAdded(_) => "MemberAdded",
            Self::MemberRoleChanged(_) => "MemberRoleChanged",
            Self::MemberRemoved(_) => "MemberRemoved",
            Self::WorkspaceSecretIssued(_) => "WorkspaceSecretIssued",
            Self::ExternalKeyAdded(_) => "ExternalKeyAdded",
            Self::ExternalKeyDeleted(_) => "ExternalKeyDeleted",
            Self::InteractionKeyCreated(_) => "InteractionKeyCreated",
            Self::InteractionKeySecretClaimed(_) => "InteractionKeySecretClaimed",
            Self::InteractionKeyRevoked(_) => "InteractionKeyRevoked",
        }
    }

    fn decode(event_type: &str, schema_version: i32, data: &serde_json::Value) -> Result<Self, DecodeError> {
        if schema_version != 1 {
            return Err(DecodeError::UnsupportedVersion { event_type: event_type.to_owned(), version: schema_version });
        }
        decode_tagged(event_type, data)
    }
}
