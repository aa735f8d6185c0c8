//! `audit_log`: one row per event of the log, saying who (the actor of the event's
//! metadata, with the address and request it came from) did what (the event type) to which
//! resource of which organization and workspace, with the event's data.
//!
//! The data is copied through an allow-list per event type: a field is shown only when the
//! rule of its event type names it, every other field's value is replaced by
//! [`REDACTED`]. A field added to an event later is therefore hidden until someone decides
//! it may be shown, and the rules are exhaustive matches on the typed events, so a new
//! event type does not compile until it has its rule.
//!
//! Rows are written for a whole batch of events at once (one `INSERT ... unnest` per
//! batch, whatever the number of commits in it), after the batch's other read-model
//! statements: an event that does not carry its organization finds it in the row of its
//! workspace, key or user, which those statements have written by then.

use serde::Deserialize;
use shared::events::{ApiKeyEvent, AppEvent, OrganizationEvent, UserEvent, WorkspaceEvent};
use shared::metadata::{ActorType, Metadata};
use shared::{DecodeError, RecordedEvent};
use uuid::Uuid;

use super::{SqlStep, params};

/// What a field outside its event type's allow-list shows instead of its value.
pub const REDACTED: &str = "[redacted]";

/// Every event type of the domain, as stored in the log's `event_type` column.
pub const EVENT_TYPES: [&str; 36] = [
    "OrganizationCreated",
    "OrganizationUpdated",
    "OrganizationSettingsChanged",
    "OrganizationLimitsChanged",
    "OrganizationDeleted",
    "ApiKeyCreated",
    "ApiKeyUpdated",
    "ApiKeyRotated",
    "ApiKeyRevoked",
    "ApiKeyWorkspacesRemoved",
    "UserCreated",
    "UserRenamed",
    "UserDisabled",
    "UserEnabled",
    "UserDeleted",
    "WorkspaceCreated",
    "WorkspaceUpdated",
    "WorkspaceMoved",
    "WorkspaceArchived",
    "WorkspaceRestored",
    "WorkspaceDeleted",
    "InvitationCreated",
    "InvitationAccepted",
    "InvitationDeclined",
    "InvitationRevoked",
    "MemberAdded",
    "MemberRoleChanged",
    "MemberRemoved",
    "WorkspaceSecretIssued",
    "ExternalKeyAdded",
    "ExternalKeyDeleted",
    "InteractionKeyCreated",
    "InteractionKeySecretClaimed",
    "InteractionKeyRevoked",
    "AppRegistered",
    "AppRevoked",
];

/// The kind of resource an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceType {
    Organization,
    Workspace,
    ApiKey,
    User,
    Invitation,
    /// A user's membership of the row's workspace; its id is the user's.
    Member,
    ExternalKey,
    InteractionKey,
    /// A technology partner app: of no organization, shown to the operator only.
    App,
}

impl ResourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Organization => "organization",
            Self::Workspace => "workspace",
            Self::ApiKey => "api_key",
            Self::User => "user",
            Self::Invitation => "invitation",
            Self::Member => "member",
            Self::ExternalKey => "external_key",
            Self::InteractionKey => "interaction_key",
            Self::App => "app",
        }
    }
}

/// Where an event belongs and which of its fields may be shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Known from the event itself; otherwise looked up from the resource's row.
    pub organization_id: Option<Uuid>,
    pub workspace_id: Option<Uuid>,
    pub resource: (ResourceType, Uuid),
    /// The fields of the event's data shown as they are.
    pub shown: &'static [&'static str],
}

fn organization_rule(id: Uuid, event: &OrganizationEvent) -> Rule {
    let shown: &'static [&'static str] = match event {
        OrganizationEvent::OrganizationCreated(_) | OrganizationEvent::OrganizationUpdated(_) => {
            &["name", "email", "plan"]
        }
        OrganizationEvent::OrganizationSettingsChanged(_) => &["rate_limit_per_minute", "max_key_lifetime_days"],
        OrganizationEvent::OrganizationLimitsChanged(_) => &["rate_limit_ceiling_per_minute", "quotas"],
        OrganizationEvent::OrganizationDeleted {} => &[],
    };
    Rule { organization_id: Some(id), workspace_id: None, resource: (ResourceType::Organization, id), shown }
}

