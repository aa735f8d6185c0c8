//! Technology partner apps: the operator registers and deletes them (`/v1/apps`), and an
//! app's key authenticates on `/v1/partner/*` only, where it sees the interaction keys
//! provisioned to it or routed to it.

use e2e::{Api, HubProcess, OPERATOR_KEY, TestDatabase};
use serde_json::{Value, json};

struct Stack {
    hub: HubProcess,
    operator: Api,
}

async fn stack() -> Stack {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    Stack { hub, operator }
}

/// Creates an organization and an all-scopes admin key for it.
async fn organization(operator: &Api, name: &str) -> (String, Api) {
    let org = operator
        .post("/v1/organizations", json!({"name": name, "email": format!("ops@{name}.test"), "plan": "pro"}))
        .await
        .expect(201);
    let org_id = org.body["id"].as_str().unwrap().to_owned();
    let key = operator
        .post("/v1/api-keys", json!({"name": "admin", "scopes": ["*"], "organization_id": org_id}))
        .await
        .expect(201);
    (org_id, operator.with_key(key.body["secret"].as_str().unwrap()))
}

/// Registers an app; returns its view (with the secret).
async fn register(operator: &Api, name: &str, kind: &str) -> Value {
    operator
        .post(
            "/v1/apps",
            json!({"name": name, "kind": kind, "contact_email": format!("dev@{}.test", name.to_lowercase())}),
        )
        .await
        .expect(201)
        .body
}

#[track_caller]
fn assert_problem(reply: &e2e::Reply, status: u16) {
    assert_eq!(reply.status.as_u16(), status, "body: {}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/problem+json"), "body: {}", reply.text);
    assert!(reply.body["code"].is_string(), "a stable code: {}", reply.text);
}

