//! Workspace secrets and access tokens, verified by a real instance's runtime API.

use std::time::Duration;

use e2e::{Api, HubProcess, InstanceProcess, NatsServer, OPERATOR_KEY, PgServer, TestDatabase, wait_until};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn runtime(instance: &InstanceProcess, token: &str) -> (StatusCode, Value) {
    let response =
        reqwest::Client::new().get(instance.url("/v1/runtime/workspace")).bearer_auth(token).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn token(operator: &Api, workspace: &str) -> String {
    let reply =
        operator.post(&format!("/v1/workspaces/{workspace}/access-token"), json!({"expires_in_seconds": 600})).await;
    let reply = reply.expect(200);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.body["token_type"], "Bearer");
    reply.body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn tokens_verify_on_the_instance_and_old_secrets_expire_with_their_grace_period() {
    let nats = NatsServer::start().unwrap();
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &[], &[("NATS_URL", &nats.url())]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let instance_db = PgServer::shared().empty_database().await;
    let instance = InstanceProcess::instance("alpha", &instance_db.url, &nats.url(), &hub.url("")).await;

    let org = operator.post("/v1/organizations", json!({"name": "Acme", "email": "o@a.test", "plan": "pro"})).await;
    let org = org.expect(201).body["id"].as_str().unwrap().to_owned();
    let created = operator
        .post("/v1/workspaces", json!({"name": "W", "instance_id": "alpha", "organization_id": org}))
        .await
        .expect(201);
    assert!(created.body["secret"].as_str().unwrap().starts_with("wss_"), "the secret is shown once, at creation");
    assert_eq!(created.header("cache-control"), Some("no-store"));
    assert_eq!(created.body["secret_version"], 1);
    let ws = created.body["id"].as_str().unwrap().to_owned();
    assert!(operator.get(&format!("/v1/workspaces/{ws}")).await.expect(200).body.get("secret").is_none());

    let first = token(&operator, &ws).await;
    wait_until("the instance to serve the workspace", Duration::from_secs(30), || {
        let request = runtime(&instance, &first);
        async move { request.await.1.get("name").map(|_| ()) }
    })
    .await;
    operator.patch(&format!("/v1/workspaces/{ws}"), json!({"settings": {"tier": "gold"}})).await.expect(200);
    wait_until("the new settings on the instance", Duration::from_secs(30), || {
        let request = runtime(&instance, &first);
        async move { (request.await.1["settings"] == json!({"tier": "gold"})).then_some(()) }
    })
    .await;

    let rotated =
        operator.post(&format!("/v1/workspaces/{ws}/rotate-secret"), json!({"grace_period_seconds": 3})).await;
    let rotated = rotated.expect(200);
    assert_eq!(rotated.body["secret_version"], 2);
    assert!(rotated.body["previous_secret_expires_at"].is_string());
    let second = token(&operator, &ws).await;
    wait_until("the rotation to reach the instance", Duration::from_secs(30), || {
        let request = runtime(&instance, &second);
        async move { (request.await.1["secret_version"] == 2).then_some(()) }
    })
    .await;
    assert_eq!(runtime(&instance, &first).await.0, StatusCode::OK, "the old secret works during the grace period");
    wait_until("the grace period to end", Duration::from_secs(20), || {
        let request = runtime(&instance, &first);
        async move { (request.await.0 == StatusCode::UNAUTHORIZED).then_some(()) }
    })
    .await;
    assert_eq!(runtime(&instance, &second).await.0, StatusCode::OK, "new tokens keep working");

    // Tampered and foreign tokens are refused.
    let mut forged = second.clone();
    forged.pop();
    forged.push(if second.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(runtime(&instance, &forged).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(runtime(&instance, "not-a-token").await.0, StatusCode::UNAUTHORIZED);

    // Deleting the workspace destroys its keys: nothing can open its secrets any more.
    operator.delete(&format!("/v1/workspaces/{ws}")).await.expect(204);
    operator.get(&format!("/v1/internal/keyring/{ws}")).await.expect(410);
    operator.post(&format!("/v1/workspaces/{ws}/access-token"), json!({})).await.expect(404);
    wait_until("the instance to drop the workspace", Duration::from_secs(30), || {
        let request = runtime(&instance, &second);
        async move { (request.await.0 == StatusCode::UNAUTHORIZED).then_some(()) }
    })
    .await;
    let client = db.connect().await;
    let log: Vec<String> =
        client.query("SELECT data::text FROM events", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    let secret = created.body["secret"].as_str().unwrap();
    assert!(!log.iter().any(|e| e.contains(&secret[4..30])), "no plaintext secret in the log");
}

#[tokio::test]
async fn a_single_node_hub_serves_the_data_plane_with_no_nats_at_all() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let org = operator.post("/v1/organizations", json!({"name": "Solo", "email": "o@s.test", "plan": "free"})).await;
    let org = org.expect(201).body["id"].as_str().unwrap().to_owned();
    let created = operator.post("/v1/workspaces", json!({"name": "Home", "organization_id": org})).await.expect(201);
    assert_eq!(created.body["instance_id"], "embedded");
    let ws = created.body["id"].as_str().unwrap().to_owned();
    let token = token(&operator, &ws).await;
    let client = reqwest::Client::new();
    let read = || client.get(hub.url("/v1/runtime/workspace")).bearer_auth(&token).send();
    let body = wait_until("the embedded instance to serve the workspace", Duration::from_secs(30), || {
        let request = read();
        async move {
            let response = request.await.ok()?;
            (response.status() == StatusCode::OK).then_some(())?;
            response.json::<Value>().await.ok()
        }
    })
    .await;
    assert_eq!(body["name"], "Home");
    assert_eq!(body["secret_version"], 1);
    operator.patch(&format!("/v1/workspaces/{ws}"), json!({"name": "Home 2"})).await.expect(200);
    wait_until("the rename to reach the embedded instance", Duration::from_secs(30), || {
        let request = read();
        async move { (request.await.ok()?.json::<Value>().await.ok()?["name"] == "Home 2").then_some(()) }
    })
    .await;
    let denied = client.get(hub.url("/v1/runtime/workspace")).bearer_auth("nope").send().await.unwrap();
    assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
}