/// A key's events belong to its organization, not to a workspace, even when the key is
/// restricted to some: a restriction names several subtrees and changes over time.
fn api_key_rule(id: Uuid, event: &ApiKeyEvent) -> Rule {
    let (organization_id, shown): (_, &'static [&'static str]) = match event {
        // Not `key_hash`: the peppered hash of the key.
        ApiKeyEvent::ApiKeyCreated(e) => (
            Some(e.organization_id),
            &[
                "organization_id",
                "name",
                "scopes",
                "workspace_ids",
                "expires_at",
                "allowed_ips",
                "owner_user_id",
                "created_by",
                "partial_key_hint",
            ],
        ),
        ApiKeyEvent::ApiKeyUpdated(_) => (None, &["name", "scopes"]),
        // Not `key_hash` either.
        ApiKeyEvent::ApiKeyRotated(_) => (None, &["partial_key_hint", "previous_key_expires_at"]),
        ApiKeyEvent::ApiKeyRevoked {} => (None, &[]),
        ApiKeyEvent::ApiKeyWorkspacesRemoved(_) => (None, &["workspace_ids"]),
    };
    Rule { organization_id, workspace_id: None, resource: (ResourceType::ApiKey, id), shown }
}

fn user_rule(id: Uuid, event: &UserEvent) -> Rule {
    let (organization_id, shown): (_, &'static [&'static str]) = match event {
        UserEvent::UserCreated(e) => (Some(e.organization_id), &["organization_id", "email", "name"]),
        UserEvent::UserRenamed(_) => (None, &["name"]),
        UserEvent::UserDisabled {} | UserEvent::UserEnabled {} | UserEvent::UserDeleted {} => (None, &[]),
    };
    Rule { organization_id, workspace_id: None, resource: (ResourceType::User, id), shown }
}

fn app_rule(id: Uuid, event: &AppEvent) -> Rule {
    let shown: &'static [&'static str] = match event {
        // Not `key_hash`: the peppered hash of the app key.
        AppEvent::AppRegistered(_) => &["name", "kind", "contact_email", "partial_key_hint"],
        AppEvent::AppRevoked {} => &[],
    };
    Rule { organization_id: None, workspace_id: None, resource: (ResourceType::App, id), shown }
}

fn workspace_rule(id: Uuid, event: &WorkspaceEvent) -> Rule {
    let workspace = (ResourceType::Workspace, id);
    let (organization_id, resource, shown): (_, _, &'static [&'static str]) = match event {
        WorkspaceEvent::WorkspaceCreated(e) => (
            Some(e.organization_id),
            workspace,
            &["organization_id", "parent_id", "instance_id", "name", "settings", "webhook_uris", "public_keys"],
        ),
        WorkspaceEvent::WorkspaceUpdated(_) => (None, workspace, &["name", "settings", "webhook_uris", "public_keys"]),
        WorkspaceEvent::WorkspaceMoved(_) => (None, workspace, &["parent_id"]),
        WorkspaceEvent::WorkspaceArchived {}
        | WorkspaceEvent::WorkspaceRestored {}
        | WorkspaceEvent::WorkspaceDeleted {} => (None, workspace, &[]),
        // Not `token_hash`: the peppered hash of the emailed token.
        WorkspaceEvent::InvitationCreated(e) => {
            (None, (ResourceType::Invitation, e.invitation_id), &["invitation_id", "email", "role", "expires_at"])
        }
        WorkspaceEvent::InvitationAccepted(e) => {
            (None, (ResourceType::Invitation, e.invitation_id), &["invitation_id", "user_id"])
        }
        WorkspaceEvent::InvitationDeclined(e) | WorkspaceEvent::InvitationRevoked(e) => {
            (None, (ResourceType::Invitation, e.invitation_id), &["invitation_id"])
        }
        WorkspaceEvent::MemberAdded(e) | WorkspaceEvent::MemberRoleChanged(e) => {
            (None, (ResourceType::Member, e.user_id), &["user_id", "role"])
        }
        WorkspaceEvent::MemberRemoved(e) => (None, (ResourceType::Member, e.user_id), &["user_id"]),
        // Not `sealed_secret`: the signing secret, sealed.
        WorkspaceEvent::WorkspaceSecretIssued(_) => (None, workspace, &["version", "previous_valid_until"]),
        // Not `sealed_api_key`: the credential, sealed.
        WorkspaceEvent::ExternalKeyAdded(e) => (
            None,
            (ResourceType::ExternalKey, e.external_key_id),
            &["external_key_id", "provider", "name", "key_hint", "settings", "created_by"],
        ),
        WorkspaceEvent::ExternalKeyDeleted(e) => {
            (None, (ResourceType::ExternalKey, e.external_key_id), &["external_key_id"])
        }
        // Not `key_hash` nor `sealed_secret`: the key's hash and its withheld secret.
        WorkspaceEvent::InteractionKeyCreated(e) => (
            None,
            (ResourceType::InteractionKey, e.interaction_key_id),
            &[
                "interaction_key_id",
                "name",
                "destination",
                "source_app_id",
                "partial_key_hint",
                "expires_at",
                "created_by",
            ],
        ),
        WorkspaceEvent::InteractionKeySecretClaimed(e) => {
            (None, (ResourceType::InteractionKey, e.interaction_key_id), &["interaction_key_id", "app_id", "ip"])
        }
        WorkspaceEvent::InteractionKeyRevoked(e) => {
            (None, (ResourceType::InteractionKey, e.interaction_key_id), &["interaction_key_id", "reason"])
        }
    };
    Rule { organization_id, workspace_id: Some(id), resource, shown }
}

