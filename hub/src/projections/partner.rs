//! `apps`, `external_keys` and `interaction_keys`: the read models of the Interactions API,
//! from the partner app streams and the key events of workspace streams.

use shared::RecordedEvent;
use shared::events::workspace::{Destination, InteractionKeyRevocation};
use shared::events::{AppEvent, WorkspaceEvent};
use uuid::Uuid;

use super::{SqlStep, params};

fn bytes(hex_text: &str) -> Vec<u8> {
    hex::decode(hex_text).unwrap_or_default()
}

pub(super) fn app_steps(id: Uuid, event: &RecordedEvent) -> Result<Vec<SqlStep>, shared::DecodeError> {
    let (version, at) = (event.stream_version, event.recorded_at);
    let step = match event.decode::<AppEvent>()? {
        AppEvent::AppRegistered(e) => SqlStep::new(
            "INSERT INTO apps (id, name, kind, contact_email, key_hash, partial_key_hint, version, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
            params![id, e.name, e.kind, e.contact_email, bytes(&e.key_hash), e.partial_key_hint, version, at],
        ),
        AppEvent::AppRevoked {} => SqlStep::new(
            "UPDATE apps SET revoked_at = $2, version = $3, updated_at = $2 WHERE id = $1",
            params![id, at, version],
        ),
    };
    Ok(vec![step])
}

/// The step of a key event of workspace `workspace_id`; `None` for the workspace's other
/// events.
pub(super) fn workspace_key_step(
    workspace_id: Uuid,
    event: &WorkspaceEvent,
    at: chrono::DateTime<chrono::Utc>,
) -> Option<SqlStep> {
    Some(match event {
        WorkspaceEvent::ExternalKeyAdded(e) => SqlStep::new(
            "INSERT INTO external_keys (id, workspace_id, organization_id, provider, name, key_hint, settings, \
             created_at) SELECT $1, w.id, w.organization_id, $3, $4, $5, $6, $7 FROM workspaces w WHERE w.id = $2",
            params![
                e.external_key_id,
                workspace_id,
                e.provider,
                e.name.clone(),
                e.key_hint.clone(),
                e.settings.clone(),
                at
            ],
        ),
        WorkspaceEvent::ExternalKeyDeleted(e) => {
            SqlStep::new("DELETE FROM external_keys WHERE id = $1", params![e.external_key_id])
        }
        WorkspaceEvent::InteractionKeyCreated(e) => {
            let (external_key_id, app_id) = match e.destination {
                Destination::ExternalKey { external_key_id } => (Some(external_key_id), None),
                Destination::App { app_id } => (None, Some(app_id)),
            };
            SqlStep::new(
                "INSERT INTO interaction_keys (id, workspace_id, organization_id, name, destination, \
                 destination_external_key_id, destination_app_id, source_app_id, key_hash, partial_key_hint, \
                 expires_at, secret_retrieved, created_at, updated_at) \
                 SELECT $1, w.id, w.organization_id, $3, $4, $5, $6, $7, $8, $9, $10, \
                 CASE WHEN $7::uuid IS NULL THEN NULL ELSE false END, $11, $11 FROM workspaces w WHERE w.id = $2",
                params![
                    e.interaction_key_id,
                    workspace_id,
                    e.name.clone(),
                    serde_json::to_value(e.destination).unwrap_or_default(),
                    external_key_id,
                    app_id,
                    e.source_app_id,
                    bytes(&e.key_hash),
                    e.partial_key_hint.clone(),
                    e.expires_at,
                    at,
                ],
            )
        }
        WorkspaceEvent::InteractionKeySecretClaimed(e) => SqlStep::new(
            "UPDATE interaction_keys SET secret_retrieved = true, updated_at = $2 WHERE id = $1",
            params![e.interaction_key_id, at],
        ),
        WorkspaceEvent::InteractionKeyRevoked(e) => {
            // Every reason ends the key the same way; the log keeps which one it was.
            let _: InteractionKeyRevocation = e.reason;
            SqlStep::new(
                "UPDATE interaction_keys SET revoked_at = COALESCE(revoked_at, $2), updated_at = $2 WHERE id = $1",
                params![e.interaction_key_id, at],
            )
        }
        _ => return None,
    })
}
