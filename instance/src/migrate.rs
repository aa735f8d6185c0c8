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

/// Whether the schema on the search path has every migration this binary knows.
pub async fn is_current(client: &tokio_postgres::Client) -> Result<bool, tokio_postgres::Error> {
    let latest = migrations::runner().get_migrations().iter().map(|m| m.version()).max().unwrap_or(0);
    // Two queries: a statement naming a missing table fails as a whole.
    let exists: bool = client
        .query_one("SELECT to_regclass('refinery_schema_history') IS NOT NULL AS present", &[])
        .await?
        .get("present");
    if !exists {
        return Ok(false);
    }
    let applied: Option<i32> =
        client.query_one("SELECT max(version) AS version FROM refinery_schema_history", &[]).await?.get("version");
    Ok(applied.is_some_and(|v| v >= latest))
}
