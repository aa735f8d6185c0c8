//! A request that outlives its server's 30 s request timeout is answered with a 503
//! problem (`unavailable`), on the hub's Admin API and on the runtime API alike, never with
//! an empty body.
//!
//! Each request waits on a table a test transaction holds locked (with no lock timeout on
//! the server's sessions), so it outlives the timeout however fast the machine is.

use std::time::Duration;

use e2e::{Api, HubProcess, OPERATOR_KEY, Reply, TestDatabase, wait_until};
use serde_json::json;

/// The server's sessions wait on a lock for as long as it is held.
const NO_LOCK_TIMEOUT: (&str, &str) = ("DATABASE_LOCK_TIMEOUT_SECONDS", "0");

fn timed_out(reply: &Reply) {
    assert_eq!(reply.status.as_u16(), 503, "{}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/problem+json"), "{}", reply.text);
    assert_eq!(reply.body["code"], "unavailable", "{}", reply.text);
    assert_eq!(reply.body["status"], 503, "{}", reply.text);
    assert!(reply.body["detail"].as_str().is_some_and(|d| d.contains("30 seconds")), "{}", reply.text);
    assert!(reply.header("request-id").is_some(), "no Request-Id: {:?}", reply.headers);
}

#[tokio::test]
async fn an_admin_api_request_past_the_request_timeout_is_answered_with_a_problem() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[NO_LOCK_TIMEOUT]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    operator.post("/v1/organizations", json!({"name": "Acme", "email": "o@a.test", "plan": "pro"})).await.expect(201);

    let mut holder = db.connect().await;
    let transaction = holder.transaction().await.unwrap();
    // Not even a read of the organizations gets past this lock.
    transaction.batch_execute("LOCK TABLE organizations IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let reply = operator.get("/v1/organizations").await;
    transaction.rollback().await.unwrap();
    timed_out(&reply);
}

#[tokio::test]
async fn a_runtime_api_request_past_the_request_timeout_is_answered_with_a_problem() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[NO_LOCK_TIMEOUT]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let org = operator.post("/v1/organizations", json!({"name": "Acme", "email": "o@a.test", "plan": "pro"})).await;
    let org = org.expect(201).body["id"].as_str().unwrap().to_owned();
    let created = operator.post("/v1/workspaces", json!({"name": "Home", "organization_id": org})).await.expect(201);
    let ws = created.body["id"].as_str().unwrap().to_owned();
    let token = operator.post(&format!("/v1/workspaces/{ws}/access-token"), json!({})).await.expect(200);
    let runtime = Api::new(&hub.url(""), token.body["access_token"].as_str());
    wait_until("the embedded instance to serve the workspace", Duration::from_secs(30), || {
        let runtime = runtime.clone();
        async move { (runtime.get("/v1/runtime/workspace").await.status == 200).then_some(()) }
    })
    .await;

    let mut holder = db.connect().await;
    let transaction = holder.transaction().await.unwrap();
    // The embedded instance's materialized workspaces: every token check reads them.
    transaction.batch_execute("LOCK TABLE instance.workspaces IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let reply = runtime.get("/v1/runtime/workspace").await;
    transaction.rollback().await.unwrap();
    timed_out(&reply);
}
