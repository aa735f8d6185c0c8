//! Operator-set limits of an organization: the rate-limit ceiling its settings may not
//! exceed, and quotas on what it may create. Real hub, real PostgreSQL.

use e2e::{Api, HubProcess, OPERATOR_KEY, TestDatabase};
use reqwest::Method;
use serde_json::{Value, json};

struct Tenant {
    hub: HubProcess,
    db: TestDatabase,
    operator: Api,
    admin: Api,
    org: String,
}

/// A hub, an organization created with `limits` merged into its body, and a `*` key of it.
async fn tenant(limits: Value) -> Tenant {
    tenant_with(&[], limits).await
}

async fn tenant_with(env: &[(&str, &str)], limits: Value) -> Tenant {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], env).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let mut body = json!({"name": "Acme", "email": "ops@acme.test", "plan": "pro"});
    body.as_object_mut().unwrap().extend(limits.as_object().unwrap().clone());
    let org = operator.post("/v1/organizations", body).await.expect(201).body["id"].as_str().unwrap().to_owned();
    let admin = new_key(&operator, &org).await;
    Tenant { hub, db, operator, admin, org }
}

async fn new_key(operator: &Api, org: &str) -> Api {
    let key = operator.post("/v1/api-keys", json!({"name": "admin", "scopes": ["*"], "organization_id": org})).await;
    operator.with_key(key.expect(201).body["secret"].as_str().unwrap())
}

fn id(reply: &e2e::Reply) -> String {
    reply.body["id"].as_str().unwrap().to_owned()
}

#[track_caller]
fn assert_quota_exceeded(reply: &e2e::Reply) {
    assert_eq!(reply.status, 409, "{}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/problem+json"));
    assert_eq!(reply.body["code"], "quota_exceeded", "{}", reply.text);
}

#[tokio::test]
async fn a_tenant_cannot_set_its_rate_limit_above_the_ceiling_the_operator_set() {
    let t = tenant(json!({"rate_limit_ceiling_per_minute": 1000})).await;
    let refused = t.admin.patch("/v1/settings", json!({"rate_limit_per_minute": 1_000_000})).await.expect(422);
    assert_eq!(refused.header("content-type"), Some("application/problem+json"));
    assert_eq!(refused.body["errors"][0]["name"], "rate_limit_per_minute", "{}", refused.text);
    t.admin.patch("/v1/settings", json!({"rate_limit_per_minute": 1001})).await.expect(422);
    let set = t.admin.patch("/v1/settings", json!({"rate_limit_per_minute": 1000})).await.expect(200);
    assert_eq!(set.body["rate_limit_per_minute"], 1000);
    assert_eq!(set.body["rate_limit_ceiling_per_minute"], 1000);
    // The operator is held to the ceiling too: it raises the ceiling, not the setting.
    let path = format!("/v1/settings?organization_id={}", t.org);
    t.operator.patch(&path, json!({"rate_limit_per_minute": 2000})).await.expect(422);
}

#[tokio::test]
async fn without_a_ceiling_set_the_servers_default_rate_limit_is_the_ceiling() {
    let t = tenant(json!({})).await;
    t.admin.patch("/v1/settings", json!({"rate_limit_per_minute": 1_000_000})).await.expect(422);
    let org = t.operator.get(&format!("/v1/organizations/{}", t.org)).await.expect(200);
    assert_eq!(org.body["rate_limit_ceiling_per_minute"], 500, "the default of HUB_RATE_LIMIT_PER_MINUTE");
    t.admin.patch("/v1/settings", json!({"rate_limit_per_minute": 501})).await.expect(422);
    t.admin.patch("/v1/settings", json!({"rate_limit_per_minute": 100})).await.expect(200);
}

