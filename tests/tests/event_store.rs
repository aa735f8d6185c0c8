//! The event store's guarantees, against a real PostgreSQL server.

use std::collections::HashMap;
use std::time::Duration;

use e2e::{TestDatabase, wait_until};
use hub::store::{AppendError, Commit, EventStore, ExpectedVersion, NewEvent, StreamAppend, WriterConfig};
use serde_json::json;
use shared::events::organization::{OrganizationCreated, OrganizationEvent, OrganizationUpdated};
use shared::{Metadata, RecordedEvent};

fn updated(name: &str) -> NewEvent {
    let event = OrganizationEvent::OrganizationUpdated(OrganizationUpdated {
        name: Some(name.to_owned()),
        email: None,
        plan: None,
    });
    NewEvent::new(&event, &Metadata::system()).unwrap()
}

fn created(name: &str) -> NewEvent {
    let event = OrganizationEvent::OrganizationCreated(OrganizationCreated {
        name: name.to_owned(),
        email: "ops@example.test".into(),
        plan: "free".into(),
    });
    NewEvent::new(&event, &Metadata::system()).unwrap()
}

async fn store(db: &TestDatabase) -> EventStore {
    EventStore::start(db.pool(8), WriterConfig::default())
}

async fn all_events(store: &EventStore) -> Vec<RecordedEvent> {
    let mut events = Vec::new();
    loop {
        let page = store.read_all(events.len() as i64, 1000).await.unwrap();
        if page.is_empty() {
            return events;
        }
        events.extend(page);
    }
}

fn assert_dense_streams(events: &[RecordedEvent]) {
    let mut versions: HashMap<&str, Vec<i64>> = HashMap::new();
    for event in events {
        versions.entry(&event.stream_id).or_default().push(event.stream_version);
    }
    for (stream, seen) in versions {
        let expected: Vec<i64> = (1..=seen.len() as i64).collect();
        assert_eq!(seen, expected, "versions of {stream} are dense and in position order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_get_gapless_positions_and_a_tailing_reader_sees_each_once_in_order() {
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    const TASKS: usize = 64;
    const PER_TASK: usize = 100;
    const STREAMS: usize = 500;
    const TOTAL: i64 = (TASKS * PER_TASK) as i64;

    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut seen = Vec::with_capacity(TOTAL as usize);
            let mut last = 0;
            while (seen.len() as i64) < TOTAL {
                let page = store.read_all(last, 300).await.unwrap();
                for event in &page {
                    assert_eq!(event.position, last + 1, "the reader never skips a position");
                    last = event.position;
                    seen.push(event.event_id);
                }
                if page.is_empty() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            seen
        })
    };

    let mut writers = Vec::new();
    for task in 0..TASKS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..PER_TASK {
                let stream = format!("org-{}", (task * 7 + i * 13) % STREAMS);
                let event = updated(&format!("{task}/{i}"));
                ids.push(event.event_id);
                let recorded = store.append(stream, ExpectedVersion::Any, vec![event]).await.unwrap();
                assert_eq!(recorded.len(), 1);
            }
            ids
        }));
    }
    let mut written = Vec::new();
    for writer in writers {
        written.extend(writer.await.unwrap());
    }
    let read = tokio::time::timeout(Duration::from_secs(60), reader).await.expect("the reader catches up").unwrap();

    let events = all_events(&store).await;
    let positions: Vec<i64> = events.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=TOTAL).collect::<Vec<_>>(), "positions are exactly 1..=6400");
    assert_dense_streams(&events);
    assert_eq!(events.iter().map(|e| e.stream_id.as_str()).collect::<std::collections::HashSet<_>>().len(), STREAMS);

    let mut read_sorted = read.clone();
    read_sorted.sort();
    read_sorted.dedup();
    assert_eq!(read_sorted.len(), read.len(), "the reader saw no event twice");
    let in_log: Vec<uuid::Uuid> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(read, in_log, "the reader saw every event, in position order");
    written.sort();
    read_sorted.sort();
    assert_eq!(written, read_sorted, "every acknowledged append is in the log");
}

