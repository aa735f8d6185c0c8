//! `POST /v1/interactions` under concurrency, where the instance stores the interactions of
//! concurrent requests in shared transactions: every request gets its own answer, every
//! 202 is stored exactly once with its deliveries, nothing refused is stored, and a key
//! revoked while requests are in flight is refused from then on.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use e2e::{Api, HubProcess, NatsServer, OPERATOR_KEY, PgServer, Reply, TestDatabase, wait_until};
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

/// The revoked key is refused on purpose, many times.
const NO_THROTTLE: (&str, &str) = ("HUB_AUTH_FAILURES_PER_MINUTE", "100000");
const WAIT: Duration = Duration::from_secs(30);
const REQUESTS: usize = 500;
const AT_ONCE: usize = 50;

async fn workspace(operator: &Api, org: &str, name: &str, webhooks: &[&str]) -> String {
    let body = json!({"name": name, "organization_id": org, "instance_id": "alpha", "webhook_uris": webhooks});
    operator.post("/v1/workspaces", body).await.expect(201).body["id"].as_str().unwrap().to_owned()
}

/// An interaction key of `workspace`: (id, secret).
async fn interaction_key(operator: &Api, workspace: &str) -> (String, String) {
    let external = operator
        .post(
            &format!("/v1/workspaces/{workspace}/external-keys"),
            json!({"provider": "van", "name": "VAN", "api_key": "van-credential-0001"}),
        )
        .await
        .expect(201);
    let created = operator
        .post(
            &format!("/v1/workspaces/{workspace}/interaction-keys"),
            json!({"name": "Canvass", "destination": {"type": "external_key", "external_key_id": external.body["id"]}}),
        )
        .await
        .expect(201)
        .body;
    (created["id"].as_str().unwrap().to_owned(), created["secret"].as_str().unwrap().to_owned())
}

/// Posts until the key is accepted on the instance (its creation arrives asynchronously).
async fn accepted(api: &Api) -> String {
    wait_until("the key to be accepted", WAIT, || {
        let api = api.clone();
        async move {
            let reply = api.post("/v1/interactions", json!({"type": "warm.up", "payload": null})).await;
            (reply.status == 202).then(|| reply.body["id"].as_str().unwrap().to_owned())
        }
    })
    .await
}

/// What request `n` sends and which answers it may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A valid interaction with key 0, 1 or 2 (never revoked): 202.
    Valid(usize),
    /// A valid interaction with the key revoked mid-way: 202 until the revocation is
    /// applied, 401 after.
    Revoked,
    /// Malformed JSON: 400.
    Malformed,
    /// JSON that does not fit the schema: 422.
    Invalid,
}

fn kind(n: usize) -> Kind {
    match n % 10 {
        0 => Kind::Malformed,
        1 => Kind::Invalid,
        2 | 5 | 8 => Kind::Revoked,
        k => Kind::Valid(k % 3),
    }
}

async fn post(api: &Api, key: &str, kind: Kind, n: usize) -> Reply {
    let api = api.with_key(key);
    match kind {
        Kind::Malformed => {
            api.send_raw(
                Method::POST,
                "/v1/interactions",
                "application/json",
                b"{\"type\": \"x\", \"payload\": ".to_vec(),
            )
            .await
        }
        Kind::Invalid => api.post("/v1/interactions", json!({"type": "door.knocked", "payload": n, "extra": 1})).await,
        Kind::Valid(_) | Kind::Revoked => {
            api.post("/v1/interactions", json!({"type": "door.knocked", "payload": {"n": n}})).await
        }
    }
}

#[track_caller]
fn problem(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status.as_u16(), status, "{}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/problem+json"), "{}", reply.text);
    assert_eq!(reply.body["code"], code, "{}", reply.text);
}

