//! Typed domain events, one past-tense enum per aggregate.

pub mod api_key;
pub mod organization;
pub mod workspace;

pub use api_key::ApiKeyEvent;
pub use organization::OrganizationEvent;
pub use workspace::WorkspaceEvent;
