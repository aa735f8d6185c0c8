//! Connections to the hub database (session limits and keepalives: [`instance::db`]).

use deadpool_postgres::Pool;
use tokio_postgres::{Client, NoTls};

/// A single connection outside the pool (migrations, the CLI).
pub async fn connect(config: &tokio_postgres::Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "database connection closed");
        }
    });
    Ok(client)
}

/// The connection pool: broken connections are replaced. Build it after migrating:
/// cached statements do not survive DDL.
pub fn pool(config: tokio_postgres::Config, size: usize) -> Pool {
    instance::db::pool(config, size)
}
