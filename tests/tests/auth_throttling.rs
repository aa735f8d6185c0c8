//! Failed authentications are throttled per client address, on the hub and on instances,
//! before any key or token is looked up.

use std::time::Duration;

use e2e::{Api, HubProcess, NatsServer, OPERATOR_KEY, PgServer, Reply, TestDatabase, wait_until};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::keys::{GeneratedKey, KeyKind};

/// A 429 problem with a usable `Retry-After`.
#[track_caller]
fn assert_throttled(reply: &Reply) {
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "body: {}", reply.text);
    assert_eq!(reply.body["code"], "too_many_failed_authentications", "body: {}", reply.text);
    assert_eq!(reply.body["detail"], "too many failed authentications from this address; retry later");
    assert!(reply.header("content-type").is_some_and(|t| t.starts_with("application/problem+json")));
    let retry: u64 = reply.header("retry-after").and_then(|v| v.parse().ok()).expect("a Retry-After in seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
}

#[tokio::test]
async fn after_twenty_forged_admin_keys_an_address_is_refused_before_any_key_lookup() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let org = operator.post("/v1/organizations", json!({"name": "Acme", "email": "o@a.test", "plan": "pro"})).await;
    let org = org.expect(201).body["id"].as_str().unwrap().to_owned();
    let key = operator
        .post("/v1/api-keys", json!({"name": "admin", "scopes": ["*"], "organization_id": org}))
        .await
        .expect(201);
    let admin = operator.with_key(key.body["secret"].as_str().unwrap());
    admin.get("/v1/workspaces").await.expect(200);

    // Well-formed keys with valid checksums: each one costs the hub a lookup.
    for _ in 0..20 {
        let forged = GeneratedKey::generate(KeyKind::Admin);
        operator.with_key(forged.expose()).get("/v1/workspaces").await.expect(401);
    }
    let forged = GeneratedKey::generate(KeyKind::Admin);
    assert_throttled(&operator.with_key(forged.expose()).get("/v1/workspaces").await);
    // Even valid admin keys are refused from that address: nothing was looked up.
    assert_throttled(&admin.get("/v1/workspaces").await);
    assert_throttled(
        &operator
            .anonymous()
            .send(reqwest::Method::GET, "/v1/organizations", None, &[("authorization", "Basic !!")])
            .await,
    );
    // A request without credentials still learns that it needs some.
    operator.anonymous().get("/v1/organizations").await.expect(401);
    // The operator's key is checked in memory before the gate: others' failures never
    // lock it out.
    operator.get("/v1/organizations").await.expect(200);
}

#[tokio::test]
async fn a_request_with_two_authorization_headers_is_refused_whichever_they_name() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let forged = GeneratedKey::generate(KeyKind::Admin);
    for second in [format!("Bearer {OPERATOR_KEY}"), format!("Bearer {}", forged.expose())] {
        let reply = operator.send(reqwest::Method::GET, "/v1/organizations", None, &[("authorization", &second)]).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "body: {}", reply.text);
        assert_eq!(reply.body["detail"], "more than one Authorization header", "body: {}", reply.text);
    }
    operator.get("/v1/organizations").await.expect(200);
}

#[tokio::test]
async fn requests_without_credentials_on_authenticated_routes_count_as_failures() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[("HUB_AUTH_FAILURES_PER_MINUTE", "3")]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let anonymous = operator.anonymous();
    // Routes open to everyone are no failures.
    for _ in 0..5 {
        anonymous.get("/healthz").await.expect(200);
    }
    operator.get("/v1/organizations").await.expect(200);
    for _ in 0..3 {
        anonymous.get("/v1/organizations").await.expect(401);
    }
    assert_throttled(&operator.with_key(GeneratedKey::generate(KeyKind::Admin).expose()).get("/v1/workspaces").await);
    anonymous.get("/healthz").await.expect(200);
}