#[tokio::test]
async fn of_two_appends_expecting_the_same_version_exactly_one_wins() {
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    for round in 0..30 {
        let stream = format!("org-race-{round}");
        store.append(&stream, ExpectedVersion::NoStream, vec![created("race")]).await.unwrap();
        let (a, b) = tokio::join!(
            store.append(&stream, ExpectedVersion::Exact(1), vec![updated("a")]),
            store.append(&stream, ExpectedVersion::Exact(1), vec![updated("b")]),
        );
        let (won, lost) = match (a, b) {
            (Ok(won), Err(lost)) | (Err(lost), Ok(won)) => (won, lost),
            other => panic!("exactly one append must win, got {other:?}"),
        };
        assert_eq!(won[0].stream_version, 2);
        match lost {
            AppendError::Conflict { stream_id, expected, actual } => {
                assert_eq!(stream_id, stream);
                assert_eq!(expected, ExpectedVersion::Exact(1));
                assert_eq!(actual, 2);
            }
            other => panic!("the loser gets a typed conflict, got {other:?}"),
        }
    }
    let err = store.append("org-race-0", ExpectedVersion::NoStream, vec![created("again")]).await.unwrap_err();
    assert!(err.is_conflict(), "creating an existing stream conflicts");
    let err = store.append("org-new", ExpectedVersion::Exact(3), vec![updated("x")]).await.unwrap_err();
    assert!(err.is_conflict(), "expecting a version the stream never reached conflicts");
}

/// Holds the log-head lock from another connection, so that the writer's next transaction
/// waits and the commits sent meanwhile pile up into one batch.
async fn hold_head_lock(db: &TestDatabase) -> tokio_postgres::Client {
    let blocker = db.connect().await;
    blocker.batch_execute("BEGIN; SELECT * FROM event_log_head FOR UPDATE").await.unwrap();
    blocker
}

