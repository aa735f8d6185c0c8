//! `workspaces` (with each row's ancestor path) from the workspace streams.

use shared::RecordedEvent;
use shared::events::WorkspaceEvent;
use uuid::Uuid;

use super::{SqlStep, params};
use crate::columns::{InvitationStatus, WorkspaceStatus};

fn status(id: Uuid, status: WorkspaceStatus, version: i64, at: chrono::DateTime<chrono::Utc>) -> SqlStep {
    SqlStep::new(
        "UPDATE workspaces SET status = $2, version = $3, updated_at = $4 WHERE id = $1",
        params![id, status, version, at],
    )
}

fn invitation_status(id: Uuid, status: InvitationStatus, at: chrono::DateTime<chrono::Utc>) -> SqlStep {
    SqlStep::new("UPDATE invitations SET status = $2, updated_at = $3 WHERE id = $1", params![id, status, at])
}

/// A run of consecutive status changes (archive, restore, delete) of distinct workspaces,
/// written as one `UPDATE ... FROM unnest(...)`: what a subtree command commits.
#[derive(Default)]
pub(super) struct StatusRun {
    ids: Vec<Uuid>,
    statuses: Vec<WorkspaceStatus>,
    versions: Vec<i64>,
    ats: Vec<chrono::DateTime<chrono::Utc>>,
    seen: std::collections::HashSet<Uuid>,
}

impl StatusRun {
    /// Adds the event if it is a status change of a workspace not yet in the run (a
    /// second change of the same row must follow the first, so it ends the run).
    pub(super) fn push(&mut self, id: Uuid, event: &RecordedEvent) -> bool {
        let status = match event.event_type.as_str() {
            "WorkspaceArchived" => WorkspaceStatus::Archived,
            "WorkspaceRestored" => WorkspaceStatus::Active,
            "WorkspaceDeleted" => WorkspaceStatus::Deleted,
            _ => return false,
        };
        if !self.seen.insert(id) {
            return false;
        }
        self.ids.push(id);
        self.statuses.push(status);
        self.versions.push(event.stream_version);
        self.ats.push(event.recorded_at);
        true
    }

    /// The run's statement (none for an empty run); leaves the run empty.
    pub(super) fn take(&mut self) -> Option<SqlStep> {
        let run = std::mem::take(self);
        match run.ids.len() {
            0 => None,
            1 => Some(status(run.ids[0], run.statuses[0], run.versions[0], run.ats[0])),
            _ => Some(SqlStep::new(
                "UPDATE workspaces w SET status = u.status, version = u.version, updated_at = u.at \
                 FROM unnest($1::uuid[], $2::workspace_status[], $3::bigint[], $4::timestamptz[]) AS u(id, status, version, at) \
                 WHERE w.id = u.id",
                params![run.ids, run.statuses, run.versions, run.ats],
            )),
        }
    }
}

/// The row of a created workspace; `secret_version` and `version` already include a
/// secret issued in the same commit (see [`created_with_secret`]).
fn created(
    id: Uuid,
    e: shared::events::workspace::WorkspaceCreated,
    version: i64,
    at: chrono::DateTime<chrono::Utc>,
    secret_version: i32,
) -> SqlStep {
    SqlStep::new(
        "INSERT INTO workspaces (id, organization_id, parent_id, instance_id, name, status, settings, \
         webhook_uris, public_keys, ancestors, version, created_at, updated_at, secret_version) \
         VALUES ($1, $2, $3, $4, $5, 'active', $6, $7, $8, \
         COALESCE((SELECT ancestors FROM workspaces WHERE id = $3), '{}'::uuid[]) || $1::uuid, $9, $10, $10, $11)",
        params![
            id,
            e.organization_id,
            e.parent_id,
            e.instance_id,
            e.name,
            e.settings,
            serde_json::to_value(&e.webhook_uris).unwrap_or_default(),
            serde_json::to_value(&e.public_keys).unwrap_or_default(),
            version,
            at,
            secret_version,
        ],
    )
}

/// A create and the first secret issued in the same commit (what every create commits):
/// one `INSERT` instead of an insert and an update of the row just inserted.
pub(super) fn created_with_secret(
    id: Uuid,
    created_event: &RecordedEvent,
    secret_event: &RecordedEvent,
) -> Result<Option<SqlStep>, shared::DecodeError> {
    let same_commit = created_event.stream_id == secret_event.stream_id
        && secret_event.stream_version == created_event.stream_version + 1
        && secret_event.recorded_at == created_event.recorded_at;
    if !same_commit {
        return Ok(None);
    }
    let (WorkspaceEvent::WorkspaceCreated(e), WorkspaceEvent::WorkspaceSecretIssued(secret)) =
        (created_event.decode::<WorkspaceEvent>()?, secret_event.decode::<WorkspaceEvent>()?)
    else {
        return Ok(None);
    };
    Ok(Some(created(id, e, secret_event.stream_version, secret_event.recorded_at, secret.version)))
}

