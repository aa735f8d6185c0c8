//! The hub: the Admin API, the event store and (later in the flow) the relay.
//!
//! A request becomes a command, `shared` decides the events, the [`store`] appends them
//! to the hash-chained log in PostgreSQL, and the relay publishes them to the instances.

pub mod app;
pub mod audit;
pub mod cli;
pub mod columns;
pub mod commands;
pub mod config;
pub mod db;
pub mod deletion;
pub mod http;
pub mod link;
pub mod log_tail;
pub mod mail;
pub mod migrate;
pub mod projections;
pub mod relay;
pub mod secrets;
pub mod startup;
pub mod store;
pub mod witness;