async fn wait_for_writer_blocked(db: &TestDatabase) {
    let observer = db.connect().await;
    wait_until("the writer to wait on the log-head lock", Duration::from_secs(10), || {
        let observer = &observer;
        async move {
            let row = observer
                .query_one("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'", &[])
                .await
                .unwrap();
            (row.get::<_, i64>(0) > 0).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn a_conflict_in_a_batch_fails_only_its_own_commit() {
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    store.append("org-taken", ExpectedVersion::NoStream, vec![created("taken")]).await.unwrap();

    let blocker = hold_head_lock(&db).await;
    let primer = tokio::spawn({
        let store = store.clone();
        async move { store.append("org-primer", ExpectedVersion::NoStream, vec![created("primer")]).await }
    });
    wait_for_writer_blocked(&db).await;

    let mut calls = Vec::new();
    for i in 0..9 {
        let store = store.clone();
        calls.push(tokio::spawn(async move {
            store.append(format!("org-batch-{i}"), ExpectedVersion::NoStream, vec![created("ok")]).await
        }));
    }
    let conflicting = tokio::spawn({
        let store = store.clone();
        async move { store.append("org-taken", ExpectedVersion::NoStream, vec![created("dup")]).await }
    });
    // Let every call reach the writer's queue before releasing the lock.
    tokio::time::sleep(Duration::from_millis(200)).await;
    blocker.batch_execute("COMMIT").await.unwrap();

    primer.await.unwrap().unwrap();
    let conflict = conflicting.await.unwrap().unwrap_err();
    assert!(conflict.is_conflict(), "the conflicting caller gets its conflict: {conflict:?}");
    let mut batch_times = Vec::new();
    for call in calls {
        let recorded = call.await.unwrap().expect("batch-mates of a conflict still commit");
        batch_times.push(recorded[0].recorded_at);
    }
    batch_times.dedup();
    assert_eq!(batch_times.len(), 1, "the nine commits were written in one batch");
    assert_eq!(all_events(&store).await.len(), 11);
}

#[tokio::test]
async fn a_commit_the_database_refuses_does_not_sink_its_batch() {
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    let blocker = hold_head_lock(&db).await;
    let primer = tokio::spawn({
        let store = store.clone();
        async move { store.append("org-primer", ExpectedVersion::NoStream, vec![created("primer")]).await }
    });
    wait_for_writer_blocked(&db).await;

    let mut good = Vec::new();
    for i in 0..5 {
        let store = store.clone();
        good.push(tokio::spawn(async move {
            store.append(format!("org-good-{i}"), ExpectedVersion::NoStream, vec![created("fine")]).await
        }));
    }
    // PostgreSQL's jsonb refuses the NUL character, which serde_json accepts.
    let bad = tokio::spawn({
        let store = store.clone();
        async move { store.append("org-bad", ExpectedVersion::NoStream, vec![created("nul \u{0} inside")]).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    blocker.batch_execute("COMMIT").await.unwrap();

    primer.await.unwrap().unwrap();
    assert!(matches!(bad.await.unwrap(), Err(AppendError::Rejected(_))));
    for call in good {
        call.await.unwrap().expect("the other commits of the batch are written");
    }
    let events = all_events(&store).await;
    assert_eq!(events.iter().map(|e| e.position).collect::<Vec<_>>(), (1..=6).collect::<Vec<_>>());
    assert!(events.iter().all(RecordedEvent::hash_is_valid));
}

#[tokio::test]
async fn a_commit_spanning_streams_is_atomic() {
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    store.append("org-b", ExpectedVersion::NoStream, vec![created("b")]).await.unwrap();
    let commit = Commit {
        appends: vec![
            StreamAppend { stream_id: "org-a".into(), expected: ExpectedVersion::NoStream, events: vec![created("a")] },
            StreamAppend {
                stream_id: "org-b".into(),
                expected: ExpectedVersion::NoStream,
                events: vec![created("b2")],
            },
        ],
        extra: Vec::new(),
    };
    assert!(store.commit(commit).await.unwrap_err().is_conflict());
    assert!(store.read_stream("org-a", 0).await.unwrap().is_empty(), "nothing of a failed commit is written");

    let commit = Commit {
        appends: vec![
            StreamAppend {
                stream_id: "org-a".into(),
                expected: ExpectedVersion::NoStream,
                events: vec![created("a"), updated("a1")],
            },
            StreamAppend {
                stream_id: "org-b".into(),
                expected: ExpectedVersion::Exact(1),
                events: vec![updated("b1")],
            },
        ],
        extra: Vec::new(),
    };
    let recorded = store.commit(commit).await.unwrap();
    assert_eq!(
        recorded.iter().map(|e| (e.stream_id.as_str(), e.stream_version)).collect::<Vec<_>>(),
        [("org-a", 1), ("org-a", 2), ("org-b", 2)]
    );
    let stream = store.read_stream("org-a", 1).await.unwrap();
    assert_eq!(stream.len(), 1);
    let decoded: OrganizationEvent = stream[0].decode().unwrap();
    assert!(
        matches!(decoded, OrganizationEvent::OrganizationUpdated(OrganizationUpdated { name: Some(n), .. }) if n == "a1")
    );
}

#[tokio::test]
async fn invalid_commits_are_refused_before_reaching_the_database() {
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    let empty = store.append("org-x", ExpectedVersion::Any, vec![]).await.unwrap_err();
    assert!(matches!(empty, AppendError::Invalid(_)));
    let twice = Commit {
        appends: vec![
            StreamAppend { stream_id: "org-x".into(), expected: ExpectedVersion::Any, events: vec![created("1")] },
            StreamAppend { stream_id: "org-x".into(), expected: ExpectedVersion::Any, events: vec![created("2")] },
        ],
        extra: Vec::new(),
    };
    assert!(matches!(store.commit(twice).await.unwrap_err(), AppendError::Invalid(_)));
    assert_eq!(store.head_position().await.unwrap(), 0);
}

#[tokio::test]
async fn update_delete_and_truncate_on_the_event_log_are_refused() {
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    store.append("org-1", ExpectedVersion::NoStream, vec![created("one")]).await.unwrap();
    let client = db.connect().await;
    for sql in
        ["UPDATE events SET data = '{}'::jsonb", "DELETE FROM events", "TRUNCATE events", "TRUNCATE events CASCADE"]
    {
        let error = client.batch_execute(sql).await.expect_err(sql);
        let message = error.as_db_error().map(|e| e.message().to_owned()).unwrap_or_default();
        assert!(message.contains("append-only"), "{sql}: {message}");
    }
    // Even with replication-role tricks the triggers still fire (ENABLE ALWAYS).
    let error = client
        .batch_execute("SET session_replication_role = replica; DELETE FROM events")
        .await
        .expect_err("replica role does not bypass the trigger");
    assert!(error.as_db_error().is_some_and(|e| e.message().contains("append-only")));
    assert_eq!(all_events(&store).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_writers_in_separate_processes_keep_positions_gapless() {
    let db = TestDatabase::new().await;
    let loader = e2e::binaries::binary("append_load");
    let spawn = || tokio::process::Command::new(&loader).args([db.url.as_str(), "16", "50", "40"]).output();
    let (a, b, c) = tokio::join!(spawn(), spawn(), spawn());
    for out in [a, b, c] {
        let out = out.unwrap();
        assert!(out.status.success(), "append_load failed: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "800");
    }
    let store = store(&db).await;
    let events = all_events(&store).await;
    assert_eq!(events.iter().map(|e| e.position).collect::<Vec<_>>(), (1..=2400).collect::<Vec<_>>());
    assert_dense_streams(&events);
    let mut prev = shared::hash::GENESIS_HASH.to_vec();
    for event in &events {
        assert_eq!(event.prev_hash, prev, "the chain links across writers at {}", event.position);
        assert!(event.hash_is_valid());
        prev.clone_from(&event.hash);
    }
}

type Answer = tokio::task::JoinHandle<Result<Vec<RecordedEvent>, AppendError>>;

/// Sends `commit` from its own task and waits until it is in the writer's queue, so that
/// the commits of one batch keep the order they were submitted in.
async fn submit_queued(store: &EventStore, commit: Commit) -> Answer {
    let before = store.stats().queued;
    let answer = tokio::spawn({
        let store = store.clone();
        async move { store.commit(commit).await }
    });
    wait_until("the commit to reach the writer's queue", Duration::from_secs(10), || {
        let store = store.clone();
        async move { (store.stats().queued > before).then_some(()) }
    })
    .await;
    answer
}

/// Creates stream `org-{name}` and, in the same commit, inserts `name` into `batch_names`.
fn named(name: &str) -> Commit {
    let mut commit = Commit::single(format!("org-{name}"), ExpectedVersion::NoStream, vec![created(name)]);
    commit.extra.push(hub::projections::SqlStep::new(
        "INSERT INTO batch_names (name) VALUES ($1)",
        vec![Box::new(name.to_owned())],
    ));
    commit
}

/// The test's own read model: unique names; a name starting with `late` is refused by a
/// deferred constraint trigger (at commit), one starting with `boom` by a plain `RAISE`.
async fn create_batch_names(db: &TestDatabase) {
    db.connect()
        .await
        .batch_execute(
            "CREATE TABLE batch_names (name text PRIMARY KEY);
             CREATE FUNCTION batch_names_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.name LIKE 'boom%' THEN RAISE EXCEPTION 'boom'; END IF;
                 IF NEW.name LIKE 'late%' THEN
                     RAISE EXCEPTION 'late name' USING ERRCODE = 'check_violation', CONSTRAINT = 'batch_names_late';
                 END IF;
                 RETURN NULL;
             END;
             $$;
             CREATE TRIGGER batch_names_boom AFTER INSERT ON batch_names
                 FOR EACH ROW WHEN (NEW.name LIKE 'boom%') EXECUTE FUNCTION batch_names_refuse();
             CREATE CONSTRAINT TRIGGER batch_names_late AFTER INSERT ON batch_names
                 DEFERRABLE INITIALLY DEFERRED
                 FOR EACH ROW WHEN (NEW.name LIKE 'late%') EXECUTE FUNCTION batch_names_refuse();
             INSERT INTO batch_names VALUES ('taken');",
        )
        .await
        .unwrap();
}

/// Holds the head lock, lets `first` reach the writer (which then waits on the lock),
/// queues `rest` behind it in order, and releases the lock: `rest` is one batch.
async fn one_batch(db: &TestDatabase, store: &EventStore, first: Commit, rest: Vec<Commit>) -> (Answer, Vec<Answer>) {
    let blocker = hold_head_lock(db).await;
    let first = tokio::spawn({
        let store = store.clone();
        async move { store.commit(first).await }
    });
    wait_for_writer_blocked(db).await;
    let mut answers = Vec::new();
    for commit in rest {
        answers.push(submit_queued(store, commit).await);
    }
    assert_eq!(store.stats().queued, answers.len() as u64, "the whole batch waits in the queue");
    blocker.batch_execute("ROLLBACK").await.unwrap();
    (first, answers)
}

async fn assert_chain_verifies(db: &TestDatabase, events: i64) {
    let verified = hub::audit::verify(&db.connect().await).await.unwrap().expect("the chain verifies");
    assert_eq!(verified.events, events);
}

async fn batch_names(db: &TestDatabase) -> Vec<String> {
    let rows = db.connect().await.query("SELECT name FROM batch_names ORDER BY name", &[]).await.unwrap();
    rows.iter().map(|row| row.get(0)).collect()
}

#[tokio::test]
async fn a_unique_violation_in_a_batch_of_nineteen_refuses_that_commit_alone_without_retrying_the_others() {
    let db = TestDatabase::new().await;
    create_batch_names(&db).await;
    let store = store(&db).await;

    let names: Vec<String> = (0..19).map(|i| if i == 9 { "taken".into() } else { format!("n{i:02}") }).collect();
    let (first, answers) = one_batch(&db, &store, named("first"), names.iter().map(|n| named(n)).collect()).await;
    first.await.unwrap().expect("the commit that waited on the lock is written");

    let mut positions = Vec::new();
    for (name, answer) in names.iter().zip(answers) {
        match answer.await.unwrap() {
            Err(AppendError::Rejected(error)) if name == "taken" => {
                let db_error = error.as_db_error().expect("the server's error");
                assert_eq!(db_error.constraint(), Some("batch_names_pkey"));
            }
            Ok(recorded) if name != "taken" => positions.extend(recorded.iter().map(|e| e.position)),
            other => panic!("{name}: unexpected answer {other:?}"),
        }
    }
    assert_eq!(positions, (2..=19).collect::<Vec<_>>(), "the 18 commits got gapless positions in order");
    assert!(store.read_stream("org-taken", 0).await.unwrap().is_empty(), "nothing of the refused commit is written");
    let mut expected: Vec<String> = names.iter().filter(|n| *n != "taken").cloned().collect();
    expected.extend(["first".into(), "taken".into()]);
    expected.sort();
    assert_eq!(batch_names(&db).await, expected, "the read-model rows of exactly the written commits");
    assert_chain_verifies(&db, 19).await;

    let stats = store.stats();
    assert_eq!(stats.solo_retries, 0, "no commit was retried alone: {stats:?}");
    assert_eq!(stats.savepoint_rollbacks, 1, "{stats:?}");
    // The batch was first written merged, refused as a whole, then written isolated.
    assert_eq!(stats.merged_fallbacks, 1, "{stats:?}");
    assert_eq!(stats.refused, 1, "{stats:?}");
    assert_eq!(stats.commits, 20, "{stats:?}");
    assert_eq!(stats.batches, 2, "the lone first commit, then the nineteen as one batch: {stats:?}");
}

#[tokio::test]
async fn refusals_by_a_deferred_trigger_and_a_raise_in_one_batch_are_each_charged_to_their_own_commit() {
    let db = TestDatabase::new().await;
    create_batch_names(&db).await;
    let store = store(&db).await;

    let names = ["a", "late", "b", "c", "boom", "d", "late2"];
    let (first, answers) = one_batch(&db, &store, named("first"), names.iter().map(|n| named(n)).collect()).await;
    first.await.unwrap().unwrap();
    let mut written = Vec::new();
    for (name, answer) in names.into_iter().zip(answers) {
        match answer.await.unwrap() {
            Ok(recorded) => written.push((name, recorded[0].position)),
            Err(AppendError::Rejected(error)) => {
                let db_error = error.as_db_error().expect("the server's error");
                let expected = if name.starts_with("late") { Some("batch_names_late") } else { None };
                assert_eq!(db_error.constraint(), expected, "{name}: {db_error:?}");
                assert!(!["a", "b", "c", "d"].contains(&name), "{name} is refused: {db_error:?}");
            }
            Err(other) => panic!("{name}: {other:?}"),
        }
    }
    assert_eq!(written, [("a", 2), ("b", 3), ("c", 4), ("d", 5)]);
    assert_eq!(batch_names(&db).await, ["a", "b", "c", "d", "first", "taken"]);
    assert_chain_verifies(&db, 5).await;
    let stats = store.stats();
    assert_eq!((stats.refused, stats.savepoint_rollbacks, stats.solo_retries), (3, 3, 0), "{stats:?}");
}

#[tokio::test]
async fn an_append_of_no_events_guards_the_commit_on_that_streams_version() {
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    store.append("org-read", ExpectedVersion::NoStream, vec![created("read")]).await.unwrap();
    let guarded = |stream: &str, version: i64| Commit {
        appends: vec![
            StreamAppend { stream_id: "org-read".into(), expected: ExpectedVersion::Exact(version), events: vec![] },
            StreamAppend { stream_id: stream.into(), expected: ExpectedVersion::NoStream, events: vec![created("x")] },
        ],
        extra: Vec::new(),
    };

    let recorded = store.commit(guarded("org-passes", 1)).await.expect("the guard holds");
    assert_eq!(recorded.iter().map(|e| e.stream_id.as_str()).collect::<Vec<_>>(), ["org-passes"]);
    assert_eq!(store.read_stream("org-read", 0).await.unwrap().len(), 1, "nothing is written to a guarded stream");

    // A stale guard in a batch: that commit alone conflicts.
    let others = vec![named_plain("org-mate-1"), guarded("org-stale", 0), named_plain("org-mate-2")];
    let (first, answers) = one_batch(&db, &store, named_plain("org-first"), others).await;
    first.await.unwrap().unwrap();
    let [mate1, stale, mate2]: [Answer; 3] = answers.try_into().unwrap();
    mate1.await.unwrap().expect("a batch-mate of a stale guard is written");
    mate2.await.unwrap().expect("a batch-mate of a stale guard is written");
    match stale.await.unwrap() {
        Err(AppendError::Conflict { stream_id, expected, actual }) => {
            assert_eq!((stream_id.as_str(), expected, actual), ("org-read", ExpectedVersion::Exact(0), 1));
        }
        other => panic!("a stale guard conflicts, got {other:?}"),
    }
    assert!(store.read_stream("org-stale", 0).await.unwrap().is_empty());
    assert_chain_verifies(&db, 5).await;

    let only_guards = Commit {
        appends: vec![StreamAppend {
            stream_id: "org-read".into(),
            expected: ExpectedVersion::Exact(1),
            events: vec![],
        }],
        extra: Vec::new(),
    };
    assert!(matches!(store.commit(only_guards).await, Err(AppendError::Invalid(_))), "a commit must write something");
}

fn named_plain(stream: &str) -> Commit {
    Commit::single(stream, ExpectedVersion::NoStream, vec![created(stream)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_of_one_sibling_name_give_one_201_and_409_name_taken_to_the_rest() {
    let db = TestDatabase::new().await;
    let hub = e2e::HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let operator = e2e::Api::new(&hub.url(""), Some(e2e::OPERATOR_KEY));
    let org = operator
        .post("/v1/organizations", json!({"name": "twins", "email": "ops@twins.test", "plan": "pro"}))
        .await
        .expect(201);
    let key = operator
        .post("/v1/api-keys", json!({"name": "admin", "scopes": ["*"], "organization_id": org.body["id"]}))
        .await
        .expect(201);
    let admin = operator.with_key(key.body["secret"].as_str().unwrap());

    let replies =
        futures::future::join_all((0..32).map(|_| admin.post("/v1/workspaces", json!({"name": "Twin"})))).await;
    let created = replies.iter().filter(|r| r.status == 201).count();
    assert_eq!(created, 1, "exactly one create wins");
    for reply in replies.iter().filter(|r| r.status != 201) {
        assert_eq!(reply.status, 409, "{}", reply.text);
        assert_eq!(reply.body["code"], "name_taken", "{}", reply.text);
    }
    assert_eq!(admin.get("/v1/workspaces/count").await.expect(200).body["count"], 1);
    let events = all_events(&store(&db).await).await;
    assert_chain_verifies(&db, events.len() as i64).await;
}

/// Appends to `stream` at version 1, and inserts `name` into `batch_names`.
fn update_at_1(stream: &str, name: &str) -> Commit {
    let mut commit = Commit::single(stream, ExpectedVersion::Exact(1), vec![updated(name)]);
    commit.extra.push(hub::projections::SqlStep::new(
        "INSERT INTO batch_names (name) VALUES ($1)",
        vec![Box::new(name.to_owned())],
    ));
    commit
}

#[tokio::test]
async fn a_commit_that_conflicted_only_with_a_refused_batch_mate_is_decided_again() {
    let db = TestDatabase::new().await;
    create_batch_names(&db).await;
    let store = store(&db).await;

    // Among batch-mates (each commit under a savepoint), then the two alone.
    for (stream, before, after) in [("org-crowd", true, true), ("org-pair", false, false)] {
        store.append(stream, ExpectedVersion::NoStream, vec![created(stream)]).await.unwrap();
        let mut batch = Vec::new();
        if before {
            batch.push(named(&format!("before-{stream}")));
        }
        batch.push(update_at_1(stream, "taken"));
        batch.push(update_at_1(stream, &format!("winner-{stream}")));
        if after {
            batch.push(named(&format!("after-{stream}")));
        }
        let (first, answers) = one_batch(&db, &store, named_plain(&format!("{stream}-first")), batch).await;
        first.await.unwrap().unwrap();
        let mut answers = answers.into_iter();
        if before {
            answers.next().unwrap().await.unwrap().expect("the commit before the refused one is written");
        }
        let refused = answers.next().unwrap().await.unwrap();
        assert!(matches!(refused, Err(AppendError::Rejected(_))), "{stream}: {refused:?}");
        let winner = answers.next().unwrap().await.unwrap();
        let winner = winner.unwrap_or_else(|e| panic!("{stream}: the refused commit's version was never taken: {e:?}"));
        assert_eq!((winner[0].stream_id.as_str(), winner[0].stream_version), (stream, 2));
        for rest in answers {
            rest.await.unwrap().expect("the commit after the refused one is written");
        }
    }
    let events = all_events(&store).await;
    assert_dense_streams(&events);
    assert_chain_verifies(&db, events.len() as i64).await;
    assert_eq!(store.stats().solo_retries, 0);
}

fn workspace_created(organization_id: uuid::Uuid, name: &str) -> Commit {
    use shared::events::WorkspaceEvent;
    use shared::events::workspace::WorkspaceCreated;
    let event = WorkspaceEvent::WorkspaceCreated(WorkspaceCreated {
        organization_id,
        parent_id: None,
        instance_id: None,
        name: name.to_owned(),
        settings: json!({}),
        webhook_uris: Vec::new(),
        public_keys: Vec::new(),
    });
    let stream = format!("workspace-{}", uuid::Uuid::now_v7());
    Commit::single(stream, ExpectedVersion::NoStream, vec![NewEvent::new(&event, &Metadata::system()).unwrap()])
}

#[tokio::test]
async fn a_create_taking_an_existing_sibling_name_is_refused_alone_and_its_batch_stays_merged() {
    let db = TestDatabase::new().await;
    let store =
        EventStore::start_with(db.pool(8), WriterConfig::default(), std::sync::Arc::new(hub::projections::ReadModels));
    let org = uuid::Uuid::now_v7();
    store.append(format!("org-{org}"), ExpectedVersion::NoStream, vec![created("names")]).await.unwrap();
    store.commit(workspace_created(org, "Taken")).await.expect("the first holder of the name");
    let before = store.stats();

    let names: Vec<String> = (0..12).map(|i| if i == 5 { "TAKEN".into() } else { format!("w{i:02}") }).collect();
    let (first, answers) = one_batch(
        &db,
        &store,
        workspace_created(org, "first"),
        names.iter().map(|n| workspace_created(org, n)).collect(),
    )
    .await;
    first.await.unwrap().expect("the commit that waited on the lock is written");
    for (name, answer) in names.iter().zip(answers) {
        match answer.await.unwrap() {
            Err(error) if name == "TAKEN" => {
                assert_eq!(error.constraint(), Some("workspaces_sibling_name"), "{error:?}")
            }
            Ok(_) if name != "TAKEN" => {}
            other => panic!("{name}: unexpected answer {other:?}"),
        }
    }
    let count: i64 = db
        .connect()
        .await
        .query_one("SELECT count(*) FROM workspaces WHERE organization_id = $1", &[&org])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 13, "the holder, the first and the eleven free names");
    assert_chain_verifies(&db, 14).await;

    let stats = store.stats();
    // The name was found taken under the head lock, before anything was written: the batch
    // was written merged once, with no savepoint rolled back and no merged attempt wasted.
    assert_eq!(stats.merged_fallbacks - before.merged_fallbacks, 0, "{stats:?}");
    assert_eq!(stats.savepoint_rollbacks - before.savepoint_rollbacks, 0, "{stats:?}");
    assert_eq!(stats.batches - before.batches, 2, "{stats:?}");
    assert_eq!(stats.names_taken - before.names_taken, 1, "{stats:?}");
    assert_eq!(stats.refused - before.refused, 0, "the database refused nothing: {stats:?}");
}

#[tokio::test]
async fn a_name_freed_by_a_batch_mate_is_left_to_the_database_and_taken() {
    let db = TestDatabase::new().await;
    let store =
        EventStore::start_with(db.pool(8), WriterConfig::default(), std::sync::Arc::new(hub::projections::ReadModels));
    let org = uuid::Uuid::now_v7();
    store.append(format!("org-{org}"), ExpectedVersion::NoStream, vec![created("names")]).await.unwrap();
    let holder = workspace_created(org, "Reused");
    let holder_stream = holder.appends[0].stream_id.clone();
    store.commit(holder).await.unwrap();

    let deleted = shared::events::WorkspaceEvent::WorkspaceDeleted {};
    let delete = Commit::single(
        &holder_stream,
        ExpectedVersion::Exact(1),
        vec![NewEvent::new(&deleted, &Metadata::system()).unwrap()],
    );
    let (first, answers) =
        one_batch(&db, &store, workspace_created(org, "first"), vec![delete, workspace_created(org, "reused")]).await;
    first.await.unwrap().unwrap();
    for answer in answers {
        answer.await.unwrap().expect("the delete, then the create of the name it freed");
    }
    assert_eq!(store.stats().names_taken, 0);
}

#[tokio::test]
async fn numbers_read_back_from_the_database_keep_the_hash_they_were_written_with() {
    let db = TestDatabase::new().await;
    let store = store(&db).await;
    // PostgreSQL keeps a JSON number as the exact decimal and prints it in full; each of
    // these must parse back to the same double, or the chain breaks at this event.
    let mut event = created("floats");
    // Each of the first three read back one bit off with serde_json's default parser.
    event.data = json!({"settings": {"a": 1.0715660391465826e-75, "b": 4.893167491442351e282,
        "c": 7.325541847569255e-91, "d": 0.1,
        // An integral double above 2^53: the database keeps its shortest decimal,
        // 28127225299981910, and gives it back as that integer, not the double's exact value.
        "e": 2.812722529998191e16, "f": -2.812722529998191e16, "g": 1.8e19}});
    store.append("org-floats", ExpectedVersion::NoStream, vec![event]).await.unwrap();
    assert_chain_verifies(&db, 1).await;
}
