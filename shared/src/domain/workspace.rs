//! The workspace aggregate: a node of an organization's workspace tree.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Aggregate, DomainError, values};
use crate::events::workspace::{
    Destination, ExternalProvider, InvitationAccepted, InvitationClosed, InvitationCreated, MemberAdded, MemberRemoved,
    PublicKey, Role, WorkspaceCreated, WorkspaceEvent, WorkspaceMoved, WorkspaceUpdated,
};

/// A workspace's state. Serializable: instances keep it as their materialized state.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Workspace {
    pub exists: bool,
    pub deleted: bool,
    pub archived: bool,
    pub organization_id: Uuid,
    pub parent_id: Option<Uuid>,
    /// The instance that serves the workspace's data plane.
    pub instance_id: Option<String>,
    pub name: String,
    pub settings: serde_json::Value,
    pub webhook_uris: Vec<String>,
    pub public_keys: Vec<PublicKey>,
    pub members: BTreeMap<Uuid, Role>,
    pub invitations: BTreeMap<Uuid, Invitation>,
    /// Version of the current signing secret (0: none yet).
    pub secret_version: i32,
    /// Hex of the current secret, sealed under the workspace's data key.
    pub sealed_secret: Option<String>,
    pub previous_sealed_secret: Option<String>,
    pub previous_secret_valid_until: Option<DateTime<Utc>>,
    /// Third-party credentials, by id (deleted ones removed).
    #[serde(default)]
    pub external_keys: BTreeMap<Uuid, ExternalKey>,
    /// Live Interactions API keys, by id: a revoked key leaves the state (its row in the
    /// hub's read model keeps it listed as revoked), so neither the hub's cache nor an
    /// instance's copy of the state grows with keys created and deleted over time.
    #[serde(default)]
    pub interaction_keys: BTreeMap<Uuid, InteractionKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExternalKey {
    pub provider: ExternalProvider,
    pub name: String,
    pub key_hint: String,
    /// Hex of the credential sealed under the workspace's data key.
    pub sealed_api_key: String,
    pub settings: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InteractionKey {
    pub name: String,
    pub destination: Destination,
    pub source_app_id: Option<Uuid>,
    /// Hex of the key's peppered hash.
    pub key_hash: String,
    pub partial_key_hint: String,
    pub expires_at: Option<DateTime<Utc>>,
    /// With a source app: the unclaimed secret, sealed under its own data key.
    pub sealed_secret: Option<String>,
    pub secret_claimed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Invitation {
    pub email: String,
    pub role: Role,
    pub expires_at: DateTime<Utc>,
    pub status: InvitationStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "postgres", derive(postgres_types::ToSql, postgres_types::FromSql))]
#[cfg_attr(feature = "postgres", postgres(name = "invitation_status"))]
#[serde(rename_all = "snake_case")]
pub enum InvitationStatus {
    #[cfg_attr(feature = "postgres", postgres(name = "pending"))]
    Pending,
    #[cfg_attr(feature = "postgres", postgres(name = "accepted"))]
    Accepted,
    #[cfg_attr(feature = "postgres", postgres(name = "declined"))]
    Declined,
    #[cfg_attr(feature = "postgres", postgres(name = "revoked"))]
    Revoked,
}

impl Invitation {
    fn is_open(&self, now: DateTime<Utc>) -> bool {
        self.status == InvitationStatus::Pending && self.expires_at > now
    }
}

#[derive(Debug, Clone)]
pub struct NewWorkspace {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub parent_id: Option<Uuid>,
    pub instance_id: Option<String>,
    pub name: String,
    pub settings: Option<serde_json::Value>,
    pub webhook_uris: Option<Vec<String>>,
    pub public_keys: Option<Vec<PublicKey>>,
}

#[derive(Debug, Clone, Default)]
pub struct WorkspaceChanges {
    pub name: Option<String>,
    /// An RFC 7396 JSON merge patch of the settings.
    pub settings_patch: Option<serde_json::Value>,
    pub webhook_uris: Option<Vec<String>>,
    pub public_keys: Option<Vec<PublicKey>>,
}

#[derive(Debug, Clone)]
pub enum WorkspaceCommand {
    Create(Box<NewWorkspace>),
    Update(WorkspaceChanges),
    /// Move under another parent (`None`: to the root). The caller has checked, against
    /// the tree, that the new parent is not a descendant.
    Move {
        id: Uuid,
        parent_id: Option<Uuid>,
    },
    Archive,
    Restore,
    Delete,
    Invite {
        invitation_id: Uuid,
        email: String,
        role: Role,
        token_hash: Vec<u8>,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    Accept {
        invitation_id: Uuid,
        user_id: Uuid,
        now: DateTime<Utc>,
    },
    Decline {
        invitation_id: Uuid,
        now: DateTime<Utc>,
    },
    RevokeInvitation {
        invitation_id: Uuid,
    },
    ChangeRole {
        user_id: Uuid,
        role: Role,
    },
    RemoveMember {
        user_id: Uuid,
    },
    /// A third-party credential, sealed by the caller (see [`super::external_keys`]).
    AddExternalKey(Box<super::external_keys::NewExternalKey>),
    DeleteExternalKey {
        external_key_id: Uuid,
    },
    /// A new signing secret of version `secret_version + 1`, sealed by the caller.
    IssueSecret {
        version: i32,
        sealed_secret: Vec<u8>,
        grace_period: chrono::Duration,
        now: DateTime<Utc>,
    },
    /// A command on the workspace's Interactions API keys (see [`super::interaction_keys`]).
    InteractionKey(super::interaction_keys::InteractionKeyCommand),
    /// Partner app `app_id` was deleted: every key provisioned to it or routed to it is
    /// revoked (see `interaction_key_revocation`).
    RevokeAppKeys {
        app_id: Uuid,
    },
}

/// Longest grace period of a secret rotation.
pub const MAX_SECRET_GRACE_SECONDS: i64 = 30 * 24 * 3600;

pub const MAX_NAME_LENGTH: usize = 100;
pub const MAX_SETTINGS_BYTES: usize = 16 * 1024;
pub const MAX_WEBHOOK_URIS: usize = 10;
pub const MAX_PUBLIC_KEYS: usize = 10;
pub const MAX_PUBLIC_KEY_BYTES: usize = 8 * 1024;
/// Public keys the validator accepts (a subset: one line of base64 between the armor
/// lines, short enough for [`MAX_PUBLIC_KEY_BYTES`]).
pub const PUBLIC_KEY_PATTERN: &str =
    "^-----BEGIN PUBLIC KEY-----\n(?:[A-Za-z0-9+/]{4}){1,1000}\n-----END PUBLIC KEY-----$";
/// Deepest level of a workspace tree (a root is level 1). A cross-aggregate rule: the hub
/// checks it in the append transaction (constraint trigger `workspaces_depth`).
pub const MAX_DEPTH: usize = 32;

impl Aggregate for Workspace {
    type Event = WorkspaceEvent;
    type Command = WorkspaceCommand;

    const CATEGORY: &'static str = "workspace";

    fn apply(&mut self, event: &WorkspaceEvent) {
        match event {
            WorkspaceEvent::WorkspaceCreated(e) => {
                self.exists = true;
                self.organization_id = e.organization_id;
                self.parent_id = e.parent_id;
                self.instance_id.clone_from(&e.instance_id);
                self.name.clone_from(&e.name);
                self.settings = e.settings.clone();
                self.webhook_uris.clone_from(&e.webhook_uris);
                self.public_keys.clone_from(&e.public_keys);
            }
            WorkspaceEvent::WorkspaceUpdated(e) => {
                if let Some(name) = &e.name {
                    self.name.clone_from(name);
                }
                if let Some(settings) = &e.settings {
                    self.settings = settings.clone();
                }
                if let Some(uris) = &e.webhook_uris {
                    self.webhook_uris.clone_from(uris);
                }
                if let Some(keys) = &e.public_keys {
                    self.public_keys.clone_from(keys);
                }
            }
            WorkspaceEvent::WorkspaceMoved(e) => self.parent_id = e.parent_id,
            WorkspaceEvent::WorkspaceArchived {} => self.archived = true,
            WorkspaceEvent::WorkspaceRestored {} => self.archived = false,
            WorkspaceEvent::WorkspaceDeleted {} => self.deleted = true,
            WorkspaceEvent::InvitationCreated(e) => {
                self.invitations.insert(
                    e.invitation_id,
                    Invitation {
                        email: e.email.clone(),
                        role: e.role,
                        expires_at: e.expires_at,
                        status: InvitationStatus::Pending,
                    },
                );
            }
            WorkspaceEvent::InvitationAccepted(e) => self.close(e.invitation_id, InvitationStatus::Accepted),
            WorkspaceEvent::InvitationDeclined(e) => self.close(e.invitation_id, InvitationStatus::Declined),
            WorkspaceEvent::InvitationRevoked(e) => self.close(e.invitation_id, InvitationStatus::Revoked),
            WorkspaceEvent::MemberAdded(e) | WorkspaceEvent::MemberRoleChanged(e) => {
                self.members.insert(e.user_id, e.role);
            }
            WorkspaceEvent::MemberRemoved(e) => {
                self.members.remove(&e.user_id);
            }
            WorkspaceEvent::WorkspaceSecretIssued(e) => {
                self.previous_sealed_secret = self.sealed_secret.replace(e.sealed_secret.clone());
                self.previous_secret_valid_until = e.previous_valid_until;
                self.secret_version = e.version;
            }
            WorkspaceEvent::ExternalKeyAdded(e) => {
                self.external_keys.insert(
                    e.external_key_id,
                    ExternalKey {
                        provider: e.provider,
                        name: e.name.clone(),
                        key_hint: e.key_hint.clone(),
                        sealed_api_key: e.sealed_api_key.clone(),
                        settings: e.settings.clone(),
                    },
                );
            }
            WorkspaceEvent::ExternalKeyDeleted(e) => {
                self.external_keys.remove(&e.external_key_id);
            }
            WorkspaceEvent::InteractionKeyCreated(e) => {
                self.interaction_keys.insert(
                    e.interaction_key_id,
                    InteractionKey {
                        name: e.name.clone(),
                        destination: e.destination,
                        source_app_id: e.source_app_id,
                        key_hash: e.key_hash.clone(),
                        partial_key_hint: e.partial_key_hint.clone(),
                        expires_at: e.expires_at,
                        sealed_secret: e.sealed_secret.clone(),
                        secret_claimed: false,
                    },
                );
            }
            WorkspaceEvent::InteractionKeySecretClaimed(e) => {
                if let Some(key) = self.interaction_keys.get_mut(&e.interaction_key_id) {
                    key.secret_claimed = true;
                    key.sealed_secret = None;
                }
            }
            WorkspaceEvent::InteractionKeyRevoked(e) => {
                self.interaction_keys.remove(&e.interaction_key_id);
            }
        }
    }

    fn decide(&self, command: WorkspaceCommand) -> Result<Vec<WorkspaceEvent>, DomainError> {
        if let WorkspaceCommand::Create(new) = command {
            if self.exists {
                return Err(DomainError::conflict("already_exists", "the workspace already exists"));
            }
            if new.parent_id == Some(new.id) {
                return Err(DomainError::conflict("cycle", "a workspace cannot be its own parent"));
            }
            return Ok(vec![WorkspaceEvent::WorkspaceCreated(WorkspaceCreated {
                organization_id: new.organization_id,
                parent_id: new.parent_id,
                instance_id: new.instance_id,
                name: values::name("name", &new.name, MAX_NAME_LENGTH)?,
                settings: settings(merge(
                    serde_json::json!({}),
                    new.settings.unwrap_or_else(|| serde_json::json!({})),
                )?)?,
                webhook_uris: webhook_uris(new.webhook_uris.unwrap_or_default())?,
                public_keys: public_keys(new.public_keys.unwrap_or_default())?,
            })]);
        }
        if let WorkspaceCommand::RevokeAppKeys { app_id } = command {
            return Ok(self.revoke_app_keys(app_id));
        }
        if !self.exists || self.deleted {
            return Err(DomainError::NotFound("workspace"));
        }
        match command {
            WorkspaceCommand::Create(_) | WorkspaceCommand::RevokeAppKeys { .. } => unreachable!("handled above"),
            WorkspaceCommand::Archive if self.archived => Ok(vec![]),
            WorkspaceCommand::Archive => Ok(vec![WorkspaceEvent::WorkspaceArchived {}]),
            WorkspaceCommand::Restore if !self.archived => Ok(vec![]),
            WorkspaceCommand::Restore => Ok(vec![WorkspaceEvent::WorkspaceRestored {}]),
            WorkspaceCommand::Delete => Ok(vec![WorkspaceEvent::WorkspaceDeleted {}]),
            WorkspaceCommand::Accept { invitation_id, user_id, now } => {
                let invitation = self.open_invitation(invitation_id, now)?;
                let mut events =
                    vec![WorkspaceEvent::InvitationAccepted(InvitationAccepted { invitation_id, user_id })];
                match self.members.get(&user_id) {
                    None => events.push(WorkspaceEvent::MemberAdded(MemberAdded { user_id, role: invitation.role })),
                    Some(role) if *role != invitation.role => {
                        if *role == Role::Owner {
                            self.keep_an_owner(user_id)?;
                        }
                        events.push(WorkspaceEvent::MemberRoleChanged(MemberAdded { user_id, role: invitation.role }));
                    }
                    Some(_) => {}
                }
                Ok(events)
            }
            WorkspaceCommand::Decline { invitation_id, now } => {
                self.open_invitation(invitation_id, now)?;
                Ok(vec![WorkspaceEvent::InvitationDeclined(InvitationClosed { invitation_id })])
            }
            WorkspaceCommand::RevokeInvitation { invitation_id } => {
                let invitation = self.invitations.get(&invitation_id).ok_or(DomainError::NotFound("invitation"))?;
                if invitation.status != InvitationStatus::Pending {
                    return Err(DomainError::conflict("invitation_closed", "the invitation is no longer pending"));
                }
                Ok(vec![WorkspaceEvent::InvitationRevoked(InvitationClosed { invitation_id })])
            }
            WorkspaceCommand::ChangeRole { user_id, role } => {
                let current = *self.members.get(&user_id).ok_or(DomainError::NotFound("member"))?;
                if current == role {
                    return Ok(vec![]);
                }
                if current == Role::Owner {
                    self.keep_an_owner(user_id)?;
                }
                Ok(vec![WorkspaceEvent::MemberRoleChanged(MemberAdded { user_id, role })])
            }
            WorkspaceCommand::RemoveMember { user_id } => {
                let current = *self.members.get(&user_id).ok_or(DomainError::NotFound("member"))?;
                if current == Role::Owner {
                    self.keep_an_owner(user_id)?;
                }
                Ok(vec![WorkspaceEvent::MemberRemoved(MemberRemoved { user_id })])
            }
            // Its own rules say what an archived workspace allows.
            WorkspaceCommand::InteractionKey(command) => super::interaction_keys::decide(self, command),
            _ if self.archived => {
                Err(DomainError::conflict("workspace_archived", "restore the workspace before changing it"))
            }
            WorkspaceCommand::AddExternalKey(new) => super::external_keys::add(self, *new),
            WorkspaceCommand::DeleteExternalKey { external_key_id } => {
                super::external_keys::delete(self, external_key_id)
            }
            WorkspaceCommand::IssueSecret { version, sealed_secret, grace_period, now } => {
                if version != self.secret_version + 1 {
                    return Err(DomainError::conflict("concurrent_rotation", "the secret was rotated concurrently"));
                }
                let max = chrono::Duration::seconds(MAX_SECRET_GRACE_SECONDS);
                if grace_period < chrono::Duration::zero() || grace_period > max {
                    return Err(DomainError::invalid(
                        "grace_period_seconds",
                        "range",
                        format!("grace_period_seconds must be between 0 and {MAX_SECRET_GRACE_SECONDS}"),
                    ));
                }
                Ok(vec![WorkspaceEvent::WorkspaceSecretIssued(crate::events::workspace::WorkspaceSecretIssued {
                    version,
                    sealed_secret: hex::encode(sealed_secret),
                    previous_valid_until: (self.secret_version > 0).then(|| now + grace_period),
                })])
            }
            WorkspaceCommand::Invite { invitation_id, email, role, token_hash, expires_at, now } => {
                let email = values::email("email", &email)?;
                if expires_at <= now {
                    return Err(DomainError::invalid(
                        "expires_in_seconds",
                        "range",
                        "an invitation must expire in the future",
                    ));
                }
                let taken = self.invitations.values().any(|i| i.is_open(now) && i.email.eq_ignore_ascii_case(&email));
                if taken {
                    return Err(DomainError::conflict(
                        "invitation_pending",
                        "this email already has a pending invitation to this workspace",
                    ));
                }
                Ok(vec![WorkspaceEvent::InvitationCreated(InvitationCreated {
                    invitation_id,
                    email,
                    role,
                    token_hash: hex::encode(token_hash),
                    expires_at,
                })])
            }
            WorkspaceCommand::Move { id, parent_id } => {
                if parent_id == Some(id) {
                    return Err(DomainError::conflict("cycle", "a workspace cannot be its own parent"));
                }
                if parent_id == self.parent_id {
                    return Ok(vec![]);
                }
                Ok(vec![WorkspaceEvent::WorkspaceMoved(WorkspaceMoved { parent_id })])
            }
            WorkspaceCommand::Update(changes) => {
                let update = WorkspaceUpdated {
                    name: changes
                        .name
                        .map(|n| values::name("name", &n, MAX_NAME_LENGTH))
                        .transpose()?
                        .filter(|n| *n != self.name),
                    settings: changes
                        .settings_patch
                        .map(|patch| merge(self.settings.clone(), patch).and_then(settings))
                        .transpose()?
                        .filter(|s| *s != self.settings),
                    webhook_uris: changes
                        .webhook_uris
                        .map(webhook_uris)
                        .transpose()?
                        .filter(|u| *u != self.webhook_uris),
                    public_keys: changes.public_keys.map(public_keys).transpose()?.filter(|k| *k != self.public_keys),
                };
                if update == WorkspaceUpdated::default() {
                    return Ok(vec![]);
                }
                Ok(vec![WorkspaceEvent::WorkspaceUpdated(update)])
            }
        }
    }
}

impl Workspace {
    fn close(&mut self, invitation_id: Uuid, status: InvitationStatus) {
        if let Some(invitation) = self.invitations.get_mut(&invitation_id) {
            invitation.status = status;
        }
    }

    fn open_invitation(&self, invitation_id: Uuid, now: DateTime<Utc>) -> Result<&Invitation, DomainError> {
        let invitation = self.invitations.get(&invitation_id).ok_or(DomainError::NotFound("invitation"))?;
        if invitation.status != InvitationStatus::Pending {
            return Err(DomainError::Gone {
                code: "invitation_closed",
                detail: "this invitation was already answered or revoked".into(),
            });
        }
        if invitation.expires_at <= now {
            return Err(DomainError::Gone { code: "invitation_expired", detail: "this invitation has expired".into() });
        }
        Ok(invitation)
    }

    /// Refuses to leave the workspace without an owner once it has one.
    fn keep_an_owner(&self, leaving: Uuid) -> Result<(), DomainError> {
        let others = self.members.iter().filter(|(id, role)| **id != leaving && **role == Role::Owner).count();
        if others == 0 {
            return Err(DomainError::conflict("last_owner", "a workspace keeps at least one owner"));
        }
        Ok(())
    }
}

fn merge(mut target: serde_json::Value, patch: serde_json::Value) -> Result<serde_json::Value, DomainError> {
    if !patch.is_object() {
        return Err(DomainError::invalid("settings", "object", "settings must be a JSON object"));
    }
    json_patch::merge(&mut target, &patch);
    Ok(target)
}

/// Whether a JSON value holds a NUL character anywhere (keys included): PostgreSQL's
/// jsonb cannot store it.
fn holds_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(holds_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

pub(super) fn settings(value: serde_json::Value) -> Result<serde_json::Value, DomainError> {
    if holds_nul(&value) {
        return Err(DomainError::invalid("settings", "format", "settings must not contain NUL characters"));
    }
    if serde_json::to_vec(&value).map_or(usize::MAX, |b| b.len()) > MAX_SETTINGS_BYTES {
        return Err(DomainError::invalid(
            "settings",
            "max_size",
            format!("settings exceed {MAX_SETTINGS_BYTES} bytes"),
        ));
    }
    Ok(value)
}

fn webhook_uris(uris: Vec<String>) -> Result<Vec<String>, DomainError> {
    if uris.len() > MAX_WEBHOOK_URIS {
        return Err(DomainError::invalid(
            "webhook_uris",
            "max_items",
            format!("at most {MAX_WEBHOOK_URIS} webhook URIs"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(uris.len());
    for uri in uris {
        let uri = values::webhook_uri(&uri)?;
        if !out.contains(&uri) {
            out.push(uri);
        }
    }
    Ok(out)
}

fn public_keys(keys: Vec<PublicKey>) -> Result<Vec<PublicKey>, DomainError> {
    if keys.len() > MAX_PUBLIC_KEYS {
        return Err(DomainError::invalid("public_keys", "max_items", format!("at most {MAX_PUBLIC_KEYS} public keys")));
    }
    for (i, key) in keys.iter().enumerate() {
        values::name("public_keys", &key.id, 100)?;
        if keys[..i].iter().any(|k| k.id == key.id) {
            return Err(DomainError::invalid(
                "public_keys",
                "unique",
                format!("public key id `{}` appears twice", key.id),
            ));
        }
        if !is_public_key_pem(&key.key) {
            return Err(DomainError::invalid(
                "public_keys",
                "pem",
                format!("public key `{}` is not a PEM `PUBLIC KEY` block", key.id),
            ));
        }
    }
    Ok(keys)
}

fn is_public_key_pem(text: &str) -> bool {
    let text = text.trim();
    if text.len() > MAX_PUBLIC_KEY_BYTES {
        return false;
    }
    let Some(body) =
        text.strip_prefix("-----BEGIN PUBLIC KEY-----").and_then(|rest| rest.strip_suffix("-----END PUBLIC KEY-----"))
    else {
        return false;
    };
    let body: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    !body.is_empty()
        && body.len().is_multiple_of(4)
        && body.trim_end_matches('=').bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::testing::given;
    use crate::events::workspace::KeyAlgorithm;

    const PEM: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----";

    fn new(name: &str) -> NewWorkspace {
        NewWorkspace {
            id: Uuid::from_u128(1),
            organization_id: Uuid::from_u128(9),
            parent_id: None,
            instance_id: Some("embedded".into()),
            name: name.into(),
            settings: Some(serde_json::json!({"locale": "en", "limits": {"daily": 10}})),
            webhook_uris: Some(vec!["https://hooks.example.test/a".into()]),
            public_keys: None,
        }
    }

    fn created() -> WorkspaceEvent {
        WorkspaceEvent::WorkspaceCreated(WorkspaceCreated {
            organization_id: Uuid::from_u128(9),
            parent_id: None,
            instance_id: Some("embedded".into()),
            name: "Sales".into(),
            settings: serde_json::json!({"locale": "en", "limits": {"daily": 10}}),
            webhook_uris: vec!["https://hooks.example.test/a".into()],
            public_keys: vec![],
        })
    }

    fn update(changes: WorkspaceChanges) -> WorkspaceCommand {
        WorkspaceCommand::Update(changes)
    }

    #[test]
    fn creating_validates_every_field() {
        given::<Workspace>([]).when(WorkspaceCommand::Create(Box::new(new(" Sales ")))).then([created()]);
        let mut bad = new("Sales");
        bad.webhook_uris = Some(vec!["ftp://x.test".into()]);
        given::<Workspace>([])
            .when(WorkspaceCommand::Create(Box::new(bad)))
            .then_error(|e| matches!(e, DomainError::Invalid { field: "webhook_uris", .. }));
        let mut bad = new("Sales");
        bad.settings = Some(serde_json::json!([1, 2]));
        given::<Workspace>([])
            .when(WorkspaceCommand::Create(Box::new(bad)))
            .then_error(|e| matches!(e, DomainError::Invalid { field: "settings", .. }));
        let mut bad = new("Sales");
        bad.public_keys =
            Some(vec![PublicKey { id: "k1".into(), algorithm: KeyAlgorithm::Ed25519, key: "not pem".into() }]);
        given::<Workspace>([])
            .when(WorkspaceCommand::Create(Box::new(bad)))
            .then_error(|e| matches!(e, DomainError::Invalid { field: "public_keys", constraint: "pem", .. }));
        let mut good = new("Sales");
        good.public_keys = Some(vec![PublicKey { id: "k1".into(), algorithm: KeyAlgorithm::Ed25519, key: PEM.into() }]);
        assert!(Workspace::default().decide(WorkspaceCommand::Create(Box::new(good))).is_ok());
    }

    #[test]
    fn settings_change_by_json_merge_patch() {
        let patch = serde_json::json!({"locale": null, "limits": {"monthly": 300}, "theme": "dark"});
        given::<Workspace>([created()])
            .when(update(WorkspaceChanges { settings_patch: Some(patch), ..Default::default() }))
            .then([WorkspaceEvent::WorkspaceUpdated(WorkspaceUpdated {
                settings: Some(serde_json::json!({"limits": {"daily": 10, "monthly": 300}, "theme": "dark"})),
                ..Default::default()
            })]);
        given::<Workspace>([created()])
            .when(update(WorkspaceChanges {
                settings_patch: Some(serde_json::json!({"locale": "en"})),
                ..Default::default()
            }))
            .then([]);
    }

    #[test]
    fn a_workspace_is_never_its_own_parent() {
        given::<Workspace>([created()])
            .when(WorkspaceCommand::Move { id: Uuid::from_u128(1), parent_id: Some(Uuid::from_u128(1)) })
            .then_error(|e| matches!(e, DomainError::Conflict { code: "cycle", .. }));
    }

    #[test]
    fn an_archived_workspace_must_be_restored_before_changes() {
        let archived = [created(), WorkspaceEvent::WorkspaceArchived {}];
        given::<Workspace>(archived.clone())
            .when(update(WorkspaceChanges { name: Some("New".into()), ..Default::default() }))
            .then_error(|e| matches!(e, DomainError::Conflict { code: "workspace_archived", .. }));
        given::<Workspace>(archived.clone()).when(WorkspaceCommand::Archive).then([]);
        given::<Workspace>(archived).when(WorkspaceCommand::Restore).then([WorkspaceEvent::WorkspaceRestored {}]);
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn invited(id: u128, email: &str, role: Role) -> WorkspaceEvent {
        WorkspaceEvent::InvitationCreated(InvitationCreated {
            invitation_id: Uuid::from_u128(id),
            email: email.into(),
            role,
            token_hash: "aa".into(),
            expires_at: at(100),
        })
    }

    fn invite(id: u128, email: &str, now: i64) -> WorkspaceCommand {
        WorkspaceCommand::Invite {
            invitation_id: Uuid::from_u128(id),
            email: email.into(),
            role: Role::Member,
            token_hash: vec![0xaa],
            expires_at: at(now + 100),
            now: at(now),
        }
    }

    #[test]
    fn one_pending_invitation_per_email() {
        given::<Workspace>([created(), invited(5, "ada@x.test", Role::Member)])
            .when(invite(6, "ADA@x.test", 0))
            .then_error(|e| matches!(e, DomainError::Conflict { code: "invitation_pending", .. }));
        // Once the first has expired, a new one may be sent.
        assert!(given::<Workspace>([created(), invited(5, "ada@x.test", Role::Member)]).state_decides(invite(
            6,
            "ada@x.test",
            200
        )));
        given::<Workspace>([created()])
            .when(invite(6, "not-an-email", 0))
            .then_error(|e| matches!(e, DomainError::Invalid { field: "email", .. }));
    }

    #[test]
    fn accepting_adds_the_member_once_and_the_token_works_once() {
        let user = Uuid::from_u128(42);
        let id = Uuid::from_u128(5);
        let accept = |now| WorkspaceCommand::Accept { invitation_id: id, user_id: user, now: at(now) };
        let accepted = WorkspaceEvent::InvitationAccepted(InvitationAccepted { invitation_id: id, user_id: user });
        let state = given::<Workspace>([created(), invited(5, "ada@x.test", Role::Admin)])
            .when(accept(10))
            .then([accepted.clone(), WorkspaceEvent::MemberAdded(MemberAdded { user_id: user, role: Role::Admin })]);
        assert_eq!(state.members.get(&user), Some(&Role::Admin));
        given::<Workspace>([created(), invited(5, "ada@x.test", Role::Admin), accepted])
            .when(accept(11))
            .then_error(|e| matches!(e, DomainError::Gone { code: "invitation_closed", .. }));
        given::<Workspace>([created(), invited(5, "ada@x.test", Role::Admin)])
            .when(accept(101))
            .then_error(|e| matches!(e, DomainError::Gone { code: "invitation_expired", .. }));
        let revoked = WorkspaceEvent::InvitationRevoked(InvitationClosed { invitation_id: id });
        given::<Workspace>([created(), invited(5, "ada@x.test", Role::Admin), revoked])
            .when(WorkspaceCommand::Decline { invitation_id: id, now: at(1) })
            .then_error(|e| matches!(e, DomainError::Gone { .. }));
    }

    #[test]
    fn accepting_a_lower_role_cannot_demote_the_last_owner() {
        let ada = Uuid::from_u128(1);
        given::<Workspace>([
            created(),
            WorkspaceEvent::MemberAdded(MemberAdded { user_id: ada, role: Role::Owner }),
            invited(5, "ada@x.test", Role::Viewer),
        ])
        .when(WorkspaceCommand::Accept { invitation_id: Uuid::from_u128(5), user_id: ada, now: at(1) })
        .then_error(|e| matches!(e, DomainError::Conflict { code: "last_owner", .. }));
    }

    #[test]
    fn the_last_owner_can_be_neither_removed_nor_demoted() {
        let (ada, bob) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let owners = [
            created(),
            WorkspaceEvent::MemberAdded(MemberAdded { user_id: ada, role: Role::Owner }),
            WorkspaceEvent::MemberAdded(MemberAdded { user_id: bob, role: Role::Member }),
        ];
        given::<Workspace>(owners.clone())
            .when(WorkspaceCommand::RemoveMember { user_id: ada })
            .then_error(|e| matches!(e, DomainError::Conflict { code: "last_owner", .. }));
        given::<Workspace>(owners.clone())
            .when(WorkspaceCommand::ChangeRole { user_id: ada, role: Role::Admin })
            .then_error(|e| matches!(e, DomainError::Conflict { code: "last_owner", .. }));
        let two_owners = given::<Workspace>(owners.clone())
            .when(WorkspaceCommand::ChangeRole { user_id: bob, role: Role::Owner })
            .then([WorkspaceEvent::MemberRoleChanged(MemberAdded { user_id: bob, role: Role::Owner })]);
        assert_eq!(two_owners.decide(WorkspaceCommand::RemoveMember { user_id: ada }).map(|e| e.len()), Ok(1));
        given::<Workspace>(owners)
            .when(WorkspaceCommand::RemoveMember { user_id: Uuid::from_u128(9) })
            .then_error(|e| *e == DomainError::NotFound("member"));
    }

    #[test]
    fn each_secret_follows_the_last_and_the_previous_one_keeps_a_grace_period() {
        let issue = |version, now| WorkspaceCommand::IssueSecret {
            version,
            sealed_secret: vec![version as u8],
            grace_period: chrono::Duration::seconds(60),
            now: at(now),
        };
        let first = given::<Workspace>([created()]).when(issue(1, 0)).then([WorkspaceEvent::WorkspaceSecretIssued(
            crate::events::workspace::WorkspaceSecretIssued {
                version: 1,
                sealed_secret: "01".into(),
                previous_valid_until: None,
            },
        )]);
        let events = first.decide(issue(2, 10)).unwrap();
        let mut second = first.clone();
        events.iter().for_each(|e| second.apply(e));
        assert_eq!(second.secret_version, 2);
        assert_eq!(second.previous_sealed_secret.as_deref(), Some("01"));
        assert_eq!(second.previous_secret_valid_until, Some(at(70)));
        assert!(matches!(second.decide(issue(2, 11)), Err(DomainError::Conflict { code: "concurrent_rotation", .. })));
    }

    #[test]
    fn a_deleted_workspace_is_gone() {
        given::<Workspace>([created(), WorkspaceEvent::WorkspaceDeleted {}])
            .when(WorkspaceCommand::Archive)
            .then_error(|e| *e == DomainError::NotFound("workspace"));
    }
}
