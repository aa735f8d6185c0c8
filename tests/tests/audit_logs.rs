//! `/v1/audit-logs`: every event of the domain is audited with its actor, address and
//! request, never with a secret; filters, counts and visibility follow the list rules.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use e2e::{Api, HubProcess, OPERATOR_KEY, Reply, SmtpServer, TestDatabase, wait_until};
use hub::projections::audit_log::EVENT_TYPES;
use reqwest::Method;
use serde_json::{Value, json};

/// Request ids sent so far, across every caller.
static SENT: AtomicUsize = AtomicUsize::new(0);

/// Sends every request with a `Request-Id` of its own.
struct Caller {
    api: Api,
}

impl Caller {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let request_id = format!("audit-test-{}", SENT.fetch_add(1, Ordering::SeqCst));
        self.api.send(method, path, body.as_ref(), &[("request-id", &request_id)]).await
    }
}

/// Every entry the operator can read for `org`, oldest first, and the raw page bodies.
async fn whole_log(operator: &Api, org: &str) -> (Vec<Value>, String) {
    let mut entries = Vec::new();
    let mut texts = String::new();
    let mut path = format!("/v1/audit-logs?organization_id={org}&sort_order=asc&page_size=100");
    loop {
        let reply = operator.get(&path).await.expect(200);
        texts.push_str(&reply.text);
        entries.extend(reply.body["items"].as_array().unwrap().iter().cloned());
        match link(&reply.body, "next") {
            Some(next) => path = next.to_owned(),
            None => return (entries, texts),
        }
    }
}

fn link<'a>(page: &'a Value, rel: &str) -> Option<&'a str> {
    page["links"].as_array().unwrap().iter().find(|l| l["rel"] == rel).and_then(|l| l["href"].as_str())
}

fn id(reply: &Reply) -> String {
    reply.body["id"].as_str().unwrap_or_else(|| panic!("an id in {}", reply.text)).to_owned()
}

fn secret(reply: &Reply) -> String {
    reply.body["secret"].as_str().unwrap_or_else(|| panic!("a secret in {}", reply.text)).to_owned()
}

async fn token(smtp: &SmtpServer, email: &str, link: &str) -> String {
    let mail = wait_until(&format!("an email to {email}"), Duration::from_secs(30), || {
        let found = smtp.received().into_iter().find(|m| m.to == email);
        async move { found }
    })
    .await;
    mail.link_token(&format!("https://console.example.test/invitations/{link}")).expect("a link with a token")
}

