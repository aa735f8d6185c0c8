//! A worker instance: consumes the hub's events for the workspaces it owns and serves
//! their data plane.
//!
//! This crate currently provides the process skeleton (configuration, HTTP liveness,
//! graceful shutdown); event consumption and the runtime API are not built yet.

pub mod cli;
pub mod startup;
