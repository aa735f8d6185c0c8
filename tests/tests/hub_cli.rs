//! The `hub` binary's operator commands, run as a real process.

use e2e::TestDatabase;
use e2e::binaries::hub_command;
use hub::store::{EventStore, ExpectedVersion, NewEvent, WriterConfig};
use shared::Metadata;
use shared::events::organization::{OrganizationCreated, OrganizationEvent};

async fn seed(db: &TestDatabase, streams: usize) {
    let store = EventStore::start(db.pool(4), WriterConfig::default());
    for i in 0..streams {
        let event = OrganizationEvent::OrganizationCreated(OrganizationCreated {
            name: format!("org {i}"),
            email: format!("ops{i}@example.test"),
            plan: "free".into(),
        });
        let new = NewEvent::new(&event, &Metadata::system()).unwrap();
        store.append(format!("org-{i}"), ExpectedVersion::NoStream, vec![new]).await.unwrap();
    }
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs SQL with the append-only triggers switched off, as a superuser tampering would.
async fn tamper(db: &TestDatabase, sql: &str) {
    let client = db.connect().await;
    client
        .batch_execute(&format!(
            "ALTER TABLE events DISABLE TRIGGER USER; {sql}; \
             ALTER TABLE events ENABLE ALWAYS TRIGGER events_no_update_or_delete; \
             ALTER TABLE events ENABLE ALWAYS TRIGGER events_no_truncate;"
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn verify_passes_on_an_intact_log() {
    let db = TestDatabase::new().await;
    let empty = hub_command(&db.url, &["events", "verify"]);
    assert!(empty.status.success(), "an empty log verifies: {}", stdout(&empty));
    seed(&db, 25).await;
    let out = hub_command(&db.url, &["events", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).starts_with("ok: 25 events"), "{}", stdout(&out));
}

#[tokio::test]
async fn verify_names_the_first_altered_row() {
    let db = TestDatabase::new().await;
    seed(&db, 20).await;
    tamper(&db, "UPDATE events SET data = jsonb_set(data, '{plan}', '\"enterprise\"') WHERE position IN (7, 12)").await;
    let out = hub_command(&db.url, &["events", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("position 7:"), "{}", stdout(&out));
}

#[tokio::test]
async fn verify_catches_a_rewritten_chain_and_deleted_rows() {
    let db = TestDatabase::new().await;
    seed(&db, 10).await;
    // Removing a row from the middle leaves a hole.
    tamper(&db, "DELETE FROM events WHERE position = 4").await;
    let out = hub_command(&db.url, &["events", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("position 4:"), "{}", stdout(&out));

    let db = TestDatabase::new().await;
    seed(&db, 10).await;
    // Removing the newest rows leaves a valid-looking chain that no longer meets the head.
    tamper(&db, "DELETE FROM events WHERE position > 8").await;
    let out = hub_command(&db.url, &["events", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("position 9:"), "{}", stdout(&out));
}

#[tokio::test]
async fn export_writes_the_log_as_json_lines_after_a_position() {
    let db = TestDatabase::new().await;
    seed(&db, 12).await;
    let out = hub_command(&db.url, &["events", "export", "--after", "5", "--format", "jsonl"]);
    assert!(out.status.success());
    let lines: Vec<shared::RecordedEvent> =
        stdout(&out).lines().map(|line| serde_json::from_str(line).expect("each line is an event")).collect();
    assert_eq!(lines.iter().map(|e| e.position).collect::<Vec<_>>(), (6..=12).collect::<Vec<_>>());
    assert!(lines.iter().all(shared::RecordedEvent::hash_is_valid), "exported events carry verifiable hashes");

    let bad = hub_command(&db.url, &["events", "export", "--format", "xml"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("jsonl"));
}

#[tokio::test]
async fn two_hubs_migrating_at_once_both_succeed() {
    let db = e2e::PgServer::shared().empty_database().await;
    let url = db.url.clone();
    let (a, b) = tokio::join!(
        tokio::task::spawn_blocking({
            let url = url.clone();
            move || hub_command(&url, &["migrate"])
        }),
        tokio::task::spawn_blocking(move || hub_command(&url, &["migrate"])),
    );
    for out in [a.unwrap(), b.unwrap()] {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let client = db.connect().await;
    let head: i64 = client.query_one("SELECT position FROM event_log_head", &[]).await.unwrap().get(0);
    assert_eq!(head, 0);
}

#[tokio::test]
async fn commands_fail_clearly_without_a_reachable_database() {
    let out = hub_command("postgres://postgres@127.0.0.1:1/nowhere", &["events", "verify"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("connecting to the database"), "{stderr}");

    let out = std::process::Command::new(e2e::binaries::binary("hub"))
        .args(["migrate"])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DATABASE_URL is not set"));
}

#[test]
fn every_command_documents_itself() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["migrate", "--help"],
        &["events", "export", "--help"],
        &["events", "verify", "--help"],
    ] {
        let out = std::process::Command::new(e2e::binaries::binary("hub")).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(stdout(&out).contains("Usage:"), "{args:?}");
    }
}
