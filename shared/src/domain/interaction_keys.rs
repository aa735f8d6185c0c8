//! The rules of a workspace's Interactions API keys: creating one (routed to an external key
//! of the workspace or to a destination app, optionally withheld for a source app), deleting
//! it, and the source app's one-time claim of a withheld secret.
//!
//! Rules that need other aggregates (the apps named, the organization's quota) are the
//! hub's to check; what the workspace's own state decides is here.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::workspace::{MAX_NAME_LENGTH, Workspace};
use super::{DomainError, values};
use crate::events::workspace::{
    Destination, InteractionKeyCreated, InteractionKeyRevocation, InteractionKeyRevoked, InteractionKeySecretClaimed,
    WorkspaceEvent,
};
use crate::metadata::Actor;

/// A new interaction key, generated and hashed (and, with a source app, sealed) by the caller.
#[derive(Debug, Clone)]
pub struct NewInteractionKey {
    pub id: Uuid,
    pub name: String,
    pub destination: Destination,
    /// The source app the secret is withheld for; it then comes with `sealed_secret`.
    pub source_app_id: Option<Uuid>,
    pub key_hash: Vec<u8>,
    pub partial_key_hint: String,
    pub expires_at: Option<DateTime<Utc>>,
    /// The key sealed under a data key of its own, when withheld for a source app.
    pub sealed_secret: Option<Vec<u8>>,
    pub created_by: Actor,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub enum InteractionKeyCommand {
    Create(Box<NewInteractionKey>),
    /// `DELETE .../interaction-keys/{id}`: a revoked key is gone from the state, so a
    /// second delete finds nothing (404).
    Delete {
        interaction_key_id: Uuid,
    },
    /// A source app takes the withheld secret, once.
    ClaimSecret {
        interaction_key_id: Uuid,
        app_id: Uuid,
        ip: Option<String>,
    },
}

/// Decides a command on the interaction keys of a live workspace.
pub(super) fn decide(
    workspace: &Workspace,
    command: InteractionKeyCommand,
) -> Result<Vec<WorkspaceEvent>, DomainError> {
    match command {
        InteractionKeyCommand::Create(new) => create(workspace, *new),
        InteractionKeyCommand::Delete { interaction_key_id } => {
            if !workspace.interaction_keys.contains_key(&interaction_key_id) {
                return Err(DomainError::NotFound("interaction key"));
            }
            Ok(vec![WorkspaceEvent::InteractionKeyRevoked(InteractionKeyRevoked {
                interaction_key_id,
                reason: InteractionKeyRevocation::Deleted,
            })])
        }
        InteractionKeyCommand::ClaimSecret { interaction_key_id, app_id, ip } => {
            let key =
                workspace.interaction_keys.get(&interaction_key_id).ok_or(DomainError::NotFound("interaction key"))?;
            if key.source_app_id != Some(app_id) {
                // The destination app sees the key in its listing, so it learns why; any
                // other app learns nothing of it.
                if key.destination == (Destination::App { app_id }) {
                    return Err(DomainError::Forbidden {
                        detail: "only the key's source app may retrieve its secret".into(),
                    });
                }
                return Err(DomainError::NotFound("interaction key"));
            }
            if key.secret_claimed {
                return Err(DomainError::Gone {
                    code: "secret_already_retrieved",
                    detail: "this key's secret was already retrieved".into(),
                });
            }
            if key.sealed_secret.is_none() {
                return Err(DomainError::Gone { code: "key_revoked", detail: "this key was revoked".into() });
            }
            Ok(vec![WorkspaceEvent::InteractionKeySecretClaimed(InteractionKeySecretClaimed {
                interaction_key_id,
                app_id,
                ip,
            })])
        }
    }
}

/// Live interaction keys a workspace may hold: its whole state travels to the hub's cache
/// and to its instance with every event, so it stays bounded (the organization's
/// `interaction_keys` quota bounds the keys of all its workspaces together).
pub const MAX_INTERACTION_KEYS: usize = 1_000;

fn create(workspace: &Workspace, new: NewInteractionKey) -> Result<Vec<WorkspaceEvent>, DomainError> {
    if workspace.archived {
        return Err(DomainError::conflict("workspace_archived", "restore the workspace before changing it"));
    }
    if workspace.interaction_keys.len() >= MAX_INTERACTION_KEYS {
        return Err(DomainError::conflict(
            "too_many_interaction_keys",
            format!("a workspace holds at most {MAX_INTERACTION_KEYS} live interaction keys; delete one first"),
        ));
    }
    if workspace.interaction_keys.contains_key(&new.id) {
        return Err(DomainError::conflict("already_exists", "the interaction key already exists"));
    }
    let name = values::name("name", &new.name, MAX_NAME_LENGTH)?;
    if new.expires_at.is_some_and(|at| at <= new.now) {
        return Err(DomainError::invalid("expires_at", "future", "expires_at must be in the future"));
    }
    if let Destination::ExternalKey { external_key_id } = new.destination
        && !workspace.external_keys.contains_key(&external_key_id)
    {
        return Err(DomainError::invalid(
            "destination",
            "exists",
            "destination.external_key_id names no external key of this workspace",
        ));
    }
    if new.source_app_id.is_some() != new.sealed_secret.is_some() {
        return Err(DomainError::invalid(
            "source_app_id",
            "withheld",
            "a key withheld for a source app comes with its sealed secret, and only then",
        ));
    }
    Ok(vec![WorkspaceEvent::InteractionKeyCreated(InteractionKeyCreated {
        interaction_key_id: new.id,
        name,
        destination: new.destination,
        source_app_id: new.source_app_id,
        key_hash: hex::encode(new.key_hash),
        partial_key_hint: new.partial_key_hint,
        expires_at: new.expires_at,
        sealed_secret: new.sealed_secret.map(hex::encode),
        created_by: new.created_by,
    })])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::testing::given;
    use crate::domain::workspace::WorkspaceCommand;
    use crate::events::workspace::{ExternalKeyAdded, ExternalProvider, WorkspaceCreated};
    use crate::metadata::ActorType;

    const EXTERNAL: Uuid = Uuid::from_u128(7);
    const KEY: Uuid = Uuid::from_u128(20);
    const SOURCE: Uuid = Uuid::from_u128(30);
    const DESTINATION: Uuid = Uuid::from_u128(31);

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn actor() -> Actor {
        Actor { kind: ActorType::Operator, id: None, ip: None }
    }

    fn workspace() -> Vec<WorkspaceEvent> {
        vec![
            WorkspaceEvent::WorkspaceCreated(WorkspaceCreated {
                organization_id: Uuid::from_u128(9),
                parent_id: None,
                instance_id: Some("embedded".into()),
                name: "Sales".into(),
                settings: serde_json::json!({}),
                webhook_uris: vec![],
                public_keys: vec![],
            }),
            WorkspaceEvent::ExternalKeyAdded(ExternalKeyAdded {
                external_key_id: EXTERNAL,
                provider: ExternalProvider::Van,
                name: "VAN".into(),
                key_hint: "abcd".into(),
                sealed_api_key: "00".into(),
                settings: serde_json::json!({}),
                created_by: actor(),
            }),
        ]
    }

    fn new(destination: Destination, source_app_id: Option<Uuid>) -> NewInteractionKey {
        NewInteractionKey {
            id: KEY,
            name: " Canvassing ".into(),
            destination,
            source_app_id,
            key_hash: vec![0xab],
            partial_key_hint: "ik_...wxyz".into(),
            expires_at: Some(at(100)),
            sealed_secret: source_app_id.map(|_| vec![0xcd]),
            created_by: actor(),
            now: at(0),
        }
    }

    fn create(new: NewInteractionKey) -> WorkspaceCommand {
        WorkspaceCommand::InteractionKey(InteractionKeyCommand::Create(Box::new(new)))
    }

    fn created(destination: Destination, source_app_id: Option<Uuid>) -> WorkspaceEvent {
        WorkspaceEvent::InteractionKeyCreated(InteractionKeyCreated {
            interaction_key_id: KEY,
            name: "Canvassing".into(),
            destination,
            source_app_id,
            key_hash: "ab".into(),
            partial_key_hint: "ik_...wxyz".into(),
            expires_at: Some(at(100)),
            sealed_secret: source_app_id.map(|_| "cd".into()),
            created_by: actor(),
        })
    }

    fn claim(app_id: Uuid) -> WorkspaceCommand {
        WorkspaceCommand::InteractionKey(InteractionKeyCommand::ClaimSecret {
            interaction_key_id: KEY,
            app_id,
            ip: Some("192.0.2.1".into()),
        })
    }

    fn with(events: impl IntoIterator<Item = WorkspaceEvent>) -> Vec<WorkspaceEvent> {
        workspace().into_iter().chain(events).collect()
    }

    #[test]
    fn a_key_goes_to_an_external_key_of_its_own_workspace_only() {
        let to_external = Destination::ExternalKey { external_key_id: EXTERNAL };
        given::<Workspace>(workspace()).when(create(new(to_external, None))).then([created(to_external, None)]);
        let elsewhere = Destination::ExternalKey { external_key_id: Uuid::from_u128(8) };
        given::<Workspace>(workspace())
            .when(create(new(elsewhere, None)))
            .then_error(|e| matches!(e, DomainError::Invalid { field: "destination", constraint: "exists", .. }));
    }

    #[test]
    fn a_key_for_a_source_app_carries_its_sealed_secret() {
        let to_app = Destination::App { app_id: DESTINATION };
        let state = given::<Workspace>(workspace())
            .when(create(new(to_app, Some(SOURCE))))
            .then([created(to_app, Some(SOURCE))]);
        assert_eq!(state.interaction_keys[&KEY].sealed_secret.as_deref(), Some("cd"));
        let mut unsealed = new(to_app, Some(SOURCE));
        unsealed.sealed_secret = None;
        assert!(!given::<Workspace>(workspace()).state_decides(create(unsealed)));
        let mut stray = new(to_app, None);
        stray.sealed_secret = Some(vec![1]);
        assert!(!given::<Workspace>(workspace()).state_decides(create(stray)));
    }

    #[test]
    fn creating_validates_name_and_expiry() {
        let to_app = Destination::App { app_id: DESTINATION };
        let mut blank = new(to_app, None);
        blank.name = "  ".into();
        given::<Workspace>(workspace())
            .when(create(blank))
            .then_error(|e| matches!(e, DomainError::Invalid { field: "name", .. }));
        let mut long = new(to_app, None);
        long.name = "x".repeat(MAX_NAME_LENGTH + 1);
        given::<Workspace>(workspace())
            .when(create(long))
            .then_error(|e| matches!(e, DomainError::Invalid { field: "name", constraint: "max_length", .. }));
        let mut past = new(to_app, None);
        past.expires_at = Some(at(0));
        given::<Workspace>(workspace())
            .when(create(past))
            .then_error(|e| matches!(e, DomainError::Invalid { field: "expires_at", .. }));
        given::<Workspace>(with([created(to_app, None)]))
            .when(create(new(to_app, None)))
            .then_error(|e| matches!(e, DomainError::Conflict { code: "already_exists", .. }));
    }

    #[test]
    fn an_archived_workspace_gets_no_new_key_but_its_keys_can_still_be_deleted() {
        let to_app = Destination::App { app_id: DESTINATION };
        given::<Workspace>(with([WorkspaceEvent::WorkspaceArchived {}]))
            .when(create(new(to_app, None)))
            .then_error(|e| matches!(e, DomainError::Conflict { code: "workspace_archived", .. }));
        given::<Workspace>(with([created(to_app, None), WorkspaceEvent::WorkspaceArchived {}]))
            .when(WorkspaceCommand::InteractionKey(InteractionKeyCommand::Delete { interaction_key_id: KEY }))
            .then([WorkspaceEvent::InteractionKeyRevoked(InteractionKeyRevoked {
                interaction_key_id: KEY,
                reason: InteractionKeyRevocation::Deleted,
            })]);
    }

    #[test]
    fn deleting_revokes_once_and_an_unknown_key_is_not_found() {
        let to_app = Destination::App { app_id: DESTINATION };
        let delete = |id| WorkspaceCommand::InteractionKey(InteractionKeyCommand::Delete { interaction_key_id: id });
        let revoked = WorkspaceEvent::InteractionKeyRevoked(InteractionKeyRevoked {
            interaction_key_id: KEY,
            reason: InteractionKeyRevocation::Deleted,
        });
        given::<Workspace>(with([created(to_app, None)])).when(delete(KEY)).then([revoked.clone()]);
        let gone = given::<Workspace>(with([created(to_app, None), revoked.clone()]));
        gone.when(delete(KEY)).then_error(|e| *e == DomainError::NotFound("interaction key"));
        given::<Workspace>(workspace())
            .when(delete(KEY))
            .then_error(|e| *e == DomainError::NotFound("interaction key"));
        given::<Workspace>(with([created(to_app, None), WorkspaceEvent::WorkspaceDeleted {}]))
            .when(delete(KEY))
            .then_error(|e| *e == DomainError::NotFound("workspace"));
    }

    #[test]
    fn only_the_source_app_claims_the_secret_and_only_once() {
        let to_app = Destination::App { app_id: DESTINATION };
        let claimed = WorkspaceEvent::InteractionKeySecretClaimed(InteractionKeySecretClaimed {
            interaction_key_id: KEY,
            app_id: SOURCE,
            ip: Some("192.0.2.1".into()),
        });
        let state =
            given::<Workspace>(with([created(to_app, Some(SOURCE))])).when(claim(SOURCE)).then([claimed.clone()]);
        assert_eq!(state.interaction_keys[&KEY].sealed_secret, None, "the sealed secret is forgotten once claimed");
        given::<Workspace>(with([created(to_app, Some(SOURCE)), claimed]))
            .when(claim(SOURCE))
            .then_error(|e| matches!(e, DomainError::Gone { code: "secret_already_retrieved", .. }));
        given::<Workspace>(with([created(to_app, Some(SOURCE))]))
            .when(claim(DESTINATION))
            .then_error(|e| matches!(e, DomainError::Forbidden { .. }));
        given::<Workspace>(with([created(to_app, Some(SOURCE))]))
            .when(claim(Uuid::from_u128(99)))
            .then_error(|e| *e == DomainError::NotFound("interaction key"));
        // A key created with no source app has no secret to claim.
        given::<Workspace>(with([created(to_app, None)]))
            .when(claim(SOURCE))
            .then_error(|e| *e == DomainError::NotFound("interaction key"));
    }

    #[test]
    fn a_workspace_holds_a_bounded_number_of_live_keys() {
        let to_app = Destination::App { app_id: DESTINATION };
        let mut history = workspace();
        for n in 0..MAX_INTERACTION_KEYS as u128 {
            let mut event = created(to_app, None);
            if let WorkspaceEvent::InteractionKeyCreated(created) = &mut event {
                created.interaction_key_id = Uuid::from_u128(10_000 + n);
            }
            history.push(event);
        }
        let full = given::<Workspace>(history.clone());
        assert!(!full.state_decides(create(new(to_app, None))), "one more than the bound");
        given::<Workspace>(history.clone())
            .when(create(new(to_app, None)))
            .then_error(|e| matches!(e, DomainError::Conflict { code: "too_many_interaction_keys", .. }));
        // A deleted key frees its place.
        history.push(WorkspaceEvent::InteractionKeyRevoked(InteractionKeyRevoked {
            interaction_key_id: Uuid::from_u128(10_000),
            reason: InteractionKeyRevocation::Deleted,
        }));
        assert!(given::<Workspace>(history).state_decides(create(new(to_app, None))));
    }

    #[test]
    fn a_revoked_key_leaves_the_state_and_its_secret_cannot_be_claimed() {
        let to_app = Destination::App { app_id: DESTINATION };
        let revoked = WorkspaceEvent::InteractionKeyRevoked(InteractionKeyRevoked {
            interaction_key_id: KEY,
            reason: InteractionKeyRevocation::AppDeleted,
        });
        let state = given::<Workspace>(with([created(to_app, Some(SOURCE)), revoked.clone()])).state();
        assert!(state.interaction_keys.is_empty(), "nothing of a revoked key stays in the state");
        given::<Workspace>(with([created(to_app, Some(SOURCE)), revoked]))
            .when(claim(SOURCE))
            .then_error(|e| *e == DomainError::NotFound("interaction key"));
    }
}
