//! `POST /v1/interactions` on the instance that serves a workspace (and on a single-node
//! hub's port): interaction keys created on the hub authenticate there, checked against the
//! instance's own state; accepted interactions are stored with one pending delivery per
//! webhook URI; bad keys get 401, archived workspaces 403, bad bodies a 4xx problem; no
//! plaintext key reaches the instance's database or logs.

use std::time::Duration;

use base64::Engine;
use e2e::{Api, HubProcess, NatsServer, OPERATOR_KEY, PgServer, Reply, TestDatabase, wait_until};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

/// These tests present bad keys on purpose.
const NO_THROTTLE: (&str, &str) = ("HUB_AUTH_FAILURES_PER_MINUTE", "100000");
const WAIT: Duration = Duration::from_secs(30);

#[track_caller]
fn refused(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status.as_u16(), status, "{}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/problem+json"), "{}", reply.text);
    assert_eq!(reply.body["code"], code, "{}", reply.text);
    assert!(reply.header("request-id").is_some());
    assert_eq!(reply.body["request_id"].as_str(), reply.header("request-id"), "the body names the request");
}

/// An organization with an admin key, as the operator creates them.
async fn organization(operator: &Api) -> (String, Api) {
    let org = operator
        .post("/v1/organizations", json!({"name": "Acme", "email": "ops@acme.test", "plan": "pro"}))
        .await
        .expect(201);
    let org = org.body["id"].as_str().unwrap().to_owned();
    let key = operator.post("/v1/api-keys", json!({"name": "admin", "scopes": ["*"], "organization_id": org})).await;
    let admin = operator.with_key(key.expect(201).body["secret"].as_str().unwrap());
    (org, admin)
}

async fn workspace(operator: &Api, org: &str, name: &str, instance: Option<&str>, webhooks: &[&str]) -> String {
    let mut body = json!({"name": name, "organization_id": org});
    if let Some(instance) = instance {
        body["instance_id"] = json!(instance);
    }
    let id = operator.post("/v1/workspaces", body).await.expect(201).body["id"].as_str().unwrap().to_owned();
    if !webhooks.is_empty() {
        operator.patch(&format!("/v1/workspaces/{id}"), json!({"webhook_uris": webhooks})).await.expect(200);
    }
    id
}

fn keys(workspace: &str) -> String {
    format!("/v1/workspaces/{workspace}/interaction-keys")
}

/// An interaction key routed to a new external key of `workspace`: (id, secret).
async fn interaction_key(admin: &Api, workspace: &str, expires_at: Option<String>) -> (String, String) {
    let external = admin
        .post(
            &format!("/v1/workspaces/{workspace}/external-keys"),
            json!({"provider": "van", "name": "VAN", "api_key": "van-credential-0001"}),
        )
        .await
        .expect(201);
    let mut body = json!({"name": "Canvass",
        "destination": {"type": "external_key", "external_key_id": external.body["id"]}});
    if let Some(at) = expires_at {
        body["expires_at"] = json!(at);
    }
    let created = admin.post(&keys(workspace), body).await.expect(201).body;
    (created["id"].as_str().unwrap().to_owned(), created["secret"].as_str().unwrap().to_owned())
}

fn interaction() -> Value {
    json!({"type": "door.knocked", "payload": {"voter": 42, "answer": "yes"}})
}

/// Posts until the key is known where `api` points (its creation reaches the instance
/// asynchronously).
async fn accepted(api: &Api, body: &Value) -> String {
    wait_until("the interaction to be accepted", WAIT, || {
        let api = api.clone();
        let body = body.clone();
        async move {
            let reply = api.post("/v1/interactions", body).await;
            // Refused only until the hub's change reaches the instance.
            assert!(matches!(reply.status.as_u16(), 202 | 401 | 403), "{}", reply.text);
            (reply.status == 202).then(|| reply.body["id"].as_str().unwrap().to_owned())
        }
    })
    .await
}