#[tokio::test]
async fn anonymous_failures_from_the_instances_address_lock_out_neither_the_operator_nor_the_instance() {
    let nats = NatsServer::start().unwrap();
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &[], &[("NATS_URL", &nats.url())]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    // The instance presents the operator key to the hub from the same address as the
    // anonymous client below.
    let instance_db = PgServer::shared().empty_database().await;
    let instance = HubProcess::instance("alpha", &instance_db.url, &nats.url(), &hub.url("")).await;
    wait_until("the instance to report", Duration::from_secs(30), || {
        let operator = operator.clone();
        async move { (operator.get("/v1/instances").await.body["items"].as_array()?.len() == 1).then_some(()) }
    })
    .await;

    for _ in 0..20 {
        operator.anonymous().get("/v1/organizations").await.expect(401);
    }
    assert_throttled(&operator.with_key("wrong").get("/v1/organizations").await);
    let tripped = chrono::Utc::now();
    operator.get("/v1/organizations").await.expect(200);

    // Heartbeats keep arriving.
    wait_until("a heartbeat after the throttle tripped", Duration::from_secs(30), || {
        let operator = operator.clone();
        async move {
            let items = operator.get("/v1/instances").await.body["items"].as_array()?.clone();
            let at: chrono::DateTime<chrono::Utc> = items.first()?["last_heartbeat_at"].as_str()?.parse().ok()?;
            (at > tripped).then_some(())
        }
    })
    .await;
    // The instance still fetches a new workspace's key from the hub's keyring.
    let org = operator.post("/v1/organizations", json!({"name": "Acme", "email": "o@a.test", "plan": "pro"})).await;
    let org = org.expect(201).body["id"].as_str().unwrap().to_owned();
    let ws = operator.post("/v1/workspaces", json!({"name": "Home", "organization_id": org})).await.expect(201);
    let ws = ws.body["id"].as_str().unwrap().to_owned();
    let token = operator.post(&format!("/v1/workspaces/{ws}/access-token"), json!({})).await.expect(200);
    let token = token.body["access_token"].as_str().unwrap().to_owned();
    wait_until("the instance to hold the workspace", Duration::from_secs(30), || {
        let operator = operator.clone();
        async move {
            let items = operator.get("/v1/instances").await.body["items"].as_array()?.clone();
            (items.first()?["workspace_count"] == 1).then_some(())
        }
    })
    .await;
    runtime(&instance.url(""), Some(&token)).await.expect(200);
}

async fn runtime(base: &str, token: Option<&str>) -> Reply {
    let api = Api::new(base, token);
    api.get("/v1/runtime/workspace").await
}

#[tokio::test]
async fn the_embedded_instance_throttles_failed_tokens_before_checking_even_a_valid_one() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[("HUB_AUTH_FAILURES_PER_MINUTE", "3")]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let org = operator.post("/v1/organizations", json!({"name": "Solo", "email": "o@s.test", "plan": "free"})).await;
    let org = org.expect(201).body["id"].as_str().unwrap().to_owned();
    let ws = operator.post("/v1/workspaces", json!({"name": "Home", "organization_id": org})).await.expect(201);
    let ws = ws.body["id"].as_str().unwrap().to_owned();
    let token = operator.post(&format!("/v1/workspaces/{ws}/access-token"), json!({})).await.expect(200);
    let token = token.body["access_token"].as_str().unwrap().to_owned();
    let base = hub.url("");
    // Polling the runtime API would count its 401s: watch the embedded state instead.
    let client = db.connect().await;
    let id: uuid::Uuid = ws.parse().unwrap();
    wait_until("the embedded instance to hold the workspace", Duration::from_secs(30), || {
        let client = &client;
        async move {
            let sql = "SELECT 1 FROM instance.workspaces WHERE id = $1 AND state IS NOT NULL";
            client.query_opt(sql, &[&id]).await.ok().flatten().map(|_| ())
        }
    })
    .await;
    runtime(&base, Some(&token)).await.expect(200);

    runtime(&base, None).await.expect(401);
    runtime(&base, Some("not-a-token")).await.expect(401);
    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
    runtime(&base, Some(&tampered)).await.expect(401);
    assert_throttled(&runtime(&base, Some("not-a-token")).await);
    assert_throttled(&runtime(&base, Some(&token)).await);
    // The hub's own API keeps its own count.
    operator.get("/v1/organizations").await.expect(200);
}

#[tokio::test]
async fn a_separate_instance_throttles_failed_tokens_per_address() {
    let nats = NatsServer::start().unwrap();
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &[], &[("NATS_URL", &nats.url())]).await;
    let instance_db = PgServer::shared().empty_database().await;
    let instance = HubProcess::instance_with_env(
        "alpha",
        &instance_db.url,
        &nats.url(),
        &hub.url(""),
        &[("HUB_AUTH_FAILURES_PER_MINUTE", "2")],
    )
    .await;
    let base = instance.url("");
    runtime(&base, Some("not-a-token")).await.expect(401);
    runtime(&base, None).await.expect(401);
    let throttled = runtime(&base, Some("not-a-token")).await;
    assert_throttled(&throttled);
    assert_eq!(throttled.body["status"], Value::from(429));
    runtime(&base, None).await.expect(401);
    Api::new(&base, None).get("/healthz").await.expect(200);
}
