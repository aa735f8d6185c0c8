//! `api_keys` from the admin key streams.

use shared::RecordedEvent;
use shared::events::ApiKeyEvent;
use uuid::Uuid;

use super::{SqlStep, params};

fn bytes(hex_text: &str) -> Vec<u8> {
    hex::decode(hex_text).unwrap_or_default()
}

fn scope_names(scopes: &shared::scope::Scopes) -> Vec<String> {
    scopes.iter().map(|s| s.as_str().to_owned()).collect()
}

pub(super) fn steps(id: Uuid, event: &RecordedEvent) -> Result<Vec<SqlStep>, shared::DecodeError> {
    let (version, at) = (event.stream_version, event.recorded_at);
    let step = match event.decode::<ApiKeyEvent>()? {
        ApiKeyEvent::ApiKeyCreated(e) => SqlStep::new(
            "INSERT INTO api_keys (id, organization_id, name, scopes, workspace_ids, expires_at, allowed_ips, \
             owner_user_id, created_by_type, created_by_id, key_hash, partial_key_hint, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)",
            params![
                id,
                e.organization_id,
                e.name,
                scope_names(&e.scopes),
                e.workspace_ids,
                e.expires_at,
                e.allowed_ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
                e.owner_user_id,
                e.created_by.kind,
                e.created_by.id,
                bytes(&e.key_hash),
                e.partial_key_hint,
                version,
                at,
            ],
        ),
        ApiKeyEvent::ApiKeyUpdated(e) => SqlStep::new(
            "UPDATE api_keys SET name = COALESCE($2, name), scopes = COALESCE($3, scopes), version = $4, \
             updated_at = $5 WHERE id = $1",
            params![id, e.name, e.scopes.as_ref().map(scope_names), version, at],
        ),
        ApiKeyEvent::ApiKeyRotated(e) => SqlStep::new(
            "UPDATE api_keys SET previous_key_hash = key_hash, previous_expires_at = $2, key_hash = $3, \
             partial_key_hint = $4, version = $5, updated_at = $6 WHERE id = $1",
            params![id, e.previous_key_expires_at, bytes(&e.key_hash), e.partial_key_hint, version, at],
        ),
        ApiKeyEvent::ApiKeyWorkspacesRemoved(e) => SqlStep::new(
            "UPDATE api_keys SET workspace_ids = ARRAY(SELECT w.id FROM unnest(workspace_ids) WITH ORDINALITY w(id, n) \
             WHERE w.id <> ALL($2) ORDER BY w.n), version = $3, updated_at = $4 WHERE id = $1",
            params![id, e.workspace_ids, version, at],
        ),
        ApiKeyEvent::ApiKeyRevoked {} => SqlStep::new(
            "UPDATE api_keys SET revoked_at = $2, version = $3, updated_at = $2 WHERE id = $1",
            params![id, at, version],
        ),
    };
    Ok(vec![step])
}
