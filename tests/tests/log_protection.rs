//! What stops the event log from being rewritten: the serving role's lack of rights, and
//! the witnesses (the hash of the last event each instance applied per workspace).

use std::time::Duration;

use e2e::binaries::hub_command;
use e2e::{Api, HubProcess, InstanceProcess, MASTER_KEY, NatsServer, OPERATOR_KEY, PgServer, TestDatabase, wait_until};
use serde_json::{Value, json};
use tokio_postgres::error::SqlState;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn output(out: &std::process::Output) -> String {
    format!("{}{}", stdout(out), String::from_utf8_lossy(&out.stderr))
}

/// Creates an organization, an all-scopes key for it and a workspace renamed once.
async fn renamed_workspace(hub: &HubProcess) -> String {
    placed_workspace(hub, None).await
}

/// [`renamed_workspace`], placed on the instance `instance_id` when given.
async fn placed_workspace(hub: &HubProcess, instance_id: Option<&str>) -> String {
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let org = operator
        .post("/v1/organizations", json!({"name": "acme", "email": "ops@acme.test", "plan": "pro"}))
        .await
        .expect(201);
    let key = operator
        .post("/v1/api-keys", json!({"name": "admin", "scopes": ["*"], "organization_id": org.body["id"]}))
        .await
        .expect(201);
    let admin = operator.with_key(key.body["secret"].as_str().unwrap());
    let workspace =
        admin.post("/v1/workspaces", json!({"name": "Sales", "instance_id": instance_id})).await.expect(201);
    let id = workspace.body["id"].as_str().unwrap().to_owned();
    admin.patch(&format!("/v1/workspaces/{id}"), json!({"name": "Sales EU"})).await.expect(200);
    id
}

/// Waits until the embedded instance applied the workspace's newest event; returns its position.
async fn applied_by_the_embedded_instance(db: &TestDatabase, workspace: &str) -> i64 {
    applied_by(db, "instance.workspaces", db, workspace).await
}

/// Waits until the instance whose checkpoints are in `table` of `witness` applied the
/// workspace's newest event in the hub's `log`; returns its position.
async fn applied_by(log: &TestDatabase, table: &str, witness: &TestDatabase, workspace: &str) -> i64 {
    let client = log.connect().await;
    let stream = format!("workspace-{workspace}");
    let last: i64 =
        client.query_one("SELECT max(position) FROM events WHERE stream_id = $1", &[&stream]).await.unwrap().get(0);
    let id: uuid::Uuid = workspace.parse().unwrap();
    let witness = witness.connect().await;
    let query = format!("SELECT position FROM {table} WHERE id = $1");
    wait_until("the instance to apply the workspace", Duration::from_secs(30), || {
        let (client, query) = (&witness, &query);
        async move {
            let row = client.query_opt(query, &[&id]).await.ok()?;
            row.filter(|r| r.get::<_, i64>(0) == last).map(|_| ())
        }
    })
    .await;
    last
}

/// As a superuser would: edits the data of the event at `position`, then recomputes the
/// hash chain from there to the head, so the chain is internally consistent again.
async fn rewrite_and_rechain(db: &TestDatabase, position: i64, edit: impl FnOnce(&mut Value)) {
    let mut client = db.connect().await;
    let tx = client.transaction().await.unwrap();
    tx.batch_execute("SELECT 1 FROM event_log_head FOR UPDATE; ALTER TABLE events DISABLE TRIGGER USER").await.unwrap();
    let events = hub::store::read_page(&tx, position - 1, 100_000).await.unwrap();
    let mut prev_hash = events[0].prev_hash.clone();
    let mut edit = Some(edit);
    for mut event in events {
        if let Some(edit) = edit.take() {
            edit(&mut event.data);
        }
        event.prev_hash = prev_hash;
        event.hash = event.chain_fields().chain_hash(&event.prev_hash);
        tx.execute(
            "UPDATE events SET data = $2, prev_hash = $3, hash = $4 WHERE position = $1",
            &[&event.position, &event.data, &event.prev_hash, &event.hash],
        )
        .await
        .unwrap();
        prev_hash = event.hash;
    }
    tx.execute("UPDATE event_log_head SET hash = $1", &[&prev_hash]).await.unwrap();
    tx.batch_execute(
        "ALTER TABLE events ENABLE ALWAYS TRIGGER events_no_update_or_delete; \
         ALTER TABLE events ENABLE ALWAYS TRIGGER events_no_truncate",
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn the_serving_role_can_neither_rewrite_the_log_nor_lift_its_protection_while_the_hub_serves() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    renamed_workspace(&hub).await;

    let admin = db.connect().await;
    let users: Vec<String> = admin
        .query(
            "SELECT DISTINCT usename::text FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&db.name],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(users, [e2e::postgres::SERVING_ROLE], "the hub's connections");

    let serving: tokio_postgres::Config = db.serving_url().parse().unwrap();
    let serving = hub::db::connect(&serving).await.expect("the serving role connects");
    for sql in [
        "ALTER TABLE events DISABLE TRIGGER events_no_update_or_delete",
        "ALTER TABLE events DISABLE TRIGGER ALL",
        "DROP TRIGGER events_no_truncate ON events",
        "ALTER TABLE events OWNER TO hub_serve",
        "DROP TABLE events",
        "UPDATE events SET data = '{}' WHERE position = 1",
        "DELETE FROM events WHERE position = 1",
        "TRUNCATE events",
        "CREATE TABLE events_copy (position bigint)",
        "SET session_replication_role = replica",
    ] {
        let error = serving.batch_execute(sql).await.expect_err(sql);
        assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{sql}: {error:?}");
        let message = error.as_db_error().map(|e| e.message().to_owned()).unwrap_or_default();
        assert!(!message.contains("append-only"), "{sql} reached the trigger instead of being refused: {message}");
    }

    // The hub keeps serving, and the log is whole.
    renamed_workspace(&hub).await;
    let verify = hub_command(&db.url, &["events", "verify"]);
    assert_eq!(verify.status.code(), Some(0), "{}", output(&verify));
}

#[tokio::test]
async fn the_witness_check_passes_on_an_untouched_log() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let workspace = renamed_workspace(&hub).await;
    applied_by_the_embedded_instance(&db, &workspace).await;

    let out = hub_command(&db.url, &["events", "verify", "--witness", &db.url]);
    assert_eq!(out.status.code(), Some(0), "{}", output(&out));
    assert!(stdout(&out).contains("1 workspace"), "{}", output(&out));
}

#[tokio::test]
async fn a_rewritten_log_with_a_recomputed_chain_passes_verify_but_not_the_witness_check() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let workspace = renamed_workspace(&hub).await;
    let applied = applied_by_the_embedded_instance(&db, &workspace).await;
    let created: i64 = db
        .connect()
        .await
        .query_one(
            "SELECT position FROM events WHERE stream_id = $1 AND stream_version = 1",
            &[&format!("workspace-{workspace}")],
        )
        .await
        .unwrap()
        .get(0);

    rewrite_and_rechain(&db, created, |data| data["name"] = json!("Forged")).await;

    let verify = hub_command(&db.url, &["events", "verify"]);
    assert_eq!(verify.status.code(), Some(0), "the recomputed chain verifies: {}", output(&verify));
    let witness = hub_command(&db.url, &["events", "verify", "--witness", &db.url]);
    assert_eq!(witness.status.code(), Some(1), "{}", output(&witness));
    let report = stdout(&witness);
    assert!(report.contains(&workspace), "{report}");
    assert!(report.contains(&format!("position {applied}")), "{report}");
}