#[tokio::test]
async fn the_operator_registers_apps_of_both_kinds_and_each_key_is_shown_once() {
    let stack = stack().await;
    let reply = stack
        .operator
        .post("/v1/apps", json!({"name": " Acme CRM ", "kind": "source", "contact_email": "dev@ACME.test"}))
        .await
        .expect(201);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let source = reply.body.clone();
    let secret = source["secret"].as_str().unwrap();
    assert!(secret.starts_with("pak_"), "{secret}");
    assert_eq!(source["name"], "Acme CRM");
    assert_eq!(source["kind"], "source");
    assert_eq!(source["contact_email"], "dev@acme.test");
    assert_eq!(source["status"], "active");
    assert_eq!(source["partial_key_hint"], format!("pak_...{}", &secret[secret.len() - 4..]));
    assert!(source["created_at"].is_string());
    let id = source["id"].as_str().unwrap();
    assert_eq!(reply.header("location"), Some(format!("/v1/apps/{id}").as_str()));

    let destination = register(&stack.operator, "Ledger", "destination").await;
    assert_eq!(destination["kind"], "destination");
    assert_ne!(destination["secret"], source["secret"]);

    let got = stack.operator.get(&format!("/v1/apps/{id}")).await.expect(200);
    assert!(got.body.get("secret").is_none(), "a GET never shows the key: {}", got.text);
    assert_eq!(got.body["name"], "Acme CRM");
    assert_eq!(got.body["partial_key_hint"], source["partial_key_hint"]);

    let list = stack.operator.get("/v1/apps?sort_by=name").await.expect(200);
    let names: Vec<&str> = list.body["items"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Acme CRM", "Ledger"]);
    assert!(!list.text.contains(secret), "no secret in a list");
    assert_eq!(stack.operator.get("/v1/apps/count").await.expect(200).body["count"], 2);
    assert_eq!(stack.operator.get("/v1/apps/count?kind=destination").await.expect(200).body["count"], 1);
    let page = stack.operator.get("/v1/apps?page_size=1").await.expect(200).body;
    let cursor = page["pagination"]["next_cursor"].as_str().unwrap().to_owned();
    let next = stack.operator.get(&format!("/v1/apps?page_size=1&cursor={cursor}")).await.expect(200).body;
    assert_eq!(next["items"][0]["name"], "Ledger");
}

#[tokio::test]
async fn bad_app_registrations_are_problems() {
    let stack = stack().await;
    let bodies = [
        json!({"name": "A", "kind": "sink", "contact_email": "dev@a.test"}),
        json!({"name": "A", "contact_email": "dev@a.test"}),
        json!({"kind": "source", "contact_email": "dev@a.test"}),
        json!({"name": "A", "kind": "source"}),
        json!({"name": "A", "kind": "source", "contact_email": "not an email"}),
        json!({"name": "x".repeat(201), "kind": "source", "contact_email": "dev@a.test"}),
        json!({"name": "  ", "kind": "source", "contact_email": "dev@a.test"}),
        json!({"name": "A", "kind": "source", "contact_email": "dev@a.test", "secret": "mine"}),
    ];
    for body in bodies {
        let reply = stack.operator.post("/v1/apps", body.clone()).await;
        assert!(reply.status.is_client_error(), "{body}: {}", reply.text);
        assert_problem(&reply, reply.status.as_u16());
    }
    assert_eq!(stack.operator.get("/v1/apps/count").await.expect(200).body["count"], 0);
    assert_problem(&stack.operator.get(&format!("/v1/apps/{}", uuid::Uuid::now_v7())).await, 404);
    assert_problem(&stack.operator.delete(&format!("/v1/apps/{}", uuid::Uuid::now_v7())).await, 404);
}

#[tokio::test]
async fn only_the_operator_manages_apps() {
    let stack = stack().await;
    let (_, admin) = organization(&stack.operator, "acme").await;
    let body = json!({"name": "A", "kind": "source", "contact_email": "dev@a.test"});
    assert_problem(&admin.post("/v1/apps", body).await, 403);
    let app = register(&stack.operator, "Acme", "source").await;
    let id = app["id"].as_str().unwrap();
    assert_problem(&admin.get("/v1/apps").await, 403);
    assert_problem(&admin.get("/v1/apps/count").await, 403);
    assert_problem(&admin.get(&format!("/v1/apps/{id}")).await, 403);
    assert_problem(&admin.delete(&format!("/v1/apps/{id}")).await, 403);
    assert_problem(&stack.operator.anonymous().get("/v1/apps").await, 401);
    assert_eq!(stack.operator.get(&format!("/v1/apps/{id}")).await.expect(200).body["status"], "active");
}

#[tokio::test]
async fn an_app_key_works_on_the_partner_routes_only_and_no_other_key_does() {
    let stack = stack().await;
    let (_, admin) = organization(&stack.operator, "acme").await;
    let app = register(&stack.operator, "Acme", "destination").await;
    let partner = stack.operator.with_key(app["secret"].as_str().unwrap());

    let list = partner.get("/v1/partner/interaction-keys").await.expect(200).body;
    assert_eq!(list["items"], json!([]));
    assert_eq!(partner.get("/v1/partner/interaction-keys/count").await.expect(200).body["count"], 0);

    // Anywhere else the app key does not authenticate.
    for path in ["/v1/workspaces", "/v1/api-keys", "/v1/apps", "/v1/organizations", "/v1/audit-logs"] {
        assert_problem(&partner.get(path).await, 401);
    }
    assert_problem(
        &partner.post("/v1/apps", json!({"name": "B", "kind": "source", "contact_email": "d@b.test"})).await,
        401,
    );

    // The operator and admin keys are not apps; no key at all, or a garbled app key, is 401.
    assert_problem(&stack.operator.get("/v1/partner/interaction-keys").await, 403);
    assert_problem(&admin.get("/v1/partner/interaction-keys").await, 403);
    assert_problem(&admin.get("/v1/partner/interaction-keys/count").await, 403);
    assert_problem(&stack.operator.anonymous().get("/v1/partner/interaction-keys").await, 401);
    let secret = app["secret"].as_str().unwrap();
    let garbled = format!("{}{}", &secret[..secret.len() - 1], if secret.ends_with('a') { 'b' } else { 'a' });
    assert_problem(&partner.with_key(&garbled).get("/v1/partner/interaction-keys").await, 401);
    // A well-formed key no app has.
    let other = register(&stack.operator, "Other", "source").await;
    stack.operator.delete(&format!("/v1/apps/{}", other["id"].as_str().unwrap())).await.expect(204);
    assert_problem(&partner.with_key(other["secret"].as_str().unwrap()).get("/v1/partner/interaction-keys").await, 401);
}

#[tokio::test]
async fn a_deleted_app_is_revoked_and_its_key_fails_from_the_next_request() {
    let stack = stack().await;
    let app = register(&stack.operator, "Acme", "source").await;
    let id = app["id"].as_str().unwrap();
    let partner = stack.operator.with_key(app["secret"].as_str().unwrap());
    partner.get("/v1/partner/interaction-keys").await.expect(200);

    stack.operator.delete(&format!("/v1/apps/{id}")).await.expect(204);
    assert_problem(&partner.get("/v1/partner/interaction-keys").await, 401);
    let got = stack.operator.get(&format!("/v1/apps/{id}")).await.expect(200).body;
    assert_eq!(got["status"], "revoked");
    assert_eq!(stack.operator.get("/v1/apps/count?status=revoked").await.expect(200).body["count"], 1);
    assert_eq!(stack.operator.get("/v1/apps/count?status=active").await.expect(200).body["count"], 0);
    // Deleting again changes nothing.
    stack.operator.delete(&format!("/v1/apps/{id}")).await.expect(204);
    assert_problem(&partner.get("/v1/partner/interaction-keys").await, 401);
}

#[tokio::test]
async fn an_app_key_is_never_in_events_audit_entries_logs_or_reads() {
    let stack = stack().await;
    let app = register(&stack.operator, "Acme", "source").await;
    let id = app["id"].as_str().unwrap();
    let secret = app["secret"].as_str().unwrap();
    let partner = stack.operator.with_key(secret);
    partner.get("/v1/partner/interaction-keys").await.expect(200);
    partner.get("/v1/workspaces").await;
    stack.operator.delete(&format!("/v1/apps/{id}")).await.expect(204);
    partner.get("/v1/partner/interaction-keys").await;

    let events = stack.operator.get("/v1/events?after=0&limit=1000").await.expect(200);
    assert!(events.text.contains("AppRegistered") && events.text.contains("AppRevoked"), "{}", events.text);
    let audit = stack.operator.get("/v1/audit-logs?page_size=100").await.expect(200);
    assert!(audit.text.contains("AppRegistered"), "{}", audit.text);
    let reads = [
        stack.operator.get("/v1/apps").await.text,
        stack.operator.get(&format!("/v1/apps/{id}")).await.text,
        events.text,
        audit.text,
        stack.hub.logs(),
    ];
    for text in reads {
        assert!(!text.contains(secret), "the app key leaked: {text}");
    }
}

#[tokio::test]
async fn an_app_key_has_a_rate_limit_and_bad_app_keys_count_as_failed_authentications() {
    let db = TestDatabase::new().await;
    let env = [("HUB_RATE_LIMIT_PER_MINUTE", "3"), ("HUB_AUTH_FAILURES_PER_MINUTE", "2")];
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &env).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let app = register(&operator, "Acme", "source").await;
    let partner = operator.with_key(app["secret"].as_str().unwrap());
    for _ in 0..3 {
        partner.get("/v1/partner/interaction-keys/count").await.expect(200);
    }
    let limited = partner.get("/v1/partner/interaction-keys/count").await;
    assert_problem(&limited, 429);
    assert_eq!(limited.body["code"], "rate_limited");

    // Well-formed app keys no app holds: past the failures allowed, the address is refused
    // before any lookup, the real key included; the operator key is never locked out.
    let unknown = e2e_app_key();
    for _ in 0..2 {
        assert_problem(&partner.with_key(&unknown).get("/v1/partner/interaction-keys").await, 401);
    }
    assert_problem(&partner.with_key(&unknown).get("/v1/partner/interaction-keys").await, 429);
    operator.get("/v1/apps/count").await.expect(200);
}

