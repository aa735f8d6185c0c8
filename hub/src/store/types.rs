//! What callers hand to the store.

use serde::Serialize;
use shared::relayed::MAX_EVENT_BYTES;
use shared::{DomainEvent, Metadata};
use uuid::Uuid;

use super::AppendError;
use crate::projections::SqlStep;

/// The version a stream must be at for an append to succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedVersion {
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last version must be exactly this (0 means no stream).
    Exact(i64),
    /// No check.
    Any,
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoStream => f.write_str("no stream"),
            Self::Exact(v) => write!(f, "version {v}"),
            Self::Any => f.write_str("any version"),
        }
    }
}

/// An event to append: a typed domain event serialized at the store boundary.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub data: serde_json::Value,
    pub metadata: serde_json::Value,
}

impl NewEvent {
    pub fn new<E: DomainEvent>(event: &E, metadata: &Metadata) -> serde_json::Result<Self> {
        Ok(Self {
            event_id: Uuid::now_v7(),
            event_type: event.event_type().to_owned(),
            schema_version: event.schema_version(),
            data: shared::event::encode_untagged(event)?,
            // Bounded again here, whoever built the metadata.
            metadata: serde_json::to_value(metadata.bounded())?,
        })
    }
}

/// Events to append to one stream, if it is at the expected version.
///
/// An append of no events with an `ExpectedVersion::Exact` (or `NoStream`) is a guard: the
/// commit goes through only if that stream is still at that version, and nothing is
/// written to it. A command that decided on another aggregate's state it read (at that
/// version) guards its commit this way; a stale guard answers the whole commit
/// `AppendError::Conflict`, as any failed expectation does. A commit must still append at
/// least one event somewhere.
#[derive(Debug, Clone)]
pub struct StreamAppend {
    pub stream_id: String,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

/// One command's changes, committed atomically or not at all.
#[derive(Debug, Default)]
pub struct Commit {
    pub appends: Vec<StreamAppend>,
    /// Statements that must commit with the events or not at all (e.g. an outbox row).
    pub extra: Vec<SqlStep>,
}

impl Commit {
    pub fn single(stream_id: impl Into<String>, expected: ExpectedVersion, events: Vec<NewEvent>) -> Self {
        Self { appends: vec![StreamAppend { stream_id: stream_id.into(), expected, events }], extra: Vec::new() }
    }

    pub fn event_count(&self) -> usize {
        self.appends.iter().map(|a| a.events.len()).sum()
    }

    pub(super) fn validate(&self) -> Result<(), AppendError> {
        if self.event_count() == 0 {
            return Err(AppendError::Invalid("a commit must append at least one event".into()));
        }
        // A set, not a scan per append: a subtree command commits to thousands of streams.
        let mut seen = std::collections::HashSet::with_capacity(self.appends.len());
        for append in &self.appends {
            if append.events.is_empty() && append.expected == ExpectedVersion::Any {
                return Err(AppendError::Invalid(format!(
                    "no events for stream `{}`, and no version to guard",
                    append.stream_id
                )));
            }
            if append.stream_id.is_empty() || append.stream_id.len() > 200 {
                return Err(AppendError::Invalid("stream ids are 1 to 200 bytes".into()));
            }
            if !seen.insert(append.stream_id.as_str()) {
                return Err(AppendError::Invalid(format!("stream `{}` appears twice", append.stream_id)));
            }
            for event in &append.events {
                let bytes = shared::relayed::event_bytes(&event.data, &event.metadata);
                if bytes > MAX_EVENT_BYTES {
                    return Err(AppendError::TooLarge { event_type: event.event_type.clone(), bytes });
                }
            }
        }
        Ok(())
    }
}