#[tokio::test]
async fn the_operator_sets_and_reads_the_ceiling_and_quotas_and_a_partial_object_changes_only_its_fields() {
    let t = tenant(json!({"rate_limit_ceiling_per_minute": 2000, "quotas": {"workspaces": 50}})).await;
    let path = format!("/v1/organizations/{}", t.org);
    let org = t.operator.get(&path).await.expect(200).body;
    assert_eq!(org["rate_limit_ceiling_per_minute"], 2000);
    assert_eq!(
        org["quotas"],
        json!({"workspaces": 50, "api_keys": 1000, "interaction_keys": 100_000, "pending_invitations": 1000})
    );
    let patched = t
        .operator
        .send(Method::PATCH, &path, Some(&json!({"quotas": {"api_keys": 7}})), &[("if-match", "\"2\"")])
        .await
        .expect(200);
    assert_eq!(
        patched.body["quotas"],
        json!({"workspaces": 50, "api_keys": 7, "interaction_keys": 100_000, "pending_invitations": 1000})
    );
    assert_eq!(patched.body["rate_limit_ceiling_per_minute"], 2000);
    assert_eq!(patched.header("etag"), Some("\"3\""));
    let patched = t.operator.patch(&path, json!({"rate_limit_ceiling_per_minute": 10, "name": "Acme 2"})).await;
    let patched = patched.expect(200).body;
    assert_eq!(
        (patched["rate_limit_ceiling_per_minute"].clone(), patched["name"].clone()),
        (json!(10), json!("Acme 2"))
    );
    assert_eq!(patched["quotas"]["api_keys"], 7);
    // The organization's own key reads them in its organization's body.
    let seen = t.admin.get(&path).await.expect(200).body;
    assert_eq!(seen["quotas"]["workspaces"], 50);
    assert_eq!(seen["rate_limit_ceiling_per_minute"], 10);
    let listed = t.operator.get("/v1/organizations").await.expect(200).body;
    assert_eq!(listed["items"][0]["quotas"]["api_keys"], 7);
    // The changes are events of the organization's stream.
    let feed = t.operator.get(&format!("/v1/events?stream_id=org-{}", t.org)).await.expect(200).body;
    let types: Vec<&str> =
        feed["items"].as_array().unwrap().iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "OrganizationCreated",
            "OrganizationLimitsChanged",
            "OrganizationLimitsChanged",
            "OrganizationUpdated",
            "OrganizationLimitsChanged"
        ]
    );
}

#[tokio::test]
async fn ceilings_and_quotas_out_of_range_are_refused_with_422() {
    let t = tenant(json!({})).await;
    let path = format!("/v1/organizations/{}", t.org);
    let bad = [
        json!({"rate_limit_ceiling_per_minute": 0}),
        json!({"rate_limit_ceiling_per_minute": 1_000_001}),
        json!({"rate_limit_ceiling_per_minute": -5}),
        json!({"quotas": {"workspaces": 0}}),
        json!({"quotas": {"api_keys": 1_000_000_000}}),
        json!({"quotas": {"pending_invitations": "many"}}),
        json!({"quotas": {"elephants": 3}}),
    ];
    for body in bad {
        let reply = t.operator.patch(&path, body.clone()).await;
        assert_eq!(reply.status, 422, "{body}: {}", reply.text);
        assert_eq!(reply.header("content-type"), Some("application/problem+json"));
        let mut create = json!({"name": "B", "email": "b@b.test", "plan": "pro"});
        create.as_object_mut().unwrap().extend(body.as_object().unwrap().clone());
        let reply = t.operator.post("/v1/organizations", create).await;
        assert_eq!(reply.status, 422, "{body}: {}", reply.text);
    }
    let org = t.operator.get(&path).await.expect(200).body;
    assert_eq!(org["version"], 1, "nothing was recorded");
}

#[tokio::test]
async fn a_key_cannot_set_the_ceiling_or_the_quotas() {
    let t = tenant(json!({})).await;
    let path = format!("/v1/organizations/{}", t.org);
    for body in [
        json!({"rate_limit_ceiling_per_minute": 100_000}),
        json!({"quotas": {"workspaces": 20_000}}),
        json!({"name": "Renamed", "quotas": {}}),
    ] {
        let reply = t.admin.patch(&path, body.clone()).await;
        assert_eq!(reply.status, 403, "{body}: {}", reply.text);
    }
    let org = t.admin.get(&path).await.expect(200).body;
    assert_eq!((org["version"].clone(), org["quotas"]["workspaces"].clone()), (json!(1), json!(10_000)));
    // Its own name it may still change.
    t.admin.patch(&path, json!({"name": "Renamed"})).await.expect(200);
}