/// A key of the app key format (prefix, 40 random characters, checksum) that no app holds.
fn e2e_app_key() -> String {
    shared::keys::GeneratedKey::generate(shared::keys::KeyKind::PartnerApp).expose().to_owned()
}

async fn workspace(api: &Api, name: &str) -> String {
    let reply = api.post("/v1/workspaces", json!({"name": name})).await.expect(201);
    reply.body["id"].as_str().unwrap().to_owned()
}

/// Creates an interaction key in `workspace` routed to app `destination`, provisioned to
/// app `source` if named; returns its id.
async fn interaction_key(api: &Api, workspace: &str, name: &str, destination: &str, source: Option<&str>) -> String {
    let mut body = json!({"name": name, "destination": {"type": "app", "app_id": destination}});
    if let Some(source) = source {
        body["source_app_id"] = json!(source);
    }
    let reply = api.post(&format!("/v1/workspaces/{workspace}/interaction-keys"), body).await.expect(201);
    reply.body["id"].as_str().unwrap().to_owned()
}

fn id_of(app: &Value) -> &str {
    app["id"].as_str().unwrap()
}

/// The partner list's items, by key id.
async fn partner_keys(stack: &Stack, app: &Value) -> Vec<Value> {
    let partner = stack.operator.with_key(app["secret"].as_str().unwrap());
    let page = partner.get("/v1/partner/interaction-keys?page_size=100").await.expect(200).body;
    page["items"].as_array().unwrap().clone()
}

