//! Organizations through the real hub binary.

use e2e::{Api, HubProcess, OPERATOR_KEY, TestDatabase};
use serde_json::json;

async fn hub() -> (HubProcess, Api) {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let api = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    (hub, api)
}

#[tokio::test]
async fn the_operator_creates_reads_updates_and_deletes_an_organization() {
    let (_hub, api) = hub().await;
    let created = api
        .post("/v1/organizations", json!({"name": "Acme", "email": "ops@acme.test", "plan": "pro"}))
        .await
        .expect(201);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(created.header("location"), Some(format!("/v1/organizations/{id}").as_str()));
    assert_eq!(created.header("etag"), Some("\"1\""));
    assert_eq!(created.body["status"], "active");

    let got = api.get(&format!("/v1/organizations/{id}")).await.expect(200);
    assert_eq!(got.body["name"], "Acme");

    let stale = api
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/organizations/{id}"),
            Some(&json!({"plan": "enterprise"})),
            &[("if-match", "\"7\"")],
        )
        .await;
    assert_eq!(stale.status, 412, "{}", stale.text);
    let patched = api
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/organizations/{id}"),
            Some(&json!({"plan": "enterprise"})),
            &[("if-match", "\"1\"")],
        )
        .await
        .expect(200);
    assert_eq!(patched.body["plan"], "enterprise");
    assert_eq!(patched.header("etag"), Some("\"2\""));

    assert_eq!(api.get("/v1/organizations/count").await.expect(200).body["count"], 1);
    api.delete(&format!("/v1/organizations/{id}")).await.expect(204);
    api.get(&format!("/v1/organizations/{id}")).await.expect(404);
    assert_eq!(api.get("/v1/organizations/count").await.expect(200).body["count"], 0);
}

#[tokio::test]
async fn requests_without_valid_credentials_get_401_problems() {
    let (_hub, api) = hub().await;
    let missing = api.anonymous().get("/v1/organizations").await.expect(401);
    assert!(missing.header("www-authenticate").is_some());
    assert_eq!(missing.header("content-type"), Some("application/problem+json"));
    assert_eq!(missing.body["status"], 401);
    assert!(missing.body["request_id"].is_string());
    let garbage = api.with_key("adm_not-a-real-key").get("/v1/organizations").await.expect(401);
    assert_eq!(garbage.body["code"], "unauthorized");
}