#[tokio::test]
async fn every_event_type_is_audited_with_its_actor_address_and_request_and_without_any_secret() {
    let db = TestDatabase::new().await;
    let smtp = SmtpServer::start().expect("start the SMTP server");
    let hub = HubProcess::spawn(
        &db.url,
        &["--single-node"],
        &[("SMTP_URL", &smtp.url()), ("HUB_PUBLIC_URL", "https://console.example.test")],
    )
    .await;
    let operator_api = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let operator = Caller { api: operator_api.clone() };
    // Every secret a response or an email shows: none may appear in the audit log.
    let mut secrets: Vec<String> = Vec::new();

    let org = operator
        .call(Method::POST, "/v1/organizations", Some(json!({"name": "Acme", "email": "ops@acme.test", "plan": "pro"})))
        .await
        .expect(201);
    let org = id(&org);
    let org_path = format!("/v1/organizations/{org}");
    operator.call(Method::PATCH, &org_path, Some(json!({"name": "Acme Inc"}))).await.expect(200);
    operator.call(Method::PATCH, &org_path, Some(json!({"quotas": {"workspaces": 50}}))).await.expect(200);
    let admin = operator
        .call(Method::POST, "/v1/api-keys", Some(json!({"name": "admin", "scopes": ["*"], "organization_id": org})))
        .await
        .expect(201);
    let admin_id = id(&admin);
    secrets.push(secret(&admin));
    let admin = Caller { api: operator_api.with_key(&secret(&admin)) };
    admin.call(Method::PATCH, "/v1/settings", Some(json!({"rate_limit_per_minute": 400}))).await.expect(200);

    let workspace = |name: &'static str, parent: Option<String>| {
        let admin = &admin;
        async move {
            let reply =
                admin.call(Method::POST, "/v1/workspaces", Some(json!({"name": name, "parent_id": parent}))).await;
            reply.expect(201)
        }
    };
    let root = workspace("Root", None).await;
    let child = workspace("Child", Some(id(&root))).await;
    let other = workspace("Other", None).await;
    for reply in [&root, &child, &other] {
        secrets.push(secret(reply));
        secrets.extend(reply.body["webhook_secret"].as_str().map(str::to_owned));
    }
    let (root, child, other) = (id(&root), id(&child), id(&other));
    admin.call(Method::PATCH, &format!("/v1/workspaces/{child}"), Some(json!({"name": "Kid"}))).await.expect(200);
    admin.call(Method::PATCH, &format!("/v1/workspaces/{child}"), Some(json!({"parent_id": other}))).await.expect(200);
    admin.call(Method::POST, &format!("/v1/workspaces/{root}/archive"), Some(json!({}))).await.expect(200);
    admin.call(Method::POST, &format!("/v1/workspaces/{root}/restore"), Some(json!({}))).await.expect(200);
    let rotated =
        admin.call(Method::POST, &format!("/v1/workspaces/{root}/rotate-secret"), Some(json!({}))).await.expect(200);
    secrets.push(secret(&rotated));
    secrets.extend(rotated.body["webhook_secret"].as_str().map(str::to_owned));

    let key = admin
        .call(
            Method::POST,
            "/v1/api-keys",
            Some(json!({"name": "two trees", "scopes": ["keys:read"], "workspace_ids": [root, other]})),
        )
        .await
        .expect(201);
    let key_id = id(&key);
    secrets.push(secret(&key));
    admin.call(Method::PATCH, &format!("/v1/api-keys/{key_id}"), Some(json!({"name": "renamed"}))).await.expect(200);
    let rotated = admin
        .call(Method::POST, &format!("/v1/api-keys/{key_id}/rotate"), Some(json!({"grace_period_seconds": 60})))
        .await
        .expect(200);
    secrets.push(secret(&rotated));

    // The Interactions API: partner apps (of no organization), an external key, and
    // interaction keys: routed to it, and one provisioned to a source app that claims it.
    let app = |name: &'static str, kind: &'static str| {
        let operator = &operator;
        async move {
            let body = json!({"name": name, "kind": kind, "contact_email": format!("{kind}@partner.test")});
            operator.call(Method::POST, "/v1/apps", Some(body)).await.expect(201)
        }
    };
    let source = app("Source CRM", "source").await;
    let destination = app("Phone bank", "destination").await;
    secrets.extend([secret(&source), secret(&destination)]);
    let source_app = Caller { api: operator_api.with_key(&secret(&source)) };
    let (source, destination) = (id(&source), id(&destination));
    let van_credential = "van-credential-audit-0001".to_owned();
    let external = admin
        .call(
            Method::POST,
            &format!("/v1/workspaces/{root}/external-keys"),
            Some(json!({"provider": "van", "name": "VAN", "api_key": van_credential})),
        )
        .await
        .expect(201);
    secrets.push(van_credential);
    let external = id(&external);
    let interaction_keys = format!("/v1/workspaces/{root}/interaction-keys");
    let routed = admin
        .call(
            Method::POST,
            &interaction_keys,
            Some(json!({"name": "To VAN", "destination": {"type": "external_key", "external_key_id": external}})),
        )
        .await
        .expect(201);
    secrets.push(secret(&routed));
    let provisioned = admin
        .call(
            Method::POST,
            &interaction_keys,
            Some(json!({"name": "From the CRM", "destination": {"type": "app", "app_id": destination},
                "source_app_id": source})),
        )
        .await
        .expect(201);
    let claimed = source_app
        .call(Method::POST, &format!("/v1/partner/interaction-keys/{}/secret", id(&provisioned)), None)
        .await
        .expect(200);
    secrets.push(secret(&claimed));
    admin.call(Method::DELETE, &format!("{interaction_keys}/{}", id(&routed)), None).await.expect(204);
    admin.call(Method::DELETE, &format!("/v1/workspaces/{root}/external-keys/{external}"), None).await.expect(204);
    // Revokes the app's key and the interaction key routed to it.
    operator.call(Method::DELETE, &format!("/v1/apps/{destination}"), None).await.expect(204);
    assert_eq!(app_entries_shown(&admin).await, 0, "an organization's key sees no partner app's entries");

    // Invitations: one accepted (a new user and a member), one declined, one revoked.
    let invite = |email: &'static str| {
        let admin = &admin;
        let path = format!("/v1/workspaces/{root}/invitations");
        async move { admin.call(Method::POST, &path, Some(json!({"email": email, "role": "admin"}))).await.expect(201) }
    };
    invite("ada@acme.test").await;
    invite("bob@acme.test").await;
    let revoked = invite("cy@acme.test").await;
    let anonymous = Caller { api: operator_api.anonymous() };
    let ada_token = token(&smtp, "ada@acme.test", "accept").await;
    let bob_token = token(&smtp, "bob@acme.test", "decline").await;
    let cy_token = token(&smtp, "cy@acme.test", "accept").await;
    secrets.extend([ada_token.clone(), bob_token.clone(), cy_token]);
    let accepted = anonymous
        .call(Method::POST, "/v1/invitations/accept", Some(json!({"token": ada_token, "name": "Ada"})))
        .await
        .expect(200);
    let ada = accepted.body["user_id"].as_str().unwrap().to_owned();
    anonymous.call(Method::POST, "/v1/invitations/decline", Some(json!({"token": bob_token}))).await.expect(200);
    admin.call(Method::DELETE, &format!("/v1/invitations/{}", id(&revoked)), None).await.expect(204);

    let member = format!("/v1/workspaces/{root}/members/{ada}");
    admin.call(Method::PATCH, &member, Some(json!({"role": "viewer"}))).await.expect(204);
    let user = format!("/v1/users/{ada}");
    admin.call(Method::PATCH, &user, Some(json!({"name": "Ada L."}))).await.expect(200);
    admin.call(Method::PATCH, &user, Some(json!({"status": "disabled"}))).await.expect(200);
    admin.call(Method::PATCH, &user, Some(json!({"status": "active"}))).await.expect(200);
    admin.call(Method::DELETE, &member, None).await.expect(204);
    admin.call(Method::DELETE, &user, None).await.expect(204);

    // Deleting `Other` (with `Kid` below it) takes it out of the key restricted to two trees.
    admin.call(Method::DELETE, &format!("/v1/workspaces/{other}?cascade=true"), None).await.expect(204);
    admin.call(Method::DELETE, &format!("/v1/api-keys/{key_id}"), None).await.expect(204);
    operator.call(Method::DELETE, &org_path, None).await.expect(204);

    let (entries, mut texts) = whole_log(&operator_api, &org).await;
    let client = db.connect().await;
    let events: i64 =
        client.query_one("SELECT count(*) FROM events WHERE stream_id NOT LIKE 'app-%'", &[]).await.unwrap().get(0);
    assert_eq!(entries.len() as i64, events, "one entry per event of an organization (all of them this one's)");
    // A partner app belongs to no organization: its entries are the operator's alone.
    let app_entries = operator_api.get("/v1/audit-logs?event_type=AppRegistered&sort_order=asc").await.expect(200);
    let revoked_apps = operator_api.get("/v1/audit-logs?event_type=AppRevoked").await.expect(200);
    texts.push_str(&app_entries.text);
    texts.push_str(&revoked_apps.text);
    let app_entries: Vec<Value> =
        [app_entries, revoked_apps].iter().flat_map(|page| page.body["items"].as_array().unwrap().clone()).collect();
    assert_eq!(app_entries.len(), 3, "two registrations and a revocation: {app_entries:?}");
    for entry in &app_entries {
        assert!(entry["organization_id"].is_null(), "{entry}");
        assert_eq!(entry["actor"]["type"], "operator", "{entry}");
        assert_eq!(entry["resource"]["type"], "app", "{entry}");
    }
    assert_eq!(app_entries[0]["data"]["key_hash"], "[redacted]");
    let seen: BTreeSet<&str> = entries.iter().chain(&app_entries).map(|e| e["event_type"].as_str().unwrap()).collect();
    let all: BTreeSet<&str> = EVENT_TYPES.into_iter().collect();
    assert_eq!(seen, all, "every event type of the domain is audited");

    let mut by_type: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for entry in &entries {
        by_type.entry(entry["event_type"].as_str().unwrap()).or_default().push(entry);
        let text = entry.to_string();
        assert_eq!(entry["organization_id"], org.as_str(), "{text}");
        assert_eq!(entry["actor"]["ip"], "127.0.0.1", "{text}");
        let request_id = entry["request_id"].as_str().unwrap_or_else(|| panic!("a request id: {text}"));
        assert!(request_id.starts_with("audit-test-"), "{text}");
        let actor = entry["actor"]["type"].as_str().unwrap();
        assert!(["operator", "api_key", "user", "app"].contains(&actor), "{text}");
        if actor == "api_key" {
            assert_eq!(entry["actor"]["id"], admin_id.as_str(), "{text}");
        }
        for field in ["id", "position", "recorded_at", "resource", "data"] {
            assert!(!entry[field].is_null(), "{field} in {text}");
        }
    }
    // Who did what to which resource.
    let first = |t: &str| by_type[t][0];
    assert_eq!(first("OrganizationCreated")["actor"]["type"], "operator");
    assert_eq!(first("OrganizationCreated")["resource"], json!({"type": "organization", "id": org}));
    assert_eq!(first("ApiKeyRotated")["resource"], json!({"type": "api_key", "id": key_id}));
    assert_eq!(first("ApiKeyRotated")["data"]["key_hash"], "[redacted]");
    assert_eq!(first("InvitationAccepted")["actor"], json!({"type": "user", "id": ada, "ip": "127.0.0.1"}));
    assert_eq!(first("MemberRoleChanged")["resource"], json!({"type": "member", "id": ada}));
    assert_eq!(first("MemberRoleChanged")["workspace_id"], root.as_str());
    assert_eq!(first("MemberRoleChanged")["data"], json!({"user_id": ada, "role": "viewer"}));
    assert_eq!(first("UserRenamed")["resource"], json!({"type": "user", "id": ada}));
    assert!(first("UserRenamed")["workspace_id"].is_null());
    assert_eq!(first("WorkspaceUpdated")["data"], json!({"name": "Kid"}));
    assert_eq!(first("WorkspaceMoved")["workspace_id"], child.as_str());
    let deleted: BTreeSet<&str> =
        by_type["WorkspaceDeleted"].iter().map(|e| e["workspace_id"].as_str().unwrap()).collect();
    assert_eq!(deleted, BTreeSet::from([root.as_str(), child.as_str(), other.as_str()]), "the cascade, then the org");
    assert!(by_type["WorkspaceSecretIssued"].iter().all(|e| e["data"]["sealed_secret"] == "[redacted]"));
    assert!(by_type["InvitationCreated"].iter().all(|e| e["data"]["token_hash"] == "[redacted]"));

    assert_eq!(first("InteractionKeySecretClaimed")["actor"], json!({"type": "app", "id": source, "ip": "127.0.0.1"}));
    assert_eq!(
        first("InteractionKeySecretClaimed")["resource"],
        json!({"type": "interaction_key", "id": id(&provisioned)})
    );
    assert_eq!(first("ExternalKeyAdded")["data"]["sealed_api_key"], "[redacted]");
    assert_eq!(first("ExternalKeyAdded")["resource"], json!({"type": "external_key", "id": external}));
    let reasons: BTreeSet<&str> =
        by_type["InteractionKeyRevoked"].iter().map(|e| e["data"]["reason"].as_str().unwrap()).collect();
    assert!(reasons.is_superset(&BTreeSet::from(["deleted", "app_deleted"])), "{reasons:?}");

    // No secret, and no hash or sealed form of one, anywhere in the audit log's bodies.
    for field in ["key_hash", "token_hash", "sealed_secret", "sealed_api_key"] {
        // (A key with no source app has a null `sealed_secret`: nothing withheld.)
        let sql = format!("SELECT data->>'{field}' FROM events WHERE data->>'{field}' IS NOT NULL");
        let rows = client.query(&sql, &[]).await.unwrap();
        assert!(!rows.is_empty(), "the walk recorded a {field}");
        secrets.extend(rows.iter().map(|r| r.get::<_, String>(0)));
    }
    for secret in &secrets {
        assert!(!texts.contains(secret.as_str()), "a secret reached the audit log: {secret}");
    }

    // A rebuild from the log gives the same audit log.
    let out = e2e::binaries::hub_command(&db.url, &["projections", "rebuild"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(whole_log(&operator_api, &org).await.0, entries, "a rebuild reproduces the audit log");
}

/// How many partner app entries `caller` is shown.
async fn app_entries_shown(caller: &Caller) -> usize {
    let mut shown = 0;
    for event_type in ["AppRegistered", "AppRevoked"] {
        let page = caller.call(Method::GET, &format!("/v1/audit-logs?event_type={event_type}"), None).await.expect(200);
        shown += page.body["items"].as_array().unwrap().len();
    }
    shown
}

struct Org {
    id: String,
    admin: Api,
    admin_key_id: String,
}

async fn organization(operator: &Api, name: &str) -> Org {
    let org = operator
        .post("/v1/organizations", json!({"name": name, "email": format!("ops@{name}.test"), "plan": "pro"}))
        .await
        .expect(201);
    let org_id = id(&org);
    let key = operator
        .post("/v1/api-keys", json!({"name": "admin", "scopes": ["*"], "organization_id": org_id}))
        .await
        .expect(201);
    Org { id: org_id, admin: operator.with_key(&secret(&key)), admin_key_id: id(&key) }
}

async fn workspace(api: &Api, name: &str, parent: Option<&str>) -> String {
    id(&api.post("/v1/workspaces", json!({"name": name, "parent_id": parent})).await.expect(201))
}

/// The items of a list and its count, which must agree.
async fn listed(api: &Api, query: &str) -> Vec<Value> {
    let page = api.get(&format!("/v1/audit-logs?page_size=100&{query}")).await.expect(200).body;
    assert!(link(&page, "next").is_none(), "a test page holds every entry");
    let items = page["items"].as_array().unwrap().clone();
    let count = api.get(&format!("/v1/audit-logs/count?{query}")).await.expect(200).body["count"].clone();
    assert_eq!(count, items.len(), "count and list agree for `{query}`");
    items
}

#[tokio::test]
async fn each_filter_narrows_the_list_and_its_count_and_no_principal_sees_beyond_its_own() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let a = organization(&operator, "alpha").await;
    let b = organization(&operator, "beta").await;
    let root = workspace(&a.admin, "Root", None).await;
    let team = workspace(&a.admin, "Team", Some(&root)).await;
    let leaf = workspace(&a.admin, "Leaf", Some(&team)).await;
    let other = workspace(&a.admin, "Other", None).await;
    a.admin.patch(&format!("/v1/workspaces/{leaf}"), json!({"name": "Leaf 2"})).await.expect(200);
    a.admin.patch("/v1/settings", json!({"rate_limit_per_minute": 400})).await.expect(200);
    workspace(&b.admin, "Beta root", None).await;
    let auditor = a
        .admin
        .post("/v1/api-keys", json!({"name": "auditor", "scopes": ["audit:read"], "workspace_ids": [team]}))
        .await
        .expect(201);
    let auditor_id = id(&auditor);
    let auditor = a.admin.with_key(&secret(&auditor));
    let blind = a.admin.post("/v1/api-keys", json!({"name": "blind", "scopes": ["keys:read"]})).await.expect(201);
    let blind = a.admin.with_key(&secret(&blind));
    // A change by another key, restricted to Team.
    let writer = a
        .admin
        .post("/v1/api-keys", json!({"name": "team writer", "scopes": ["workspaces:write"], "workspace_ids": [team]}))
        .await
        .expect(201);
    let team_writer = a.admin.with_key(&secret(&writer));
    team_writer.patch(&format!("/v1/workspaces/{team}"), json!({"name": "Team 2"})).await.expect(200);

    // Each organization's admin sees its own entries only, newest first.
    let everything = listed(&a.admin, "").await;
    assert!(everything.iter().all(|e| e["organization_id"] == a.id.as_str()));
    let positions: Vec<i64> = everything.iter().map(|e| e["position"].as_i64().unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] > w[1]), "newest first: {positions:?}");
    let ascending = listed(&a.admin, "sort_order=asc&sort_by=position").await;
    assert_eq!(ascending.iter().rev().cloned().collect::<Vec<_>>(), everything);
    let betas = listed(&b.admin, "").await;
    assert!(!betas.is_empty() && betas.iter().all(|e| e["organization_id"] == b.id.as_str()));
    let their_ids: BTreeSet<&str> = betas.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert!(everything.iter().all(|e| !their_ids.contains(e["id"].as_str().unwrap())));
    // Naming another organization shows a key nothing; the operator sees either.
    assert!(listed(&a.admin, &format!("organization_id={}", b.id)).await.is_empty());
    assert_eq!(listed(&operator, &format!("organization_id={}", a.id)).await, everything);
    assert_eq!(listed(&operator, &format!("organization_id={}", b.id)).await, betas);
    let operator_all = operator.get("/v1/audit-logs/count").await.expect(200).body["count"].as_u64().unwrap();
    assert_eq!(operator_all as usize, everything.len() + betas.len());

    // workspace_id: that workspace's entries only.
    let of_team = listed(&a.admin, &format!("workspace_id={team}")).await;
    assert_eq!(of_team.len(), 3, "created, its secret issued, renamed");
    assert!(of_team.iter().all(|e| e["workspace_id"] == team.as_str()));
    // actor_id: what one key did.
    let writer_id = id(&writer);
    let by_writer = listed(&a.admin, &format!("actor_id={writer_id}")).await;
    assert_eq!(by_writer.len(), 1);
    assert_eq!(by_writer[0]["event_type"], "WorkspaceUpdated");
    let by_admin = listed(&a.admin, &format!("actor_id={}", a.admin_key_id)).await;
    assert!(by_admin.len() > 5 && by_admin.iter().all(|e| e["actor"]["id"] == a.admin_key_id.as_str()));
    // event_type.
    let created = listed(&a.admin, "event_type=WorkspaceCreated").await;
    assert_eq!(created.len(), 4);
    assert!(created.iter().all(|e| e["event_type"] == "WorkspaceCreated"));
    // from and to split the list at any instant, `from` inclusive and `to` exclusive.
    let at = |e: &Value| e["recorded_at"].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap();
    let middle = at(&everything[everything.len() / 2]);
    let instant = middle.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let after = listed(&a.admin, &format!("from={instant}")).await;
    let before = listed(&a.admin, &format!("to={instant}")).await;
    assert_eq!(after.len() + before.len(), everything.len());
    assert!(!after.is_empty() && after.iter().all(|e| at(e) >= middle));
    assert!(!before.is_empty() && before.iter().all(|e| at(e) < middle));
    assert!(listed(&a.admin, &format!("from={instant}&to={instant}")).await.is_empty());
    // Filters combine.
    let combined = listed(&a.admin, &format!("event_type=WorkspaceUpdated&workspace_id={leaf}")).await;
    assert_eq!(combined.len(), 1);
    assert_eq!(combined[0]["data"], json!({"name": "Leaf 2"}));

    // A key restricted to Team sees the entries of Team and Leaf, nothing organization-wide.
    let visible = listed(&auditor, "").await;
    let workspaces: BTreeSet<&str> = visible.iter().map(|e| e["workspace_id"].as_str().unwrap()).collect();
    assert_eq!(workspaces, BTreeSet::from([team.as_str(), leaf.as_str()]));
    assert_eq!(visible.len(), 3 + 3);
    assert!(listed(&auditor, &format!("workspace_id={root}")).await.is_empty());
    assert!(listed(&auditor, &format!("workspace_id={other}")).await.is_empty());
    assert!(listed(&auditor, "event_type=OrganizationSettingsChanged").await.is_empty());
    assert!(listed(&auditor, &format!("actor_id={auditor_id}")).await.is_empty(), "it did nothing");
    let admins_in_team = listed(&auditor, &format!("actor_id={}", a.admin_key_id)).await;
    assert_eq!(admins_in_team.len(), 5, "Team and Leaf created (each with its secret), Leaf renamed");
    // A key without `audit:read` is refused both.
    assert_eq!(blind.get("/v1/audit-logs").await.expect(403).header("content-type"), Some("application/problem+json"));
    blind.get("/v1/audit-logs/count").await.expect(403);
    a.admin.anonymous().get("/v1/audit-logs").await.expect(401);

    // Pages link forward and back, keeping the filters.
    let page = a.admin.get("/v1/audit-logs?event_type=WorkspaceCreated&page_size=2").await.expect(200).body;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let next = link(&page, "next").expect("a next page");
    assert!(next.contains("event_type=WorkspaceCreated"), "{next}");
    let second = a.admin.get(next).await.expect(200).body;
    assert_eq!(second["items"].as_array().unwrap().len(), 2);
    assert!(link(&second, "next").is_none() && link(&second, "previous").is_some());
}