fn ids(items: &[Value]) -> Vec<&str> {
    items.iter().map(|k| k["id"].as_str().unwrap()).collect()
}

/// Each key's status in its workspace's admin list.
async fn admin_statuses(admin: &Api, workspace: &str) -> std::collections::BTreeMap<String, String> {
    let page = admin.get(&format!("/v1/workspaces/{workspace}/interaction-keys?page_size=100")).await.expect(200).body;
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["id"].as_str().unwrap().to_owned(), k["status"].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test]
async fn an_app_lists_the_keys_provisioned_or_routed_to_it_and_never_another_apps() {
    let stack = stack().await;
    let (org, admin) = organization(&stack.operator, "acme").await;
    let (other_org, other_admin) = organization(&stack.operator, "globex").await;
    let field = workspace(&admin, "Field").await;
    let phones = workspace(&other_admin, "Phones").await;
    let source = register(&stack.operator, "Canvass", "source").await;
    let destination = register(&stack.operator, "Ledger", "destination").await;
    let other = register(&stack.operator, "Other", "destination").await;

    let door = interaction_key(&admin, &field, "Door knocks", id_of(&destination), Some(id_of(&source))).await;
    let bank = interaction_key(&other_admin, &phones, "Phone bank", id_of(&destination), None).await;
    let mail = interaction_key(&admin, &field, "Mail", id_of(&other), None).await;

    let provisioned = partner_keys(&stack, &source).await;
    assert_eq!(ids(&provisioned), [door.as_str()]);
    let key = &provisioned[0];
    assert_eq!(key["name"], "Door knocks");
    assert_eq!(key["workspace"], json!({"id": field, "name": "Field"}));
    assert_eq!(key["organization"], json!({"id": org, "name": "acme"}));
    assert_eq!(key["status"], "active");
    assert_eq!(key["secret_retrieved"], false);
    assert!(key["created_at"].is_string());
    let fields: Vec<&String> = key.as_object().unwrap().keys().collect();
    assert_eq!(fields, ["created_at", "id", "name", "organization", "secret_retrieved", "status", "workspace"]);

    // Once the source app has claimed the secret, both apps see it retrieved.
    let source_key = stack.operator.with_key(source["secret"].as_str().unwrap());
    source_key.post(&format!("/v1/partner/interaction-keys/{door}/secret"), json!({})).await.expect(200);
    assert_eq!(partner_keys(&stack, &source).await[0]["secret_retrieved"], true);

    let routed = partner_keys(&stack, &destination).await;
    assert_eq!(ids(&routed), [door.as_str(), bank.as_str()]);
    assert_eq!(routed[0]["secret_retrieved"], true);
    assert_eq!(routed[1]["organization"], json!({"id": other_org, "name": "globex"}));
    assert_eq!(routed[1]["workspace"], json!({"id": phones, "name": "Phones"}));
    assert_eq!(routed[1]["secret_retrieved"], Value::Null, "no source app: null");
    assert_eq!(ids(&partner_keys(&stack, &other).await), [mail.as_str()]);

    let partner = stack.operator.with_key(destination["secret"].as_str().unwrap());
    assert_eq!(partner.get("/v1/partner/interaction-keys/count").await.expect(200).body["count"], 2);
    assert_eq!(partner.get("/v1/partner/interaction-keys/count?status=revoked").await.expect(200).body["count"], 0);
    let first = partner.get("/v1/partner/interaction-keys?page_size=1").await.expect(200).body;
    assert_eq!(ids(first["items"].as_array().unwrap()), [door.as_str()]);
    let cursor = first["pagination"]["next_cursor"].as_str().unwrap().to_owned();
    let next = partner.get(&format!("/v1/partner/interaction-keys?page_size=1&cursor={cursor}")).await.expect(200);
    assert_eq!(ids(next.body["items"].as_array().unwrap()), [bank.as_str()]);
    // Another app's cursor is not this app's.
    let foreign = source_key.get(&format!("/v1/partner/interaction-keys?page_size=1&cursor={cursor}")).await;
    assert_problem(&foreign, 422);
    assert_eq!(foreign.body["code"], "cursor_mismatch");
    // No route reads one key by its id, another app's or its own.
    assert_problem(&partner.get(&format!("/v1/partner/interaction-keys/{mail}")).await, 404);
    assert_problem(&partner.get(&format!("/v1/partner/interaction-keys/{door}")).await, 404);
}