#[tokio::test]
async fn a_separate_instance_witnesses_a_rewritten_log() {
    let nats = NatsServer::start().unwrap();
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &[], &[("NATS_URL", &nats.url())]).await;
    let instance_db = PgServer::shared().empty_database().await;
    let _alpha = InstanceProcess::instance("alpha", &instance_db.url, &nats.url(), &hub.url("")).await;
    let workspace = placed_workspace(&hub, Some("alpha")).await;
    let applied = applied_by(&db, "workspaces", &instance_db, &workspace).await;

    let intact = hub_command(&db.url, &["events", "verify", "--witness", &instance_db.url]);
    assert_eq!(intact.status.code(), Some(0), "{}", output(&intact));
    assert!(stdout(&intact).contains("1 workspace"), "{}", output(&intact));

    // Rewriting the first event of the log changes every hash after it.
    rewrite_and_rechain(&db, 1, |data| data["name"] = json!("Forged")).await;
    let verify = hub_command(&db.url, &["events", "verify"]);
    assert_eq!(verify.status.code(), Some(0), "the recomputed chain verifies: {}", output(&verify));
    let witness = hub_command(&db.url, &["events", "verify", "--witness", &instance_db.url]);
    assert_eq!(witness.status.code(), Some(1), "{}", output(&witness));
    let report = stdout(&witness);
    assert!(report.contains(&workspace) && report.contains(&format!("position {applied}")), "{report}");
}

#[tokio::test]
async fn a_serving_role_serves_only_a_database_the_owner_migrated_for_it() {
    let db = PgServer::shared().empty_database().await;
    let serve = |env: &[(&str, &str)]| {
        std::process::Command::new(e2e::binaries::binary("hub"))
            .arg("serve")
            .env("DATABASE_URL", db.serving_url())
            .env("HUB_OPERATOR_KEY", OPERATOR_KEY)
            .env("HUB_MASTER_KEY", MASTER_KEY)
            .env("HUB_LISTEN_ADDR", "127.0.0.1:0")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let refused = serve(&[]);
    assert_eq!(refused.status.code(), Some(2), "{}", output(&refused));
    assert!(output(&refused).contains("run `hub migrate`"), "{}", output(&refused));

    let migrate = std::process::Command::new(e2e::binaries::binary("hub"))
        .arg("migrate")
        .env("DATABASE_URL", db.serving_url())
        .env("HUB_MIGRATION_DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(migrate.status.success(), "{}", output(&migrate));
    assert!(output(&migrate).contains("serving role hub_serve granted"), "{}", output(&migrate));

    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let workspace = renamed_workspace(&hub).await;
    applied_by_the_embedded_instance(&db, &workspace).await;
    let serving: tokio_postgres::Config = db.serving_url().parse().unwrap();
    let serving = hub::db::connect(&serving).await.unwrap();
    let error = serving.batch_execute("DELETE FROM events").await.expect_err("the serving role deletes no event");
    assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{error:?}");
    let owner = serving.query_one("SELECT tableowner::text FROM pg_tables WHERE tablename = 'events'", &[]).await;
    assert_eq!(owner.unwrap().get::<_, String>(0), "postgres");
}

#[tokio::test]
async fn a_hub_serving_as_the_owner_still_migrates_a_fresh_database_at_start() {
    let db = PgServer::shared().empty_database().await;
    // A key/value connection string: the harness leaves it as it is, so this hub serves
    // as the superuser that owns everything.
    let owner = format!("host=127.0.0.1 port={} user=postgres dbname={}", PgServer::shared().port, db.name);
    let hub = HubProcess::spawn(&owner, &["--single-node"], &[]).await;
    let workspace = renamed_workspace(&hub).await;
    applied_by_the_embedded_instance(&db, &workspace).await;
}
