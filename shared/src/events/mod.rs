//! Typed domain events, one past-tense enum per aggregate.

pub mod organization;

pub use organization::OrganizationEvent;
