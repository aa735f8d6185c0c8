//! The end-to-end harness: real PostgreSQL, real nats-server and the real binaries.
//!
//! One PostgreSQL server and one nats-server per test binary, started on first use on
//! free loopback ports; each test gets a fresh database cloned from a migrated template.
//! A watchdog process stops every server and child once the test binary exits, however
//! it exits.

pub mod api;
pub mod binaries;
pub mod nats;
pub mod postgres;
pub mod process;
pub mod receiver;
pub mod smtp;
pub mod wait;

pub use api::{Api, Reply};
pub use binaries::{HubProcess, InstanceProcess, MASTER_KEY, OPERATOR_KEY};
pub use nats::NatsServer;
pub use postgres::{PgServer, TestDatabase};
pub use smtp::SmtpServer;
pub use wait::wait_until;