#[tokio::test]
async fn bad_filters_are_422_problems_on_the_list_and_the_count() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let a = organization(&operator, "alpha").await;
    let cases = [
        ("workspace_id=not-a-uuid", "workspace_id"),
        ("actor_id=42", "actor_id"),
        ("organization_id=x", "organization_id"),
        ("event_type=WorkspaceExploded", "event_type"),
        ("event_type=", "event_type"),
        ("from=yesterday", "from"),
        ("to=2026-13-01T00:00:00Z", "to"),
        ("from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
        ("page_size=101", "page_size"),
        ("page=0", "page"),
        ("sort_by=recorded_at", "sort_by"),
        ("sort_order=sideways", "sort_order"),
        ("colour=blue", ""),
    ];
    for (query, name) in cases {
        for path in ["/v1/audit-logs", "/v1/audit-logs/count"] {
            for api in [&operator, &a.admin] {
                let reply = api.get(&format!("{path}?{query}")).await;
                assert_eq!(reply.status, 422, "{path}?{query}: {}", reply.text);
                assert_eq!(reply.header("content-type"), Some("application/problem+json"), "{path}?{query}");
                if !name.is_empty() {
                    assert_eq!(reply.body["errors"][0]["name"], name, "{path}?{query}: {}", reply.text);
                }
            }
        }
    }
    // Well-formed edges are fine.
    a.admin.get("/v1/audit-logs?from=2026-01-01T00:00:00Z&to=2026-01-01T00:00:00Z").await.expect(200);
    a.admin.get("/v1/audit-logs/count?page_size=100&sort_by=position&sort_order=desc").await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_some_refused_leave_exactly_one_entry_per_event_written() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let a = organization(&operator, "alpha").await;
    // Batches merging many commits, some refused by the database (a sibling name taken):
    // a refused commit leaves no entry, its batch-mates leave theirs.
    let creates = (0..40).map(|i| {
        let admin = a.admin.clone();
        let name = if i % 2 == 0 { "Same".to_owned() } else { format!("Distinct {i}") };
        async move { admin.post("/v1/workspaces", json!({"name": name})).await.status.as_u16() }
    });
    let statuses = futures::future::join_all(creates).await;
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 21, "{statuses:?}");
    assert!(statuses.iter().all(|s| [201, 409].contains(s)), "{statuses:?}");

    let client = db.connect().await;
    let missing: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT position, event_id, event_type FROM events \
             EXCEPT SELECT position, id, event_type FROM audit_log) AS m",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let extra: i64 = client
        .query_one(
            "SELECT count(*) FROM audit_log a WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.position = a.position)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!((missing, extra), (0, 0), "the audit log has exactly the log's events");
    assert_eq!(listed(&a.admin, "event_type=WorkspaceCreated").await.len(), 21);
}
