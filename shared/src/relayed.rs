//! What travels on `hub.events.>`: a recorded event, or a reference to one that NATS
//! refused (too large for the server's `max_payload`), which the instance resolves from
//! the hub's event feed. Either way the message's `Nats-Msg-Id` is the event id.
//!
//! The relay publishes to the JetStream stream [`STREAM`], a workspace's events under
//! `hub.events.<instance_id>.<workspace_id>` (the instance it is placed on reads them) and
//! every other event under `hub.events.hub.<stream_id>`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::RecordedEvent;
use crate::domain::Aggregate;
use crate::domain::workspace::Workspace;

/// The JetStream stream the relay publishes the event log to.
pub const STREAM: &str = "HUB_EVENTS";
/// The subjects of [`STREAM`].
pub const SUBJECTS: &str = "hub.events.>";
/// The header naming a message's event (JetStream drops a duplicate within its window).
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";
const PREFIX: &str = "hub.events";
/// The segment after [`PREFIX`] of the events placed on no instance (no instance may be
/// named so).
pub const HUB_SEGMENT: &str = "hub";

/// The subject `event` is published on: a workspace's event under its instance (when it
/// is placed on one), anything else under `hub`.
pub fn subject(event: &RecordedEvent, instance: Option<&str>) -> String {
    match (Workspace::id_of_stream(&event.stream_id), instance) {
        (Some(workspace), Some(instance)) => format!("{PREFIX}.{instance}.{workspace}"),
        _ => format!("{PREFIX}.{HUB_SEGMENT}.{}", event.stream_id),
    }
}

/// The subjects of the events of workspaces placed on `instance_id`.
pub fn instance_subjects(instance_id: &str) -> String {
    format!("{PREFIX}.{instance_id}.>")
}

/// Most bytes of an event: the JSON of its data and metadata.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// The size the 256 KiB bound applies to: the JSON of an event's data and metadata.
pub fn event_bytes(data: &serde_json::Value, metadata: &serde_json::Value) -> usize {
    let length = |value: &serde_json::Value| serde_json::to_vec(value).map_or(usize::MAX, |bytes| bytes.len());
    length(data).saturating_add(length(metadata))
}

/// Where to find an event in the hub's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventReference {
    pub position: i64,
    pub event_id: Uuid,
    pub stream_id: String,
    pub stream_version: i64,
}

impl EventReference {
    pub fn of(event: &RecordedEvent) -> Self {
        Self {
            position: event.position,
            event_id: event.event_id,
            stream_id: event.stream_id.clone(),
            stream_version: event.stream_version,
        }
    }

    /// Whether `event` is the one referred to.
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        event.event_id == self.event_id
            && event.position == self.position
            && event.stream_id == self.stream_id
            && event.stream_version == self.stream_version
    }
}

/// A message's payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Relayed {
    Reference { event_reference: EventReference },
    Event(Box<RecordedEvent>),
}

impl Relayed {
    pub fn reference(event: &RecordedEvent) -> Self {
        Self::Reference { event_reference: EventReference::of(event) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> RecordedEvent {
        RecordedEvent {
            position: 7,
            stream_id: "workspace-1".into(),
            stream_version: 3,
            event_id: Uuid::now_v7(),
            event_type: "WorkspaceUpdated".into(),
            schema_version: 1,
            data: serde_json::json!({"name": "x"}),
            metadata: serde_json::json!({"actor": {"type": "system", "id": null}}),
            recorded_at: chrono::DateTime::from_timestamp(0, 0).unwrap(),
            prev_hash: vec![0; 32],
            hash: vec![1; 32],
        }
    }

    #[test]
    fn events_and_references_read_back_as_what_they_are() {
        let event = event();
        let as_event: Relayed = serde_json::from_slice(&serde_json::to_vec(&event).unwrap()).unwrap();
        assert_eq!(as_event, Relayed::Event(Box::new(event.clone())));
        let reference = serde_json::to_vec(&Relayed::reference(&event)).unwrap();
        assert!(reference.len() < 200, "a reference is small");
        match serde_json::from_slice(&reference).unwrap() {
            Relayed::Reference { event_reference } => assert!(event_reference.matches(&event)),
            other => panic!("read back as {other:?}"),
        }
    }

    #[test]
    fn a_workspace_event_goes_to_its_instance_and_anything_else_to_the_hub() {
        let id = "0190b5c4-0000-7000-8000-000000000001";
        let mut event = event();
        event.stream_id = format!("workspace-{id}");
        assert_eq!(subject(&event, Some("alpha")), format!("hub.events.alpha.{id}"));
        assert_eq!(subject(&event, None), format!("hub.events.hub.workspace-{id}"));
        event.stream_id = format!("org-{id}");
        assert_eq!(subject(&event, Some("alpha")), format!("hub.events.hub.org-{id}"));
        assert_eq!(instance_subjects("alpha"), "hub.events.alpha.>");
        assert!(SUBJECTS.strip_suffix('>').is_some_and(|all| instance_subjects("alpha").starts_with(all)));
    }

    #[test]
    fn the_size_bound_counts_escaped_json() {
        let quotes = serde_json::json!("\"".repeat(10));
        assert_eq!(event_bytes(&quotes, &serde_json::json!({})), 22 + 2);
    }
}