/// The rule of a recorded event, from its stream and its typed payload.
pub fn rule(event: &RecordedEvent) -> Result<Rule, RuleError> {
    let unknown = || RuleError::UnknownStream(event.stream_id.clone());
    let (category, id) = event.stream_id.split_once('-').ok_or_else(unknown)?;
    let id: Uuid = id.parse().map_err(|_| unknown())?;
    Ok(match category {
        "org" => organization_rule(id, &event.decode()?),
        "key" => api_key_rule(id, &event.decode()?),
        "user" => user_rule(id, &event.decode()?),
        "workspace" => workspace_rule(id, &event.decode()?),
        "app" => app_rule(id, &event.decode()?),
        _ => return Err(unknown()),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("stream id `{0}` names no known aggregate")]
    UnknownStream(String),
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// The event's data as the audit log shows it: the fields `shown` as they are, every
/// other field's value replaced by [`REDACTED`] (the name stays, so a reader sees that
/// it was set). A payload that is not an object is hidden whole.
pub fn redact(data: &serde_json::Value, shown: &[&str]) -> serde_json::Value {
    match data {
        serde_json::Value::Object(fields) => fields
            .iter()
            .map(|(name, value)| {
                let value = if shown.contains(&name.as_str()) { value.clone() } else { REDACTED.into() };
                (name.clone(), value)
            })
            .collect(),
        serde_json::Value::Null => serde_json::Value::Null,
        _ => REDACTED.into(),
    }
}

/// The batch's rows as column arrays.
#[derive(Default)]
struct Rows {
    position: Vec<i64>,
    id: Vec<Uuid>,
    event_type: Vec<String>,
    recorded_at: Vec<chrono::DateTime<chrono::Utc>>,
    actor_type: Vec<ActorType>,
    actor_id: Vec<Option<String>>,
    actor_ip: Vec<Option<String>>,
    organization_id: Vec<Option<Uuid>>,
    workspace_id: Vec<Option<Uuid>>,
    resource_type: Vec<&'static str>,
    resource_id: Vec<Uuid>,
    data: Vec<serde_json::Value>,
    request_id: Vec<Option<String>>,
}

impl Rows {
    fn push(&mut self, event: &RecordedEvent) {
        // Every event the writer accepted was decoded by its reducer first; should one
        // still fail here, its row shows no data and is filed under the stream's own
        // resource, rather than the batch being refused.
        let rule = rule(event).unwrap_or_else(|_| fallback_rule(&event.stream_id));
        // Metadata is always written from `Metadata`; unreadable, it names no one.
        let metadata = Metadata::deserialize(&event.metadata).unwrap_or_else(|_| Metadata::system());
        self.position.push(event.position);
        self.id.push(event.event_id);
        self.event_type.push(event.event_type.clone());
        self.recorded_at.push(event.recorded_at);
        self.actor_type.push(metadata.actor.kind);
        self.actor_id.push(metadata.actor.id);
        self.actor_ip.push(metadata.actor.ip);
        self.organization_id.push(rule.organization_id);
        self.workspace_id.push(rule.workspace_id);
        self.resource_type.push(rule.resource.0.as_str());
        self.resource_id.push(rule.resource.1);
        self.data.push(redact(&event.data, rule.shown));
        self.request_id.push(metadata.request_id);
    }
}

/// The rule of an event whose payload cannot be read: everything hidden.
fn fallback_rule(stream_id: &str) -> Rule {
    let (category, id) = stream_id.split_once('-').unwrap_or_default();
    let id = id.parse().unwrap_or_default();
    let (kind, workspace_id, organization_id) = match category {
        "workspace" => (ResourceType::Workspace, Some(id), None),
        "key" => (ResourceType::ApiKey, None, None),
        "user" => (ResourceType::User, None, None),
        "app" => (ResourceType::App, None, None),
        _ => (ResourceType::Organization, None, Some(id)),
    };
    Rule { organization_id, workspace_id, resource: (kind, id), shown: &[] }
}

/// One statement writing the rows of `events` (none for no events). Runs after the
/// events' other read-model statements (see the module documentation).
pub fn insert(events: &[&RecordedEvent]) -> Option<SqlStep> {
    if events.is_empty() {
        return None;
    }
    let mut rows = Rows::default();
    for event in events {
        rows.push(event);
    }
    Some(SqlStep::new(
        "INSERT INTO audit_log (position, id, event_type, recorded_at, actor_type, actor_id, actor_ip, \
         organization_id, workspace_id, resource_type, resource_id, data, request_id) \
         SELECT e.position, e.id, e.event_type, e.recorded_at, e.actor_type, e.actor_id, e.actor_ip, \
         COALESCE(e.organization_id, w.organization_id, k.organization_id, u.organization_id), \
         e.workspace_id, e.resource_type, e.resource_id, e.data, e.request_id \
         FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::timestamptz[], $5::actor_type[], $6::text[], \
         $7::text[], $8::uuid[], $9::uuid[], $10::text[], $11::uuid[], $12::jsonb[], $13::text[]) \
         AS e(position, id, event_type, recorded_at, actor_type, actor_id, actor_ip, organization_id, \
         workspace_id, resource_type, resource_id, data, request_id) \
         LEFT JOIN workspaces w ON e.organization_id IS NULL AND w.id = e.workspace_id \
         LEFT JOIN api_keys k ON e.organization_id IS NULL AND e.resource_type = 'api_key' AND k.id = e.resource_id \
         LEFT JOIN users u ON e.organization_id IS NULL AND e.resource_type = 'user' AND u.id = e.resource_id",
        params![
            rows.position,
            rows.id,
            rows.event_type,
            rows.recorded_at,
            rows.actor_type,
            rows.actor_id,
            rows.actor_ip,
            rows.organization_id,
            rows.workspace_id,
            rows.resource_type,
            rows.resource_id,
            rows.data,
            rows.request_id,
        ],
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use shared::DomainEvent;

    use super::*;

    /// The variants serde knows for an event enum, read from its "unknown variant" error:
    /// a list nobody maintains by hand, so a new variant cannot be missed.
    fn variants<E: DomainEvent + std::fmt::Debug>() -> Vec<String> {
        let error = serde_json::from_value::<E>(json!({"?": {}})).unwrap_err().to_string();
        // "expected one of `A`, `B`, `C`", or "expected `A` or `B`" for two.
        let (_, listed) = error
            .split_once("expected one of ")
            .or_else(|| error.split_once("expected "))
            .expect("serde lists the variants");
        listed
            .split(", ")
            .flat_map(|v| v.split(" or "))
            .map(|v| v.trim_matches(|c: char| c == '`' || c.is_whitespace()).to_owned())
            .collect()
    }

    #[test]
    fn the_event_types_are_every_variant_of_every_aggregate() {
        let mut known: Vec<String> = [
            variants::<OrganizationEvent>(),
            variants::<ApiKeyEvent>(),
            variants::<UserEvent>(),
            variants::<WorkspaceEvent>(),
            variants::<AppEvent>(),
        ]
        .concat();
        known.sort();
        let mut listed: Vec<String> = EVENT_TYPES.iter().map(|t| (*t).to_owned()).collect();
        listed.sort();
        assert_eq!(listed, known, "EVENT_TYPES must name every event type of the domain, and only those");
    }

    /// Values no audit entry may show.
    const KEY_HASH: &str = "4b4559484153480000000000000000000000000000000000000000000000aaaa";
    const TOKEN_HASH: &str = "544f4b454e484153480000000000000000000000000000000000000000bbbb";
    const SEALED: &str = "5345414c4544000000000000000000000000000000000000000000000000cccc";

    /// A stream and a payload of `event_type`, with every secret field set.
    fn sample(event_type: &str) -> (String, serde_json::Value) {
        let (org, ws, key, user, other) =
            (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let (org_stream, ws_stream) = (format!("org-{org}"), format!("workspace-{ws}"));
        let (key_stream, user_stream) = (format!("key-{key}"), format!("user-{user}"));
        let app_stream = format!("app-{other}");
        let at = "2026-11-26T10:00:00Z";
        match event_type {
            "OrganizationCreated" => (org_stream, json!({"name": "Acme", "email": "ops@acme.test", "plan": "pro"})),
            "OrganizationUpdated" => (org_stream, json!({"name": "Acme 2"})),
            "OrganizationSettingsChanged" => {
                (org_stream, json!({"rate_limit_per_minute": 10, "max_key_lifetime_days": 30}))
            }
            "OrganizationLimitsChanged" => (
                org_stream,
                json!({"rate_limit_ceiling_per_minute": 100, "quotas": {"workspaces": 1, "api_keys": 2,
                    "interaction_keys": 3, "pending_invitations": 4}}),
            ),
            "OrganizationDeleted" => (org_stream, json!({})),
            "ApiKeyCreated" => (
                key_stream,
                json!({"organization_id": org, "name": "k", "scopes": ["keys:read"], "workspace_ids": [ws],
                    "expires_at": at, "allowed_ips": ["10.0.0.0/8"], "owner_user_id": user,
                    "created_by": {"type": "operator", "id": null}, "key_hash": KEY_HASH, "partial_key_hint": "ak_...a1"}),
            ),
            "ApiKeyUpdated" => (key_stream, json!({"name": "renamed"})),
            "ApiKeyRotated" => (
                key_stream,
                json!({"key_hash": KEY_HASH, "partial_key_hint": "ak_...b2", "previous_key_expires_at": at}),
            ),
            "ApiKeyRevoked" => (key_stream, json!({})),
            "ApiKeyWorkspacesRemoved" => (key_stream, json!({"workspace_ids": [ws]})),
            "UserCreated" => (user_stream, json!({"organization_id": org, "email": "ada@x.test", "name": "Ada"})),
            "UserRenamed" => (user_stream, json!({"name": "Ada L."})),
            "UserDisabled" | "UserEnabled" | "UserDeleted" => (user_stream, json!({})),
            "WorkspaceCreated" => (
                ws_stream,
                json!({"organization_id": org, "parent_id": null, "instance_id": "alpha", "name": "Sales",
                    "settings": {}, "webhook_uris": [], "public_keys": []}),
            ),
            "WorkspaceUpdated" => (ws_stream, json!({"name": "Sales 2"})),
            "WorkspaceMoved" => (ws_stream, json!({"parent_id": other})),
            "WorkspaceArchived" | "WorkspaceRestored" | "WorkspaceDeleted" => (ws_stream, json!({})),
            "InvitationCreated" => (
                ws_stream,
                json!({"invitation_id": other, "email": "bob@x.test", "role": "member", "token_hash": TOKEN_HASH,
                    "expires_at": at}),
            ),
            "InvitationAccepted" => (ws_stream, json!({"invitation_id": other, "user_id": user})),
            "InvitationDeclined" | "InvitationRevoked" => (ws_stream, json!({"invitation_id": other})),
            "MemberAdded" | "MemberRoleChanged" => (ws_stream, json!({"user_id": user, "role": "admin"})),
            "MemberRemoved" => (ws_stream, json!({"user_id": user})),
            "WorkspaceSecretIssued" => {
                (ws_stream, json!({"version": 2, "sealed_secret": SEALED, "previous_valid_until": at}))
            }
            "ExternalKeyAdded" => (
                ws_stream,
                json!({"external_key_id": other, "provider": "van", "name": "VAN", "key_hint": "x9Zq",
                    "sealed_api_key": SEALED, "settings": {}, "created_by": {"type": "api_key", "id": "k1"}}),
            ),
            "ExternalKeyDeleted" => (ws_stream, json!({"external_key_id": other})),
            "InteractionKeyCreated" => (
                ws_stream,
                json!({"interaction_key_id": other, "name": "ik", "destination": {"type": "app", "app_id": key},
                    "source_app_id": user, "key_hash": KEY_HASH, "partial_key_hint": "ik_...c3", "expires_at": at,
                    "sealed_secret": SEALED, "created_by": {"type": "operator", "id": null}}),
            ),
            "InteractionKeySecretClaimed" => {
                (ws_stream, json!({"interaction_key_id": other, "app_id": user, "ip": "192.0.2.9"}))
            }
            "InteractionKeyRevoked" => (ws_stream, json!({"interaction_key_id": other, "reason": "deleted"})),
            "AppRegistered" => (
                app_stream,
                json!({"name": "Partner", "kind": "source", "contact_email": "p@x.test", "key_hash": KEY_HASH,
                    "partial_key_hint": "pak_...d4"}),
            ),
            "AppRevoked" => (app_stream, json!({})),
            other => panic!("no sample of `{other}`: add one"),
        }
    }

    fn recorded(event_type: &str) -> RecordedEvent {
        let (stream_id, data) = sample(event_type);
        RecordedEvent {
            position: 1,
            stream_id,
            stream_version: 1,
            event_id: Uuid::now_v7(),
            event_type: event_type.to_owned(),
            schema_version: 1,
            data,
            metadata: json!({"actor": {"type": "api_key", "id": "k1", "ip": "192.0.2.7"}, "request_id": "req-1"}),
            recorded_at: chrono::Utc::now(),
            prev_hash: vec![0; 32],
            hash: vec![0; 32],
        }
    }

    #[test]
    fn every_event_type_has_a_rule_and_no_secret_survives_it() {
        for event_type in EVENT_TYPES {
            let event = recorded(event_type);
            let rule = rule(&event).unwrap_or_else(|e| panic!("{event_type}: {e}"));
            let shown = redact(&event.data, rule.shown).to_string();
            for secret in [KEY_HASH, TOKEN_HASH, SEALED] {
                assert!(!shown.contains(secret), "{event_type} shows a secret: {shown}");
            }
            // Every field of the sample is either shown as it is or marked redacted.
            for (name, value) in event.data.as_object().unwrap() {
                let expected = if rule.shown.contains(&name.as_str()) { value.clone() } else { json!(REDACTED) };
                assert_eq!(redact(&event.data, rule.shown)[name], expected, "{event_type}.{name}");
            }
        }
    }

    #[test]
    fn no_shown_field_is_named_like_a_secret() {
        let secret_like = ["secret", "hash", "token", "sealed", "password", "credential", "api_key", "private"];
        for event_type in EVENT_TYPES {
            for field in rule(&recorded(event_type)).unwrap().shown {
                assert!(
                    !secret_like.iter().any(|word| field.contains(word)),
                    "{event_type} shows `{field}`, named like a secret: hide it, or rename it if it is not one"
                );
            }
        }
    }

    #[test]
    fn a_field_no_rule_names_is_hidden() {
        let data = json!({"name": "k", "key_material": "zzz", "nested": {"a": 1}});
        assert_eq!(redact(&data, &["name"]), json!({"name": "k", "key_material": REDACTED, "nested": REDACTED}));
        assert_eq!(redact(&json!("raw"), &["name"]), json!(REDACTED));
    }

    #[test]
    fn each_row_names_its_organization_workspace_and_resource() {
        let created = recorded("ApiKeyCreated");
        let rule = rule(&created).unwrap();
        assert_eq!(
            rule.organization_id.map(|id| id.to_string()),
            created.data["organization_id"].as_str().map(String::from)
        );
        assert_eq!((rule.workspace_id, rule.resource.0), (None, ResourceType::ApiKey));

        let invited = recorded("InvitationCreated");
        let rule = super::rule(&invited).unwrap();
        assert_eq!(rule.organization_id, None, "found from the workspace's row");
        assert_eq!(rule.workspace_id.map(|id| format!("workspace-{id}")), Some(invited.stream_id.clone()));
        assert_eq!(rule.resource.0, ResourceType::Invitation);
        assert_eq!(rule.resource.1.to_string(), invited.data["invitation_id"].as_str().unwrap());

        let step = insert(&[&created, &invited]).expect("one statement for the batch");
        assert!(step.sql.starts_with("INSERT INTO audit_log") && step.sql.contains("unnest"));
        assert!(insert(&[]).is_none());
    }
}
