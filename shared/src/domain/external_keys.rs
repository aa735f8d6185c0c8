//! External keys: third-party credentials (a VAN API key) kept in a workspace, sealed under
//! its data key. The rules of adding and deleting them; the caller seals the credential
//! (after checking it with [`api_key`]) so that no plaintext ever reaches an event.

use uuid::Uuid;

use super::workspace::{Workspace, settings};
use super::{DomainError, values};
use crate::events::workspace::{
    Destination, ExternalKeyAdded, ExternalKeyDeleted, ExternalProvider, InteractionKeyRevocation,
    InteractionKeyRevoked, WorkspaceEvent,
};
use crate::metadata::Actor;

/// The longest name of an external key, in characters.
pub const MAX_NAME_LENGTH: usize = 100;
/// The longest credential, in bytes.
pub const MAX_API_KEY_BYTES: usize = 4096;
/// Credentials the validator accepts: printable ASCII without spaces, 4 to
/// [`MAX_API_KEY_BYTES`] characters.
pub const API_KEY_PATTERN: &str = "^[!-~]{16,4096}$";
/// External keys a workspace holds at most: its whole state travels to instances.
pub const MAX_EXTERNAL_KEYS: usize = 100;
/// Characters a credential has at least: its hint (the last four) stays in the log for
/// good, so it must never be much of the credential.
pub const MIN_API_KEY_CHARS: usize = 16;
/// Characters of the credential shown as its hint.
const HINT_CHARS: usize = 4;

/// A new external key, its credential already sealed.
#[derive(Debug, Clone)]
pub struct NewExternalKey {
    pub id: Uuid,
    pub provider: ExternalProvider,
    pub name: String,
    /// The credential's last characters (from [`key_hint`]).
    pub key_hint: String,
    /// `nonce ‖ ciphertext` of the credential under the workspace's data key.
    pub sealed_api_key: Vec<u8>,
    pub settings: Option<serde_json::Value>,
    pub created_by: Actor,
}

/// Checks a credential before it is sealed: printable ASCII without white space (API keys
/// are), [`MIN_API_KEY_CHARS`] to [`MAX_API_KEY_BYTES`] characters. The error never quotes it.
pub fn api_key(text: &str) -> Result<&str, DomainError> {
    if text.len() > MAX_API_KEY_BYTES {
        return Err(DomainError::invalid(
            "api_key",
            "max_length",
            format!("api_key is longer than {MAX_API_KEY_BYTES} characters"),
        ));
    }
    if text.len() < MIN_API_KEY_CHARS {
        return Err(DomainError::invalid(
            "api_key",
            "min_length",
            format!("api_key has fewer than {MIN_API_KEY_CHARS} characters"),
        ));
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(DomainError::invalid("api_key", "format", "api_key must be printable ASCII without spaces"));
    }
    Ok(text)
}

/// The hint shown for a credential checked by [`api_key`]: its last 4 characters.
pub fn key_hint(api_key: &str) -> String {
    let skip = api_key.chars().count().saturating_sub(HINT_CHARS);
    api_key.chars().skip(skip).collect()
}

pub(super) fn add(workspace: &Workspace, new: NewExternalKey) -> Result<Vec<WorkspaceEvent>, DomainError> {
    if workspace.external_keys.contains_key(&new.id) {
        return Err(DomainError::conflict("already_exists", "the external key already exists"));
    }
    if workspace.external_keys.len() >= MAX_EXTERNAL_KEYS {
        return Err(DomainError::conflict(
            "too_many_external_keys",
            format!("a workspace holds at most {MAX_EXTERNAL_KEYS} external keys"),
        ));
    }
    if new.sealed_api_key.is_empty() || new.key_hint.chars().count() != HINT_CHARS {
        return Err(DomainError::invalid("api_key", "format", "the credential was not sealed"));
    }
    let settings = match new.settings {
        None | Some(serde_json::Value::Null) => serde_json::json!({}),
        Some(value @ serde_json::Value::Object(_)) => settings(value)?,
        Some(_) => return Err(DomainError::invalid("settings", "object", "settings must be a JSON object")),
    };
    Ok(vec![WorkspaceEvent::ExternalKeyAdded(ExternalKeyAdded {
        external_key_id: new.id,
        provider: new.provider,
        name: values::name("name", &new.name, MAX_NAME_LENGTH)?,
        key_hint: new.key_hint,
        sealed_api_key: hex::encode(new.sealed_api_key),
        settings,
        created_by: new.created_by,
    })])
}

