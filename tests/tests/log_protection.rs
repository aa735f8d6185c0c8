//! What stops the event log from being rewritten: the serving role's lack of rights, and
//! the witnesses (the hash of the last event each instance applied per workspace).

use std::time::Duration;

use e2e::binaries::hub_command;
use e2e::{Api, HubProcess, OPERATOR_KEY, TestDatabase, wait_until};
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
    let workspace = admin.post("/v1/workspaces", json!({"name": "Sales"})).await.expect(201);
    let id = workspace.body["id"].as_str().unwrap().to_owned();
    admin.patch(&format!("/v1/workspaces/{id}"), json!({"name": "Sales EU"})).await.expect(200);
    id
}

/// Waits until the embedded instance applied the workspace's newest event; returns its position.
async fn applied_by_the_embedded_instance(db: &TestDatabase, workspace: &str) -> i64 {
    let client = db.connect().await;
    let stream = format!("workspace-{workspace}");
    let last: i64 =
        client.query_one("SELECT max(position) FROM events WHERE stream_id = $1", &[&stream]).await.unwrap().get(0);
    let id: uuid::Uuid = workspace.parse().unwrap();
    wait_until("the embedded instance to apply the workspace", Duration::from_secs(20), || {
        let client = &client;
        async move {
            let row = client.query_opt("SELECT position FROM instance.workspaces WHERE id = $1", &[&id]).await.ok()?;
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