#[tokio::test]
async fn five_hundred_concurrent_interactions_are_each_answered_and_each_accepted_one_is_stored_once_with_its_deliveries()
 {
    let nats = NatsServer::start().unwrap();
    let hub_db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&hub_db.url, &[], &[("NATS_URL", &nats.url())]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let org = operator
        .post("/v1/organizations", json!({"name": "Acme", "email": "ops@acme.test", "plan": "pro"}))
        .await
        .expect(201);
    let org = org.body["id"].as_str().unwrap().to_owned();
    let instance_db = PgServer::shared().empty_database().await;
    let instance =
        HubProcess::instance_with_env("alpha", &instance_db.url, &nats.url(), &hub.url(""), &[NO_THROTTLE]).await;
    let two_hooks = ["https://hooks.example.test/a", "https://hooks.example.test/b"];
    let one_hook = ["https://hooks.example.test/c"];
    let first = workspace(&operator, &org, "Field", &two_hooks).await;
    let second = workspace(&operator, &org, "Phones", &one_hook).await;
    // Keys 0 and 1 in the first workspace, 2 in the second; the revoked one in the first.
    let mut keys = Vec::new();
    for ws in [&first, &first, &second, &first] {
        keys.push((ws.clone(), interaction_key(&operator, ws).await));
    }
    let on_instance = Api::new(&instance.url(""), None);
    let mut warm_ups = HashSet::new();
    for (_, (_, secret)) in &keys {
        warm_ups.insert(accepted(&on_instance.with_key(secret)).await);
    }
    let (revoked_workspace, (revoked_id, revoked_secret)) = keys[3].clone();
    let key_of = |kind: Kind| match kind {
        Kind::Valid(k) => keys[k].1.1.clone(),
        _ => revoked_secret.clone(),
    };

    // The key is revoked once a fifth of the requests are answered. Once a request with it
    // got 401, every request sent after must get 401.
    let fifth_answered = Arc::new(tokio::sync::Notify::new());
    let refused_seen = Arc::new(AtomicBool::new(false));
    let revocation_sent = Arc::new(AtomicBool::new(false));
    let revocation = {
        let (operator, fifth_answered, sent) = (operator.clone(), fifth_answered.clone(), revocation_sent.clone());
        let path = format!("/v1/workspaces/{revoked_workspace}/interaction-keys/{revoked_id}");
        async move {
            fifth_answered.notified().await;
            sent.store(true, Ordering::SeqCst);
            operator.delete(&path).await.expect(204);
        }
    };
    let requests = futures::stream::iter(0..REQUESTS)
        .map(|n| {
            let (api, key, refused_seen) = (on_instance.clone(), key_of(kind(n)), refused_seen.clone());
            let (fifth_answered, revocation_sent) = (fifth_answered.clone(), revocation_sent.clone());
            async move {
                let after_refusal = refused_seen.load(Ordering::SeqCst);
                let reply = post(&api, &key, kind(n), n).await;
                if kind(n) == Kind::Revoked && !revocation_sent.load(Ordering::SeqCst) {
                    assert_eq!(
                        reply.status, 202,
                        "request {n} was answered before the key's revocation: {}",
                        reply.text
                    );
                }
                if kind(n) == Kind::Revoked && reply.status == 401 {
                    refused_seen.store(true, Ordering::SeqCst);
                }
                if n == REQUESTS / 5 {
                    fifth_answered.notify_one();
                }
                (n, after_refusal, reply)
            }
        })
        .buffer_unordered(AT_ONCE)
        .collect::<Vec<_>>();
    let (replies, ()) = tokio::join!(requests, revocation);

    // Then, surely after the revocation is applied, 50 more with the revoked key at once.
    wait_until("the revocation to be applied", WAIT, || {
        let api = on_instance.with_key(&revoked_secret);
        async move { (api.post("/v1/interactions", json!({"type": "x", "payload": 1})).await.status == 401).then_some(()) }
    })
    .await;
    let late = futures::stream::iter(REQUESTS..REQUESTS + AT_ONCE)
        .map(|n| {
            let (api, key) = (on_instance.clone(), revoked_secret.clone());
            async move { (n, true, post(&api, &key, Kind::Revoked, n).await) }
        })
        .buffer_unordered(AT_ONCE)
        .collect::<Vec<_>>()
        .await;

    // Each answer as its request deserves.
    let mut accepted_ids: HashMap<Uuid, usize> = HashMap::new();
    let (mut revoked_accepted, mut revoked_refused) = (0, 0);
    for (n, after_refusal, reply) in replies.iter().chain(&late) {
        let kind = if *n < REQUESTS { kind(*n) } else { Kind::Revoked };
        match kind {
            Kind::Malformed => problem(reply, 400, "malformed_json"),
            Kind::Invalid => problem(reply, 422, "validation_failed"),
            Kind::Valid(_) => assert_eq!(reply.status, 202, "request {n}: {}", reply.text),
            Kind::Revoked if reply.status == 401 => {
                problem(reply, 401, "unauthorized");
                revoked_refused += 1;
            }
            Kind::Revoked => {
                assert!(!after_refusal, "request {n} was sent after the revoked key was refused: {}", reply.text);
                assert_eq!(reply.status, 202, "request {n}: {}", reply.text);
                revoked_accepted += 1;
            }
        }
        if reply.status == 202 {
            let id: Uuid = reply.body["id"].as_str().unwrap().parse().unwrap();
            assert!(accepted_ids.insert(id, *n).is_none(), "id {id} answered twice");
        }
    }
    assert!(revoked_refused >= AT_ONCE, "the late requests with the revoked key are refused");
    let valid = (0..REQUESTS).filter(|n| matches!(kind(*n), Kind::Valid(_))).count();
    assert_eq!(accepted_ids.len(), valid + revoked_accepted);

    // Stored: each accepted interaction once, with its key, workspace, payload and one
    // delivery per webhook URI of its workspace; nothing else.
    let client = instance_db.connect().await;
    let rows = client
        .query(
            "SELECT i.id, i.workspace_id::text, i.interaction_key_id::text, i.payload, \
             coalesce(array_agg(d.url ORDER BY d.url) FILTER (WHERE d.id IS NOT NULL), '{}') AS urls \
             FROM interactions i LEFT JOIN deliveries d ON d.interaction_id = i.id GROUP BY i.id",
            &[],
        )
        .await
        .unwrap();
    let mut stored = HashSet::new();
    for row in &rows {
        let id: Uuid = row.get(0);
        assert!(stored.insert(id), "{id} stored twice");
        if warm_ups.contains(&id.to_string()) {
            continue;
        }
        let n = *accepted_ids.get(&id).unwrap_or_else(|| panic!("{id} is stored but was not accepted"));
        let (workspace, key, payload, urls): (String, String, Value, Vec<String>) =
            (row.get(1), row.get(2), row.get(3), row.get(4));
        let (expected_workspace, expected_key) = match kind(n) {
            Kind::Valid(k) => (keys[k].0.clone(), keys[k].1.0.clone()),
            _ => (revoked_workspace.clone(), revoked_id.clone()),
        };
        assert_eq!((workspace.as_str(), key.as_str()), (expected_workspace.as_str(), expected_key.as_str()));
        assert_eq!(payload, json!({"n": n}));
        let hooks: &[&str] = if expected_workspace == first { &two_hooks } else { &one_hook };
        assert_eq!(urls, hooks, "the deliveries of request {n}");
    }
    assert_eq!(stored.len(), accepted_ids.len() + warm_ups.len(), "every accepted interaction is stored");
}

