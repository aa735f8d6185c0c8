//! The application layer: what a command does, from loading the aggregates it reads to the
//! typed result the HTTP layer renders. Handlers parse, call and render; the functions
//! here own the retry and `If-Match` policy.

pub mod apps;
pub mod cache;
pub mod external_keys;
pub mod interaction_keys;
pub mod load;
pub mod organizations;
pub mod placement;
pub mod snapshots;
pub mod workspaces;
