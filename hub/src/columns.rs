//! The statuses, roles and kinds stored in read-model columns, as the PostgreSQL enum
//! types of migration V13: the projections bind them when they write a row and the
//! readers get them back when they map one, so neither side compares strings. A `&str`
//! bound where one of these types is expected fails at run time, so every parameter for
//! these columns is the enum. In JSON they are the same lowercase strings as in SQL.
//!
//! The enums the domain already has are derived in `shared` (feature `postgres`): a
//! member's role, an invitation's status and the type of the actor that created a key.

use postgres_types::{FromSql, ToSql};
use serde::Serialize;

pub use shared::domain::workspace::InvitationStatus;
pub use shared::events::workspace::Role;
pub use shared::metadata::ActorType;

/// `organizations.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSql, FromSql)]
#[serde(rename_all = "snake_case")]
#[postgres(name = "organization_status")]
pub enum OrganizationStatus {
    #[postgres(name = "active")]
    Active,
    #[postgres(name = "deleted")]
    Deleted,
}

/// `workspaces.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSql, FromSql)]
#[serde(rename_all = "snake_case")]
#[postgres(name = "workspace_status")]
pub enum WorkspaceStatus {
    #[postgres(name = "active")]
    Active,
    #[postgres(name = "archived")]
    Archived,
    #[postgres(name = "deleted")]
    Deleted,
}

impl WorkspaceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Archived => "archived",
            Self::Deleted => "deleted",
        }
    }
}

/// `users.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSql, FromSql)]
#[serde(rename_all = "snake_case")]
#[postgres(name = "user_status")]
pub enum UserStatus {
    #[postgres(name = "active")]
    Active,
    #[postgres(name = "disabled")]
    Disabled,
    #[postgres(name = "deleted")]
    Deleted,
}

/// `outbox.status`: see the sender in [`crate::mail`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSql, FromSql)]
#[serde(rename_all = "snake_case")]
#[postgres(name = "outbox_status")]
pub enum OutboxStatus {
    #[postgres(name = "pending")]
    Pending,
    #[postgres(name = "sending")]
    Sending,
    #[postgres(name = "sent")]
    Sent,
    #[postgres(name = "failed")]
    Failed,
    #[postgres(name = "unknown")]
    Unknown,
}

/// `outbox.kind`: which email a row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSql, FromSql)]
#[serde(rename_all = "snake_case")]
#[postgres(name = "email_kind")]
pub enum EmailKind {
    #[postgres(name = "invitation")]
    Invitation,
    /// To a workspace's owners: a key was generated for a source app.
    #[postgres(name = "interaction_key_generated")]
    InteractionKeyGenerated,
    /// To a destination app's contact: a new key is routed to the app.
    #[postgres(name = "interaction_key_routed")]
    InteractionKeyRouted,
}
