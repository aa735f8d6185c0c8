//! Hub schema migrations (the SQL under `migrations/hub`), embedded in the binary, and the
//! rights of the role `hub serve` runs as.
//!
//! refinery takes no lock of its own, so the run is wrapped in a session advisory lock:
//! two hubs starting at once migrate one after the other, the second finding nothing to do.
//!
//! Least privilege: the owning role migrates and owns every table; the serving role gets
//! `SELECT, INSERT` on `events` and nothing more there, so it can neither rewrite the log
//! nor drop or disable the triggers that keep it append-only (only an owner may alter a
//! table). The grants are made again after every migration run, so tables added by later
//! migrations are covered too.

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

/// What `hub migrate` does, as the owning role: the hub's migrations, the schema of the
/// embedded instance of a single-node hub, then the rights of `serving_role` (none to grant
/// when the hub serves as the owner).
pub async fn prepare(owner: &tokio_postgres::Config, serving_role: Option<&str>) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut client = crate::db::connect(owner).await.context("connecting to the database as its owner")?;
    run(&mut client).await?;
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
    let outcome = async {
        instance::embedded::prepare_schema(owner).await.context("preparing the embedded instance's schema")?;
        if let Some(role) = serving_role {
            grant(&mut client, role).await.with_context(|| format!("granting the serving role {role} its rights"))?;
        }
        anyhow::Ok(())
    }
    .await;
    client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await?;
    outcome
}

/// Gives `role` what serving needs on every table there is now: the log may only be read
/// and appended to, the migration history only read, the other tables (read models,
/// outbox, keyring, idempotency, relay, the embedded instance's state) read and written.
/// No TRUNCATE, REFERENCES or TRIGGER anywhere, and no ownership.
async fn grant(client: &mut Client, role: &str) -> Result<(), tokio_postgres::Error> {
    let role = format!("\"{}\"", role.replace('"', "\"\""));
    let tx = client.transaction().await?;
    for schema in ["public", "instance"] {
        tx.batch_execute(&format!(
            "REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {role}; \
             GRANT USAGE ON SCHEMA {schema} TO {role}; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}; \
             GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role}; \
             REVOKE INSERT, UPDATE, DELETE ON {schema}.refinery_schema_history FROM {role};"
        ))
        .await?;
    }
    tx.batch_execute(&format!("REVOKE UPDATE, DELETE ON public.events FROM {role}")).await?;
    tx.commit().await
}

/// Whether the connected role may migrate: it owns the log (or is a superuser), or the
/// database is still empty and it may create tables.
pub async fn may_migrate(client: &impl tokio_postgres::GenericClient) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_one(
            "SELECT CASE WHEN to_regclass('public.events') IS NULL THEN has_schema_privilege('public', 'CREATE') \
             ELSE pg_has_role((SELECT relowner FROM pg_class WHERE oid = to_regclass('public.events')), 'USAGE') END",
            &[],
        )
        .await?
        .get(0))
}

/// The version of the newest migration this binary knows.
pub fn latest_version() -> i32 {
    migrations::runner().get_migrations().iter().map(|m| m.version()).max().unwrap_or(0)
}

/// Whether the database has every migration this binary knows.
pub async fn is_current(client: &impl tokio_postgres::GenericClient) -> Result<bool, tokio_postgres::Error> {
    // Two queries: a statement naming a missing table fails as a whole.
    let exists: bool = client.query_one("SELECT to_regclass('refinery_schema_history') IS NOT NULL", &[]).await?.get(0);
    if !exists {
        return Ok(false);
    }
    let applied: Option<i32> = client.query_one("SELECT max(version) FROM refinery_schema_history", &[]).await?.get(0);
    Ok(applied.is_some_and(|v| v >= latest_version()))
}
