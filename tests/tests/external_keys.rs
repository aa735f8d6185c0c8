//! `/v1/workspaces/{id}/external-keys`: third-party (VAN) credentials, stored sealed under
//! the workspace's data key, never shown again, checked with VAN when `VAN_API_URL` is set,
//! and unreadable for good once their workspace is deleted.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use e2e::{Api, HubProcess, MASTER_KEY, OPERATOR_KEY, Reply, TestDatabase, wait_until};
use serde_json::{Value, json};
use uuid::Uuid;

/// A credential no response, event, audit entry or log line may show.
const CREDENTIAL: &str = "van-plain-credential-Zx81|1";

/// These tests present foreign and restricted keys on purpose.
const NO_THROTTLE: (&str, &str) = ("HUB_AUTH_FAILURES_PER_MINUTE", "100000");

struct Stack {
    db: TestDatabase,
    hub: HubProcess,
    operator: Api,
    org: String,
    admin: Api,
}

async fn stack(env: &[(&str, &str)]) -> Stack {
    let db = TestDatabase::new().await;
    let mut env = env.to_vec();
    env.push(NO_THROTTLE);
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &env).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let (org, admin) = organization(&operator, "acme").await;
    Stack { db, hub, operator, org, admin }
}

async fn organization(operator: &Api, name: &str) -> (String, Api) {
    let org = operator
        .post("/v1/organizations", json!({"name": name, "email": format!("ops@{name}.test"), "plan": "pro"}))
        .await
        .expect(201);
    let org = org.body["id"].as_str().unwrap().to_owned();
    let key = operator.post("/v1/api-keys", json!({"name": "admin", "scopes": ["*"], "organization_id": org})).await;
    let admin = operator.with_key(key.expect(201).body["secret"].as_str().unwrap());
    (org, admin)
}

async fn workspace(api: &Api, name: &str) -> String {
    let reply = api.post("/v1/workspaces", json!({"name": name})).await.expect(201);
    reply.body["id"].as_str().unwrap().to_owned()
}

fn keys(workspace: &str) -> String {
    format!("/v1/workspaces/{workspace}/external-keys")
}

#[track_caller]
fn refused(reply: Reply, status: u16, code: &str) {
    let reply = reply.expect(status);
    assert_eq!(reply.header("content-type"), Some("application/problem+json"), "{}", reply.text);
    assert_eq!(reply.body["code"], code, "{}", reply.text);
}

async fn count(api: &Api, workspace: &str) -> i64 {
    api.get(&format!("{}/count", keys(workspace))).await.expect(200).body["count"].as_i64().unwrap()
}