/// Posts until the answer is `status` (a revocation or expiry reaches the instance
/// asynchronously).
async fn refused_within(api: &Api, status: u16) -> Reply {
    wait_until(&format!("the interaction to be refused with {status}"), WAIT, || {
        let api = api.clone();
        async move {
            let reply = api.post("/v1/interactions", interaction()).await;
            (reply.status.as_u16() == status).then_some(reply)
        }
    })
    .await
}

/// The interaction and its deliveries' URLs and statuses, from `schema` of `db` (not their
/// attempts: the webhook sender may have tried the `.test` hosts already, see webhooks.rs).
async fn stored(db: &TestDatabase, schema: &str, id: &str) -> (Value, Vec<(String, String)>) {
    let client = db.connect().await;
    let id: Uuid = id.parse().unwrap();
    let row = client
        .query_one(
            &format!(
                "SELECT jsonb_build_object('workspace_id', workspace_id, 'interaction_key_id', interaction_key_id, \
                 'type', type, 'payload', payload) FROM {schema}.interactions WHERE id = $1"
            ),
            &[&id],
        )
        .await
        .unwrap();
    let deliveries = client
        .query(
            &format!("SELECT url, status::text FROM {schema}.deliveries WHERE interaction_id = $1 ORDER BY url"),
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), deliveries.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Everything `schema` of `db` holds of keys, workspaces and interactions, as text.
async fn everything_stored(db: &TestDatabase, schema: &str) -> String {
    let client = db.connect().await;
    let mut text = String::new();
    for table in ["workspaces", "interaction_keys", "interactions", "deliveries"] {
        let row = client
            .query_one(&format!("SELECT coalesce(string_agg(t::text, '\n'), '') FROM {schema}.{table} t"), &[])
            .await
            .unwrap();
        text.push_str(&row.get::<_, String>(0));
    }
    text
}

fn basic(key: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{key}:")))
}

#[tokio::test]
async fn a_key_created_on_the_hub_posts_interactions_to_its_instance_until_it_is_deleted() {
    let nats = NatsServer::start().unwrap();
    let hub_db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&hub_db.url, &[], &[("NATS_URL", &nats.url())]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let (org, admin) = organization(&operator).await;
    let instance_db = PgServer::shared().empty_database().await;
    let instance =
        HubProcess::instance_with_env("alpha", &instance_db.url, &nats.url(), &hub.url(""), &[NO_THROTTLE]).await;
    let webhooks = ["https://hooks.example.test/a", "https://hooks.example.test/b"];
    let ws = workspace(&operator, &org, "Field", Some("alpha"), &webhooks).await;
    let (key_id, secret) = interaction_key(&admin, &ws, None).await;

    let on_instance = Api::new(&instance.url(""), Some(&secret));
    let id = accepted(&on_instance, &interaction()).await;
    assert_eq!(Uuid::parse_str(&id).unwrap().get_version_num(), 7);
    let (row, deliveries) = stored(&instance_db, "public", &id).await;
    assert_eq!(
        row,
        json!({"workspace_id": ws, "interaction_key_id": key_id, "type": "door.knocked",
               "payload": {"voter": 42, "answer": "yes"}})
    );
    assert_eq!(
        deliveries,
        webhooks.iter().map(|url| (url.to_string(), "pending".to_owned())).collect::<Vec<_>>(),
        "one pending delivery per webhook URI"
    );

    // Basic with the key as username works like Bearer.
    let reply = on_instance
        .anonymous()
        .send(Method::POST, "/v1/interactions", Some(&interaction()), &[("authorization", &basic(&secret))])
        .await
        .expect(202);
    assert_ne!(reply.body["id"], id.as_str());

    // The key's revocation on the hub reaches the instance.
    admin.delete(&format!("{}/{key_id}", keys(&ws))).await.expect(204);
    let reply = refused_within(&on_instance, 401).await;
    refused(&reply, 401, "unauthorized");
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));

    // The key table holds hashes, never the key.
    let stored = everything_stored(&instance_db, "public").await;
    assert!(stored.contains("door.knocked"));
    assert!(!stored.contains(&secret[3..]), "the plaintext key is not in the instance's database");
    assert!(!instance.logs().contains(&secret[3..]), "the key is not in the instance's logs");
    drop(instance);

    // A rebuild from the log gives the same key table (the digest covers it) and keeps the
    // accepted interactions.
    let run = |command: &str| {
        let out = std::process::Command::new(e2e::binaries::binary("instance"))
            .arg(command)
            .env("INSTANCE_ID", "alpha")
            .env("INSTANCE_DATABASE_URL", &instance_db.url)
            .env("HUB_URL", hub.url(""))
            .env("HUB_OPERATOR_KEY", OPERATOR_KEY)
            .output()
            .unwrap();
        assert!(out.status.success(), "{command}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let client = instance_db.connect().await;
    let table = "SELECT coalesce(string_agg(k::text, ',' ORDER BY key_hash), '') FROM interaction_keys k";
    let keys_before: String = client.query_one(table, &[]).await.unwrap().get(0);
    assert!(!keys_before.contains(&key_id), "a revoked key leaves the table: {keys_before}");
    let count = "SELECT count(*) FROM interactions";
    let interactions: i64 = client.query_one(count, &[]).await.unwrap().get(0);
    assert!(interactions >= 2);
    let before = run("digest");
    run("rebuild");
    assert_eq!(run("digest"), before, "a rebuild equals the live state, key table included");
    assert_eq!(client.query_one(table, &[]).await.unwrap().get::<_, String>(0), keys_before);
    assert_eq!(client.query_one(count, &[]).await.unwrap().get::<_, i64>(0), interactions);
}

#[tokio::test]
async fn on_a_single_node_hub_interactions_are_accepted_on_its_port_and_bad_keys_and_bodies_are_refused() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[NO_THROTTLE]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let (org, admin) = organization(&operator).await;
    let ws = workspace(&operator, &org, "Field", None, &["https://hooks.example.test/only"]).await;
    let (key_id, secret) = interaction_key(&admin, &ws, None).await;
    let api = Api::new(&hub.url(""), Some(&secret));

    let id = accepted(&api, &interaction()).await;
    let (row, deliveries) = stored(&db, "instance", &id).await;
    assert_eq!(row["interaction_key_id"], key_id.as_str());
    assert_eq!(deliveries, [("https://hooks.example.test/only".to_owned(), "pending".to_owned())]);

    // Keys refused before any lookup, and unknown ones, all alike.
    let mut typo: Vec<char> = secret.chars().collect();
    typo[10] = if typo[10] == 'a' { 'b' } else { 'a' };
    let typo: String = typo.into_iter().collect();
    let unknown = {
        // A well-formed key nobody created: take the checksum-valid shape of an admin key.
        let admin_key = operator.post("/v1/api-keys", json!({"name": "x", "scopes": ["*"], "organization_id": org}));
        let admin_key = admin_key.await.expect(201).body["secret"].as_str().unwrap().to_owned();
        (admin_key.clone(), format!("ik_{}", &admin_key[4..]))
    };
    for bad in ["garbage", &typo, &unknown.0, &unknown.1, &format!("adm_{}", &secret[3..])] {
        let reply = api.with_key(bad).post("/v1/interactions", interaction()).await;
        refused(&reply, 401, "unauthorized");
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"), "{bad}");
    }
    refused(&api.anonymous().post("/v1/interactions", interaction()).await, 401, "unauthorized");
    let with_password = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{secret}:pw")));
    let headers = [("authorization", with_password.as_str())];
    let reply = api.anonymous().send(Method::POST, "/v1/interactions", Some(&interaction()), &headers).await;
    refused(&reply, 401, "unauthorized");

    // Bad bodies: a problem, never a 5xx.
    let long_type = "a".repeat(101);
    for (body, status, code) in [
        (json!({"type": "door.knocked"}), 422, "validation_failed"),
        (json!({"type": "Door Knocked", "payload": 1}), 422, "validation_failed"),
        (json!({"type": long_type, "payload": 1}), 422, "validation_failed"),
        (json!({"type": "", "payload": 1}), 422, "validation_failed"),
        (json!({"type": "x", "payload": 1, "extra": true}), 422, "validation_failed"),
        (json!(["x"]), 422, "validation_failed"),
        (json!(["door.knocked", 1]), 422, "validation_failed"),
        (json!({"type": "x", "payload": "nul \u{0000} inside"}), 422, "validation_failed"),
        (json!({"type": "x", "payload": {"nul\u{0000}key": 1}}), 422, "validation_failed"),
    ] {
        refused(&api.post("/v1/interactions", body.clone()).await, status, code);
    }
    let raw = |content_type: &'static str, body: Vec<u8>| {
        let api = api.clone();
        async move { api.send_raw(Method::POST, "/v1/interactions", content_type, body).await }
    };
    refused(&raw("application/json", b"{\"type\": \"x\", \"payload\": ".to_vec()).await, 400, "malformed_json");
    refused(&raw("text/plain", b"{\"type\": \"x\", \"payload\": 1}".to_vec()).await, 415, "unsupported_media_type");
    let big = format!(r#"{{"type": "x", "payload": "{}"}}"#, "p".repeat(256 * 1024));
    let too_big = raw("application/json", big.into_bytes()).await;
    refused(&too_big, 413, "payload_too_large");
    // After an oversized body the connection closes: the client is told not to send the
    // next request on it.
    assert_eq!(too_big.header("connection"), Some("close"), "{:?}", too_big.headers);
    let just_under = format!(r#"{{"type": "x", "payload": "{}"}}"#, "p".repeat(256 * 1024 - 40));
    assert!(just_under.len() <= 256 * 1024);
    raw("application/json", just_under.into_bytes()).await.expect(202);
    // A `type` of exactly 100 characters and a `null` payload are fine.
    api.post("/v1/interactions", json!({"type": "a".repeat(100), "payload": null})).await.expect(202);

    // An archived workspace: 403, and back once restored.
    admin.post(&format!("/v1/workspaces/{ws}/archive"), json!({})).await.expect(200);
    refused(&refused_within(&api, 403).await, 403, "workspace_archived");
    admin.post(&format!("/v1/workspaces/{ws}/restore"), json!({})).await.expect(200);
    accepted(&api, &interaction()).await;

    // An expired key.
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(3)).to_rfc3339();
    let (_, expiring) = interaction_key(&admin, &ws, Some(soon)).await;
    let expiring = api.with_key(&expiring);
    refused(&refused_within(&expiring, 401).await, 401, "unauthorized");

    // A deleted workspace's keys no longer work, and its interactions and their deliveries
    // are gone with it.
    admin.delete(&format!("/v1/workspaces/{ws}")).await.expect(204);
    refused(&refused_within(&api, 401).await, 401, "unauthorized");
    for table in ["interactions", "deliveries"] {
        let left = db.connect().await.query_one(&format!("SELECT count(*) FROM instance.{table}"), &[]).await.unwrap();
        assert_eq!(left.get::<_, i64>(0), 0, "{table} left");
    }

    let stored = everything_stored(&db, "instance").await;
    assert!(!stored.contains(&secret[3..]), "the plaintext key is not in the instance's tables");
    assert!(!hub.logs().contains(&secret[3..]), "the key is not in the logs");
}

