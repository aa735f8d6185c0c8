//! Typed domain events, one past-tense enum per aggregate.

pub mod api_key;
pub mod app;
pub mod organization;
pub mod user;
pub mod workspace;
pub mod workspace_keys;

pub use api_key::ApiKeyEvent;
pub use app::AppEvent;
pub use organization::OrganizationEvent;
pub use user::UserEvent;
pub use workspace::WorkspaceEvent;