#[tokio::test]
async fn external_keys_are_added_listed_counted_and_deleted_without_the_credential_ever_showing() {
    // Every log line, debug included, is searched for the credential.
    let stack = stack(&[("RUST_LOG", "debug")]).await;
    let admin = &stack.admin;
    let ws = workspace(admin, "Campaign").await;
    let mut bodies = String::new();

    let created = admin
        .post(
            &keys(&ws),
            json!({"provider": "van", "name": "  VAN sandbox ", "api_key": CREDENTIAL,
                   "settings": {"application_name": "acme-app"}}),
        )
        .await
        .expect(201);
    bodies.push_str(&created.text);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(created.body["provider"], "van");
    assert_eq!(created.body["name"], "VAN sandbox");
    assert_eq!(created.body["key_hint"], "81|1");
    assert_eq!(created.body["workspace_id"], ws.as_str());
    assert!(created.body["created_at"].is_string(), "{}", created.text);
    assert_eq!(created.header("location"), None, "no resource of its own to point at");
    // A retried create (same Idempotency-Key) answers the first response and stores one key.
    let second_body = json!({"provider": "van", "name": "Second", "api_key": "other-van-key-0042"});
    let retry = [("idempotency-key", "add-second-key")];
    let second = admin.send(reqwest::Method::POST, &keys(&ws), Some(&second_body), &retry).await.expect(201);
    let again = admin.send(reqwest::Method::POST, &keys(&ws), Some(&second_body), &retry).await.expect(201);
    assert_eq!(again.body, second.body);
    let second = second.body["id"].as_str().unwrap().to_owned();

    let listed = admin.get(&format!("{}?sort_order=asc", keys(&ws))).await.expect(200);
    bodies.push_str(&listed.text);
    let ids: Vec<&str> = listed.body["items"].as_array().unwrap().iter().map(|k| k["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [id.as_str(), second.as_str()]);
    assert_eq!(listed.body["items"][0]["settings"], json!({"application_name": "acme-app"}));
    // Pages of one, by cursor.
    let first = admin.get(&format!("{}?page_size=1", keys(&ws))).await.expect(200);
    let cursor = first.body["pagination"]["next_cursor"].as_str().expect("a next cursor").to_owned();
    let next = admin.get(&format!("{}?page_size=1&cursor={cursor}", keys(&ws))).await.expect(200);
    let paged = [&first.body["items"][0]["id"], &next.body["items"][0]["id"]];
    assert_ne!(paged[0], paged[1]);
    assert_eq!(count(admin, &ws).await, 2);
    assert_eq!(admin.get(&format!("{}/count?provider=van", keys(&ws))).await.expect(200).body["count"], 2);

    admin.delete(&format!("{}/{id}", keys(&ws))).await.expect(204);
    refused(admin.delete(&format!("{}/{id}", keys(&ws))).await, 404, "not_found");
    refused(admin.delete(&format!("{}/{}", keys(&ws), Uuid::now_v7())).await, 404, "not_found");
    assert_eq!(count(admin, &ws).await, 1);
    let listed = admin.get(&keys(&ws)).await.expect(200);
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);

    // The credential is nowhere but sealed: not in a response, the log, the audit log, the
    // read models, the instance's state or the hub's log.
    for path in [format!("/v1/workspaces/{ws}"), format!("/v1/events?stream_id=workspace-{ws}")] {
        bodies.push_str(&stack.operator.get(&path).await.expect(200).text);
    }
    let audit = stack.operator.get(&format!("/v1/audit-logs?organization_id={}&page_size=100", stack.org)).await;
    let audit = audit.expect(200);
    assert!(audit.text.contains("ExternalKeyAdded") && audit.text.contains("ExternalKeyDeleted"), "{}", audit.text);
    bodies.push_str(&audit.text);
    let client = stack.db.connect().await;
    for table in
        ["events", "external_keys", "audit_log", "aggregate_snapshots", "idempotency_keys", "instance.workspaces"]
    {
        let rows = client.query(&format!("SELECT t::text FROM {table} t"), &[]).await.unwrap();
        bodies.extend(rows.iter().map(|r| r.get::<_, String>(0)));
    }
    assert!(bodies.contains("sealed_api_key"), "the events were read");
    assert!(!bodies.contains(CREDENTIAL) && !bodies.contains("van-plain-credential"), "the credential leaked");
    let logs = stack.hub.logs();
    assert!(logs.contains("DEBUG"), "the hub logs at debug level");
    assert!(!logs.contains("van-plain-credential"), "the hub logged the credential:\n{logs}");
}

#[tokio::test]
async fn another_organization_and_a_key_outside_the_workspace_see_no_external_key() {
    let stack = stack(&[]).await;
    let admin = &stack.admin;
    let (ws, other_ws) = (workspace(admin, "Mine").await, workspace(admin, "Other").await);
    let body = json!({"provider": "van", "name": "VAN", "api_key": CREDENTIAL});
    let id = admin.post(&keys(&ws), body.clone()).await.expect(201).body["id"].as_str().unwrap().to_owned();

    let (_, stranger) = organization(&stack.operator, "globex").await;
    let restricted = admin
        .post(
            "/v1/api-keys",
            json!({"name": "r", "scopes": ["external_keys:read", "external_keys:write"], "workspace_ids": [other_ws]}),
        )
        .await
        .expect(201);
    let restricted = admin.with_key(restricted.body["secret"].as_str().unwrap());
    for outsider in [&stranger, &restricted] {
        refused(outsider.get(&keys(&ws)).await, 404, "not_found");
        refused(outsider.get(&format!("{}/count", keys(&ws))).await, 404, "not_found");
        refused(outsider.post(&keys(&ws), body.clone()).await, 404, "not_found");
        refused(outsider.delete(&format!("{}/{id}", keys(&ws))).await, 404, "not_found");
    }
    // The restricted key works within its own workspace, and cannot reach the key through it.
    restricted.post(&keys(&other_ws), body.clone()).await.expect(201);
    refused(restricted.delete(&format!("{}/{id}", keys(&other_ws))).await, 404, "not_found");

    let reader = admin.post("/v1/api-keys", json!({"name": "ro", "scopes": ["external_keys:read"]})).await;
    let reader = admin.with_key(reader.expect(201).body["secret"].as_str().unwrap());
    assert_eq!(count(&reader, &ws).await, 1);
    refused(reader.post(&keys(&ws), body.clone()).await, 403, "forbidden");
    refused(reader.delete(&format!("{}/{id}", keys(&ws))).await, 403, "forbidden");
    let blind = admin.post("/v1/api-keys", json!({"name": "blind", "scopes": ["workspaces:read"]})).await;
    let blind = admin.with_key(blind.expect(201).body["secret"].as_str().unwrap());
    refused(blind.get(&keys(&ws)).await, 403, "forbidden");
    assert_eq!(count(admin, &ws).await, 1, "nothing was deleted");
}

#[tokio::test]
async fn bad_external_key_requests_are_refused_with_a_problem() {
    let stack = stack(&[]).await;
    let admin = &stack.admin;
    let ws = workspace(admin, "Campaign").await;
    let valid = json!({"provider": "van", "name": "VAN", "api_key": "good-van-key-1234"});
    let with = |field: &str, value: Value| {
        let mut body = valid.clone();
        body[field] = value;
        body
    };
    let without = |field: &str| {
        let mut body = valid.clone();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    let cases = [
        ("an unknown provider", with("provider", json!("salesforce"))),
        ("no provider", without("provider")),
        ("no name", without("name")),
        ("no api_key", without("api_key")),
        ("a blank name", with("name", json!("   "))),
        ("a name of 101 characters", with("name", json!("n".repeat(101)))),
        ("an api_key of 4097 characters", with("api_key", json!("k".repeat(4097)))),
        ("an api_key of 15 characters", with("api_key", json!("abcdefghijklmno"))),
        ("an api_key with a space", with("api_key", json!("good key 1234"))),
        ("settings that are a list", with("settings", json!(["x"]))),
        ("settings over 16 KiB", with("settings", json!({"blob": "x".repeat(17_000)}))),
        ("an unknown field", with("secret", json!("x"))),
    ];
    for (what, body) in cases {
        let reply = admin.post(&keys(&ws), body).await;
        assert!(reply.status.is_client_error(), "{what}: {} {}", reply.status, reply.text);
        assert_eq!(reply.header("content-type"), Some("application/problem+json"), "{what}");
        assert!(!reply.text.contains("good key 1234"), "{what}: the credential is quoted");
    }
    let reply = admin.send_raw(reqwest::Method::POST, &keys(&ws), "application/json", b"{\"provider\":".to_vec()).await;
    refused(reply, 400, "malformed_json");
    refused(admin.post(&keys(&Uuid::now_v7().to_string()), valid.clone()).await, 404, "not_found");
    refused(admin.get(&format!("{}?page_size=0", keys(&ws))).await, 422, "validation_failed");
    refused(admin.get(&format!("{}?cursor=forged", keys(&ws))).await, 422, "invalid_cursor");
    refused(admin.get(&format!("{}?provider=salesforce", keys(&ws))).await, 422, "validation_failed");
    refused(admin.delete(&format!("{}/not-a-uuid", keys(&ws))).await, 400, "invalid_path");
    assert_eq!(count(admin, &ws).await, 0, "nothing was stored");

    // An archived workspace takes no change until restored.
    let id = admin.post(&keys(&ws), valid.clone()).await.expect(201).body["id"].as_str().unwrap().to_owned();
    admin.post(&format!("/v1/workspaces/{ws}/archive"), json!({})).await.expect(200);
    refused(admin.post(&keys(&ws), valid.clone()).await, 409, "workspace_archived");
    refused(admin.delete(&format!("{}/{id}", keys(&ws))).await, 409, "workspace_archived");
    assert_eq!(count(admin, &ws).await, 1, "an archived workspace's keys can still be read");
    admin.post(&format!("/v1/workspaces/{ws}/restore"), json!({})).await.expect(200);
    admin.delete(&format!("{}/{id}", keys(&ws))).await.expect(204);
}

/// What the stand-in VAN answers, by the `Authorization` header it receives (HTTP Basic of
/// `application:key`).
fn van_answer(headers: &HeaderMap) -> Option<StatusCode> {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
    match auth.strip_prefix("Basic ").unwrap_or_default() {
        // admin-api:van-good-key-0001|1
        "YWRtaW4tYXBpOnZhbi1nb29kLWtleS0wMDAxfDE=" => Some(StatusCode::OK),
        // my-app:van-good-key-0002|0
        "bXktYXBwOnZhbi1nb29kLWtleS0wMDAyfDA=" => Some(StatusCode::OK),
        // admin-api:van-flaky-key-0003
        "YWRtaW4tYXBpOnZhbi1mbGFreS1rZXktMDAwMw==" => Some(StatusCode::SERVICE_UNAVAILABLE),
        // admin-api:van-slow-key-0004: no answer in time.
        "YWRtaW4tYXBpOnZhbi1zbG93LWtleS0wMDA0" => None,
        _ => Some(StatusCode::UNAUTHORIZED),
    }
}

/// A stand-in for VAN's `GET /v4/apiKeyProfiles`; returns its base URL and the paths it was
/// asked for.
async fn stand_in_van() -> (String, Arc<Mutex<Vec<String>>>) {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let seen = asked.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri, headers: HeaderMap| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push(uri.path().to_owned());
            match van_answer(&headers) {
                Some(status) if uri.path() == "/v4/apiKeyProfiles" => {
                    (status, axum::Json(json!({"items": [{"apiKeyTypeName": "Custom Integration"}]})))
                }
                Some(_) => (StatusCode::NOT_FOUND, axum::Json(json!({}))),
                None => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    (StatusCode::OK, axum::Json(json!({})))
                }
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), asked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_van_configured_a_key_is_stored_only_once_van_accepts_it() {
    let (van, asked) = stand_in_van().await;
    let stack = stack(&[("VAN_API_URL", van.as_str()), ("RUST_LOG", "debug")]).await;
    let admin = &stack.admin;
    let ws = workspace(admin, "Campaign").await;
    let add = |api_key: &str, settings: Value| json!({"provider": "van", "name": "VAN", "api_key": api_key, "settings": settings});
    admin.post(&keys(&ws), add("van-good-key-0001|1", Value::Null)).await.expect(201);
    let named = add("van-good-key-0002|0", json!({"application_name": "my-app"}));
    admin.post(&keys(&ws), named).await.expect(201);
    refused(admin.post(&keys(&ws), add("van-good-key-0002|0", Value::Null)).await, 422, "external_key_rejected");
    refused(admin.post(&keys(&ws), add("van-wrong-key-9999", Value::Null)).await, 422, "external_key_rejected");
    refused(admin.post(&keys(&ws), add("van-flaky-key-0003", Value::Null)).await, 502, "provider_unavailable");
    refused(admin.post(&keys(&ws), add("van-slow-key-0004", Value::Null)).await, 502, "provider_unavailable");
    assert_eq!(count(admin, &ws).await, 2, "only the accepted keys are stored");
    assert!(asked.lock().unwrap().iter().all(|p| p == "/v4/apiKeyProfiles"), "{asked:?}");
    // A request the workspace refuses anyway never reaches VAN.
    let before = asked.lock().unwrap().len();
    let bad = json!({"provider": "van", "name": " ", "api_key": "van-good-key-0001|1"});
    refused(admin.post(&keys(&ws), bad).await, 422, "validation_failed");
    assert_eq!(asked.lock().unwrap().len(), before);
    let logs = stack.hub.logs();
    assert!(!logs.contains("van-wrong-key") && !logs.contains("van-good-key"), "the hub logged a credential:\n{logs}");

    // VAN unreachable: a closed port.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[("VAN_API_URL", closed.as_str()), NO_THROTTLE]).await;
    let (_, admin) = organization(&Api::new(&hub.url(""), Some(OPERATOR_KEY)), "acme").await;
    let ws = workspace(&admin, "Campaign").await;
    refused(admin.post(&keys(&ws), add("van-good-key-0001|1", Value::Null)).await, 502, "provider_unavailable");
    assert_eq!(count(&admin, &ws).await, 0);
}

/// The master key the test hubs share, as bytes.
fn master_key() -> [u8; 32] {
    // MASTER_KEY is the base64 of these 32 ASCII bytes.
    assert_eq!(MASTER_KEY, "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=");
    *b"0123456789abcdef0123456789abcdef"
}

/// The workspace's data key from the hub's keyring, if it still exists.
async fn data_key(client: &tokio_postgres::Client, workspace: Uuid) -> Option<[u8; 32]> {
    let row = client.query_one("SELECT sealed_data_key FROM keyring WHERE workspace_id = $1", &[&workspace]).await;
    let sealed: Option<Vec<u8>> = row.unwrap().get(0);
    let key = shared::crypto::open(&master_key(), &sealed?, &shared::crypto::data_key_context(workspace)).unwrap();
    Some(key.try_into().unwrap())
}

#[tokio::test]
async fn once_its_workspace_is_deleted_a_credential_in_the_log_can_no_longer_be_opened() {
    let stack = stack(&[]).await;
    let admin = &stack.admin;
    let ws = workspace(admin, "Doomed").await;
    let body = json!({"provider": "van", "name": "VAN", "api_key": CREDENTIAL});
    let key_id: Uuid = admin.post(&keys(&ws), body).await.expect(201).body["id"].as_str().unwrap().parse().unwrap();
    let ws: Uuid = ws.parse().unwrap();
    let client = stack.db.connect().await;
    let row = client
        .query_one(
            "SELECT data->>'sealed_api_key' FROM events WHERE stream_id = $1 AND event_type = 'ExternalKeyAdded'",
            &[&format!("workspace-{ws}")],
        )
        .await
        .unwrap();
    let sealed = hex::decode(row.get::<_, String>(0)).unwrap();
    let context = shared::crypto::external_key_context(ws, key_id);
    let key = data_key(&client, ws).await.expect("a live workspace has its data key");
    assert_eq!(shared::crypto::open(&key, &sealed, &context).unwrap(), CREDENTIAL.as_bytes());
    assert!(shared::crypto::open(&key, &sealed, &shared::crypto::external_key_context(ws, Uuid::now_v7())).is_err());
    // The instance materializes the credential, still sealed, with the workspace.
    let instance_copy = "SELECT state->'external_keys'->$2->>'sealed_api_key' FROM instance.workspaces WHERE id = $1";
    let materialized = wait_until("the instance to hold the external key", Duration::from_secs(30), || {
        let client = &client;
        let key = key_id.to_string();
        async move {
            client.query_opt(instance_copy, &[&ws, &key]).await.unwrap().and_then(|r| r.get::<_, Option<String>>(0))
        }
    })
    .await;
    assert_eq!(hex::decode(materialized).unwrap(), sealed);

    stack.admin.delete(&format!("/v1/workspaces/{ws}")).await.expect(204);
    assert_eq!(data_key(&client, ws).await, None, "the data key is destroyed");
    refused(stack.operator.get(&format!("/v1/internal/keyring/{ws}")).await, 410, "key_destroyed");
    let row = client
        .query_one(
            "SELECT data->>'sealed_api_key' FROM events WHERE stream_id = $1 AND event_type = 'ExternalKeyAdded'",
            &[&format!("workspace-{ws}")],
        )
        .await
        .unwrap();
    assert_eq!(hex::decode(row.get::<_, String>(0)).unwrap(), sealed, "the log is immutable: only the key is gone");
    wait_until("the instance to drop the workspace and its data key", Duration::from_secs(30), || {
        let client = &client;
        async move {
            let row = client
                .query_one(
                    "SELECT (SELECT state IS NULL FROM instance.workspaces WHERE id = $1), \
                            (SELECT count(*) FROM instance.data_keys WHERE workspace_id = $1)",
                    &[&ws],
                )
                .await
                .unwrap();
            (row.get::<_, Option<bool>>(0) == Some(true) && row.get::<_, i64>(1) == 0).then_some(())
        }
    })
    .await;
    // Replaying the log rebuilds the read models, not the destroyed key.
    drop(client);
    let out = e2e::binaries::hub_command(&stack.db.url, &["projections", "rebuild"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let client = stack.db.connect().await;
    assert_eq!(data_key(&client, ws).await, None, "a replay brings no key back");
    let left: i64 = client
        .query_one("SELECT count(*) FROM keyring WHERE sealed_data_key IS NOT NULL AND workspace_id = $1", &[&ws])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

#[tokio::test]
async fn the_openapi_document_declares_the_external_key_routes_and_their_constraints() {
    let stack = stack(&[]).await;
    let doc = stack.admin.anonymous().get("/openapi.json").await.expect(200).body;
    for (path, methods) in [
        ("/v1/workspaces/{id}/external-keys", &["get", "post"][..]),
        ("/v1/workspaces/{id}/external-keys/count", &["get"]),
        ("/v1/workspaces/{id}/external-keys/{key_id}", &["delete"]),
    ] {
        for method in methods {
            assert!(doc["paths"][path][method].is_object(), "{method} {path} is missing");
        }
    }
    let create = &doc["components"]["schemas"]["CreateExternalKey"];
    assert_eq!(create["additionalProperties"], false, "{create}");
    let required: Vec<&str> = create["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    for field in ["provider", "name", "api_key"] {
        assert!(required.contains(&field), "{field} is not required: {create}");
    }
    let properties = &create["properties"];
    assert_eq!(properties["api_key"]["pattern"], shared::domain::external_keys::API_KEY_PATTERN);
    assert_eq!(properties["name"]["minLength"], 1);
    assert_eq!(properties["name"]["pattern"], shared::domain::values::name_pattern(100));
    let text = doc.to_string();
    assert!(text.contains("\"van\""), "the providers are enumerated");
}

#[tokio::test]
async fn deleting_an_external_key_revokes_the_interaction_keys_routed_to_it_in_the_same_commit() {
    let stack = stack(&[]).await;
    let admin = &stack.admin;
    let ws = workspace(admin, "Campaign").await;
    let add = |name: &str| json!({"provider": "van", "name": name, "api_key": CREDENTIAL});
    let doomed = admin.post(&keys(&ws), add("doomed")).await.expect(201).body["id"].as_str().unwrap().to_owned();
    let kept = admin.post(&keys(&ws), add("kept")).await.expect(201).body["id"].as_str().unwrap().to_owned();
    let interaction_keys = format!("/v1/workspaces/{ws}/interaction-keys");
    let route = |name: &str, external: &str| json!({"name": name, "destination": {"type": "external_key", "external_key_id": external}});
    let mut ids = Vec::new();
    for (name, external) in [("first", &doomed), ("second", &doomed), ("elsewhere", &kept), ("gone", &doomed)] {
        let created = admin.post(&interaction_keys, route(name, external)).await.expect(201);
        ids.push(created.body["id"].as_str().unwrap().to_owned());
    }
    admin.delete(&format!("{interaction_keys}/{}", ids[3])).await.expect(204);

    admin.delete(&format!("{}/{doomed}", keys(&ws))).await.expect(204);
    let status = |id: &str| {
        let path = format!("{interaction_keys}?page_size=100");
        let id = id.to_owned();
        async move {
            let listed = admin.get(&path).await.expect(200).body;
            let item = listed["items"].as_array().unwrap().iter().find(|k| k["id"] == id.as_str()).cloned();
            item.unwrap()["status"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(status(&ids[0]).await, "revoked");
    assert_eq!(status(&ids[1]).await, "revoked");
    assert_eq!(status(&ids[2]).await, "active", "a key routed to another external key stays");

    // One commit: the revocations (of the live keys only) right before the deletion.
    let feed = stack.operator.get(&format!("/v1/events?stream_id=workspace-{ws}&limit=1000")).await.expect(200).body;
    let events = feed["items"].as_array().unwrap();
    let tail: Vec<(&str, &Value)> =
        events[events.len() - 3..].iter().map(|e| (e["event_type"].as_str().unwrap(), &e["data"])).collect();
    assert_eq!(tail[2], ("ExternalKeyDeleted", &json!({"external_key_id": doomed})));
    let mut revoked: Vec<&str> = tail[..2]
        .iter()
        .map(|(kind, data)| {
            assert_eq!((*kind, &data["reason"]), ("InteractionKeyRevoked", &json!("destination_deleted")));
            data["interaction_key_id"].as_str().unwrap()
        })
        .collect();
    revoked.sort_unstable();
    let mut expected = [ids[0].as_str(), ids[1].as_str()];
    expected.sort_unstable();
    assert_eq!(revoked, expected);
    let positions: Vec<i64> = events[events.len() - 3..].iter().map(|e| e["position"].as_i64().unwrap()).collect();
    assert_eq!(positions, [positions[0], positions[0] + 1, positions[0] + 2], "{positions:?}");

    // The instance follows: the revoked keys and the external key are gone from its state.
    let client = stack.db.connect().await;
    let ws: Uuid = ws.parse().unwrap();
    wait_until("the instance to apply the deletion", Duration::from_secs(30), || {
        let client = &client;
        let (doomed, first) = (doomed.clone(), ids[0].clone());
        async move {
            let row = client
                .query_one(
                    "SELECT state->'external_keys' ? $2, state->'interaction_keys' ? $3 \
                       FROM instance.workspaces WHERE id = $1",
                    &[&ws, &doomed, &first],
                )
                .await
                .unwrap();
            (row.get::<_, Option<bool>>(0) == Some(false) && row.get::<_, Option<bool>>(1) == Some(false)).then_some(())
        }
    })
    .await;
}
