//! Connections to the hub database: the same connection and pool code as the instances
//! ([`instance::db`]: session limits, keepalives, broken connections replaced).

/// A single connection outside the pool (migrations, the CLI).
pub use instance::db::connect;

/// The connection pool. Build it after migrating: cached statements do not survive DDL.
pub use instance::db::pool;
