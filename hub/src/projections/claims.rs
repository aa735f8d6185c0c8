//! Unique names a commit takes in the read models, found taken before anything is written.
//!
//! The read models' unique indexes refuse a second holder of a name inside the append
//! transaction, but a refusal found that way costs the whole group commit: the merged
//! batch is rolled back and written again with a savepoint per commit. Where creates
//! collide often (clients retrying a create, or racing for one name) that doubles the work
//! of every batch. So the writer asks, under the log-head lock and in the same round trip
//! as the stream versions, whether each name a commit takes already has a holder; no
//! other append can commit while the lock is held, so the answer stands until COMMIT, and
//! a commit whose name is held is answered at once without touching its batch-mates.
//!
//! Only a holder that no commit of the batch changes counts (a batch-mate may be renaming
//! or deleting it); two commits of one batch taking the same new name are left to the
//! index, which stays the rule.

use shared::domain::Aggregate;
use shared::domain::workspace::Workspace;
use shared::events::workspace::WorkspaceCreated;
use uuid::Uuid;

/// A workspace's name among its siblings (index `workspaces_sibling_name`, migration V13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiblingName {
    pub organization_id: Uuid,
    pub parent_id: Option<Uuid>,
    pub name: String,
}

/// The index a taken [`SiblingName`] would have violated (what the API reports).
pub const SIBLING_NAME: &str = "workspaces_sibling_name";

/// The live holders of the claimed names: rows `(claim ordinal from 1, holder id)`. The
/// join repeats the unique index's expression, so each claim is one index probe.
pub const HOLDERS_SQL: &str = "SELECT c.i, w.id \
     FROM unnest($1::uuid[], $2::uuid[], $3::text[]) WITH ORDINALITY AS c(organization_id, parent_id, name, i) \
     JOIN workspaces w ON w.organization_id = c.organization_id \
      AND COALESCE(w.parent_id, '00000000-0000-0000-0000-000000000000'::uuid) = c.parent_id \
      AND lower(w.name) = lower(c.name) AND w.status <> 'deleted'";

/// The stream of a name's holder (a workspace).
pub fn holder_stream(id: Uuid) -> String {
    Workspace::stream_id(id)
}

/// The name an event of `stream_id` takes, if it creates a workspace.
pub fn sibling_name(stream_id: &str, event_type: &str, data: &serde_json::Value) -> Option<SiblingName> {
    if event_type != "WorkspaceCreated" || Workspace::id_of_stream(stream_id).is_none() {
        return None;
    }
    // An event its reducer cannot read claims nothing: the reducer refuses it later.
    let created = <WorkspaceCreated as serde::Deserialize>::deserialize(data).ok()?;
    Some(SiblingName { organization_id: created.organization_id, parent_id: created.parent_id, name: created.name })
}

/// The parameters of [`HOLDERS_SQL`] for `claims`, in order.
pub fn holders_params(claims: &[SiblingName]) -> (Vec<Uuid>, Vec<Uuid>, Vec<&str>) {
    let organizations = claims.iter().map(|c| c.organization_id).collect();
    let parents = claims.iter().map(|c| c.parent_id.unwrap_or(Uuid::nil())).collect();
    let names = claims.iter().map(|c| c.name.as_str()).collect();
    (organizations, parents, names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_workspace_create_claims_a_name() {
        let id = Uuid::now_v7();
        let org = Uuid::now_v7();
        let data = serde_json::json!({"organization_id": org, "parent_id": null, "instance_id": null,
            "name": "Sales", "settings": {}, "webhook_uris": [], "public_keys": []});
        let stream = Workspace::stream_id(id);
        assert_eq!(
            sibling_name(&stream, "WorkspaceCreated", &data),
            Some(SiblingName { organization_id: org, parent_id: None, name: "Sales".into() })
        );
        assert_eq!(sibling_name(&stream, "WorkspaceUpdated", &serde_json::json!({"name": "Sales"})), None);
        assert_eq!(sibling_name(&format!("org-{id}"), "WorkspaceCreated", &data), None, "another category");
        assert_eq!(sibling_name(&stream, "WorkspaceCreated", &serde_json::json!({"name": 1})), None, "unreadable");
    }
}
