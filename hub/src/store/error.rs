//! Append errors. `Conflict` is the caller's to handle (HTTP 409/412), `TooLarge` the
//! request's fault (HTTP 413); the rest are the store's condition (HTTP 503) or a
//! programming error.

use super::ExpectedVersion;

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("stream `{stream_id}` was expected at {expected} but is at version {actual}")]
    Conflict { stream_id: String, expected: ExpectedVersion, actual: i64 },
    #[error("invalid commit: {0}")]
    Invalid(String),
    /// An event over 256 KiB (the JSON of its data and metadata): it could not travel to
    /// the instances, so it is never stored.
    #[error("a `{event_type}` event of {bytes} bytes exceeds 256 KiB")]
    TooLarge { event_type: String, bytes: usize },
    #[error("the database refused the commit")]
    Rejected(#[source] tokio_postgres::Error),
    /// A unique name the commit takes has a live holder, found under the log-head lock
    /// before the batch was written: the refusal the database would have given, by the
    /// name of the index it would have given it with.
    #[error("the commit takes a name already held (constraint {constraint})")]
    Taken { constraint: &'static str },
    #[error("the event store is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the event store has shut down")]
    Closed,
}

impl AppendError {
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }

    /// The constraint that refused the commit, whether the database or the writer's own
    /// check of taken names found the refusal.
    pub fn constraint(&self) -> Option<&str> {
        match self {
            Self::Rejected(error) => error.as_db_error().and_then(|e| e.constraint()),
            Self::Taken { constraint } => Some(constraint),
            _ => None,
        }
    }
}

/// A failed read: the pool could not give a connection, or the query failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the event store is unavailable")]
    Unavailable(#[from] deadpool_postgres::PoolError),
    #[error("reading the event log failed")]
    Query(#[from] tokio_postgres::Error),
}
