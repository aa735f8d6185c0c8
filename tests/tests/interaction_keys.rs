//! `/v1/workspaces/{id}/interaction-keys`: Interactions API keys routed to an external key of
//! their workspace or to a destination app, optionally withheld for a source app (which
//! claims the secret once), the emails their creation sends, the organization's quota, and
//! no secret anywhere but the one response meant to carry it.

use std::time::Duration;

use e2e::smtp::ReceivedMail;
use e2e::{Api, HubProcess, OPERATOR_KEY, Reply, SmtpServer, TestDatabase, wait_until};
use serde_json::{Value, json};
use uuid::Uuid;

/// These tests present foreign and restricted keys on purpose.
const NO_THROTTLE: (&str, &str) = ("HUB_AUTH_FAILURES_PER_MINUTE", "100000");

struct Stack {
    db: TestDatabase,
    smtp: SmtpServer,
    hub: HubProcess,
    operator: Api,
    org: String,
    admin: Api,
}

async fn stack() -> Stack {
    let db = TestDatabase::new().await;
    let smtp = SmtpServer::start().expect("start the SMTP server");
    let hub = HubProcess::spawn(
        &db.url,
        &["--single-node"],
        &[("SMTP_URL", &smtp.url()), ("HUB_PUBLIC_URL", "https://console.example.test"), NO_THROTTLE],
    )
    .await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let (org, admin) = organization(&operator, "acme").await;
    Stack { db, smtp, hub, operator, org, admin }
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

async fn external_key(api: &Api, workspace: &str) -> String {
    let reply = api
        .post(
            &format!("/v1/workspaces/{workspace}/external-keys"),
            json!({"provider": "van", "name": "VAN", "api_key": "van-credential-0001"}),
        )
        .await
        .expect(201);
    reply.body["id"].as_str().unwrap().to_owned()
}

/// Registers a partner app of `kind`; its id and an API client holding its app key.
async fn register(stack: &Stack, name: &str, kind: &str, contact: &str) -> (String, Api) {
    let reply = stack
        .operator
        .post("/v1/apps", json!({"name": name, "kind": kind, "contact_email": contact}))
        .await
        .expect(201);
    let id = reply.body["id"].as_str().unwrap().to_owned();
    (id, stack.operator.with_key(reply.body["secret"].as_str().unwrap()))
}

async fn app(stack: &Stack, name: &str, kind: &str, contact: &str) -> String {
    register(stack, name, kind, contact).await.0
}

fn keys(workspace: &str) -> String {
    format!("/v1/workspaces/{workspace}/interaction-keys")
}

#[track_caller]
fn refused(reply: Reply, status: u16, code: &str) {
    let reply = reply.expect(status);
    assert_eq!(reply.header("content-type"), Some("application/problem+json"), "{}", reply.text);
    assert_eq!(reply.body["code"], code, "{}", reply.text);
}

async fn count(api: &Api, workspace: &str, query: &str) -> i64 {
    api.get(&format!("{}/count{query}", keys(workspace))).await.expect(200).body["count"].as_i64().unwrap()
}

async fn mails_to(smtp: &SmtpServer, email: &str, n: usize) -> Vec<ReceivedMail> {
    wait_until(&format!("{n} email(s) to {email}"), Duration::from_secs(30), || {
        let mails: Vec<ReceivedMail> = smtp.received().into_iter().filter(|m| m.to == email).collect();
        async move { (mails.len() >= n).then_some(mails) }
    })
    .await
}

/// Makes `email` an owner of the workspace through an accepted invitation.
async fn owner(stack: &Stack, workspace: &str, email: &str) {
    stack
        .admin
        .post(&format!("/v1/workspaces/{workspace}/invitations"), json!({"email": email, "role": "owner"}))
        .await
        .expect(201);
    let mail = mails_to(&stack.smtp, email, 1).await.remove(0);
    let token = mail.link_token("https://console.example.test/invitations/accept").expect("an accept link");
    stack.admin.anonymous().post("/v1/invitations/accept", json!({"token": token})).await.expect(200);
}

/// The raw events of a stream, as the operator's feed shows them.
async fn events_text(operator: &Api) -> String {
    operator.get("/v1/events?after=0&limit=1000").await.expect(200).text
}

#[tokio::test]
async fn a_key_routed_to_an_external_key_shows_its_secret_once_then_lists_counts_and_revokes() {
    let stack = stack().await;
    let admin = &stack.admin;
    let ws = workspace(admin, "Campaign").await;
    let external = external_key(admin, &ws).await;

    let created = admin
        .post(
            &keys(&ws),
            json!({"name": " Canvassing ", "destination": {"type": "external_key", "external_key_id": external},
                   "expires_at": "2999-01-01T00:00:00Z"}),
        )
        .await
        .expect(201);
    assert_eq!(created.header("cache-control"), Some("no-store"));
    let key = created.body.clone();
    let id = key["id"].as_str().unwrap().to_owned();
    let secret = key["secret"].as_str().expect("the secret, this once").to_owned();
    assert!(secret.starts_with("ik_"), "{secret}");
    assert_eq!(key["name"], "Canvassing");
    assert_eq!(key["destination"], json!({"type": "external_key", "external_key_id": external}));
    assert_eq!(key["source_app_id"], Value::Null);
    assert_eq!(key["status"], "active");
    assert_eq!(key["expires_at"], "2999-01-01T00:00:00Z");
    assert!(secret.ends_with(&key["partial_key_hint"].as_str().unwrap()[6..]), "{}", key["partial_key_hint"]);
    assert!(key["created_at"].is_string());

    let listed = admin.get(&keys(&ws)).await.expect(200);
    assert_eq!(listed.body["items"][0]["id"], id.as_str());
    assert!(listed.body["items"][0].get("secret").is_none(), "{}", listed.text);
    assert!(!listed.text.contains(&secret));
    assert_eq!(count(admin, &ws, "").await, 1);
    assert_eq!(count(admin, &ws, "?status=active").await, 1);

    admin.delete(&format!("{}/{id}", keys(&ws))).await.expect(204);
    let listed = admin.get(&format!("{}?status=revoked", keys(&ws))).await.expect(200);
    assert_eq!(listed.body["items"][0]["status"], "revoked");
    assert_eq!(count(admin, &ws, "?status=active").await, 0);
    // A revoked key is gone: deleting it again finds nothing, like an unknown key.
    refused(admin.delete(&format!("{}/{id}", keys(&ws))).await, 404, "not_found");
    refused(admin.delete(&format!("{}/{}", keys(&ws), Uuid::now_v7())).await, 404, "not_found");

    let events = events_text(&stack.operator).await;
    assert!(events.contains("InteractionKeyCreated") && events.contains("InteractionKeyRevoked"));
    assert!(!events.contains(&secret), "no secret in the log");
    let audit = admin.get("/v1/audit-logs?page_size=100").await.expect(200).text;
    assert!(!audit.contains(&secret), "no secret in the audit log");
    assert!(!stack.hub.logs().contains(&secret), "no secret in the logs");
}

#[tokio::test]
async fn a_key_routed_to_a_destination_app_emails_the_app_contact_without_the_secret() {
    let stack = stack().await;
    let admin = &stack.admin;
    let ws = workspace(admin, "Outreach").await;
    let destination = app(&stack, "Mobilize", "destination", "partners@mobilize.test").await;

    let created = admin
        .post(&keys(&ws), json!({"name": "Phone bank", "destination": {"type": "app", "app_id": destination}}))
        .await
        .expect(201);
    let id = created.body["id"].as_str().unwrap();
    let secret = created.body["secret"].as_str().unwrap();
    assert_eq!(created.body["destination"], json!({"type": "app", "app_id": destination}));

    let mail = mails_to(&stack.smtp, "partners@mobilize.test", 1).await.remove(0);
    assert!(mail.subject.contains("Mobilize"), "{}", mail.subject);
    for fact in ["acme", "Outreach", "Phone bank", id] {
        assert!(mail.text.contains(fact), "the email names {fact}: {}", mail.text);
    }
    assert!(!mail.text.contains(secret), "no secret in the email");
    assert_eq!(stack.smtp.received().len(), 1, "only the destination's contact is told");
}

#[tokio::test]
async fn an_organization_can_make_the_platform_email_a_destination_contact_only_so_often() {
    let stack = stack().await;
    let contact = "partners@mobilize.test";
    let destination = app(&stack, "Mobilize", "destination", contact).await;
    let routed = |name: String| json!({"name": name, "destination": {"type": "app", "app_id": destination}});
    let ws = workspace(&stack.admin, "Outreach").await;
    let cap = 20;
    for n in 0..cap + 3 {
        stack.admin.post(&keys(&ws), routed(format!("Key {n}"))).await.expect(201);
    }
    let mails = mails_to(&stack.smtp, contact, cap).await;
    let keys_named: Vec<&str> =
        mails.iter().filter_map(|m| m.text.lines().find_map(|line| line.strip_prefix("Key: "))).collect();
    let last: Vec<&ReceivedMail> = mails.iter().filter(|m| m.text.contains("last email this hour")).collect();
    assert_eq!(last.len(), 1, "one email says it is the last: {keys_named:?}");
    assert!(last[0].text.contains(&format!("Key: Key {}\n", cap - 1)), "the last allowed: {}", last[0].text);
    // Every key was created, and the three past the cap queued no email at all.
    assert_eq!(count(&stack.admin, &ws, "").await, cap as i64 + 3);
    let client = stack.db.connect().await;
    let queued: i64 =
        client.query_one("SELECT count(*) FROM outbox WHERE recipient = $1", &[&contact]).await.unwrap().get(0);
    assert_eq!(queued, cap as i64);

    // The cap is the organization's own: another one still gets its notice through.
    let (_, other) = organization(&stack.operator, "globex").await;
    let other_ws = workspace(&other, "Field").await;
    other.post(&keys(&other_ws), routed("Phone bank".into())).await.expect(201);
    let mails = mails_to(&stack.smtp, contact, cap + 1).await;
    assert!(mails.iter().any(|m| m.text.contains("globex") && m.text.contains("Phone bank")));
}

#[tokio::test]
async fn a_key_for_a_source_app_withholds_its_secret_and_tells_each_owner_once() {
    let stack = stack().await;
    let admin = &stack.admin;
    let ws = workspace(admin, "Field").await;
    owner(&stack, &ws, "ada@acme.test").await;
    owner(&stack, &ws, "bob@acme.test").await;
    let external = external_key(admin, &ws).await;
    let source = app(&stack, "Canvass Pro", "source", "dev@canvass.test").await;

    let created = admin
        .post(
            &keys(&ws),
            json!({"name": "Door knocks", "source_app_id": source,
                   "destination": {"type": "external_key", "external_key_id": external}}),
        )
        .await
        .expect(201);
    assert_eq!(created.body["secret"], Value::Null, "{}", created.text);
    assert!(created.text.contains("\"secret\":null"), "secret is present, as null: {}", created.text);
    assert_eq!(created.body["source_app_id"], source.as_str());
    assert_eq!(created.body["secret_retrieved"], false);
    let id = created.body["id"].as_str().unwrap().to_owned();

    for owner in ["ada@acme.test", "bob@acme.test"] {
        let mails = mails_to(&stack.smtp, owner, 2).await;
        let notices: Vec<&ReceivedMail> = mails.iter().filter(|m| !m.subject.contains("invited")).collect();
        assert_eq!(notices.len(), 1, "one notice per owner: {mails:?}");
        let mail = notices[0];
        assert!(mail.subject.contains("Canvass Pro"), "{}", mail.subject);
        for fact in ["acme", "Field", "Door knocks", id.as_str()] {
            assert!(mail.text.contains(fact), "the email names {fact}: {}", mail.text);
        }
        assert!(!mail.text.contains("ik_"), "no key in the email: {}", mail.text);
    }
    // Two invitations and two notices; nothing for the source app's contact.
    wait_until("the notices are all sent", Duration::from_secs(30), || {
        let n = stack.smtp.received().len();
        async move { (n == 4).then_some(()) }
    })
    .await;
    assert!(stack.smtp.received().iter().all(|m| m.to != "dev@canvass.test"));

    // The event holds the secret sealed under a data key of its own, kept outside the log.
    let events = events_text(&stack.operator).await;
    let feed: Value = serde_json::from_str(&events).unwrap();
    let created_event = feed["items"]
        .as_array()
        .expect("a feed page")
        .iter()
        .find(|e| e["event_type"] == "InteractionKeyCreated")
        .expect("the key's event")
        .clone();
    let sealed = created_event["data"]["sealed_secret"].as_str().expect("a sealed secret");
    assert!(sealed.len() > 100 && sealed.chars().all(|c| c.is_ascii_hexdigit()), "{sealed}");
    let client = stack.db.connect().await;
    let row = client
        .query_one(
            "SELECT sealed_data_key IS NOT NULL AS held FROM withheld_secret_keys WHERE interaction_key_id = $1",
            &[&id.parse::<Uuid>().unwrap()],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>("held"));
}

#[tokio::test]
async fn bad_input_gets_a_problem_and_never_a_server_error() {
    let stack = stack().await;
    let admin = &stack.admin;
    let ws = workspace(admin, "Campaign").await;
    let external = external_key(admin, &ws).await;
    let source = app(&stack, "Canvass Pro", "source", "dev@canvass.test").await;
    let destination = app(&stack, "Mobilize", "destination", "partners@mobilize.test").await;
    let to_external = json!({"type": "external_key", "external_key_id": external});

    for body in [
        json!({}),
        json!({"name": "x"}),
        json!({"destination": to_external}),
        json!({"name": "x", "destination": {"type": "van", "external_key_id": external}}),
        json!({"name": "x", "destination": {"type": "app"}}),
        json!({"name": "x", "destination": {"type": "app", "app_id": "not-a-uuid"}}),
        json!({"name": "x", "destination": to_external, "extra": 1}),
        json!({"name": 5, "destination": to_external}),
        json!({"name": "x", "destination": to_external, "expires_at": "yesterday"}),
    ] {
        let reply = admin.post(&keys(&ws), body.clone()).await;
        assert!(matches!(reply.status.as_u16(), 400 | 422), "{body}: {} {}", reply.status, reply.text);
        assert_eq!(reply.header("content-type"), Some("application/problem+json"), "{body}");
    }
    let long = "x".repeat(101);
    refused(admin.post(&keys(&ws), json!({"name": long, "destination": to_external})).await, 422, "validation_failed");
    refused(admin.post(&keys(&ws), json!({"name": "  ", "destination": to_external})).await, 422, "validation_failed");
    refused(
        admin
            .post(&keys(&ws), json!({"name": "x", "destination": to_external, "expires_at": "2001-01-01T00:00:00Z"}))
            .await,
        422,
        "validation_failed",
    );
    // Apps of the wrong kind, or none.
    refused(
        admin.post(&keys(&ws), json!({"name": "x", "destination": {"type": "app", "app_id": source}})).await,
        422,
        "wrong_app_kind",
    );
    refused(
        admin.post(&keys(&ws), json!({"name": "x", "destination": to_external, "source_app_id": destination})).await,
        422,
        "wrong_app_kind",
    );
    refused(
        admin.post(&keys(&ws), json!({"name": "x", "destination": {"type": "app", "app_id": Uuid::now_v7()}})).await,
        422,
        "validation_failed",
    );
    refused(
        admin.post(&keys(&ws), json!({"name": "x", "destination": to_external, "source_app_id": Uuid::now_v7()})).await,
        422,
        "validation_failed",
    );
    refused(admin.get(&format!("{}?page_size=1000", keys(&ws))).await, 422, "validation_failed");
    let reply = admin.delete(&format!("{}/not-a-uuid", keys(&ws))).await;
    assert!(matches!(reply.status.as_u16(), 400 | 404 | 422), "{}", reply.text);
    assert_eq!(count(admin, &ws, "").await, 0, "nothing was created");
}

#[tokio::test]
async fn the_interaction_key_quota_counts_live_keys_and_refuses_one_more() {
    let stack = stack().await;
    let admin = &stack.admin;
    stack
        .operator
        .patch(&format!("/v1/organizations/{}", stack.org), json!({"quotas": {"interaction_keys": 2}}))
        .await
        .expect(200);
    let ws = workspace(admin, "Campaign").await;
    let other = workspace(admin, "Other").await;
    let external = external_key(admin, &ws).await;
    let other_external = external_key(admin, &other).await;
    let body =
        |external: &str| json!({"name": "k", "destination": {"type": "external_key", "external_key_id": external}});

    admin.post(&keys(&ws), body(&external)).await.expect(201);
    let second = admin.post(&keys(&other), body(&other_external)).await.expect(201);
    refused(admin.post(&keys(&ws), body(&external)).await, 409, "quota_exceeded");
    assert_eq!(count(admin, &ws, "").await, 1, "the refused key was not created");

    // A revoked key frees its slot, and so do the keys of a deleted workspace.
    let second = second.body["id"].as_str().unwrap();
    admin.delete(&format!("{}/{second}", keys(&other))).await.expect(204);
    admin.post(&keys(&other), body(&other_external)).await.expect(201);
    refused(admin.post(&keys(&ws), body(&external)).await, 409, "quota_exceeded");
    admin.delete(&format!("/v1/workspaces/{other}")).await.expect(204);
    admin.post(&keys(&ws), body(&external)).await.expect(201);
    refused(admin.post(&keys(&ws), body(&external)).await, 409, "quota_exceeded");
    // The deleted workspace's keys are gone with it.
    refused(admin.get(&keys(&other)).await, 404, "not_found");
}

#[tokio::test]
async fn keys_stay_within_their_organization_workspace_and_grant() {
    let stack = stack().await;
    let admin = &stack.admin;
    let ws = workspace(admin, "Campaign").await;
    let sibling = workspace(admin, "Sibling").await;
    let external = external_key(admin, &ws).await;
    let sibling_external = external_key(admin, &sibling).await;
    let to =
        |external: &str| json!({"name": "k", "destination": {"type": "external_key", "external_key_id": external}});
    let key = admin.post(&keys(&ws), to(&external)).await.expect(201).body["id"].as_str().unwrap().to_owned();

    // Another organization sees nothing of the workspace, and cannot route to its external key.
    let (_, stranger) = organization(&stack.operator, "globex").await;
    let foreign = workspace(&stranger, "Theirs").await;
    refused(stranger.get(&keys(&ws)).await, 404, "not_found");
    refused(stranger.get(&format!("{}/count", keys(&ws))).await, 404, "not_found");
    refused(stranger.post(&keys(&ws), to(&external)).await, 404, "not_found");
    refused(stranger.delete(&format!("{}/{key}", keys(&ws))).await, 404, "not_found");
    refused(stranger.post(&keys(&foreign), to(&external)).await, 422, "validation_failed");
    // Nor can a sibling workspace of the same organization.
    refused(admin.post(&keys(&ws), to(&sibling_external)).await, 422, "validation_failed");
    // A key is deleted through its own workspace only.
    refused(admin.delete(&format!("{}/{key}", keys(&sibling))).await, 404, "not_found");

    // A key restricted to the sibling workspace sees only it.
    let restricted = admin
        .post("/v1/api-keys", json!({"name": "sibling only", "scopes": ["*"], "workspace_ids": [sibling]}))
        .await
        .expect(201);
    let restricted = admin.with_key(restricted.body["secret"].as_str().unwrap());
    refused(restricted.get(&keys(&ws)).await, 404, "not_found");
    refused(restricted.post(&keys(&ws), to(&external)).await, 404, "not_found");
    refused(restricted.delete(&format!("{}/{key}", keys(&ws))).await, 404, "not_found");
    restricted.post(&keys(&sibling), to(&sibling_external)).await.expect(201);

    // Scopes: reading and writing are separate grants.
    let reader = admin.post("/v1/api-keys", json!({"name": "reader", "scopes": ["interaction_keys:read"]})).await;
    let reader = admin.with_key(reader.expect(201).body["secret"].as_str().unwrap());
    reader.get(&keys(&ws)).await.expect(200);
    reader.post(&keys(&ws), to(&external)).await.expect(403);
    reader.delete(&format!("{}/{key}", keys(&ws))).await.expect(403);
    let other = admin.post("/v1/api-keys", json!({"name": "other", "scopes": ["workspaces:read"]})).await;
    let other = admin.with_key(other.expect(201).body["secret"].as_str().unwrap());
    other.get(&keys(&ws)).await.expect(403);
    assert_eq!(count(admin, &ws, "").await, 1, "none of the refused creates happened");

    // An archived workspace gets no new key until restored.
    admin.post(&format!("/v1/workspaces/{ws}/archive"), json!({})).await.expect(200);
    refused(admin.post(&keys(&ws), to(&external)).await, 409, "workspace_archived");
}

#[tokio::test]
async fn a_replayed_create_gives_the_same_key_without_its_secret() {
    let stack = stack().await;
    let admin = &stack.admin;
    let ws = workspace(admin, "Campaign").await;
    let external = external_key(admin, &ws).await;
    let body = json!({"name": "k", "destination": {"type": "external_key", "external_key_id": external}});
    let first = admin.send(reqwest::Method::POST, &keys(&ws), Some(&body), &[("Idempotency-Key", "ik-1")]).await;
    let first = first.expect(201);
    assert!(first.body["secret"].as_str().is_some_and(|s| s.starts_with("ik_")));
    let again = admin.send(reqwest::Method::POST, &keys(&ws), Some(&body), &[("Idempotency-Key", "ik-1")]).await;
    let again = again.expect(201);
    assert_eq!(again.body["id"], first.body["id"]);
    assert_eq!(again.body["secret"], Value::Null);
    assert_eq!(count(admin, &ws, "").await, 1);
}

/// Whether the data key of key `id`'s withheld secret is still held (None: there is none).
async fn withheld_key_held(db: &TestDatabase, id: &str) -> Option<bool> {
    let client = db.connect().await;
    let row = client
        .query_opt(
            "SELECT sealed_data_key IS NOT NULL AND destroyed_at IS NULL AS held FROM withheld_secret_keys \
             WHERE interaction_key_id = $1",
            &[&id.parse::<Uuid>().unwrap()],
        )
        .await
        .unwrap();
    row.map(|row| row.get("held"))
}

#[tokio::test]
async fn revoking_a_withheld_key_or_deleting_its_workspace_destroys_the_data_key_of_its_secret() {
    let stack = stack().await;
    let admin = &stack.admin;
    let source = app(&stack, "Canvass Pro", "source", "dev@canvass.test").await;
    let destination = app(&stack, "Mobilize", "destination", "partners@mobilize.test").await;
    let body = json!({"name": "k", "source_app_id": source, "destination": {"type": "app", "app_id": destination}});
    let ws = workspace(admin, "Campaign").await;
    let revoked = admin.post(&keys(&ws), body.clone()).await.expect(201).body["id"].as_str().unwrap().to_owned();
    let kept = admin.post(&keys(&ws), body.clone()).await.expect(201).body["id"].as_str().unwrap().to_owned();
    let doomed = workspace(admin, "Doomed").await;
    let in_doomed = admin.post(&keys(&doomed), body).await.expect(201).body["id"].as_str().unwrap().to_owned();
    for id in [&revoked, &kept, &in_doomed] {
        assert_eq!(withheld_key_held(&stack.db, id).await, Some(true));
    }

    admin.delete(&format!("{}/{revoked}", keys(&ws))).await.expect(204);
    admin.delete(&format!("/v1/workspaces/{doomed}")).await.expect(204);
    assert_eq!(withheld_key_held(&stack.db, &revoked).await, Some(false), "revoked with its key");
    assert_eq!(withheld_key_held(&stack.db, &in_doomed).await, Some(false), "shredded with its workspace");
    assert_eq!(withheld_key_held(&stack.db, &kept).await, Some(true), "another key's is untouched");
}

fn claim(id: &str) -> String {
    format!("/v1/partner/interaction-keys/{id}/secret")
}

#[tokio::test]
async fn the_source_app_claims_the_secret_once_and_it_cannot_be_recovered_afterwards() {
    let stack = stack().await;
    let admin = &stack.admin;
    let ws = workspace(admin, "Field").await;
    let (source, source_api) = register(&stack, "Canvass Pro", "source", "dev@canvass.test").await;
    let (destination, destination_api) = register(&stack, "Mobilize", "destination", "partners@mobilize.test").await;
    let (_, other_source_api) = register(&stack, "Other", "source", "dev@other.test").await;
    let body = json!({"name": "Door knocks", "source_app_id": source,
                      "destination": {"type": "app", "app_id": destination}});
    let created = admin.post(&keys(&ws), body.clone()).await.expect(201).body;
    let id = created["id"].as_str().unwrap().to_owned();

    // Only the source app may take it: the destination is told no, any other app finds nothing.
    refused(destination_api.post(&claim(&id), json!({})).await, 403, "forbidden");
    refused(other_source_api.post(&claim(&id), json!({})).await, 404, "not_found");
    refused(source_api.post(&claim(&Uuid::now_v7().to_string()), json!({})).await, 404, "not_found");
    // The operator and admin keys are not apps.
    refused(admin.post(&claim(&id), json!({})).await, 403, "forbidden");
    refused(stack.operator.post(&claim(&id), json!({})).await, 403, "forbidden");

    let claimed = source_api.post(&claim(&id), json!({})).await.expect(200);
    assert_eq!(claimed.header("cache-control"), Some("no-store"));
    let secret = claimed.body["secret"].as_str().expect("the secret").to_owned();
    assert!(secret.starts_with("ik_"), "{secret}");
    let hint = created["partial_key_hint"].as_str().unwrap();
    assert!(secret.ends_with(&hint[hint.len() - 4..]), "the key of this hint: {hint}");
    refused(source_api.post(&claim(&id), json!({})).await, 410, "secret_already_retrieved");

    let listed = admin.get(&keys(&ws)).await.expect(200);
    assert_eq!(listed.body["items"][0]["secret_retrieved"], true);
    // The data key is gone: the sealed secret the log keeps can no longer be opened, by a
    // replay or anything else.
    assert_eq!(withheld_key_held(&stack.db, &id).await, Some(false));
    let events: Value = serde_json::from_str(&events_text(&stack.operator).await).unwrap();
    let events = events["items"].as_array().unwrap();
    let sealed = events.iter().find(|e| e["event_type"] == "InteractionKeyCreated").unwrap()["data"]["sealed_secret"]
        .as_str()
        .unwrap();
    assert!(!sealed.is_empty());
    let claimed_event = events.iter().find(|e| e["event_type"] == "InteractionKeySecretClaimed").unwrap();
    assert_eq!(claimed_event["data"]["app_id"], source.as_str());
    assert_eq!(claimed_event["data"]["ip"], "127.0.0.1");

    let everything = format!(
        "{}{}{}{}",
        serde_json::to_string(events).unwrap(),
        admin.get("/v1/audit-logs?page_size=100").await.expect(200).text,
        source_api.get("/v1/partner/interaction-keys").await.expect(200).text,
        stack.hub.logs()
    );
    assert!(!everything.contains(&secret), "the secret is nowhere but in the claim's response");

    // A revoked key's secret is gone too.
    let revoked = admin.post(&keys(&ws), body).await.expect(201).body["id"].as_str().unwrap().to_owned();
    admin.delete(&format!("{}/{revoked}", keys(&ws))).await.expect(204);
    let reply = source_api.post(&claim(&revoked), json!({})).await;
    assert_eq!(reply.status.as_u16(), 410, "{}", reply.text);

    // Replaying the whole log rebuilds the read models (and the quota's counter), never the
    // destroyed data key.
    let used = || async {
        let client = stack.db.connect().await;
        let row = client
            .query_one(
                "SELECT used_interaction_keys FROM organizations WHERE id = $1",
                &[&stack.org.parse::<Uuid>().unwrap()],
            )
            .await
            .unwrap();
        row.get::<_, i32>(0)
    };
    assert_eq!(used().await, 1, "the claimed key counts, the revoked one does not");
    let out = e2e::binaries::hub_command(&stack.db.url, &["projections", "rebuild"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(used().await, 1);
    assert_eq!(withheld_key_held(&stack.db, &id).await, Some(false), "a replay brings no data key back");
    refused(source_api.post(&claim(&id), json!({})).await, 410, "secret_already_retrieved");
}

#[tokio::test]
async fn concurrent_claims_of_one_secret_give_it_to_exactly_one_of_them() {
    let stack = stack().await;
    let admin = &stack.admin;
    let ws = workspace(admin, "Field").await;
    let (source, source_api) = register(&stack, "Canvass Pro", "source", "dev@canvass.test").await;
    let destination = external_key(admin, &ws).await;
    let body = json!({"name": "Door knocks", "source_app_id": source,
                      "destination": {"type": "external_key", "external_key_id": destination}});
    for round in 0..3 {
        let id = admin.post(&keys(&ws), body.clone()).await.expect(201).body["id"].as_str().unwrap().to_owned();
        let path = claim(&id);
        let replies = futures::future::join_all((0..12).map(|_| source_api.post(&path, json!({})))).await;
        let mut secrets = Vec::new();
        for reply in replies {
            match reply.status.as_u16() {
                200 => secrets.push(reply.body["secret"].as_str().expect("the secret").to_owned()),
                _ => refused(reply, 410, "secret_already_retrieved"),
            }
        }
        assert_eq!(secrets.len(), 1, "round {round}: one claim gets the secret, every other one 410");
        assert!(secrets[0].starts_with("ik_"));
        assert_eq!(withheld_key_held(&stack.db, &id).await, Some(false), "round {round}: its data key is destroyed");
    }
}

#[tokio::test]
async fn a_deleted_app_takes_its_keys_out_of_service_and_out_of_the_quota() {
    let stack = stack().await;
    let admin = &stack.admin;
    stack
        .operator
        .patch(&format!("/v1/organizations/{}", stack.org), json!({"quotas": {"interaction_keys": 1}}))
        .await
        .expect(200);
    let ws = workspace(admin, "Campaign").await;
    let destination = app(&stack, "Mobilize", "destination", "partners@mobilize.test").await;
    let to_app = |app: &str| json!({"name": "k", "destination": {"type": "app", "app_id": app}});
    admin.post(&keys(&ws), to_app(&destination)).await.expect(201);
    refused(admin.post(&keys(&ws), to_app(&destination)).await, 409, "quota_exceeded");

    stack.operator.delete(&format!("/v1/apps/{destination}")).await.expect(204);
    let listed = admin.get(&keys(&ws)).await.expect(200);
    assert_eq!(listed.body["items"][0]["status"], "revoked", "{}", listed.text);
    // A deleted app is no destination any more; another one now fits in the quota.
    refused(admin.post(&keys(&ws), to_app(&destination)).await, 422, "validation_failed");
    let other = app(&stack, "Other", "destination", "partners@other.test").await;
    admin.post(&keys(&ws), to_app(&other)).await.expect(201);
}

#[tokio::test]
async fn the_list_pages_by_cursor_and_filters_by_name_and_status() {
    let stack = stack().await;
    let admin = &stack.admin;
    let ws = workspace(admin, "Campaign").await;
    let external = external_key(admin, &ws).await;
    let mut ids = Vec::new();
    for name in ["Alpha", "Beta", "Gamma"] {
        let body = json!({"name": name, "destination": {"type": "external_key", "external_key_id": external}});
        ids.push(admin.post(&keys(&ws), body).await.expect(201).body["id"].as_str().unwrap().to_owned());
    }
    let first = admin.get(&format!("{}?page_size=2&sort_by=name&sort_order=asc", keys(&ws))).await.expect(200);
    let names: Vec<&str> =
        first.body["items"].as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Alpha", "Beta"]);
    let cursor = first.body["pagination"]["next_cursor"].as_str().expect("a cursor to the next page");
    let next =
        admin.get(&format!("{}?page_size=2&sort_by=name&sort_order=asc&cursor={cursor}", keys(&ws))).await.expect(200);
    assert_eq!(next.body["items"][0]["name"], "Gamma");
    assert!(next.body["pagination"].get("next_cursor").is_none_or(Value::is_null), "{}", next.text);

    admin.delete(&format!("{}/{}", keys(&ws), ids[1])).await.expect(204);
    let found = admin.get(&format!("{}?name=AMM", keys(&ws))).await.expect(200);
    assert_eq!(found.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(found.body["items"][0]["name"], "Gamma");
    assert_eq!(count(admin, &ws, "?status=revoked").await, 1);
    assert_eq!(count(admin, &ws, "?status=active").await, 2);
    assert_eq!(count(admin, &ws, "?status=expired").await, 0);
}
