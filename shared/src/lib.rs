//! Code shared by the hub and the instances.
//!
//! The flow is command → `decide` (pure, here) → events → event store (hub) → relay →
//! instance. This crate holds what both ends must agree on: the event envelope and its
//! hash chain, the typed domain events, and ids. Apart from the process set-up in
//! [`telemetry`] and the HTTP serving loop in [`serve`], it performs no I/O.

pub mod access_token;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod envelope;
pub mod event;
pub mod events;
pub mod feed;
pub mod hash;
pub mod keys;
pub mod link;
pub mod metadata;
pub mod metrics;
pub mod problem;
pub mod rate_limit;
pub mod relayed;
pub mod scope;
pub mod serve;
pub mod supervise;
pub mod telemetry;

pub use envelope::RecordedEvent;
pub use event::{DecodeError, DomainEvent};
pub use metadata::{Actor, ActorType, Metadata};