pub(super) fn steps(id: Uuid, event: &RecordedEvent) -> Result<Vec<SqlStep>, shared::DecodeError> {
    let (version, at) = (event.stream_version, event.recorded_at);
    let step = match event.decode::<WorkspaceEvent>()? {
        WorkspaceEvent::WorkspaceCreated(e) => created(id, e, version, at, 0),
        WorkspaceEvent::WorkspaceUpdated(e) => SqlStep::new(
            "UPDATE workspaces SET name = COALESCE($2, name), settings = COALESCE($3, settings), \
             webhook_uris = COALESCE($4, webhook_uris), public_keys = COALESCE($5, public_keys), \
             version = $6, updated_at = $7 WHERE id = $1",
            params![
                id,
                e.name,
                e.settings,
                e.webhook_uris.map(|u| serde_json::to_value(u).unwrap_or_default()),
                e.public_keys.map(|k| serde_json::to_value(k).unwrap_or_default()),
                version,
                at,
            ],
        ),
        WorkspaceEvent::WorkspaceMoved(e) => {
            SqlStep::new("SELECT workspaces_move($1, $2, $3, $4)", params![id, e.parent_id, at, version])
        }
        WorkspaceEvent::WorkspaceArchived {} => status(id, WorkspaceStatus::Archived, version, at),
        WorkspaceEvent::WorkspaceRestored {} => status(id, WorkspaceStatus::Active, version, at),
        WorkspaceEvent::WorkspaceDeleted {} => status(id, WorkspaceStatus::Deleted, version, at),
        WorkspaceEvent::InvitationCreated(e) => SqlStep::new(
            "INSERT INTO invitations (id, workspace_id, email, role, status, token_hash, expires_at, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $7)",
            params![
                e.invitation_id,
                id,
                e.email,
                e.role,
                hex::decode(&e.token_hash).unwrap_or_default(),
                e.expires_at,
                at
            ],
        ),
        WorkspaceEvent::InvitationAccepted(e) => SqlStep::new(
            "UPDATE invitations SET status = 'accepted', user_id = $2, updated_at = $3 WHERE id = $1",
            params![e.invitation_id, e.user_id, at],
        ),
        WorkspaceEvent::InvitationDeclined(e) => invitation_status(e.invitation_id, InvitationStatus::Declined, at),
        WorkspaceEvent::InvitationRevoked(e) => invitation_status(e.invitation_id, InvitationStatus::Revoked, at),
        WorkspaceEvent::MemberAdded(e) => SqlStep::new(
            "INSERT INTO members (workspace_id, user_id, role, joined_at) VALUES ($1, $2, $3, $4)",
            params![id, e.user_id, e.role, at],
        ),
        WorkspaceEvent::MemberRoleChanged(e) => SqlStep::new(
            "UPDATE members SET role = $3 WHERE workspace_id = $1 AND user_id = $2",
            params![id, e.user_id, e.role],
        ),
        WorkspaceEvent::MemberRemoved(e) => {
            SqlStep::new("DELETE FROM members WHERE workspace_id = $1 AND user_id = $2", params![id, e.user_id])
        }
        WorkspaceEvent::WorkspaceSecretIssued(e) => SqlStep::new(
            "UPDATE workspaces SET secret_version = $2, version = $3, updated_at = $4 WHERE id = $1",
            params![id, e.version, version, at],
        ),
        // Their rows are `projections::partner`'s; the workspace's version follows.
        key_event @ (WorkspaceEvent::ExternalKeyAdded(_)
        | WorkspaceEvent::ExternalKeyDeleted(_)
        | WorkspaceEvent::InteractionKeyCreated(_)
        | WorkspaceEvent::InteractionKeySecretClaimed(_)
        | WorkspaceEvent::InteractionKeyRevoked(_)) => {
            let bump = SqlStep::new("UPDATE workspaces SET version = $2 WHERE id = $1", params![id, version]);
            return Ok(super::partner::workspace_key_step(id, &key_event, at).into_iter().chain([bump]).collect());
        }
    };
    // Membership and invitation events change the workspace too: its version follows.
    let is_workspace_row = matches!(
        event.event_type.as_str(),
        "WorkspaceCreated"
            | "WorkspaceUpdated"
            | "WorkspaceMoved"
            | "WorkspaceArchived"
            | "WorkspaceRestored"
            | "WorkspaceDeleted"
            | "WorkspaceSecretIssued"
    );
    if is_workspace_row {
        return Ok(vec![step]);
    }
    Ok(vec![step, SqlStep::new("UPDATE workspaces SET version = $2 WHERE id = $1", params![id, version])])
}
