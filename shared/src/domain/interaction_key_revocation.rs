//! A deleted partner app takes with it every interaction key of a workspace that was
//! provisioned to it (its source app) or routed to it (its destination app): the rule of
//! [`WorkspaceCommand::RevokeAppKeys`](super::workspace::WorkspaceCommand::RevokeAppKeys).

use uuid::Uuid;

use super::workspace::Workspace;
use crate::events::workspace::{Destination, InteractionKeyRevocation, InteractionKeyRevoked, WorkspaceEvent};

impl Workspace {
    /// One revocation per live key of the app, in key id order. A deleted workspace has
    /// none left to revoke (its keys ended with it), and a key revoked before stays as it is.
    pub(super) fn revoke_app_keys(&self, app_id: Uuid) -> Vec<WorkspaceEvent> {
        if !self.exists || self.deleted {
            return Vec::new();
        }
        self.interaction_keys
            .iter()
            .filter(|(_, key)| key.source_app_id == Some(app_id) || key.destination == Destination::App { app_id })
            .map(|(id, _)| {
                WorkspaceEvent::InteractionKeyRevoked(InteractionKeyRevoked {
                    interaction_key_id: *id,
                    reason: InteractionKeyRevocation::AppDeleted,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::testing::given;
    use crate::domain::workspace::WorkspaceCommand;
    use crate::events::workspace::{InteractionKeyCreated, WorkspaceCreated};

    fn created() -> WorkspaceEvent {
        WorkspaceEvent::WorkspaceCreated(WorkspaceCreated {
            organization_id: Uuid::nil(),
            parent_id: None,
            instance_id: Some("a".into()),
            name: "Sales".into(),
            settings: serde_json::json!({}),
            webhook_uris: vec![],
            public_keys: vec![],
        })
    }

    fn key(id: Uuid, destination: Destination, source_app_id: Option<Uuid>) -> WorkspaceEvent {
        WorkspaceEvent::InteractionKeyCreated(InteractionKeyCreated {
            interaction_key_id: id,
            name: "k".into(),
            destination,
            source_app_id,
            key_hash: "00".into(),
            partial_key_hint: "ik_...abcd".into(),
            expires_at: None,
            sealed_secret: None,
            created_by: crate::metadata::Actor::system(),
        })
    }

    fn revoked(id: Uuid) -> WorkspaceEvent {
        WorkspaceEvent::InteractionKeyRevoked(InteractionKeyRevoked {
            interaction_key_id: id,
            reason: InteractionKeyRevocation::AppDeleted,
        })
    }

    #[test]
    fn the_keys_provisioned_to_or_routed_to_the_app_are_revoked_and_no_other() {
        let (app, other) = (Uuid::now_v7(), Uuid::now_v7());
        let external = Destination::ExternalKey { external_key_id: Uuid::now_v7() };
        let ids: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
        let history = [
            created(),
            key(ids[0], external, Some(app)),
            key(ids[1], Destination::App { app_id: app }, None),
            key(ids[2], Destination::App { app_id: other }, Some(other)),
            key(ids[3], external, None),
        ];
        let state = given::<Workspace>(history.clone())
            .when(WorkspaceCommand::RevokeAppKeys { app_id: app })
            .then([revoked(ids[0]), revoked(ids[1])]);
        assert!(!state.interaction_keys.contains_key(&ids[0]) && state.interaction_keys.contains_key(&ids[2]));
        // Again: nothing left to revoke.
        let mut again = history.to_vec();
        again.extend([revoked(ids[0]), revoked(ids[1])]);
        given::<Workspace>(again).when(WorkspaceCommand::RevokeAppKeys { app_id: app }).then([]);
    }

    #[test]
    fn a_deleted_workspace_has_nothing_to_revoke() {
        let app = Uuid::now_v7();
        given::<Workspace>([
            created(),
            key(Uuid::now_v7(), Destination::App { app_id: app }, None),
            WorkspaceEvent::WorkspaceDeleted {},
        ])
        .when(WorkspaceCommand::RevokeAppKeys { app_id: app })
        .then([]);
        given::<Workspace>([]).when(WorkspaceCommand::RevokeAppKeys { app_id: app }).then([]);
    }
}