#[tokio::test]
async fn lowering_the_ceiling_below_an_existing_setting_lowers_the_limit_in_force() {
    let t = tenant(json!({"rate_limit_ceiling_per_minute": 1000})).await;
    t.admin.patch("/v1/settings", json!({"rate_limit_per_minute": 800})).await.expect(200);
    t.operator
        .patch(&format!("/v1/organizations/{}", t.org), json!({"rate_limit_ceiling_per_minute": 3}))
        .await
        .expect(200);
    let settings = t.admin.get("/v1/settings").await.expect(200).body;
    assert_eq!(settings["rate_limit_per_minute"], 800, "the setting is kept");
    assert_eq!(settings["effective_rate_limit_per_minute"], 3);
    // A fresh key, so nothing it did before counts: the fourth request in a minute is
    // refused (seven requests cannot span more than two windows of a minute).
    let key = new_key(&t.operator, &t.org).await;
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(key.get("/v1/settings").await.status.as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
}

#[tokio::test]
async fn the_workspace_past_the_quota_is_refused_archived_ones_count_and_deleting_frees_a_slot() {
    let t = tenant(json!({"quotas": {"workspaces": 3}})).await;
    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        ids.push(id(&t.admin.post("/v1/workspaces", json!({"name": name})).await.expect(201)));
    }
    assert_quota_exceeded(&t.admin.post("/v1/workspaces", json!({"name": "d"})).await);
    assert_quota_exceeded(&t.admin.post("/v1/workspaces", json!({"name": "d", "parent_id": ids[0]})).await);
    t.admin.post(&format!("/v1/workspaces/{}/archive", ids[1]), json!({})).await.expect(200);
    assert_quota_exceeded(&t.admin.post("/v1/workspaces", json!({"name": "d"})).await);
    // The operator is held to the organization's quota as well.
    let by_operator = t.operator.post("/v1/workspaces", json!({"name": "d", "organization_id": t.org})).await;
    assert_quota_exceeded(&by_operator);
    t.admin.delete(&format!("/v1/workspaces/{}", ids[2])).await.expect(204);
    t.admin.post("/v1/workspaces", json!({"name": "d"})).await.expect(201);
    assert_quota_exceeded(&t.admin.post("/v1/workspaces", json!({"name": "e"})).await);
    // Lowering the quota below the usage is allowed; it blocks new creates only.
    t.operator.patch(&format!("/v1/organizations/{}", t.org), json!({"quotas": {"workspaces": 1}})).await.expect(200);
    t.admin.patch(&format!("/v1/workspaces/{}", ids[0]), json!({"name": "a2"})).await.expect(200);
    t.admin.delete(&format!("/v1/workspaces/{}", ids[0])).await.expect(204);
    assert_quota_exceeded(&t.admin.post("/v1/workspaces", json!({"name": "f"})).await);
}

#[tokio::test]
async fn the_api_key_past_the_quota_is_refused_and_revoking_one_frees_a_slot() {
    // The tenant's own admin key is the first of three.
    let t = tenant(json!({"quotas": {"api_keys": 3}})).await;
    let create = |name: &str| t.admin.post("/v1/api-keys", json!({"name": name, "scopes": ["keys:read"]}));
    let second = id(&create("second").await.expect(201));
    create("third").await.expect(201);
    assert_quota_exceeded(&create("fourth").await);
    let by_operator =
        t.operator.post("/v1/api-keys", json!({"name": "op", "scopes": ["keys:read"], "organization_id": t.org})).await;
    assert_quota_exceeded(&by_operator);
    t.admin.delete(&format!("/v1/api-keys/{second}")).await.expect(204);
    create("fourth").await.expect(201);
    assert_quota_exceeded(&create("fifth").await);
}

#[tokio::test]
async fn an_expired_api_key_counts_against_the_quota_until_it_is_revoked() {
    let t = tenant(json!({"quotas": {"api_keys": 2}})).await;
    // Two keys: the quota is full.
    let short = t
        .admin
        .post("/v1/api-keys", json!({"name": "short", "scopes": ["keys:read"], "expires_at": expiring_soon()}))
        .await
        .expect(201);
    assert_quota_exceeded(&t.admin.post("/v1/api-keys", json!({"name": "x", "scopes": ["keys:read"]})).await);
    e2e::wait_until("the short-lived key to expire", std::time::Duration::from_secs(10), || {
        let admin = t.admin.clone();
        let path = format!("/v1/api-keys/{}", id(&short));
        async move { (admin.get(&path).await.body["status"] == "expired").then_some(()) }
    })
    .await;
    // Expired keys still exist: short-lived keys do not get around the quota.
    assert_quota_exceeded(&t.admin.post("/v1/api-keys", json!({"name": "x", "scopes": ["keys:read"]})).await);
    t.admin.delete(&format!("/v1/api-keys/{}", id(&short))).await.expect(204);
    t.admin.post("/v1/api-keys", json!({"name": "x", "scopes": ["keys:read"]})).await.expect(201);
}

