//! Workspace secrets and access tokens, verified by a real instance's runtime API.

use std::time::Duration;

use e2e::{Api, HubProcess, InstanceProcess, NatsServer, OPERATOR_KEY, PgServer, TestDatabase, wait_until};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// These tests provoke refusals on purpose: the failed-authentication throttle stays out
/// of their way.
const NO_THROTTLE: (&str, &str) = ("HUB_AUTH_FAILURES_PER_MINUTE", "100000");

/// A token signed with the workspace's secret (the key is the secret's UTF-8 bytes).
fn forge(secret: &str, kid: &str, claims: &Value) -> String {
    let header = Header { kid: Some(kid.to_owned()), ..Header::new(Algorithm::HS256) };
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The hub's tokens carry the claims the contract names; the runtime API at `base` refuses
/// tokens signed with the right secret unless their audience, start and lifetime are right.
async fn forged_claims_are_checked(base: &str, ws: &str, secret: &str, minted: &str) {
    let valid = json!({"sub": ws, "aud": ws, "iss": "admin-api", "iat": now(), "nbf": now(), "exp": now() + 600});
    let other = uuid::Uuid::now_v7().to_string();
    let mut cases: Vec<(&str, Value)> = Vec::new();
    let mut with = |what, change: &dyn Fn(&mut Value)| {
        let mut claims = valid.clone();
        change(&mut claims);
        cases.push((what, claims));
    };
    with("another audience", &|c| c["aud"] = json!(other));
    with("an audience list", &|c| c["aud"] = json!([ws, other]));
    with("no audience", &|c| drop(c.as_object_mut().unwrap().remove("aud")));
    with("a start an hour ahead", &|c| c["nbf"] = json!(now() + 3600));
    with("no start", &|c| drop(c.as_object_mut().unwrap().remove("nbf")));
    with("25 hours of life", &|c| c["exp"] = json!(now() + 25 * 3600));
    with("no issue time", &|c| drop(c.as_object_mut().unwrap().remove("iat")));
    with("an issue time two days ahead", &|c| {
        c["iat"] = json!(now() + 2 * 86_400);
        c["exp"] = json!(now() + 2 * 86_400 + 600);
    });
    with("an expiry in the past", &|c| c["exp"] = json!(now() - 3600));
    // Lifetimes whose arithmetic overflows.
    with("the earliest issue time", &|c| {
        c["iat"] = json!(i64::MIN);
        c["exp"] = json!(now() + 3600);
    });
    with("the earliest issue time and the latest expiry", &|c| {
        c["iat"] = json!(i64::MIN);
        c["exp"] = json!(i64::MAX);
    });
    for (what, claims) in cases {
        let (status, body) = runtime_at(base, &forge(secret, "1", &claims)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "a token with {what} was accepted: {body}");
        assert_eq!(body["code"], "unauthorized");
    }
    assert_eq!(
        runtime_at(base, &forge(secret, "1", &valid)).await.0,
        StatusCode::OK,
        "a well-formed forged token works"
    );
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[ws]);
    validation.set_required_spec_claims(&["exp", "nbf", "sub", "aud", "iss"]);
    let decoded = jsonwebtoken::decode::<Value>(minted, &DecodingKey::from_secret(secret.as_bytes()), &validation)
        .expect("the hub's token verifies with the workspace secret");
    let claims = decoded.claims;
    assert_eq!(decoded.header.kid.as_deref(), Some("1"));
    assert_eq!((claims["sub"].as_str(), claims["aud"].as_str()), (Some(ws), Some(ws)));
    let (iat, nbf, exp) =
        (claims["iat"].as_i64().unwrap(), claims["nbf"].as_i64().unwrap(), claims["exp"].as_i64().unwrap());
    assert!(nbf <= iat + 1 && exp > iat && exp - iat <= 86_400, "{claims}");
}

/// `whsec_` and the base64 of the secret's UTF-8 bytes (API.md, Workspaces).
fn whsec(secret: &str) -> String {
    use base64::Engine;
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(secret.as_bytes()))
}