#[tokio::test]
async fn deleting_an_app_revokes_the_keys_provisioned_or_routed_to_it_and_no_other() {
    let stack = stack().await;
    let (_, admin) = organization(&stack.operator, "acme").await;
    let field = workspace(&admin, "Field").await;
    let phones = workspace(&admin, "Phones").await;
    let source = register(&stack.operator, "Canvass", "source").await;
    let destination = register(&stack.operator, "Ledger", "destination").await;
    let other = register(&stack.operator, "Other", "destination").await;

    let door = interaction_key(&admin, &field, "Door knocks", id_of(&other), Some(id_of(&source))).await;
    let bank = interaction_key(&admin, &phones, "Phone bank", id_of(&destination), None).await;
    let routed = interaction_key(&admin, &field, "Routed", id_of(&destination), None).await;
    let mail = interaction_key(&admin, &field, "Mail", id_of(&other), None).await;

    stack.operator.delete(&format!("/v1/apps/{}", id_of(&source))).await.expect(204);
    let statuses = admin_statuses(&admin, &field).await;
    assert_eq!(statuses[&door], "revoked", "provisioned to the deleted source app");
    assert_eq!((statuses[&routed].as_str(), statuses[&mail].as_str()), ("active", "active"));
    // The destination app still lists the key, revoked.
    let listed = partner_keys(&stack, &other).await;
    let door_item = listed.iter().find(|k| k["id"] == door.as_str()).unwrap();
    assert_eq!(door_item["status"], "revoked");
    assert_eq!(listed.iter().find(|k| k["id"] == mail.as_str()).unwrap()["status"], "active");

    stack.operator.delete(&format!("/v1/apps/{}", id_of(&destination))).await.expect(204);
    assert_eq!(admin_statuses(&admin, &phones).await[&bank], "revoked");
    let statuses = admin_statuses(&admin, &field).await;
    assert_eq!((statuses[&routed].as_str(), statuses[&mail].as_str()), ("revoked", "active"));
    let partner = stack.operator.with_key(other["secret"].as_str().unwrap());
    assert_eq!(partner.get("/v1/partner/interaction-keys/count?status=active").await.expect(200).body["count"], 1);

    // One revocation per key, each in its workspace's stream, saying why.
    let events = stack.operator.get("/v1/events?after=0&limit=1000").await.expect(200).body;
    let revoked: Vec<(&str, &str, &str)> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "InteractionKeyRevoked")
        .map(|e| {
            (
                e["stream_id"].as_str().unwrap(),
                e["data"]["interaction_key_id"].as_str().unwrap(),
                e["data"]["reason"].as_str().unwrap(),
            )
        })
        .collect();
    let field_stream = format!("workspace-{field}");
    let phones_stream = format!("workspace-{phones}");
    assert_eq!(revoked.len(), 3, "{revoked:?}");
    assert!(revoked.contains(&(field_stream.as_str(), door.as_str(), "app_deleted")), "{revoked:?}");
    assert!(revoked.contains(&(phones_stream.as_str(), bank.as_str(), "app_deleted")), "{revoked:?}");
    assert!(revoked.contains(&(field_stream.as_str(), routed.as_str(), "app_deleted")), "{revoked:?}");
    // The apps' revocations are audited for the operator.
    let audit = stack.operator.get("/v1/audit-logs?event_type=AppRevoked").await.expect(200).body;
    assert_eq!(audit["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_replayed_registration_registers_one_app_and_shows_its_key_only_the_first_time() {
    let stack = stack().await;
    let body = json!({"name": "Acme", "kind": "source", "contact_email": "dev@acme.test"});
    let headers = [("idempotency-key", "register-acme")];
    let first = stack.operator.send(reqwest::Method::POST, "/v1/apps", Some(&body), &headers).await.expect(201);
    let again = stack.operator.send(reqwest::Method::POST, "/v1/apps", Some(&body), &headers).await.expect(201);
    assert_eq!(again.body["id"], first.body["id"]);
    assert!(first.body["secret"].as_str().unwrap().starts_with("pak_"));
    assert_eq!(again.body["secret"], Value::Null, "a replay never shows the key again");
    assert_eq!(stack.operator.get("/v1/apps/count").await.expect(200).body["count"], 1);
}

/// The rule the append transaction enforces (V22), so that an app deleted while a key is
/// created for it never leaves that key live: tried here on the read models directly, as a
/// commit that raced would meet it.
#[tokio::test]
async fn no_commit_leaves_a_live_interaction_key_of_a_revoked_app() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let (org, admin) = organization(&operator, "acme").await;
    let field = workspace(&admin, "Field").await;
    let routed = register(&operator, "Ledger", "destination").await;
    let revoked = register(&operator, "Gone", "destination").await;
    interaction_key(&admin, &field, "Phone bank", id_of(&routed), None).await;
    operator.delete(&format!("/v1/apps/{}", id_of(&revoked))).await.expect(204);
    let client = db.connect().await;

    let app: uuid::Uuid = id_of(&routed).parse().unwrap();
    let error = client.execute("UPDATE apps SET revoked_at = now() WHERE id = $1", &[&app]).await.unwrap_err();
    assert_eq!(error.as_db_error().and_then(|e| e.constraint()), Some("apps_live"), "{error}");

    let (workspace_id, organization_id): (uuid::Uuid, uuid::Uuid) = (field.parse().unwrap(), org.parse().unwrap());
    let gone: uuid::Uuid = id_of(&revoked).parse().unwrap();
    let error = client
        .execute(
            "INSERT INTO interaction_keys (id, workspace_id, organization_id, name, destination, \
             destination_app_id, key_hash, partial_key_hint, created_at, updated_at) \
             VALUES (gen_random_uuid(), $1, $2, 'late', jsonb_build_object('type', 'app', 'app_id', $3::uuid), \
             $3, '\\x00', 'ik_...abcd', now(), now())",
            &[&workspace_id, &organization_id, &gone],
        )
        .await
        .unwrap_err();
    assert_eq!(error.as_db_error().and_then(|e| e.constraint()), Some("apps_live"), "{error}");
    // Deleting the app revokes its key in the same commit, which the rule accepts.
    operator.delete(&format!("/v1/apps/{app}")).await.expect(204);
}
