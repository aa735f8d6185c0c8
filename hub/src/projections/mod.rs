//! Hub read models, updated by the writer in the same transaction as the append.
//!
//! Each reducer turns one recorded event into SQL steps; the writer runs them in order,
//! pipelined with the insert of the events, before the commit. A reducer only copies the
//! event into rows: every rule was enforced by `decide` (or, for uniqueness, cycles and
//! tree depth, is enforced by constraints these steps hit inside the same transaction).

mod api_keys;
pub mod audit_log;
pub mod claims;
mod organizations;
mod partner;
pub mod rebuild;
mod users;
mod workspaces;

use shared::domain::Aggregate;
use shared::domain::workspace::Workspace;
use shared::{DecodeError, RecordedEvent};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

pub type Param = Box<dyn ToSql + Send + Sync>;

/// One statement of a reducer.
pub struct SqlStep {
    pub sql: &'static str,
    pub params: Vec<Param>,
}

impl std::fmt::Debug for SqlStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Parameters may hold data that must not reach a log; the statement is enough.
        f.debug_struct("SqlStep").field("sql", &self.sql).finish_non_exhaustive()
    }
}

impl SqlStep {
    pub fn new(sql: &'static str, params: Vec<Param>) -> Self {
        Self { sql, params }
    }
}

/// Boxes statement parameters: `params![a, b]`.
macro_rules! params {
    ($($value:expr),* $(,)?) => {
        vec![$(Box::new($value) as $crate::projections::Param),*]
    };
}
pub(crate) use params;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("stream id `{0}` names no known aggregate")]
    UnknownStream(String),
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// Turns events into read-model updates.
pub trait Projector: Send + Sync + 'static {
    fn steps(&self, event: &RecordedEvent) -> Result<Vec<SqlStep>, ProjectionError>;

    /// The steps of a commit's events, in order, with the same effect as `steps` of each.
    /// A projector may merge runs of events into set-based statements: a subtree command
    /// commits thousands of events, and one statement per row would dominate its cost.
    fn steps_all(&self, events: &[RecordedEvent]) -> Result<Vec<SqlStep>, ProjectionError> {
        let mut steps = Vec::with_capacity(events.len());
        for event in events {
            steps.extend(self.steps(event)?);
        }
        Ok(steps)
    }

    /// The unique name an event of `stream_id` takes in these read models, which the
    /// writer checks for a holder before writing the batch (see [`claims`]).
    fn claim(&self, _stream_id: &str, _event_type: &str, _data: &serde_json::Value) -> Option<claims::SiblingName> {
        None
    }

    /// Statements over the events of several commits at once (a batch the writer commits
    /// in one transaction, or a page of a rebuild), run after the steps of all of them: a
    /// read model with one row per event writes the batch's rows in one statement, however
    /// many commits it holds. The events passed the commits' `steps_all`.
    fn batch_steps(&self, _events: &[&RecordedEvent]) -> Vec<SqlStep> {
        Vec::new()
    }
}

/// No read models: the bare event store.
pub struct NoProjections;

impl Projector for NoProjections {
    fn steps(&self, _: &RecordedEvent) -> Result<Vec<SqlStep>, ProjectionError> {
        Ok(Vec::new())
    }
}

/// The hub's read models.
pub struct ReadModels;

impl Projector for ReadModels {
    fn steps(&self, event: &RecordedEvent) -> Result<Vec<SqlStep>, ProjectionError> {
        let unknown = || ProjectionError::UnknownStream(event.stream_id.clone());
        let (category, id) = event.stream_id.split_once('-').ok_or_else(unknown)?;
        let id: Uuid = id.parse().map_err(|_| unknown())?;
        match category {
            "org" => Ok(organizations::steps(id, event)?),
            "key" => Ok(api_keys::steps(id, event)?),
            "workspace" => Ok(workspaces::steps(id, event)?),
            "user" => Ok(users::steps(id, event)?),
            "app" => Ok(partner::app_steps(id, event)?),
            _ => Err(unknown()),
        }
    }

