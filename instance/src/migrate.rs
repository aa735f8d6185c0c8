//! The instance's schema (the SQL under `migrations/instance`), embedded in the binary.

refinery::embed_migrations!("../migrations/instance");

/// Key of the advisory lock held while migrating (an arbitrary, fixed number).
const MIGRATION_LOCK: i64 = 0x696e_7374_6d69_6772;

pub async fn run(client: &mut tokio_postgres::Client) -> anyhow::Result<()> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
    let outcome = migrations::runner().run_async(client).await;
    client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await?;
    outcome?;
    Ok(())
}
