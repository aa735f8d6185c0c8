//! Pure domain logic: `decide(&state, command) -> events` holds every rule; `apply` only
//! sets fields. No I/O: the hub loads state, calls `decide`, and appends the events.

pub mod api_key;
pub mod app;
pub mod external_keys;
pub mod grant;
pub mod interaction_key_revocation;
pub mod interaction_keys;
pub mod organization;
#[cfg(test)]
mod testing;
pub mod user;
pub mod values;
pub mod workspace;

use crate::DomainEvent;

/// An aggregate: a consistency boundary with one event stream `<CATEGORY>-<uuid>`.
pub trait Aggregate: Default + Clone + Send + Sync + 'static {
    type Event: DomainEvent + Clone + std::fmt::Debug + PartialEq + Send + Sync;
    type Command;

    const CATEGORY: &'static str;

    fn apply(&mut self, event: &Self::Event);

    fn decide(&self, command: Self::Command) -> Result<Vec<Self::Event>, DomainError>;

    fn stream_id(id: uuid::Uuid) -> String {
        format!("{}-{id}", Self::CATEGORY)
    }

    /// The id of the aggregate whose stream is `stream_id`; `None` for another category's.
    fn id_of_stream(stream_id: &str) -> Option<uuid::Uuid> {
        stream_id.strip_prefix(Self::CATEGORY)?.strip_prefix('-')?.parse().ok()
    }
}

/// A rule a command broke. Each maps to one HTTP status and a stable `code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    #[error("{detail}")]
    Invalid { field: &'static str, constraint: &'static str, detail: String },
    #[error("{detail}")]
    Forbidden { detail: String },
    /// Forbidden for a reason the client can act on, named by `code`.
    #[error("{detail}")]
    Denied { code: &'static str, detail: String },
    /// The thing existed but is used up or expired (an invitation token).
    #[error("{detail}")]
    Gone { code: &'static str, detail: String },
}

impl DomainError {
    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::Conflict { code, detail: detail.into() }
    }

    pub fn invalid(field: &'static str, constraint: &'static str, detail: impl Into<String>) -> Self {
        Self::Invalid { field, constraint, detail: detail.into() }
    }
}

#[cfg(test)]
mod stream_id_tests {
    use super::Aggregate;
    use super::organization::Organization;
    use super::workspace::Workspace;

    #[test]
    fn a_stream_id_names_its_category_and_reads_back_as_its_id() {
        let id = uuid::Uuid::now_v7();
        assert_eq!(Workspace::stream_id(id), format!("workspace-{id}"));
        assert_eq!(Workspace::id_of_stream(&Workspace::stream_id(id)), Some(id));
        assert_eq!(Workspace::id_of_stream(&Organization::stream_id(id)), None, "another category's stream");
        assert_eq!(Workspace::id_of_stream("workspace-1"), None);
        assert_eq!(Workspace::id_of_stream(&format!("workspace{id}")), None);
    }
}