#[tokio::test]
async fn a_withheld_key_works_once_its_source_app_has_claimed_the_secret() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[NO_THROTTLE]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let (org, admin) = organization(&operator).await;
    let ws = workspace(&operator, &org, "Field", None, &["https://hooks.example.test/in"]).await;
    let app = |name: &str, kind: &str| {
        let body = json!({"name": name, "kind": kind, "contact_email": format!("dev@{kind}.test")});
        let operator = operator.clone();
        async move {
            let reply = operator.post("/v1/apps", body).await.expect(201).body;
            (reply["id"].as_str().unwrap().to_owned(), operator.with_key(reply["secret"].as_str().unwrap()))
        }
    };
    let (source, source_api) = app("Canvass Pro", "source").await;
    let (destination, _) = app("Mobilize", "destination").await;
    let created = admin
        .post(
            &keys(&ws),
            json!({"name": "Door knocks", "source_app_id": source, "destination": {"type": "app", "app_id": destination}}),
        )
        .await
        .expect(201)
        .body;
    assert!(created.get("secret").is_none_or(Value::is_null), "withheld: {created}");
    let id = created["id"].as_str().unwrap();
    let claimed = source_api.post(&format!("/v1/partner/interaction-keys/{id}/secret"), json!({})).await.expect(200);
    let secret = claimed.body["secret"].as_str().unwrap();

    let data_plane = Api::new(&hub.url(""), Some(secret));
    let accepted_id = accepted(&data_plane, &interaction()).await;
    let (row, deliveries) = stored(&db, "instance", &accepted_id).await;
    assert_eq!(row["interaction_key_id"], id);
    assert_eq!(deliveries.len(), 1);
    source_api.post(&format!("/v1/partner/interaction-keys/{id}/secret"), json!({})).await.expect(410);

    // Deleted: the instance refuses the claimed secret once the deletion reaches it.
    admin.delete(&format!("{}/{id}", keys(&ws))).await.expect(204);
    let refused = refused_within(&data_plane, 401).await;
    assert_eq!(refused.body["code"], "unauthorized", "{}", refused.text);
}

