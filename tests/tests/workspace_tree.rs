//! The workspace tree at its limits, through the real hub binary: the 32-level depth rule
//! on create and move, trees deeper than that already in the log, and subtree commands
//! over 10,000 workspaces.

use std::sync::Arc;

use e2e::{Api, HubProcess, OPERATOR_KEY, TestDatabase};
use hub::projections::ReadModels;
use hub::store::{Commit, EventStore, ExpectedVersion, StreamAppend, WriterConfig};
use serde_json::json;
use shared::Metadata;
use shared::domain::Aggregate;
use shared::domain::workspace::{NewWorkspace, Workspace, WorkspaceCommand};
use uuid::Uuid;

/// Creates an organization and an all-scopes admin key for it.
async fn organization(operator: &Api, name: &str) -> (Uuid, Api) {
    let org = operator
        .post("/v1/organizations", json!({"name": name, "email": format!("ops@{name}.test"), "plan": "pro"}))
        .await
        .expect(201);
    let org_id = org.body["id"].as_str().unwrap().to_owned();
    let key = operator
        .post("/v1/api-keys", json!({"name": "admin", "scopes": ["*"], "organization_id": org_id}))
        .await
        .expect(201);
    (org_id.parse().unwrap(), operator.with_key(key.body["secret"].as_str().unwrap()))
}

async fn workspace(api: &Api, name: &str, parent: Option<&str>) -> String {
    let reply = api.post("/v1/workspaces", json!({"name": name, "parent_id": parent})).await.expect(201);
    reply.body["id"].as_str().unwrap().to_owned()
}

/// A chain of `levels` workspaces under `parent` (or from the root); returns their ids, top first.
async fn chain(api: &Api, prefix: &str, parent: Option<&str>, levels: usize) -> Vec<String> {
    let mut ids: Vec<String> = Vec::with_capacity(levels);
    for level in 0..levels {
        let parent = ids.last().map(String::as_str).or(parent);
        ids.push(workspace(api, &format!("{prefix} {level}"), parent).await);
    }
    ids
}

/// The event a `POST /v1/workspaces` would record, for appending straight to the log.
fn created(id: Uuid, organization_id: Uuid, parent_id: Option<Uuid>, name: String) -> hub::store::NewEvent {
    let new = NewWorkspace {
        id,
        organization_id,
        parent_id,
        instance_id: Some(hub::startup::EMBEDDED_INSTANCE_ID.into()),
        name,
        settings: None,
        webhook_uris: None,
        public_keys: None,
    };
    let events = Workspace::default().decide(WorkspaceCommand::Create(Box::new(new))).unwrap();
    hub::commands::encode(&events, &Metadata::system()).unwrap().remove(0)
}

fn creation(id: Uuid, event: hub::store::NewEvent) -> StreamAppend {
    StreamAppend { stream_id: Workspace::stream_id(id), expected: ExpectedVersion::NoStream, events: vec![event] }
}

#[tokio::test]
async fn a_workspace_at_level_32_is_created_and_one_at_level_33_is_refused_as_too_deep() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let (_, admin) = organization(&Api::new(&hub.url(""), Some(OPERATOR_KEY)), "deep").await;

    let levels = chain(&admin, "Level", None, 32).await;
    let refused = admin.post("/v1/workspaces", json!({"name": "Level 33", "parent_id": levels[31]})).await.expect(422);
    assert_eq!(refused.body["code"], "too_deep", "{}", refused.text);
    assert_eq!(refused.header("content-type"), Some("application/problem+json"));
    assert_eq!(admin.get("/v1/workspaces/count").await.expect(200).body["count"], 32);
    // A sibling at level 32 is still fine.
    workspace(&admin, "Level 31 bis", Some(&levels[30])).await;
}