/// Deletes the key and revokes every live interaction key routed to it: without its
/// destination such a key could only accept interactions that go nowhere.
pub(super) fn delete(workspace: &Workspace, external_key_id: Uuid) -> Result<Vec<WorkspaceEvent>, DomainError> {
    if !workspace.external_keys.contains_key(&external_key_id) {
        return Err(DomainError::NotFound("external key"));
    }
    let destination = Destination::ExternalKey { external_key_id };
    let mut events: Vec<WorkspaceEvent> = workspace
        .interaction_keys
        .iter()
        .filter(|(_, key)| key.destination == destination)
        .map(|(id, _)| {
            WorkspaceEvent::InteractionKeyRevoked(InteractionKeyRevoked {
                interaction_key_id: *id,
                reason: InteractionKeyRevocation::DestinationDeleted,
            })
        })
        .collect();
    events.push(WorkspaceEvent::ExternalKeyDeleted(ExternalKeyDeleted { external_key_id }));
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::testing::given;
    use crate::domain::workspace::WorkspaceCommand;
    use crate::events::workspace::{InteractionKeyCreated, WorkspaceCreated};

    fn created() -> WorkspaceEvent {
        WorkspaceEvent::WorkspaceCreated(WorkspaceCreated {
            organization_id: Uuid::from_u128(9),
            parent_id: None,
            instance_id: Some("embedded".into()),
            name: "Sales".into(),
            settings: serde_json::json!({}),
            webhook_uris: vec![],
            public_keys: vec![],
        })
    }

    fn new(id: u128) -> NewExternalKey {
        NewExternalKey {
            id: Uuid::from_u128(id),
            provider: ExternalProvider::Van,
            name: " VAN sandbox ".into(),
            key_hint: key_hint("secret-credential-x9Zq"),
            sealed_api_key: vec![0xab, 0xcd],
            settings: Some(serde_json::json!({"database_mode": 1})),
            created_by: Actor::system(),
        }
    }

    fn add_command(id: u128) -> WorkspaceCommand {
        WorkspaceCommand::AddExternalKey(Box::new(new(id)))
    }

    fn added(id: u128) -> WorkspaceEvent {
        WorkspaceEvent::ExternalKeyAdded(ExternalKeyAdded {
            external_key_id: Uuid::from_u128(id),
            provider: ExternalProvider::Van,
            name: "VAN sandbox".into(),
            key_hint: "x9Zq".into(),
            sealed_api_key: "abcd".into(),
            settings: serde_json::json!({"database_mode": 1}),
            created_by: Actor::system(),
        })
    }

    fn routed(key: u128, external_key: u128) -> WorkspaceEvent {
        WorkspaceEvent::InteractionKeyCreated(InteractionKeyCreated {
            interaction_key_id: Uuid::from_u128(key),
            name: format!("ik{key}"),
            destination: Destination::ExternalKey { external_key_id: Uuid::from_u128(external_key) },
            source_app_id: None,
            key_hash: "00".into(),
            partial_key_hint: "ik_x".into(),
            expires_at: None,
            sealed_secret: None,
            created_by: Actor::system(),
        })
    }

    fn revoked(key: u128, reason: InteractionKeyRevocation) -> WorkspaceEvent {
        WorkspaceEvent::InteractionKeyRevoked(InteractionKeyRevoked {
            interaction_key_id: Uuid::from_u128(key),
            reason,
        })
    }

    #[test]
    fn an_added_key_holds_the_sealed_credential_as_hex_and_its_hint() {
        let state = given::<Workspace>([created()]).when(add_command(1)).then([added(1)]);
        assert_eq!(state.external_keys[&Uuid::from_u128(1)].sealed_api_key, "abcd");
        given::<Workspace>([created(), added(1)])
            .when(add_command(1))
            .then_error(|e| matches!(e, DomainError::Conflict { code: "already_exists", .. }));
    }

    #[test]
    fn names_settings_and_credentials_are_validated() {
        let mut bad = new(1);
        bad.name = "   ".into();
        given::<Workspace>([created()])
            .when(WorkspaceCommand::AddExternalKey(Box::new(bad)))
            .then_error(|e| matches!(e, DomainError::Invalid { field: "name", .. }));
        let mut bad = new(1);
        bad.name = "n".repeat(MAX_NAME_LENGTH + 1);
        given::<Workspace>([created()])
            .when(WorkspaceCommand::AddExternalKey(Box::new(bad)))
            .then_error(|e| matches!(e, DomainError::Invalid { field: "name", constraint: "max_length", .. }));
        let mut bad = new(1);
        bad.settings = Some(serde_json::json!(["not", "an", "object"]));
        given::<Workspace>([created()])
            .when(WorkspaceCommand::AddExternalKey(Box::new(bad)))
            .then_error(|e| matches!(e, DomainError::Invalid { field: "settings", .. }));
        let mut bad = new(1);
        bad.settings = Some(serde_json::json!({"blob": "x".repeat(20_000)}));
        given::<Workspace>([created()])
            .when(WorkspaceCommand::AddExternalKey(Box::new(bad)))
            .then_error(|e| matches!(e, DomainError::Invalid { field: "settings", constraint: "max_size", .. }));
        let mut none = new(1);
        none.settings = None;
        let state = given::<Workspace>([created()]).when(WorkspaceCommand::AddExternalKey(Box::new(none))).then([{
            let WorkspaceEvent::ExternalKeyAdded(mut e) = added(1) else { unreachable!() };
            e.settings = serde_json::json!({});
            WorkspaceEvent::ExternalKeyAdded(e)
        }]);
        assert_eq!(state.external_keys[&Uuid::from_u128(1)].settings, serde_json::json!({}));

        assert!(api_key("k3y-with-symbols!").is_ok());
        for bad in ["", "abc", "with space", "tab\tinside", "ünïcode-key", &"k".repeat(MAX_API_KEY_BYTES + 1)] {
            let error = api_key(bad).unwrap_err();
            assert!(matches!(error, DomainError::Invalid { field: "api_key", .. }), "{bad}");
            assert!(!error.to_string().contains(bad) || bad.is_empty(), "the error quotes the credential");
        }
        assert!(api_key(&"k".repeat(MAX_API_KEY_BYTES)).is_ok());
        assert_eq!(key_hint("secret-credential-x9Zq"), "x9Zq");
    }

    #[test]
    fn a_workspace_holds_a_bounded_number_of_external_keys() {
        let full: Vec<WorkspaceEvent> =
            std::iter::once(created()).chain((0..MAX_EXTERNAL_KEYS as u128).map(|i| added(100 + i))).collect();
        given::<Workspace>(full)
            .when(add_command(1))
            .then_error(|e| matches!(e, DomainError::Conflict { code: "too_many_external_keys", .. }));
    }

    #[test]
    fn an_archived_or_deleted_workspace_takes_no_external_key_change() {
        given::<Workspace>([created(), added(1), WorkspaceEvent::WorkspaceArchived {}])
            .when(add_command(2))
            .then_error(|e| matches!(e, DomainError::Conflict { code: "workspace_archived", .. }));
        given::<Workspace>([created(), added(1), WorkspaceEvent::WorkspaceArchived {}])
            .when(WorkspaceCommand::DeleteExternalKey { external_key_id: Uuid::from_u128(1) })
            .then_error(|e| matches!(e, DomainError::Conflict { code: "workspace_archived", .. }));
        given::<Workspace>([created(), WorkspaceEvent::WorkspaceDeleted {}])
            .when(add_command(2))
            .then_error(|e| *e == DomainError::NotFound("workspace"));
    }

    #[test]
    fn deleting_an_unknown_or_deleted_key_is_not_found() {
        let delete = || WorkspaceCommand::DeleteExternalKey { external_key_id: Uuid::from_u128(1) };
        given::<Workspace>([created()]).when(delete()).then_error(|e| *e == DomainError::NotFound("external key"));
        let deleted = WorkspaceEvent::ExternalKeyDeleted(ExternalKeyDeleted { external_key_id: Uuid::from_u128(1) });
        given::<Workspace>([created(), added(1), deleted])
            .when(delete())
            .then_error(|e| *e == DomainError::NotFound("external key"));
    }

    #[test]
    fn deleting_a_key_revokes_the_live_interaction_keys_routed_to_it_and_no_other() {
        let state = given::<Workspace>([
            created(),
            added(1),
            added(2),
            routed(10, 1),
            routed(11, 2),
            routed(12, 1),
            routed(13, 1),
            revoked(13, InteractionKeyRevocation::Deleted),
        ])
        .when(WorkspaceCommand::DeleteExternalKey { external_key_id: Uuid::from_u128(1) })
        .then([
            revoked(10, InteractionKeyRevocation::DestinationDeleted),
            revoked(12, InteractionKeyRevocation::DestinationDeleted),
            WorkspaceEvent::ExternalKeyDeleted(ExternalKeyDeleted { external_key_id: Uuid::from_u128(1) }),
        ]);
        assert!(!state.external_keys.contains_key(&Uuid::from_u128(1)));
        assert!(state.interaction_keys.contains_key(&Uuid::from_u128(11)), "a key routed elsewhere stays");
        assert!(!state.interaction_keys.contains_key(&Uuid::from_u128(10)), "a revoked key leaves the state");
    }
}
