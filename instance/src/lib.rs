//! A worker instance: consumes the hub's events for the workspaces placed on it (a
//! durable JetStream consumer on `hub.events.<INSTANCE_ID>.>`), applies each with its
//! checkpoint in one transaction of its own database, fills gaps from the hub's event
//! feed, and serves its state.

pub mod apply;
pub mod cli;
pub mod config;
pub mod consumer;
pub mod db;
pub mod deliveries;
pub mod embedded;
pub mod feed;
pub mod ingest;
pub mod ingest_batch;
pub mod interaction_keys;
pub mod key_cache;
pub mod keyring;
pub mod link;
pub mod migrate;
pub mod openapi;
pub mod rebuild;
pub mod request_id;
pub mod runtime;
pub mod startup;
pub mod usage;
pub mod webhooks;
