//! `hub serve` as a real process: health, readiness, the OpenAPI document, shutdown.

use e2e::{HubProcess, TestDatabase};
use serde_json::Value;

#[tokio::test]
async fn a_single_node_hub_answers_health_readiness_and_openapi() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let client = e2e::api::client();

    let health = client.get(hub.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(health.headers().contains_key("request-id"), "every response carries a Request-Id");

    let ready = client.get(hub.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["head_position"], 0);

    let spec: serde_json::Value = client.get(hub.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"), "OpenAPI 3.1: {}", spec["openapi"]);
    for path in ["/healthz", "/readyz"] {
        assert!(spec["paths"][path]["get"].is_object(), "{path} is documented");
    }

    let missing = client.get(hub.url("/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(problem["status"], 404);
    assert_eq!(problem["code"], "not_found");
}

#[tokio::test]
async fn readiness_fails_while_the_database_is_unreachable() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &[], &[]).await;
    let admin = tokio_postgres::connect(&e2e::PgServer::shared().url("postgres"), tokio_postgres::NoTls).await;
    let (admin, connection) = admin.unwrap();
    tokio::spawn(connection);
    // Forbid new connections and end the hub's current ones.
    admin.batch_execute(&format!("ALTER DATABASE {} ALLOW_CONNECTIONS false", db.name)).await.unwrap();
    admin
        .execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", &[&db.name])
        .await
        .unwrap();
    let client = e2e::api::client();
    let ready = client.get(hub.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.headers()["content-type"], "application/problem+json");
    assert_eq!(client.get(hub.url("/healthz")).send().await.unwrap().status(), 200, "the process is still up");

    admin.batch_execute(&format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", db.name)).await.unwrap();
    e2e::wait_until("readiness to return", std::time::Duration::from_secs(20), || {
        let request = client.get(hub.url("/readyz")).send();
        async move { request.await.ok().filter(|r| r.status() == 200).map(|_| ()) }
    })
    .await;
}

#[tokio::test]
async fn sigterm_stops_the_hub_cleanly() {
    let db = TestDatabase::new().await;
    let mut hub = HubProcess::spawn(&db.url, &[], &[]).await;
    let status = hub.terminate().expect("the hub was running");
    assert!(status.success(), "graceful shutdown exits 0: {status:?}\n{}", hub.logs());
    assert!(hub.logs().contains("shutdown signal received"));
}

#[tokio::test]
async fn a_too_short_operator_key_is_refused_at_start() {
    let db = TestDatabase::new().await;
    let out = std::process::Command::new(e2e::binaries::binary("hub"))
        .arg("serve")
        .env("DATABASE_URL", &db.url)
        .env("HUB_OPERATOR_KEY", "short")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HUB_OPERATOR_KEY") && !stderr.contains("short"), "{stderr}");
}

#[test]
fn the_nats_harness_starts_jetstream_on_loopback() {
    let server = e2e::NatsServer::shared();
    let info = server.info().unwrap();
    assert_eq!(info["jetstream"], true, "{info}");
    assert_eq!(info["host"], "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hub_processes_writing_at_once_keep_the_log_gapless_and_chained() {
    let db = TestDatabase::new().await;
    let first = HubProcess::spawn(&db.url, &[], &[]).await;
    let second = HubProcess::spawn(&db.url, &[], &[]).await;
    let apis = [
        e2e::Api::new(&first.url(""), Some(e2e::OPERATOR_KEY)),
        e2e::Api::new(&second.url(""), Some(e2e::OPERATOR_KEY)),
    ];
    let mut writes = Vec::new();
    for i in 0..120 {
        let api = apis[i % 2].clone();
        writes.push(tokio::spawn(async move {
            let body = serde_json::json!({"name": format!("org {i}"), "email": format!("o{i}@x.test"), "plan": "free"});
            api.post("/v1/organizations", body).await.status
        }));
    }
    for write in writes {
        assert_eq!(write.await.unwrap(), 201);
    }
    let client = db.connect().await;
    let positions: Vec<i64> = client
        .query("SELECT position FROM events ORDER BY position", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(positions, (1..=120).collect::<Vec<_>>());
    let verify = e2e::binaries::hub_command(&db.url, &["events", "verify"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
}

#[tokio::test]
async fn the_event_feed_pages_the_log_in_order_with_hashes_for_the_operator_only() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &[], &[]).await;
    let operator = e2e::Api::new(&hub.url(""), Some(e2e::OPERATOR_KEY));
    let mut ids = Vec::new();
    for i in 0..5 {
        let body = serde_json::json!({"name": format!("org {i}"), "email": format!("o{i}@x.test"), "plan": "free"});
        ids.push(operator.post("/v1/organizations", body).await.expect(201).body["id"].as_str().unwrap().to_owned());
    }
    let org = &ids[2];
    operator.patch(&format!("/v1/organizations/{org}"), serde_json::json!({"plan": "pro"})).await.expect(200);

    let first = operator.get("/v1/events?limit=4").await.expect(200).body;
    let positions: Vec<i64> =
        first["items"].as_array().unwrap().iter().map(|e| e["position"].as_i64().unwrap()).collect();
    assert_eq!(positions, [1, 2, 3, 4]);
    let next = first["links"][0]["href"].as_str().unwrap().to_owned();
    assert_eq!(next, "/v1/events?after=4&limit=4");
    let rest = operator.get(&next).await.expect(200).body;
    assert_eq!(rest["items"].as_array().unwrap().len(), 2);
    assert!(rest["links"].as_array().unwrap().is_empty(), "no next link after the last page");
    // Each event's prev_hash is the previous event's hash.
    let all: Vec<Value> =
        first["items"].as_array().unwrap().iter().chain(rest["items"].as_array().unwrap()).cloned().collect();
    for pair in all.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"]);
    }
    let stream = operator.get(&format!("/v1/events?stream_id=org-{org}")).await.expect(200).body;
    let types: Vec<&str> =
        stream["items"].as_array().unwrap().iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    assert_eq!(types, ["OrganizationCreated", "OrganizationUpdated"]);

    let key =
        operator.post("/v1/api-keys", serde_json::json!({"name": "k", "scopes": ["*"], "organization_id": org})).await;
    let admin = operator.with_key(key.expect(201).body["secret"].as_str().unwrap());
    admin.get("/v1/events").await.expect(403);
    operator.get("/v1/events?limit=0").await.expect(422);
    operator.get("/v1/events?after=-1").await.expect(422);
    operator.get("/v1/events?limit=1001").await.expect(422);
}

/// A 4xx problem with `code` that carries the request's id, in its body and its header.
async fn refused(response: reqwest::Response, status: u16, code: &str) {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers().get("content-type").map(|v| v.to_str().unwrap()), Some("application/problem+json"));
    let id = response.headers().get("request-id").expect("a Request-Id").to_str().unwrap().to_owned();
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], status, "{problem}");
    assert_eq!(problem["code"], code, "{problem}");
    assert_eq!(problem["request_id"], id, "{problem}");
}