    fn claim(&self, stream_id: &str, event_type: &str, data: &serde_json::Value) -> Option<claims::SiblingName> {
        claims::sibling_name(stream_id, event_type, data)
    }

    fn steps_all(&self, events: &[RecordedEvent]) -> Result<Vec<SqlStep>, ProjectionError> {
        let mut steps = Vec::with_capacity(events.len());
        let mut statuses = workspaces::StatusRun::default();
        let mut events = events.iter().peekable();
        while let Some(event) = events.next() {
            let id = Workspace::id_of_stream(&event.stream_id);
            if let (Some(id), Some(next)) = (id, events.peek())
                && event.event_type == "WorkspaceCreated"
                && let Some(step) = workspaces::created_with_secret(id, event, next)?
            {
                steps.extend(statuses.take());
                steps.push(step);
                events.next();
                continue;
            }
            if let Some(id) = id
                && statuses.push(id, event)
            {
                continue;
            }
            steps.extend(statuses.take());
            if let Some(id) = id
                && statuses.push(id, event)
            {
                continue;
            }
            steps.extend(self.steps(event)?);
        }
        steps.extend(statuses.take());
        Ok(steps)
    }

    fn batch_steps(&self, events: &[&RecordedEvent]) -> Vec<SqlStep> {
        audit_log::insert(events).into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(stream: Uuid, version: i64, event_type: &str, data: serde_json::Value) -> RecordedEvent {
        RecordedEvent {
            position: version,
            stream_id: Workspace::stream_id(stream),
            stream_version: version,
            event_id: Uuid::now_v7(),
            event_type: event_type.to_owned(),
            schema_version: 1,
            data,
            metadata: serde_json::json!({}),
            recorded_at: chrono::Utc::now(),
            prev_hash: vec![0; 32],
            hash: vec![0; 32],
        }
    }

    #[test]
    fn a_create_and_its_first_secret_in_one_commit_become_one_insert() {
        let id = Uuid::now_v7();
        let created = serde_json::json!({"organization_id": Uuid::now_v7(), "parent_id": null, "instance_id": "alpha",
            "name": "Sales", "settings": {}, "webhook_uris": [], "public_keys": []});
        let secret = serde_json::json!({"version": 1, "sealed_secret": "00", "previous_valid_until": null});
        let mut events = vec![event(id, 1, "WorkspaceCreated", created), event(id, 2, "WorkspaceSecretIssued", secret)];
        events[1].recorded_at = events[0].recorded_at;
        let steps = ReadModels.steps_all(&events).unwrap();
        assert_eq!(steps.len(), 1, "{steps:?}");
        assert!(steps[0].sql.starts_with("INSERT INTO workspaces") && steps[0].sql.contains("secret_version"));

        // Recorded apart (a secret issued by a later commit), they stay two statements.
        events[1].recorded_at += chrono::Duration::seconds(1);
        assert_eq!(ReadModels.steps_all(&events).unwrap().len(), 2);
    }

    #[test]
    fn consecutive_status_changes_of_distinct_workspaces_become_one_statement_in_order() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let renamed = serde_json::json!({"name": "Renamed"});
        let events = [
            event(a, 2, "WorkspaceArchived", serde_json::json!({})),
            event(b, 2, "WorkspaceArchived", serde_json::json!({})),
            event(c, 2, "WorkspaceArchived", serde_json::json!({})),
            // The same row again: it must follow the first change, so the run ends.
            event(a, 3, "WorkspaceRestored", serde_json::json!({})),
            event(b, 3, "WorkspaceUpdated", renamed),
            event(c, 3, "WorkspaceDeleted", serde_json::json!({})),
        ];
        let steps = ReadModels.steps_all(&events).unwrap();
        assert_eq!(steps.len(), 4, "{steps:?}");
        assert!(steps[0].sql.contains("unnest"), "three archives in one statement");
        assert!(!steps[1].sql.contains("unnest") && steps[1].sql.contains("status"), "a run of one");
        assert!(steps[2].sql.contains("name = COALESCE"), "the update in its place");
        assert!(!steps[3].sql.contains("unnest") && steps[3].sql.contains("status"));
    }
}