#[tokio::test]
async fn the_keys_of_a_deleted_user_leave_the_api_key_quota() {
    let smtp = e2e::SmtpServer::start().expect("start the SMTP server");
    let env = [("SMTP_URL", smtp.url()), ("HUB_PUBLIC_URL", "https://console.example.test".to_owned())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let t = tenant_with(&env, json!({"quotas": {"api_keys": 2}})).await;
    let ws = id(&t.admin.post("/v1/workspaces", json!({"name": "a"})).await.expect(201));
    let invitation = json!({"email": "ada@acme.test", "role": "admin"});
    t.admin.post(&format!("/v1/workspaces/{ws}/invitations"), invitation).await.expect(201);
    let accept = token(&smtp, "ada@acme.test", "accept").await;
    let accepted = t.admin.anonymous().post("/v1/invitations/accept", json!({"token": accept})).await.expect(200);
    let user = accepted.body["user_id"].as_str().unwrap().to_owned();
    let owned = json!({"name": "ada's", "scopes": ["keys:read"], "owner_user_id": user});
    t.admin.post("/v1/api-keys", owned).await.expect(201);
    assert_quota_exceeded(&t.admin.post("/v1/api-keys", json!({"name": "x", "scopes": ["keys:read"]})).await);
    t.operator.delete(&format!("/v1/users/{user}")).await.expect(204);
    t.admin.post("/v1/api-keys", json!({"name": "x", "scopes": ["keys:read"]})).await.expect(201);
    assert_quota_exceeded(&t.admin.post("/v1/api-keys", json!({"name": "y", "scopes": ["keys:read"]})).await);
}

fn expiring_soon() -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[tokio::test]
async fn the_invitation_past_the_pending_quota_is_refused_and_revoking_one_frees_a_slot() {
    let t = tenant(json!({"quotas": {"pending_invitations": 2}})).await;
    let a = id(&t.admin.post("/v1/workspaces", json!({"name": "a"})).await.expect(201));
    let b = id(&t.admin.post("/v1/workspaces", json!({"name": "b"})).await.expect(201));
    let invite = |workspace: &str, email: &str| {
        let (admin, path) = (t.admin.clone(), format!("/v1/workspaces/{workspace}/invitations"));
        let body = json!({"email": email, "role": "member"});
        async move { admin.post(&path, body).await }
    };
    let first = id(&invite(&a, "one@acme.test").await.expect(201));
    invite(&b, "two@acme.test").await.expect(201);
    assert_quota_exceeded(&invite(&a, "three@acme.test").await);
    t.admin.delete(&format!("/v1/invitations/{first}")).await.expect(204);
    invite(&b, "three@acme.test").await.expect(201);
    assert_quota_exceeded(&invite(&a, "four@acme.test").await);
    // The invitations of a deleted workspace do not count either.
    t.admin.delete(&format!("/v1/workspaces/{b}")).await.expect(204);
    invite(&a, "four@acme.test").await.expect(201);
    invite(&a, "five@acme.test").await.expect(201);
    assert_quota_exceeded(&invite(&a, "six@acme.test").await);
}

/// The token of the `action` link in the email to `email`.
async fn token(smtp: &e2e::SmtpServer, email: &str, action: &str) -> String {
    let link = format!("https://console.example.test/invitations/{action}");
    e2e::wait_until(&format!("an email to {email}"), std::time::Duration::from_secs(30), || {
        let token = smtp.received().into_iter().find(|m| m.to == email).and_then(|m| m.link_token(&link));
        async move { token }
    })
    .await
}

#[tokio::test]
async fn accepted_declined_and_expired_invitations_leave_the_pending_count() {
    let smtp = e2e::SmtpServer::start().expect("start the SMTP server");
    let env = [("SMTP_URL", smtp.url()), ("HUB_PUBLIC_URL", "https://console.example.test".to_owned())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let t = tenant_with(&env, json!({"quotas": {"pending_invitations": 1}})).await;
    let ws = id(&t.admin.post("/v1/workspaces", json!({"name": "a"})).await.expect(201));
    let path = format!("/v1/workspaces/{ws}/invitations");
    let invite = |email: &str| t.admin.post(&path, json!({"email": email, "role": "member"}));

    let short = t.admin.post(&path, json!({"email": "short@acme.test", "role": "member", "expires_in_seconds": 1}));
    let short = id(&short.await.expect(201));
    assert_quota_exceeded(&invite("ada@acme.test").await);
    e2e::wait_until("the invitation to expire", std::time::Duration::from_secs(10), || {
        let (admin, path) = (t.admin.clone(), path.clone());
        let short = short.clone();
        async move {
            let items = admin.get(&path).await.body["items"].clone();
            let status = items.as_array()?.iter().find(|i| i["id"] == short.as_str())?["status"].clone();
            (status == "expired").then_some(())
        }
    })
    .await;

    invite("ada@acme.test").await.expect(201);
    assert_quota_exceeded(&invite("bob@acme.test").await);
    let accept = token(&smtp, "ada@acme.test", "accept").await;
    t.admin.anonymous().post("/v1/invitations/accept", json!({"token": accept, "name": "Ada"})).await.expect(200);

    invite("bob@acme.test").await.expect(201);
    assert_quota_exceeded(&invite("cy@acme.test").await);
    let decline = token(&smtp, "bob@acme.test", "decline").await;
    t.admin.anonymous().post("/v1/invitations/decline", json!({"token": decline})).await.expect(200);

    invite("cy@acme.test").await.expect(201);
    assert_quota_exceeded(&invite("dee@acme.test").await);
}

#[tokio::test]
async fn twenty_concurrent_creates_against_a_quota_of_five_give_exactly_five_workspaces() {
    let t = tenant(json!({"quotas": {"workspaces": 5}})).await;
    let replies = futures::future::join_all((0..20).map(|i| {
        let admin = t.admin.clone();
        async move { admin.post("/v1/workspaces", json!({"name": format!("w{i}")})).await }
    }))
    .await;
    let created = replies.iter().filter(|r| r.status == 201).count();
    let refused: Vec<_> = replies.iter().filter(|r| r.status == 409).collect();
    assert_eq!(created, 5, "{:?}", replies.iter().map(|r| (r.status, r.body["code"].clone())).collect::<Vec<_>>());
    assert_eq!(refused.len(), 15);
    for reply in refused {
        assert_quota_exceeded(reply);
    }
    let count = t.admin.get("/v1/workspaces/count").await.expect(200);
    assert_eq!(count.body["count"], 5);
}

#[tokio::test]
async fn a_quota_refusal_in_a_group_commit_fails_only_its_own_request() {
    let t = tenant(json!({"quotas": {"workspaces": 2}})).await;
    t.admin.post("/v1/workspaces", json!({"name": "existing"})).await.expect(201);
    let other = new_key(
        &t.operator,
        &id(&t
            .operator
            .post("/v1/organizations", json!({"name": "Other", "email": "o@o.test", "plan": "pro"}))
            .await
            .expect(201)),
    )
    .await;

    // Hold the log-head lock so that the writer's next transaction waits and the
    // commits sent meanwhile pile up into one batch.
    let blocker = t.db.connect().await;
    blocker.batch_execute("BEGIN; SELECT * FROM event_log_head FOR UPDATE").await.unwrap();
    let primer = tokio::spawn({
        let other = other.clone();
        async move { other.post("/v1/workspaces", json!({"name": "primer"})).await }
    });
    let observer = t.db.connect().await;
    e2e::wait_until("the writer to wait on the log-head lock", std::time::Duration::from_secs(10), || {
        let observer = &observer;
        async move {
            let row = observer
                .query_one("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'", &[])
                .await
                .unwrap();
            (row.get::<_, i64>(0) > 0).then_some(())
        }
    })
    .await;
    let post = |api: &Api, path: &'static str, body: Value| {
        let api = api.clone();
        tokio::spawn(async move { api.post(path, body).await })
    };
    let over: Vec<_> = (0..3).map(|i| post(&t.admin, "/v1/workspaces", json!({"name": format!("w{i}")}))).collect();
    let keys: Vec<_> = (0..3)
        .map(|i| post(&t.admin, "/v1/api-keys", json!({"name": format!("k{i}"), "scopes": ["keys:read"]})))
        .collect();
    let others: Vec<_> = (0..3).map(|i| post(&other, "/v1/workspaces", json!({"name": format!("o{i}")}))).collect();
    // Nothing outside the hub shows a request queued at the writer: give them a moment.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    blocker.batch_execute("COMMIT").await.unwrap();

    primer.await.unwrap().expect(201);
    let mut over_statuses = Vec::new();
    for call in over {
        let reply = call.await.unwrap();
        if reply.status != 201 {
            assert_quota_exceeded(&reply);
        }
        over_statuses.push(reply.status.as_u16());
    }
    over_statuses.sort_unstable();
    assert_eq!(over_statuses, [201, 409, 409], "one slot was left");
    for call in keys.into_iter().chain(others) {
        call.await.unwrap().expect(201);
    }
    assert!(
        t.hub.logs().contains("rolled back to its savepoint, its batch-mates kept"),
        "the refusal happened inside a batch of several commits"
    );
}

#[tokio::test]
async fn concurrent_api_key_creates_and_invitations_never_pass_their_quotas() {
    let t = tenant(json!({"quotas": {"api_keys": 4, "pending_invitations": 3}})).await;
    let ws = id(&t.admin.post("/v1/workspaces", json!({"name": "a"})).await.expect(201));
    let keys = futures::future::join_all((0..12).map(|i| {
        let admin = t.admin.clone();
        async move { admin.post("/v1/api-keys", json!({"name": format!("k{i}"), "scopes": ["keys:read"]})).await }
    }));
    let invitations = futures::future::join_all((0..12).map(|i| {
        let admin = t.admin.clone();
        let path = format!("/v1/workspaces/{ws}/invitations");
        async move { admin.post(&path, json!({"email": format!("u{i}@acme.test"), "role": "viewer"})).await }
    }));
    let (keys, invitations) = tokio::join!(keys, invitations);
    for (replies, allowed) in [(keys, 3), (invitations, 3)] {
        assert_eq!(replies.iter().filter(|r| r.status == 201).count(), allowed);
        for reply in replies.iter().filter(|r| r.status != 201) {
            assert_quota_exceeded(reply);
        }
    }
}

#[tokio::test]
async fn rebuilding_the_projections_keeps_the_usage_the_quotas_are_held_to() {
    let t = tenant(json!({"quotas": {"workspaces": 2, "api_keys": 2}})).await;
    let a = id(&t.admin.post("/v1/workspaces", json!({"name": "a"})).await.expect(201));
    let b = id(&t.admin.post("/v1/workspaces", json!({"name": "b"})).await.expect(201));
    t.admin.post(&format!("/v1/workspaces/{b}/archive"), json!({})).await.expect(200);
    let extra = id(&t.admin.post("/v1/api-keys", json!({"name": "k", "scopes": ["keys:read"]})).await.expect(201));
    t.admin.delete(&format!("/v1/api-keys/{extra}")).await.expect(204);
    t.admin
        .post(&format!("/v1/workspaces/{a}/invitations"), json!({"email": "x@acme.test", "role": "member"}))
        .await
        .expect(201);

    let usage = || async {
        let client = t.db.connect().await;
        let row = client
            .query_one(
                "SELECT row_to_json(o)::text FROM organizations o WHERE id = $1",
                &[&t.org.parse::<uuid::Uuid>().unwrap()],
            )
            .await
            .unwrap();
        row.get::<_, String>(0)
    };
    let before = usage().await;
    let out = e2e::binaries::hub_command(&t.db.url, &["projections", "rebuild"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(usage().await, before);
    assert_quota_exceeded(&t.admin.post("/v1/workspaces", json!({"name": "c"})).await);
    t.admin.post("/v1/api-keys", json!({"name": "k2", "scopes": ["keys:read"]})).await.expect(201);
    assert_quota_exceeded(&t.admin.post("/v1/api-keys", json!({"name": "k3", "scopes": ["keys:read"]})).await);
}