#[tokio::test]
async fn an_over_long_uri_and_oversized_or_too_many_headers_get_a_problem() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let client = e2e::api::client();
    let get = |path: &str| client.get(hub.url(path)).bearer_auth(e2e::OPERATOR_KEY);

    let long_uri = get(&format!("/v1/organizations?name={}", "n".repeat(20 * 1024))).send().await.unwrap();
    refused(long_uri, 414, "uri_too_long").await;
    let long_path = get(&format!("/v1/runtime/{}", "p".repeat(20 * 1024))).send().await.unwrap();
    refused(long_path, 414, "uri_too_long").await;
    let big_header = get("/v1/organizations").header("x-padding", "h".repeat(80 * 1024)).send().await.unwrap();
    refused(big_header, 431, "headers_too_large").await;
    let mut many = get("/v1/organizations");
    for n in 0..150 {
        many = many.header(format!("x-padding-{n}"), "h");
    }
    refused(many.send().await.unwrap(), 431, "headers_too_large").await;
    // The same request id comes back on a refusal.
    let echoed = get("/v1/organizations").header("request-id", "trace-me.1").header("x-padding", "h".repeat(80 * 1024));
    let echoed = echoed.send().await.unwrap();
    assert_eq!(echoed.headers()["request-id"], "trace-me.1");

    // Within the limits, a request is served as before.
    let mut fine = get(&format!("/v1/organizations?name={}", "n".repeat(100)));
    for n in 0..60 {
        fine = fine.header(format!("x-padding-{n}"), "h".repeat(512));
    }
    assert_eq!(fine.send().await.unwrap().status(), 200);
}