#[tokio::test]
async fn a_move_that_would_put_any_descendant_at_level_33_is_refused_and_a_move_into_its_own_subtree_is_a_cycle() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let (_, admin) = organization(&Api::new(&hub.url(""), Some(OPERATOR_KEY)), "mover").await;

    let levels = chain(&admin, "Level", None, 30).await;
    // A three-level subtree: moved under level 30 its leaf would be at level 33.
    let branch = chain(&admin, "Branch", None, 3).await;
    let refused = admin.patch(&format!("/v1/workspaces/{}", branch[0]), json!({"parent_id": levels[29]})).await;
    let refused = refused.expect(422);
    assert_eq!(refused.body["code"], "too_deep", "{}", refused.text);
    let unmoved = admin.get(&format!("/v1/workspaces/{}", branch[0])).await.expect(200);
    assert_eq!(unmoved.body["parent_id"], serde_json::Value::Null);

    // Under level 29 its leaf lands exactly at level 32.
    let moved = admin.patch(&format!("/v1/workspaces/{}", branch[0]), json!({"parent_id": levels[28]})).await;
    assert_eq!(moved.expect(200).body["parent_id"], levels[28].as_str());
    let leaf = admin.post("/v1/workspaces", json!({"name": "Too deep", "parent_id": branch[2]})).await.expect(422);
    assert_eq!(leaf.body["code"], "too_deep");

    let cycle = admin.patch(&format!("/v1/workspaces/{}", levels[0]), json!({"parent_id": branch[2]})).await;
    assert_eq!(cycle.expect(409).body["code"], "cycle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_concurrent_moves_that_together_would_make_a_tree_too_deep_exactly_one_is_refused() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let (_, admin) = organization(&Api::new(&hub.url(""), Some(OPERATOR_KEY)), "racing").await;

    // Alone, each move keeps every node within 32 levels: the branch's leaf lands at level
    // 32 under the chain, or the chain goes one level down under a new root. Together the
    // leaf would be at level 33, whichever commits first.
    let levels = chain(&admin, "Level", None, 20).await;
    let branch = chain(&admin, "Branch", None, 12).await;
    let top = workspace(&admin, "Top", None).await;
    let (branch_path, chain_path) = (format!("/v1/workspaces/{}", branch[0]), format!("/v1/workspaces/{}", levels[0]));
    let (first, second) = tokio::join!(
        admin.patch(&branch_path, json!({"parent_id": levels[19]})),
        admin.patch(&chain_path, json!({"parent_id": top})),
    );
    let mut statuses = [first.status.as_u16(), second.status.as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 422], "{} / {}", first.text, second.text);
    let refused = if first.status == 422 { &first } else { &second };
    assert_eq!(refused.body["code"], "too_deep");

    let client = db.connect().await;
    let deepest: i32 = client
        .query_one("SELECT max(cardinality(ancestors)) FROM workspaces WHERE status <> 'deleted'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(deepest <= 32, "the tree is {deepest} levels deep");
}

#[tokio::test]
async fn a_tree_thousands_of_levels_deep_already_in_the_log_is_served_and_the_hub_survives() {
    const LEVELS: usize = 3000;
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let (org_id, admin) = organization(&Api::new(&hub.url(""), Some(OPERATOR_KEY)), "legacy").await;

    // A chain written before the depth rule existed: straight into the log, then projected
    // the way `hub projections rebuild` replays history.
    let store = EventStore::start(db.pool(4), WriterConfig::default());
    let ids: Vec<Uuid> = (0..LEVELS).map(|_| Uuid::now_v7()).collect();
    let appends = ids
        .iter()
        .enumerate()
        .map(|(level, id)| {
            let parent = level.checked_sub(1).map(|p| ids[p]);
            creation(*id, created(*id, org_id, parent, format!("Level {level}")))
        })
        .collect();
    store.commit(Commit { appends, extra: Vec::new() }).await.unwrap();
    let mut client = db.connect().await;
    hub::projections::rebuild::rebuild(&mut client).await.unwrap();

    let reply = admin.get(&format!("/v1/workspaces/{}/tree", ids[0])).await.expect(200);
    // Too deep for a recursive JSON parser: check the nesting by scanning the text.
    assert_eq!(reply.text.matches("\"children\":[").count(), LEVELS);
    assert!(reply.text.ends_with(&format!("\"children\":[]}}{}", "]}".repeat(LEVELS - 1))));
    let mut from = 0;
    for id in &ids {
        from += reply.text[from..].find(&id.to_string()).expect("every level is in the tree, in order");
    }

    let shallow = admin.get(&format!("/v1/workspaces/{}/tree?depth=2", ids[0])).await.expect(200);
    assert_eq!(shallow.body["children"][0]["children"][0]["id"], ids[2].to_string().as_str());
    assert_eq!(shallow.body["children"][0]["children"][0]["children"], json!([]));
    let middle = admin.get(&format!("/v1/workspaces/{}/tree", ids[LEVELS - 2])).await.expect(200);
    assert_eq!(middle.body["children"][0]["id"], ids[LEVELS - 1].to_string().as_str());

    // The legacy chain still takes the subtree commands, and the hub is alive.
    admin.post(&format!("/v1/workspaces/{}/archive", ids[0]), json!({})).await.expect(200);
    let count = admin.get("/v1/workspaces/count?status=archived").await.expect(200);
    assert_eq!(count.body["count"], LEVELS);
    reqwest::get(hub.url("/healthz")).await.expect("the hub is still alive").error_for_status().unwrap();
}