#[tokio::test]
async fn when_the_database_fails_a_batch_every_request_in_it_gets_a_503_and_none_of_it_is_stored() {
    let nats = NatsServer::start().unwrap();
    let hub_db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&hub_db.url, &[], &[("NATS_URL", &nats.url())]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let org = operator
        .post("/v1/organizations", json!({"name": "Acme", "email": "ops@acme.test", "plan": "pro"}))
        .await
        .expect(201);
    let org = org.body["id"].as_str().unwrap().to_owned();
    let instance_db = PgServer::shared().empty_database().await;
    // A statement waiting for a lock fails after a second.
    let instance = HubProcess::instance_with_env(
        "alpha",
        &instance_db.url,
        &nats.url(),
        &hub.url(""),
        &[NO_THROTTLE, ("DATABASE_LOCK_TIMEOUT_SECONDS", "1")],
    )
    .await;
    let ws = workspace(&operator, &org, "Field", &["https://hooks.example.test/a"]).await;
    let (_, secret) = interaction_key(&operator, &ws).await;
    let api = Api::new(&instance.url(""), Some(&secret));
    accepted(&api).await;
    let mut client = instance_db.connect().await;
    let count = "SELECT count(*) FROM interactions";
    let before: i64 = client.query_one(count, &[]).await.unwrap().get(0);

    // While another session holds the table, the batches' inserts fail.
    let blocker = client.transaction().await.unwrap();
    blocker.batch_execute("LOCK TABLE interactions IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let replies = futures::stream::iter(0..20)
        .map(|n| {
            let api = api.clone();
            async move { api.post("/v1/interactions", json!({"type": "door.knocked", "payload": {"n": n}})).await }
        })
        .buffer_unordered(20)
        .collect::<Vec<_>>()
        .await;
    for reply in &replies {
        problem(reply, 503, "unavailable");
    }
    blocker.rollback().await.unwrap();

    assert_eq!(client.query_one(count, &[]).await.unwrap().get::<_, i64>(0), before, "nothing refused is stored");
    let aborted = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                   AND state = 'idle in transaction (aborted)'";
    let left: i64 = client.query_one(aborted, &[]).await.unwrap().get(0);
    assert_eq!(left, 0, "every failed batch's transaction was rolled back, not left on a pooled connection");
    let replies = futures::stream::iter(0..20)
        .map(|n| {
            let api = api.clone();
            async move { api.post("/v1/interactions", json!({"type": "door.knocked", "payload": {"after": n}})).await }
        })
        .buffer_unordered(20)
        .collect::<Vec<_>>()
        .await;
    for reply in &replies {
        assert_eq!(reply.status, 202, "every connection the failed batches used serves again: {}", reply.text);
    }
    let id = api.post("/v1/interactions", json!({"type": "door.knocked", "payload": 1})).await.expect(202).body["id"]
        .as_str()
        .unwrap()
        .parse::<Uuid>()
        .unwrap();
    let stored = client.query_one("SELECT count(*) FROM interactions WHERE id = $1", &[&id]).await.unwrap();
    assert_eq!(stored.get::<_, i64>(0), 1, "once the database is back, interactions are stored again");
}

#[tokio::test]
async fn an_interaction_answered_503_after_its_deadline_is_never_stored_later() {
    let nats = NatsServer::start().unwrap();
    let hub_db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&hub_db.url, &[], &[("NATS_URL", &nats.url())]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let org = operator
        .post("/v1/organizations", json!({"name": "Acme", "email": "ops@acme.test", "plan": "pro"}))
        .await
        .expect(201);
    let org = org.body["id"].as_str().unwrap().to_owned();
    let instance_db = PgServer::shared().empty_database().await;
    let instance =
        HubProcess::instance_with_env("alpha", &instance_db.url, &nats.url(), &hub.url(""), &[NO_THROTTLE]).await;
    let ws = workspace(&operator, &org, "Field", &[]).await;
    let (_, secret) = interaction_key(&operator, &ws).await;
    let api = Api::new(&instance.url(""), Some(&secret));
    accepted(&api).await;
    let mut client = instance_db.connect().await;
    let count = "SELECT count(*) FROM interactions";
    let before: i64 = client.query_one(count, &[]).await.unwrap().get(0);

    // Another session holds the workspace's row (as an apply would, for longer than the
    // request's 30 s deadline): the interaction's batch waits for it.
    let blocker = client.transaction().await.unwrap();
    let ws_id: Uuid = ws.parse().unwrap();
    blocker.execute("SELECT 1 FROM workspaces WHERE id = $1 FOR UPDATE", &[&ws_id]).await.unwrap();
    let reply = api.post("/v1/interactions", json!({"type": "door.knocked", "payload": "late"})).await;
    problem(&reply, 503, "unavailable");
    blocker.rollback().await.unwrap();

    // Once the row is free, the waiting batch goes on without the withdrawn interaction.
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                   AND pid <> pg_backend_pid() AND (wait_event_type = 'Lock' OR state LIKE 'idle in transaction%')";
    wait_until("the waiting batch to end", WAIT, || {
        let client = &client;
        async move { (client.query_one(waiting, &[]).await.unwrap().get::<_, i64>(0) == 0).then_some(()) }
    })
    .await;
    accepted(&api).await;
    let after: i64 = client.query_one(count, &[]).await.unwrap().get(0);
    assert_eq!(after, before + 1, "only the interaction answered 202 afterwards is stored");
    let late = client.query_one("SELECT count(*) FROM interactions WHERE payload = '\"late\"'", &[]).await.unwrap();
    assert_eq!(late.get::<_, i64>(0), 0, "the interaction answered 503 was not stored");
}