#[tokio::test]
async fn the_openapi_document_of_an_instance_declares_the_interactions_route_and_its_constraints() {
    let nats = NatsServer::start().unwrap();
    let hub_db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&hub_db.url, &[], &[("NATS_URL", &nats.url())]).await;
    let instance_db = PgServer::shared().empty_database().await;
    let instance = HubProcess::instance("alpha", &instance_db.url, &nats.url(), &hub.url("")).await;
    let doc = Api::new(&instance.url(""), None).get("/openapi.json").await.expect(200).body;
    let post = &doc["paths"]["/v1/interactions"]["post"];
    for status in ["202", "400", "401", "403", "413", "415", "422", "429"] {
        assert!(post["responses"][status].is_object(), "{status}: {post}");
    }
    let schema = &doc["components"]["schemas"]["NewInteraction"];
    assert_eq!(schema["additionalProperties"], false, "{schema}");
    assert_eq!(schema["properties"]["type"]["pattern"], "^[a-z0-9._-]{1,100}$");
    assert_eq!(schema["properties"]["type"]["maxLength"], 100);
    let required: Vec<&str> = schema["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(required.contains(&"type") && required.contains(&"payload"), "{schema}");
}

#[tokio::test]
async fn failed_interaction_keys_are_throttled_per_address_and_every_answer_is_counted_by_route() {
    let nats = NatsServer::start().unwrap();
    let hub_db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&hub_db.url, &[], &[("NATS_URL", &nats.url())]).await;
    let instance_db = PgServer::shared().empty_database().await;
    let throttle = ("HUB_AUTH_FAILURES_PER_MINUTE", "3");
    let instance =
        HubProcess::instance_with_env("alpha", &instance_db.url, &nats.url(), &hub.url(""), &[throttle]).await;
    let api = Api::new(&instance.url(""), Some("ik_garbage"));
    for _ in 0..3 {
        refused(&api.post("/v1/interactions", interaction()).await, 401, "unauthorized");
    }
    let reply = api.post("/v1/interactions", interaction()).await;
    refused(&reply, 429, "too_many_failed_authentications");
    assert!(reply.header("retry-after").is_some());

    let metrics = reqwest::get(instance.url("/metrics")).await.unwrap().text().await.unwrap();
    let counted = |status: &str| {
        metrics.lines().any(|line| {
            line.starts_with("http_requests_total{")
                && line.contains("route=\"/v1/interactions\"")
                && line.contains(&format!("status=\"{status}\""))
        })
    };
    assert!(counted("401") && counted("429"), "{metrics}");
}
