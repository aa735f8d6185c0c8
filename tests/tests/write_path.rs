//! The hub's write path with its caches, across two hub processes on one database: cached
//! aggregates never lose an update, cached keys never outlive their revocation, and the
//! answers come from the state the command decided.

use std::time::Duration;

use e2e::{Api, HubProcess, OPERATOR_KEY, TestDatabase, wait_until};
use serde_json::json;

struct TwoHubs {
    _hubs: [HubProcess; 2],
    operators: [Api; 2],
    org: String,
}

async fn two_hubs(db: &TestDatabase) -> TwoHubs {
    let first = HubProcess::spawn(&db.url, &[], &[]).await;
    let second = HubProcess::spawn(&db.url, &[], &[]).await;
    let operators = [Api::new(&first.url(""), Some(OPERATOR_KEY)), Api::new(&second.url(""), Some(OPERATOR_KEY))];
    let org = operators[0]
        .post("/v1/organizations", json!({"name": "acme", "email": "ops@acme.test", "plan": "pro"}))
        .await
        .expect(201);
    let org = org.body["id"].as_str().unwrap().to_owned();
    TwoHubs { _hubs: [first, second], operators, org }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hubs_alternating_patches_on_a_cached_workspace_lose_no_update() {
    let db = TestDatabase::new().await;
    let hubs = two_hubs(&db).await;
    let body = json!({"name": "shared", "instance_id": "alpha", "organization_id": hubs.org});
    let created = hubs.operators[0].post("/v1/workspaces", body).await.expect(201);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/workspaces/{id}");
    // Both hubs hold the workspace in their caches before the alternation starts.
    for operator in &hubs.operators {
        operator.patch(&path, json!({"settings": {"warm": true}})).await.expect(200);
    }

    let mut last_version = 0;
    for i in 0..200 {
        let reply = hubs.operators[i % 2].patch(&path, json!({"settings": {format!("k{i}"): i}})).await.expect(200);
        // The answer is the state the command decided: it holds this change.
        assert_eq!(reply.body["settings"][format!("k{i}")], i, "{}", reply.text);
        let version = reply.body["version"].as_i64().unwrap();
        assert!(version > last_version, "versions must grow: {version} after {last_version}");
        last_version = version;
    }

    for operator in &hubs.operators {
        let settings = operator.get(&path).await.expect(200).body["settings"].clone();
        let keys = settings.as_object().unwrap().keys().filter(|k| k.starts_with('k')).count();
        assert_eq!(keys, 200, "{settings}");
        for i in 0..200 {
            assert_eq!(settings[format!("k{i}")], i);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_revoked_through_one_hub_fails_on_it_at_once_and_on_the_other_within_a_second() {
    let db = TestDatabase::new().await;
    let hubs = two_hubs(&db).await;
    let key = hubs.operators[0]
        .post("/v1/api-keys", json!({"name": "admin", "scopes": ["*"], "organization_id": hubs.org}))
        .await
        .expect(201);
    let (key_id, secret) =
        (key.body["id"].as_str().unwrap().to_owned(), key.body["secret"].as_str().unwrap().to_owned());
    let keyed: Vec<Api> = hubs.operators.iter().map(|operator| operator.with_key(&secret)).collect();
    // Both hubs have authenticated the key (and hold it in their key caches).
    for api in &keyed {
        for _ in 0..3 {
            api.get("/v1/workspaces").await.expect(200);
        }
    }

    hubs.operators[0].delete(&format!("/v1/api-keys/{key_id}")).await.expect(204);
    let on_first = keyed[0].get("/v1/workspaces").await;
    assert_eq!(on_first.status, 401, "the hub that revoked the key must refuse it at once: {}", on_first.text);

    wait_until("the other hub refuses the revoked key", Duration::from_secs(1), || async {
        (keyed[1].get("/v1/workspaces").await.status == 401).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cold_hub_loads_a_long_stream_from_its_snapshot_and_ignores_a_broken_one() {
    let db = TestDatabase::new().await;
    let hubs = two_hubs(&db).await;
    let body = json!({"name": "long", "instance_id": "alpha", "organization_id": hubs.org});
    let created = hubs.operators[0].post("/v1/workspaces", body).await.expect(201);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/workspaces/{id}");
    for i in 0..250 {
        hubs.operators[0].patch(&path, json!({"settings": {format!("k{i}"): i}})).await.expect(200);
    }
    let client = db.connect().await;
    let stream = format!("workspace-{id}");
    assert_eq!(snapshot_version(&client, &stream).await, None, "a hub that followed the stream needs no snapshot");

    // The second hub has never loaded the workspace: it reads 252 events and keeps a
    // snapshot of where it got to.
    let reply = hubs.operators[1].patch(&path, json!({"settings": {"cold": 1}})).await.expect(200);
    assert_eq!(reply.body["version"], 253);
    assert_eq!(snapshot_version(&client, &stream).await, Some(252));

    // A third, cold hub starts from the snapshot (marked here so its use shows in the
    // answer, which renders the decided state).
    client
        .execute(
            "UPDATE aggregate_snapshots SET state = jsonb_set(state, '{state,name}', '\"from the snapshot\"') \
             WHERE stream_id = $1",
            &[&stream],
        )
        .await
        .unwrap();
    let third = HubProcess::spawn(&db.url, &[], &[]).await;
    let operator = Api::new(&third.url(""), Some(OPERATOR_KEY));
    let reply = operator.patch(&path, json!({"settings": {"third": 1}})).await.expect(200);
    assert_eq!(reply.body["version"], 254);
    assert_eq!(reply.body["name"], "from the snapshot");
    assert_eq!(reply.body["settings"]["k0"], 0);
    assert_eq!(reply.body["settings"]["k249"], 249);
    assert_eq!(reply.body["settings"]["cold"], 1);

    // A snapshot it cannot read is ignored: the stream is the truth.
    client
        .execute("UPDATE aggregate_snapshots SET state = '[]'::jsonb WHERE stream_id = $1", &[&stream])
        .await
        .unwrap();
    let fourth = HubProcess::spawn(&db.url, &[], &[]).await;
    let operator = Api::new(&fourth.url(""), Some(OPERATOR_KEY));
    let reply = operator.patch(&path, json!({"settings": {"fourth": 1}})).await.expect(200);
    assert_eq!(reply.body["version"], 255);
    assert_eq!(reply.body["settings"]["third"], 1);
    assert_eq!(reply.body["settings"]["k123"], 123);
    assert_eq!(reply.body["name"], "long");
    assert_eq!(snapshot_version(&client, &stream).await, Some(254), "the broken snapshot is replaced");
    let get = operator.get(&path).await.expect(200);
    assert_eq!(get.body, reply.body, "the answer is what the read model holds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn archive_and_restore_answer_what_a_get_then_returns_and_an_archived_parent_blocks_a_restore() {
    let db = TestDatabase::new().await;
    let hubs = two_hubs(&db).await;
    let [first, second] = &hubs.operators;
    let body = json!({"name": "root", "instance_id": "alpha", "organization_id": hubs.org});
    let root = first.post("/v1/workspaces", body).await.expect(201).body["id"].as_str().unwrap().to_owned();
    let body = json!({"name": "child", "instance_id": "alpha", "organization_id": hubs.org, "parent_id": root});
    let child = first.post("/v1/workspaces", body).await.expect(201).body["id"].as_str().unwrap().to_owned();

    let archived = first.post(&format!("/v1/workspaces/{root}/archive"), json!({})).await.expect(200);
    assert_eq!(archived.body["status"], "archived");
    assert_eq!(archived.body, first.get(&format!("/v1/workspaces/{root}")).await.expect(200).body);
    assert_eq!(second.get(&format!("/v1/workspaces/{child}")).await.expect(200).body["status"], "archived");

    // Archiving again changes nothing and answers the same.
    let again = second.post(&format!("/v1/workspaces/{root}/archive"), json!({})).await.expect(200);
    assert_eq!(again.body, archived.body);

    // On either hub, the child waits for its parent.
    for api in [first, second] {
        let refused = api.post(&format!("/v1/workspaces/{child}/restore"), json!({})).await.expect(409);
        assert_eq!(refused.body["code"], "parent_archived", "{}", refused.text);
    }

    let restored = second.post(&format!("/v1/workspaces/{root}/restore"), json!({})).await.expect(200);
    assert_eq!(restored.body["status"], "active");
    assert_eq!(restored.body["version"], archived.body["version"].as_i64().unwrap() + 1);
    assert_eq!(restored.body, first.get(&format!("/v1/workspaces/{root}")).await.expect(200).body);
    let child_view = first.get(&format!("/v1/workspaces/{child}")).await.expect(200).body;
    assert_eq!(child_view["status"], "active", "the subtree follows its root");

    // A child archived and restored alone answers the same way.
    let archived = first.post(&format!("/v1/workspaces/{child}/archive"), json!({})).await.expect(200);
    assert_eq!(archived.body, second.get(&format!("/v1/workspaces/{child}")).await.expect(200).body);
    let restored = first.post(&format!("/v1/workspaces/{child}/restore"), json!({})).await.expect(200);
    assert_eq!(restored.body, second.get(&format!("/v1/workspaces/{child}")).await.expect(200).body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn organization_creates_and_changes_answer_what_a_get_then_returns_on_either_hub() {
    let db = TestDatabase::new().await;
    let hubs = two_hubs(&db).await;
    let [first, second] = &hubs.operators;
    let get = |api: &Api, id: &str| {
        let (api, path) = (api.clone(), format!("/v1/organizations/{id}"));
        async move { api.get(&path).await.expect(200).body }
    };

    // The server's defaults, then limits the operator names.
    let created = first.post("/v1/organizations", json!({"name": "plain", "email": "a@plain.test", "plan": "free"}));
    let created = created.await.expect(201).body;
    let plain = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created, get(first, &plain).await);
    assert_eq!(created, get(second, &plain).await);
    let body = json!({"name": "limited", "email": "a@limited.test", "plan": "pro",
        "rate_limit_ceiling_per_minute": 77, "quotas": {"workspaces": 5, "pending_invitations": 9}});
    let created = second.post("/v1/organizations", body).await.expect(201).body;
    let limited = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (created["rate_limit_ceiling_per_minute"].as_u64(), created["quotas"]["workspaces"].as_u64()),
        (Some(77), Some(5))
    );
    assert_eq!(created, get(first, &limited).await);

    let path = format!("/v1/organizations/{plain}");
    let patched = second.patch(&path, json!({"name": "renamed"})).await.expect(200).body;
    assert_eq!(patched["name"], "renamed");
    assert_eq!(patched, get(first, &plain).await);

    // The organization's own key changes its settings on one hub: the other, whose cached
    // organization is now behind, still answers with the latest state.
    let key = first.post("/v1/api-keys", json!({"name": "own", "scopes": ["*"], "organization_id": plain}));
    let own = first.with_key(key.await.expect(201).body["secret"].as_str().unwrap());
    own.patch("/v1/settings", json!({"max_key_lifetime_days": 30})).await.expect(200);
    let after_settings = get(first, &plain).await;
    assert_eq!(after_settings["version"], patched["version"].as_i64().unwrap() + 1);
    let body = json!({"email": "b@plain.test", "rate_limit_ceiling_per_minute": 10, "quotas": {"api_keys": 3}});
    let patched = second.patch(&path, body).await.expect(200).body;
    assert_eq!(patched["version"], after_settings["version"].as_i64().unwrap() + 2, "profile and limits");
    assert_eq!((patched["email"].as_str(), patched["quotas"]["api_keys"].as_u64()), (Some("b@plain.test"), Some(3)));
    assert_eq!(patched, get(first, &plain).await);

    // A change that changes nothing answers the state as it is.
    let unchanged = first.patch(&path, json!({"name": "renamed", "quotas": {"api_keys": 3}})).await.expect(200).body;
    assert_eq!(unchanged, patched);

    // The organization's own key may change its profile, not its plan or limits.
    let own_path = format!("/v1/organizations/{plain}");
    let by_key = own.patch(&own_path, json!({"name": "self-named"})).await.expect(200).body;
    assert_eq!(by_key["name"], "self-named");
    assert_eq!(by_key, get(second, &plain).await);
    own.patch(&own_path, json!({"quotas": {}})).await.expect(403);
    own.patch(&format!("/v1/organizations/{limited}"), json!({"name": "theirs"})).await.expect(404);

    // Deleted through one hub, the organization is gone on the other, whose cache held it.
    second.delete(&path).await.expect(204);
    first.patch(&path, json!({"name": "late"})).await.expect(404);
    first.delete(&path).await.expect(404);
}

async fn snapshot_version(client: &tokio_postgres::Client, stream: &str) -> Option<i64> {
    client
        .query_opt("SELECT version FROM aggregate_snapshots WHERE stream_id = $1", &[&stream])
        .await
        .unwrap()
        .map(|row| row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_create_under_a_parent_restored_on_the_other_hub_is_not_refused_as_archived() {
    let db = TestDatabase::new().await;
    let first = HubProcess::spawn(&db.url, &[], &[]).await;
    let second = HubProcess::spawn(&db.url, &[], &[]).await;
    let [a, b] = [Api::new(&first.url(""), Some(OPERATOR_KEY)), Api::new(&second.url(""), Some(OPERATOR_KEY))];
    let org =
        a.post("/v1/organizations", json!({"name": "acme", "email": "ops@acme.test", "plan": "pro"})).await.expect(201);
    let org = org.body["id"].as_str().unwrap().to_owned();
    for i in 0..5 {
        // The parent is created and archived through the second hub: it caches it archived.
        let body = json!({"name": format!("p{i}"), "instance_id": "alpha", "organization_id": org});
        let parent = b.post("/v1/workspaces", body).await.expect(201).body["id"].as_str().unwrap().to_owned();
        b.post(&format!("/v1/workspaces/{parent}/archive"), json!({})).await.expect(200);
        // Restored through the first hub; the client then creates a child through the second.
        a.post(&format!("/v1/workspaces/{parent}/restore"), json!({})).await.expect(200);
        let body = json!({"name": "child", "instance_id": "alpha", "organization_id": org, "parent_id": parent});
        let reply = b.post("/v1/workspaces", body).await;
        assert_eq!(reply.status, 201, "attempt {i}: a cached archived parent the log shows restored: {}", reply.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_changed_on_one_hub_can_be_deleted_at_once_through_the_other() {
    let smtp = e2e::SmtpServer::start().expect("start the SMTP server");
    let env = [("SMTP_URL", smtp.url()), ("HUB_PUBLIC_URL", "https://console.example.test".to_owned())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let db = TestDatabase::new().await;
    let first = HubProcess::spawn(&db.url, &[], &env).await;
    let second = HubProcess::spawn(&db.url, &[], &env).await;
    let [a, b] = [Api::new(&first.url(""), Some(OPERATOR_KEY)), Api::new(&second.url(""), Some(OPERATOR_KEY))];
    let org =
        a.post("/v1/organizations", json!({"name": "acme", "email": "ops@acme.test", "plan": "pro"})).await.expect(201);
    let org = org.body["id"].as_str().unwrap().to_owned();
    let body = json!({"name": "w", "instance_id": "alpha", "organization_id": org});
    let ws = a.post("/v1/workspaces", body).await.expect(201).body["id"].as_str().unwrap().to_owned();
    for i in 0..3 {
        let email = format!("u{i}@acme.test");
        a.post(&format!("/v1/workspaces/{ws}/invitations"), json!({"email": email, "role": "admin"})).await.expect(201);
        let mail = e2e::wait_until("the mail", Duration::from_secs(30), || {
            let found = smtp.received().into_iter().find(|m| m.to == email);
            async move { found }
        })
        .await;
        let token = mail.link_token("https://console.example.test/invitations/accept").expect("an accept link");
        let accepted = a.anonymous().post("/v1/invitations/accept", json!({"token": token})).await.expect(200);
        let user = accepted.body["user_id"].as_str().unwrap().to_owned();
        let path = format!("/v1/users/{user}");
        // The second hub decides a change of the user (and caches it) ...
        b.patch(&path, json!({"name": "warm"})).await.expect(200);
        // ... the first hub changes it again ...
        a.patch(&path, json!({"name": "renamed"})).await.expect(200);
        // ... and the client deletes it through the second hub, pinning the version it read.
        let etag = a.get(&path).await.expect(200).header("etag").unwrap().to_owned();
        let reply = if i == 0 {
            b.send(reqwest::Method::DELETE, &path, None, &[("if-match", etag.as_str())]).await
        } else {
            b.delete(&path).await
        };
        assert_eq!(reply.status, 204, "attempt {i}: a delete decided on a stale cached user: {}", reply.text);
    }
}