async fn runtime_at(base: &str, token: &str) -> (StatusCode, Value) {
    let response =
        reqwest::Client::new().get(format!("{base}/v1/runtime/workspace")).bearer_auth(token).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

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
    let instance =
        InstanceProcess::instance_with_env("alpha", &instance_db.url, &nats.url(), &hub.url(""), &[NO_THROTTLE]).await;

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
    let secret = created.body["secret"].as_str().unwrap();
    assert_eq!(created.body["webhook_secret"], whsec(secret), "the same secret, as webhook libraries take it");
    forged_claims_are_checked(&instance.url(""), &ws, secret, &first).await;
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
    assert_eq!(rotated.body["webhook_secret"], whsec(rotated.body["secret"].as_str().unwrap()));
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
    assert!(!log.iter().any(|e| e.contains(&secret[4..30])), "no plaintext secret in the log");
}

#[tokio::test]
async fn a_single_node_hub_serves_the_data_plane_with_no_nats_at_all() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[NO_THROTTLE]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let org = operator.post("/v1/organizations", json!({"name": "Solo", "email": "o@s.test", "plan": "free"})).await;
    let org = org.expect(201).body["id"].as_str().unwrap().to_owned();
    let created = operator.post("/v1/workspaces", json!({"name": "Home", "organization_id": org})).await.expect(201);
    assert_eq!(created.body["instance_id"], "embedded");
    let ws = created.body["id"].as_str().unwrap().to_owned();
    let token = token(&operator, &ws).await;
    let client = e2e::api::client();
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
    // Two credentials, even the same valid token twice: refused.
    let twice = client.get(hub.url("/v1/runtime/workspace")).bearer_auth(&token).bearer_auth(&token);
    assert_eq!(twice.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_keyring_gives_many_workspaces_data_keys_to_the_operator_alone() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[NO_THROTTLE]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let org = operator.post("/v1/organizations", json!({"name": "Keys", "email": "o@k.test", "plan": "free"})).await;
    let org = org.expect(201).body["id"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for name in ["Kept", "Deleted"] {
        let created = operator.post("/v1/workspaces", json!({"name": name, "organization_id": org})).await;
        ids.push(created.expect(201).body["id"].as_str().unwrap().to_owned());
    }
    operator.delete(&format!("/v1/workspaces/{}", ids[1])).await.expect(204);
    let unknown = uuid::Uuid::now_v7().to_string();

    let asked = json!({"workspace_ids": [ids[0], ids[1], unknown, ids[0]]});
    let keys = operator.post("/v1/internal/keyring", asked.clone()).await.expect(200).body;
    let items = keys["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "one item per workspace with a key, the unknown one left out: {keys}");
    let item = |id: &str| items.iter().find(|i| i["workspace_id"] == id).unwrap_or_else(|| panic!("{id}: {keys}"));
    let single = operator.get(&format!("/v1/internal/keyring/{}", ids[0])).await.expect(200).body;
    assert_eq!(item(&ids[0])["sealed_data_key"], single["sealed_data_key"], "the same key as asked alone");
    assert_eq!(item(&ids[1])["sealed_data_key"], Value::Null, "a deleted workspace's key is destroyed");

    // A read, never replayed from the idempotency store: asked again under the same key
    // after the workspace is deleted, its destroyed key is not handed back.
    let later = operator.post("/v1/workspaces", json!({"name": "Later", "organization_id": org})).await;
    let later = later.expect(201).body["id"].as_str().unwrap().to_owned();
    let ask = json!({"workspace_ids": [later]});
    let once = [("idempotency-key", "keyring-once")];
    let first = operator.send(reqwest::Method::POST, "/v1/internal/keyring", Some(&ask), &once).await.expect(200);
    assert!(first.body["items"][0]["sealed_data_key"].is_string(), "{:?}", first.body);
    operator.delete(&format!("/v1/workspaces/{later}")).await.expect(204);
    let again = operator.send(reqwest::Method::POST, "/v1/internal/keyring", Some(&ask), &once).await.expect(200);
    assert_eq!(again.body["items"][0]["sealed_data_key"], Value::Null, "a destroyed key came back: {:?}", again.body);

    // The operator's alone, and asked for within bounds.
    assert_eq!(Api::new(&hub.url(""), None).post("/v1/internal/keyring", asked.clone()).await.status, 401);
    let too_many: Vec<String> = (0..1001).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    for (what, body) in [
        ("no ids", json!({"workspace_ids": []})),
        ("1,001 ids", json!({"workspace_ids": too_many})),
        ("an id that is not one", json!({"workspace_ids": ["nope"]})),
        ("an unknown field", json!({"workspace_ids": [ids[0]], "all": true})),
        ("no list", json!({})),
    ] {
        let refused = operator.post("/v1/internal/keyring", body).await;
        assert_eq!(refused.status, 422, "{what}: {:?}", refused.body);
        assert_eq!(refused.header("content-type"), Some("application/problem+json"), "{what}");
    }
}

#[tokio::test]
async fn the_runtime_api_refuses_archived_workspaces_with_403_and_deleted_ones_with_401() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[NO_THROTTLE]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let org = operator.post("/v1/organizations", json!({"name": "Solo", "email": "o@s.test", "plan": "free"})).await;
    let org = org.expect(201).body["id"].as_str().unwrap().to_owned();
    let created = operator.post("/v1/workspaces", json!({"name": "Home", "organization_id": org})).await.expect(201);
    let ws = created.body["id"].as_str().unwrap().to_owned();
    let secret = created.body["secret"].as_str().unwrap().to_owned();
    let minted = token(&operator, &ws).await;
    let base = hub.url("");
    wait_until("the embedded instance to serve the workspace", Duration::from_secs(30), || {
        let request = runtime_at(&base, &minted);
        async move { (request.await.0 == StatusCode::OK).then_some(()) }
    })
    .await;
    forged_claims_are_checked(&base, &ws, &secret, &minted).await;

    operator.post(&format!("/v1/workspaces/{ws}/archive"), json!({})).await.expect(200);
    let body = wait_until("the archive to reach the embedded instance", Duration::from_secs(30), || {
        let request = runtime_at(&base, &minted);
        async move {
            let (status, body) = request.await;
            (status == StatusCode::FORBIDDEN).then_some(body)
        }
    })
    .await;
    assert_eq!(body["code"], "workspace_archived");
    assert_eq!(body["status"], 403);
    // Archived is not a way around the token checks.
    let other = uuid::Uuid::now_v7().to_string();
    let wrong_audience =
        json!({"sub": ws, "aud": other, "iss": "admin-api", "iat": now(), "nbf": now(), "exp": now() + 600});
    assert_eq!(runtime_at(&base, &forge(&secret, "1", &wrong_audience)).await.0, StatusCode::UNAUTHORIZED);

    operator.delete(&format!("/v1/workspaces/{ws}")).await.expect(204);
    wait_until("the deletion to reach the embedded instance", Duration::from_secs(30), || {
        let request = runtime_at(&base, &minted);
        async move { (request.await.0 == StatusCode::UNAUTHORIZED).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn an_archived_workspace_gets_no_access_token_until_it_is_restored() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let org = operator.post("/v1/organizations", json!({"name": "Solo", "email": "o@s.test", "plan": "free"})).await;
    let org = org.expect(201).body["id"].as_str().unwrap().to_owned();
    let parent = operator.post("/v1/workspaces", json!({"name": "Home", "organization_id": org})).await.expect(201);
    let parent = parent.body["id"].as_str().unwrap().to_owned();
    let child = operator
        .post("/v1/workspaces", json!({"name": "Child", "parent_id": parent, "organization_id": org}))
        .await
        .expect(201);
    let child = child.body["id"].as_str().unwrap().to_owned();

    operator.post(&format!("/v1/workspaces/{parent}/archive"), json!({})).await.expect(200);
    // The workspace archived and the one archived with its subtree alike.
    for ws in [&parent, &child] {
        let refused = operator.post(&format!("/v1/workspaces/{ws}/access-token"), json!({})).await;
        assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text);
        assert_eq!(refused.header("content-type"), Some("application/problem+json"));
        assert_eq!(refused.body["code"], "workspace_archived", "{}", refused.text);
        assert!(refused.body.get("access_token").is_none());
    }

    operator.post(&format!("/v1/workspaces/{parent}/restore"), json!({})).await.expect(200);
    token(&operator, &child).await;
}