/// Counts `event_type` events and the transactions (`recorded_at` values) they came in.
async fn recorded(client: &tokio_postgres::Client, event_type: &str) -> (i64, i64) {
    let row = client
        .query_one("SELECT count(*), count(DISTINCT recorded_at) FROM events WHERE event_type = $1", &[&event_type])
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiving_restoring_and_deleting_a_subtree_of_ten_thousand_workspaces_each_commit_at_once() {
    const BRANCHES: usize = 99;
    const LEAVES: usize = 100;
    const TOTAL: usize = 1 + BRANCHES + BRANCHES * LEAVES;
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let (org_id, admin) = organization(&Api::new(&hub.url(""), Some(OPERATOR_KEY)), "wide").await;
    let root = workspace(&admin, "Root", None).await;
    let root_id: Uuid = root.parse().unwrap();

    // The rest of the tree goes straight through the event store, one branch per commit,
    // projected by the hub's own read models as the hub's writer would.
    let store = EventStore::start_with(db.pool(4), WriterConfig::default(), Arc::new(ReadModels));
    let commits = (0..BRANCHES).map(|b| {
        let store = store.clone();
        async move {
            let branch = Uuid::now_v7();
            let mut appends = vec![creation(branch, created(branch, org_id, Some(root_id), format!("Branch {b}")))];
            for l in 0..LEAVES {
                let leaf = Uuid::now_v7();
                appends.push(creation(leaf, created(leaf, org_id, Some(branch), format!("Leaf {l}"))));
            }
            store.commit(Commit { appends, extra: Vec::new() }).await.unwrap();
        }
    });
    futures::future::join_all(commits).await;
    assert_eq!(admin.get("/v1/workspaces/count").await.expect(200).body["count"], TOTAL);
    let client = db.connect().await;

    admin.post(&format!("/v1/workspaces/{root}/archive"), json!({})).await.expect(200);
    assert_eq!(admin.get("/v1/workspaces/count?status=archived").await.expect(200).body["count"], TOTAL);
    assert_eq!(recorded(&client, "WorkspaceArchived").await, (TOTAL as i64, 1), "one commit archived them all");

    admin.post(&format!("/v1/workspaces/{root}/restore"), json!({})).await.expect(200);
    assert_eq!(admin.get("/v1/workspaces/count?status=active").await.expect(200).body["count"], TOTAL);
    assert_eq!(recorded(&client, "WorkspaceRestored").await, (TOTAL as i64, 1));

    admin.delete(&format!("/v1/workspaces/{root}?cascade=true")).await.expect(204);
    assert_eq!(admin.get("/v1/workspaces/count").await.expect(200).body["count"], 0);
    assert_eq!(recorded(&client, "WorkspaceDeleted").await, (TOTAL as i64, 1));
    let live: i64 =
        client.query_one("SELECT count(*) FROM workspaces WHERE status <> 'deleted'", &[]).await.unwrap().get(0);
    assert_eq!(live, 0);
}
