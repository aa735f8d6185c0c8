//! Hub schema migrations (the SQL under `migrations/hub`), embedded in the binary.
//!
//! refinery takes no lock of its own, so the run is wrapped in a session advisory lock:
//! two hubs starting at once migrate one after the other, the second finding nothing to do.

use tokio_postgres::Client;

refinery::embed_migrations!("../migrations/hub");

/// Key of the advisory lock held while migrating (an arbitrary, fixed number).
const MIGRATION_LOCK: i64 = 0x6875_625f_6d69_6772;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("database error while migrating")]
    Database(#[from] tokio_postgres::Error),
    #[error("migration failed")]
    Migration(#[from] refinery::Error),
}

/// Applies every pending migration.
pub async fn run(client: &mut Client) -> Result<(), MigrateError> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
    let outcome = migrations::runner().run_async(client).await;
    client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await?;
    let report = outcome?;
    for migration in report.applied_migrations() {
        tracing::info!(version = migration.version(), name = migration.name(), "applied migration");
    }
    Ok(())
}

/// The version of the newest migration this binary knows.
pub fn latest_version() -> i32 {
    migrations::runner().get_migrations().iter().map(|m| m.version()).max().unwrap_or(0)
}

/// Whether the database has every migration this binary knows.
pub async fn is_current(client: &impl tokio_postgres::GenericClient) -> Result<bool, tokio_postgres::Error> {
    let applied: Option<i32> = client
        .query_one(
            "SELECT CASE WHEN to_regclass('refinery_schema_history') IS NULL THEN NULL \
             ELSE (SELECT max(version) FROM refinery_schema_history) END",
            &[],
        )
        .await?
        .get(0);
    Ok(applied.is_some_and(|v| v >= latest_version()))
}
