//! `hub serve` as a real process: health, readiness, the OpenAPI document, shutdown.

use e2e::{HubProcess, TestDatabase};

#[tokio::test]
async fn a_single_node_hub_answers_health_readiness_and_openapi() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let client = reqwest::Client::new();

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
    let client = reqwest::Client::new();
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
