//! Typed domain events, one past-tense enum per aggregate.

pub mod api_key;
pub mod organization;
pub mod user;
pub mod workspace;

pub use api_key::ApiKeyEvent;
pub use organization::OrganizationEvent;
pub use user::UserEvent;
pub use workspace::WorkspaceEvent;
