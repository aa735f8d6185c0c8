//! What a key may do to keys: a minted key inherits its creator's owner, addresses and
//! lifetime; revoking or rotating another key needs a grant that covers it; deleting a
//! workspace or an organization takes the keys restricted to it along.

use std::time::Duration;

use e2e::{Api, HubProcess, InstanceProcess, NatsServer, OPERATOR_KEY, PgServer, SmtpServer, TestDatabase, wait_until};
use serde_json::{Value, json};

struct Stack {
    _hub: HubProcess,
    operator: Api,
    admin: Api,
    org: String,
}

async fn stack(db: &TestDatabase, env: &[(&str, &str)]) -> (HubProcess, Api) {
    let hub = HubProcess::spawn(&db.url, &["--single-node"], env).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    (hub, operator)
}

/// An organization and an all-scopes admin key for it.
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

async fn plain() -> Stack {
    let db = TestDatabase::new().await;
    // These tests present dead keys on purpose: not a reason to throttle the address.
    let (hub, operator) = stack(&db, &[("HUB_AUTH_FAILURES_PER_MINUTE", "1000")]).await;
    let (org, admin) = organization(&operator, "acme").await;
    Stack { _hub: hub, operator, admin, org }
}

/// A key created by `creator` with `body`: its id, its view and a client using it.
async fn mint(creator: &Api, body: Value) -> (String, Value, Api) {
    let reply = creator.post("/v1/api-keys", body).await.expect(201);
    let id = reply.body["id"].as_str().unwrap().to_owned();
    let secret = reply.body["secret"].as_str().unwrap().to_owned();
    (id, reply.body, creator.with_key(&secret))
}

#[track_caller]
fn refused(reply: e2e::Reply, status: u16, code: &str) {
    let reply = reply.expect(status);
    assert_eq!(reply.header("content-type"), Some("application/problem+json"));
    assert_eq!(reply.body["code"], code, "{}", reply.text);
}

async fn workspace(api: &Api, name: &str, parent: Option<&str>) -> String {
    let reply = api.post("/v1/workspaces", json!({"name": name, "parent_id": parent})).await.expect(201);
    reply.body["id"].as_str().unwrap().to_owned()
}

/// A user of the organization, made the way the product makes users: invited, accepted.
async fn user(smtp: &SmtpServer, admin: &Api, workspace: &str, email: &str) -> String {
    admin
        .post(&format!("/v1/workspaces/{workspace}/invitations"), json!({"email": email, "role": "admin"}))
        .await
        .expect(201);
    let mail = wait_until(&format!("an email to {email}"), Duration::from_secs(30), || {
        let found = smtp.received().into_iter().find(|m| m.to == email);
        async move { found }
    })
    .await;
    let token = mail.link_token("https://console.example.test/invitations/accept").expect("an accept link");
    let accepted = admin.anonymous().post("/v1/invitations/accept", json!({"token": token})).await.expect(200);
    accepted.body["user_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_key_bound_to_a_user_mints_only_keys_bound_to_that_user() {
    let db = TestDatabase::new().await;
    let smtp = SmtpServer::start().expect("start the SMTP server");
    let env = [("SMTP_URL", smtp.url()), ("HUB_PUBLIC_URL", "https://console.example.test".to_owned())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (_hub, operator) = stack(&db, &env).await;
    let (_, admin) = organization(&operator, "acme").await;
    let home = workspace(&admin, "Home", None).await;
    let ada = user(&smtp, &admin, &home, "ada@example.test").await;
    let bob = user(&smtp, &admin, &home, "bob@example.test").await;

    let (_, _, bound) =
        mint(&admin, json!({"name": "ada's", "scopes": ["keys:read", "keys:write"], "owner_user_id": ada})).await;
    let (minted_id, minted, minted_api) = mint(&bound, json!({"name": "child", "scopes": ["keys:read"]})).await;
    assert_eq!(minted["owner_user_id"], ada.as_str(), "the creator's owner is inherited");
    mint(&bound, json!({"name": "same", "scopes": ["keys:read"], "owner_user_id": ada})).await;
    refused(
        bound.post("/v1/api-keys", json!({"name": "x", "scopes": ["keys:read"], "owner_user_id": bob})).await,
        403,
        "forbidden",
    );
    // A creator bound to no user may bind a key to any user of the organization.
    let (_, for_bob, _) = mint(&admin, json!({"name": "bob's", "scopes": ["keys:read"], "owner_user_id": bob})).await;
    assert_eq!(for_bob["owner_user_id"], bob.as_str());

    minted_api.get("/v1/api-keys").await.expect(200);
    admin.delete(&format!("/v1/users/{ada}")).await.expect(204);
    minted_api.get("/v1/api-keys").await.expect(401);
    assert_eq!(admin.get(&format!("/v1/api-keys/{minted_id}")).await.expect(200).body["status"], "revoked");
}

#[tokio::test]
async fn disabling_or_deleting_a_user_needs_a_grant_over_every_key_bound_to_them() {
    let db = TestDatabase::new().await;
    let smtp = SmtpServer::start().expect("start the SMTP server");
    let env = [("SMTP_URL", smtp.url()), ("HUB_PUBLIC_URL", "https://console.example.test".to_owned())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (_hub, operator) = stack(&db, &env).await;
    let (_, admin) = organization(&operator, "acme").await;
    let home = workspace(&admin, "Home", None).await;
    let bob = user(&smtp, &admin, &home, "bob@example.test").await;
    let carol = user(&smtp, &admin, &home, "carol@example.test").await;
    let (_, _, bobs) = mint(&admin, json!({"name": "bob's", "scopes": ["*"], "owner_user_id": bob})).await;
    let (_, _, people) = mint(&admin, json!({"name": "people", "scopes": ["users:read", "users:write"]})).await;

    // A key that manages users but not keys cannot suspend, revive or revoke a key through
    // its user; nothing changes.
    let user_path = format!("/v1/users/{bob}");
    refused(people.patch(&user_path, json!({"status": "disabled"})).await, 403, "forbidden");
    refused(people.delete(&user_path).await, 403, "forbidden");
    bobs.get("/v1/api-keys").await.expect(200);
    assert_eq!(admin.get(&user_path).await.expect(200).body["status"], "active");
    // It still manages a user with no live key, and renames anyone.
    people.patch(&user_path, json!({"name": "Bob B."})).await.expect(200);
    people.patch(&format!("/v1/users/{carol}"), json!({"status": "disabled"})).await.expect(200);
    people.delete(&format!("/v1/users/{carol}")).await.expect(204);

    // A grant that covers the key may.
    admin.patch(&user_path, json!({"status": "disabled"})).await.expect(200);
    bobs.get("/v1/api-keys").await.expect(401);
    refused(people.patch(&user_path, json!({"status": "active"})).await, 403, "forbidden");
    admin.patch(&user_path, json!({"status": "active"})).await.expect(200);
    bobs.get("/v1/api-keys").await.expect(200);
    admin.delete(&user_path).await.expect(204);
    bobs.get("/v1/api-keys").await.expect(401);
}

#[tokio::test]
async fn a_key_mints_keys_only_within_its_addresses_and_lifetime() {
    let stack = plain().await;
    let expires =
        (chrono::Utc::now() + chrono::Duration::minutes(5)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (_, _, short) = mint(
        &stack.admin,
        json!({"name": "short", "scopes": ["keys:read", "keys:write"], "allowed_ips": ["127.0.0.1/32"], "expires_at": expires}),
    )
    .await;

    let (_, minted, minted_api) = mint(&short, json!({"name": "child", "scopes": ["keys:read"]})).await;
    assert_eq!(minted["allowed_ips"], json!(["127.0.0.1/32"]), "absent: the creator's addresses");
    let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    assert_eq!(at(&minted["expires_at"]), at(&json!(expires)), "absent: the creator's expiry");
    minted_api.get("/v1/api-keys").await.expect(200);

    for ips in [json!(["10.0.0.0/8"]), json!(["0.0.0.0/0"]), json!(["127.0.0.0/8"]), json!(["127.0.0.1", "::1"])] {
        let reply =
            short.post("/v1/api-keys", json!({"name": "wide", "scopes": ["keys:read"], "allowed_ips": ips})).await;
        refused(reply, 403, "forbidden");
    }
    let later = (chrono::Utc::now() + chrono::Duration::minutes(6)).to_rfc3339();
    refused(
        short.post("/v1/api-keys", json!({"name": "long", "scopes": ["keys:read"], "expires_at": later})).await,
        403,
        "forbidden",
    );
    let sooner = (chrono::Utc::now() + chrono::Duration::minutes(4)).to_rfc3339();
    let (_, narrower, _) = mint(
        &short,
        json!({"name": "ok", "scopes": ["keys:read"], "expires_at": sooner, "allowed_ips": ["127.0.0.1"]}),
    )
    .await;
    assert_eq!(narrower["allowed_ips"], json!(["127.0.0.1/32"]));
    // The operator and an unlimited key still mint unlimited keys.
    let (_, free, _) = mint(&stack.admin, json!({"name": "free", "scopes": ["keys:read"]})).await;
    assert_eq!(free["expires_at"], Value::Null);
    assert_eq!(free["allowed_ips"], json!([]));
    let body = json!({"name": "op", "scopes": ["keys:read"], "organization_id": stack.org});
    assert_eq!(stack.operator.post("/v1/api-keys", body).await.expect(201).body["expires_at"], Value::Null);
}

#[tokio::test]
async fn a_key_rotates_another_only_with_a_wider_grant_and_revokes_only_what_it_covers() {
    let stack = plain().await;
    let admin = &stack.admin;
    let keys = json!(["keys:read", "keys:write"]);
    let (first_id, _, first) = mint(admin, json!({"name": "first", "scopes": keys})).await;
    let (peer_id, _, peer) = mint(admin, json!({"name": "peer", "scopes": keys})).await;

    // Equal grants: no takeover by rotation, and the peer's secret keeps working.
    refused(
        first.post(&format!("/v1/api-keys/{peer_id}/rotate"), json!({"grace_period_seconds": 0})).await,
        403,
        "forbidden",
    );
    peer.get("/v1/api-keys").await.expect(200);
    // A key rotates itself: it gets nothing it did not hold.
    let own = first.post(&format!("/v1/api-keys/{first_id}/rotate"), json!({"grace_period_seconds": 0})).await;
    let first = admin.with_key(own.expect(200).body["secret"].as_str().unwrap());
    first.get("/v1/api-keys").await.expect(200);
    // A wider grant (more scopes) rotates it; the operator always may.
    admin.post(&format!("/v1/api-keys/{peer_id}/rotate"), json!({})).await.expect(200);
    stack.operator.post(&format!("/v1/api-keys/{first_id}/rotate"), json!({})).await.expect(200);

    // Narrower in addresses or lifetime: covers nothing unlimited, even with more scopes.
    let soon = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (_, _, local) = mint(admin, json!({"name": "local", "scopes": ["*"], "allowed_ips": ["127.0.0.1/32"]})).await;
    let (_, _, mortal) = mint(admin, json!({"name": "mortal", "scopes": ["*"], "expires_at": soon})).await;
    let (weak_id, _, _) = mint(admin, json!({"name": "weak", "scopes": ["keys:read"]})).await;
    for narrower in [&local, &mortal] {
        refused(narrower.post(&format!("/v1/api-keys/{weak_id}/rotate"), json!({})).await, 403, "forbidden");
        refused(narrower.delete(&format!("/v1/api-keys/{weak_id}")).await, 403, "forbidden");
        let rename = narrower.patch(&format!("/v1/api-keys/{weak_id}"), json!({"name": "mine"})).await;
        refused(rename, 403, "forbidden");
    }
    // A key it minted is covered: rotating that is wider in scopes, addresses is inherited.
    let (child_id, _, _) = mint(&local, json!({"name": "child", "scopes": ["keys:read"]})).await;
    local.post(&format!("/v1/api-keys/{child_id}/rotate"), json!({})).await.expect(200);
    local.delete(&format!("/v1/api-keys/{child_id}")).await.expect(204);

    // Revoking needs only coverage: an equal peer may be revoked.
    let (twin_id, _, twin) = mint(admin, json!({"name": "twin", "scopes": keys})).await;
    let peer = {
        let rotated = admin.post(&format!("/v1/api-keys/{peer_id}/rotate"), json!({"grace_period_seconds": 0})).await;
        admin.with_key(rotated.expect(200).body["secret"].as_str().unwrap())
    };
    peer.delete(&format!("/v1/api-keys/{twin_id}")).await.expect(204);
    twin.get("/v1/api-keys").await.expect(401);

    // Workspaces: the same subtree is not wider; a deeper one is.
    let root = workspace(admin, "Root", None).await;
    let team = workspace(admin, "Team", Some(&root)).await;
    let (_, _, scoped) = mint(admin, json!({"name": "scoped", "scopes": keys, "workspace_ids": [root]})).await;
    let (same_id, _, _) = mint(admin, json!({"name": "same", "scopes": keys, "workspace_ids": [root]})).await;
    let (deeper_id, _, _) = mint(admin, json!({"name": "deeper", "scopes": keys, "workspace_ids": [team]})).await;
    refused(scoped.post(&format!("/v1/api-keys/{same_id}/rotate"), json!({})).await, 403, "forbidden");
    scoped.post(&format!("/v1/api-keys/{deeper_id}/rotate"), json!({})).await.expect(200);
    scoped.delete(&format!("/v1/api-keys/{same_id}")).await.expect(204);
}

#[tokio::test]
async fn deleting_a_workspace_revokes_the_keys_restricted_to_it_alone() {
    let stack = plain().await;
    let admin = &stack.admin;
    let kept = workspace(admin, "Kept", None).await;
    let gone = workspace(admin, "Gone", None).await;
    let parent = workspace(admin, "Parent", None).await;
    let child = workspace(admin, "Child", Some(&parent)).await;
    let scopes = json!(["keys:read", "workspaces:read"]);
    let (alone_id, _, alone) = mint(admin, json!({"name": "alone", "scopes": scopes, "workspace_ids": [gone]})).await;
    let (both_id, _, both) =
        mint(admin, json!({"name": "both", "scopes": scopes, "workspace_ids": [gone, kept]})).await;
    let (deep_id, _, deep) = mint(admin, json!({"name": "deep", "scopes": scopes, "workspace_ids": [child]})).await;
    let (other_id, _, other) = mint(admin, json!({"name": "other", "scopes": scopes, "workspace_ids": [kept]})).await;
    alone.get("/v1/workspaces").await.expect(200);

    admin.delete(&format!("/v1/workspaces/{gone}")).await.expect(204);
    alone.get("/v1/workspaces").await.expect(401);
    assert_eq!(admin.get(&format!("/v1/api-keys/{alone_id}")).await.expect(200).body["status"], "revoked");
    let narrowed = admin.get(&format!("/v1/api-keys/{both_id}")).await.expect(200).body;
    assert_eq!(narrowed["workspace_ids"], json!([kept]), "the deleted workspace is removed, the others stay");
    assert_eq!(narrowed["status"], "active");
    let seen = both.get("/v1/workspaces").await.expect(200).body;
    assert_eq!(seen["items"].as_array().unwrap().len(), 1);

    admin.delete(&format!("/v1/workspaces/{parent}?cascade=true")).await.expect(204);
    deep.get("/v1/workspaces").await.expect(401);
    assert_eq!(admin.get(&format!("/v1/api-keys/{deep_id}")).await.expect(200).body["status"], "revoked");
    other.get("/v1/workspaces").await.expect(200);
    assert_eq!(admin.get(&format!("/v1/api-keys/{other_id}")).await.expect(200).body["status"], "active");
    admin.get("/v1/api-keys").await.expect(200);

    // The revocations are events in the log, in the deleting commit.
    let feed = stack.operator.get(&format!("/v1/events?stream_id=key-{alone_id}")).await.expect(200).body;
    let types: Vec<&str> =
        feed["items"].as_array().unwrap().iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    assert_eq!(types, ["ApiKeyCreated", "ApiKeyRevoked"]);
}

#[tokio::test]
async fn deleting_an_organization_revokes_its_keys_and_instances_drop_its_workspaces() {
    let nats = NatsServer::start().unwrap();
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &[], &[("NATS_URL", &nats.url())]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let instance_db = PgServer::shared().empty_database().await;
    let _instance = InstanceProcess::instance("alpha", &instance_db.url, &nats.url(), &hub.url("")).await;
    let (org, admin) = organization(&operator, "doomed").await;
    let (_, survivor) = organization(&operator, "survivor").await;
    let mut workspaces = Vec::new();
    for name in ["A", "B"] {
        let body = json!({"name": name, "instance_id": "alpha"});
        workspaces.push(admin.post("/v1/workspaces", body).await.expect(201).body["id"].as_str().unwrap().to_owned());
    }
    let child = json!({"name": "A1", "instance_id": "alpha", "parent_id": workspaces[0]});
    workspaces.push(admin.post("/v1/workspaces", child).await.expect(201).body["id"].as_str().unwrap().to_owned());
    let (key_id, _, key) = mint(&admin, json!({"name": "k", "scopes": ["keys:read"]})).await;
    let (_, _, scoped) =
        mint(&admin, json!({"name": "scoped", "scopes": ["keys:read"], "workspace_ids": [workspaces[2]]})).await;
    let ids: Vec<uuid::Uuid> = workspaces.iter().map(|w| w.parse().unwrap()).collect();
    let live = |db: TestDatabase, ids: Vec<uuid::Uuid>| async move {
        let client = db.connect().await;
        let rows = client.query("SELECT state IS NOT NULL FROM workspaces WHERE id = ANY($1)", &[&ids]).await.unwrap();
        (rows.len(), rows.iter().filter(|r| r.get::<_, bool>(0)).count())
    };
    wait_until("the instance to hold the workspaces", Duration::from_secs(60), || {
        let (db, ids) = (instance_db.clone(), ids.clone());
        async move { (live(db, ids).await == (3, 3)).then_some(()) }
    })
    .await;

    operator.delete(&format!("/v1/organizations/{org}")).await.expect(204);
    key.get("/v1/api-keys").await.expect(401);
    admin.get("/v1/api-keys").await.expect(401);
    let listed = operator.get(&format!("/v1/api-keys?organization_id={org}")).await.expect(200).body;
    let statuses: Vec<&str> =
        listed["items"].as_array().unwrap().iter().map(|k| k["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["revoked", "revoked", "revoked"], "every key of the organization is revoked");
    scoped.get("/v1/api-keys").await.expect(401);
    let feed = operator.get(&format!("/v1/events?stream_id=key-{key_id}")).await.expect(200).body;
    assert_eq!(feed["items"].as_array().unwrap().last().unwrap()["event_type"], "ApiKeyRevoked");
    for id in &workspaces {
        operator.get(&format!("/v1/workspaces/{id}")).await.expect(404);
        let feed = operator.get(&format!("/v1/events?stream_id=workspace-{id}")).await.expect(200).body;
        assert_eq!(feed["items"].as_array().unwrap().last().unwrap()["event_type"], "WorkspaceDeleted");
    }
    let client = db.connect().await;
    let shredded: i64 = client
        .query_one("SELECT count(*) FROM keyring WHERE workspace_id = ANY($1) AND sealed_data_key IS NULL", &[&ids])
        .await
        .unwrap()
        .get(0);
    assert_eq!(shredded, 3, "the workspaces' secrets are shredded");
    wait_until("the instance to drop the workspaces", Duration::from_secs(60), || {
        let (db, ids) = (instance_db.clone(), ids.clone());
        async move { (live(db, ids).await.1 == 0).then_some(()) }
    })
    .await;
    // Another organization is untouched.
    survivor.get("/v1/api-keys").await.expect(200);
    refused(operator.delete(&format!("/v1/organizations/{org}")).await, 404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_created_while_its_workspace_is_deleted_never_outlives_it() {
    let stack = plain().await;
    let admin = &stack.admin;
    for round in 0..20 {
        let doomed = workspace(admin, &format!("W{round}"), None).await;
        let body = json!({"name": format!("racer{round}"), "scopes": ["keys:read"], "workspace_ids": [doomed]});
        let path = format!("/v1/workspaces/{doomed}");
        let (deleted, created) = tokio::join!(admin.delete(&path), admin.post("/v1/api-keys", body));
        for reply in [&deleted, &created] {
            assert!(!reply.status.is_server_error(), "{}", reply.text);
        }
        deleted.expect(204);
        if created.status == 201 {
            let key = admin.with_key(created.body["secret"].as_str().unwrap());
            key.get("/v1/api-keys").await.expect(401);
            let id = created.body["id"].as_str().unwrap();
            assert_eq!(admin.get(&format!("/v1/api-keys/{id}")).await.expect(200).body["status"], "revoked");
        } else {
            assert!([409, 422].contains(&created.status.as_u16()), "{}", created.text);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workspaces_and_keys_created_while_their_organization_is_deleted_never_outlive_it() {
    let db = TestDatabase::new().await;
    let (_hub, operator) = stack(&db, &[("HUB_AUTH_FAILURES_PER_MINUTE", "1000")]).await;
    let client = db.connect().await;
    for round in 0..3 {
        let (org, admin) = organization(&operator, &format!("doomed{round}")).await;
        let creators = (0..6).map(|thread| {
            let admin = admin.clone();
            async move {
                let mut replies = Vec::new();
                // Until the delete shuts the key out (or long enough to outlast it).
                for i in 0..60 {
                    let reply = if (thread + i) % 2 == 0 {
                        admin.post("/v1/workspaces", json!({"name": format!("W{thread}-{i}")})).await
                    } else {
                        admin
                            .post("/v1/api-keys", json!({"name": format!("k{thread}-{i}"), "scopes": ["keys:read"]}))
                            .await
                    };
                    let done = reply.status == 401;
                    replies.push(reply);
                    if done {
                        break;
                    }
                }
                replies
            }
        });
        let delete = async {
            // A few creates first, so the delete meets some and races the rest.
            operator.get(&format!("/v1/organizations/{org}")).await.expect(200);
            operator.delete(&format!("/v1/organizations/{org}")).await
        };
        let (deleted, created) = tokio::join!(delete, futures::future::join_all(creators));
        // Creates meanwhile are refused, so they cannot outrun the delete.
        deleted.expect(204);
        for reply in created.iter().flatten() {
            assert!(
                reply.status.is_success() || reply.status.is_client_error(),
                "every create answers 2xx or a 4xx problem: {}",
                reply.text
            );
            if reply.status.is_client_error() {
                assert_eq!(reply.header("content-type"), Some("application/problem+json"), "{}", reply.text);
            }
        }
        let org: uuid::Uuid = org.parse().unwrap();
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM workspaces WHERE organization_id = $1 AND status <> 'deleted'), \
                        (SELECT count(*) FROM api_keys WHERE organization_id = $1 AND revoked_at IS NULL), \
                        (SELECT count(*) FROM keyring k JOIN workspaces w ON w.id = k.workspace_id \
                          WHERE w.organization_id = $1 AND k.sealed_data_key IS NOT NULL)",
                &[&org],
            )
            .await
            .unwrap();
        let (workspaces, keys, unshredded): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        assert_eq!((workspaces, keys, unshredded), (0, 0, 0), "nothing of the deleted organization is live");
        let late: i64 = client
            .query_one(
                "SELECT count(*) FROM events e, (SELECT position FROM events WHERE stream_id = $1 \
                   AND event_type = 'OrganizationDeleted') d \
                  WHERE e.position > d.position AND e.event_type IN ('WorkspaceCreated', 'ApiKeyCreated') \
                    AND e.data->>'organization_id' = $2",
                &[&format!("org-{org}"), &org.to_string()],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(late, 0, "nothing is created in the organization after its deletion");
    }
}

#[tokio::test]
async fn the_secret_being_retired_cannot_rotate_change_or_mint_keys_during_its_grace_period() {
    let stack = plain().await;
    let body = json!({"name": "x", "scopes": ["*"], "organization_id": stack.org});
    let (id, _, old) = mint(&stack.operator, body).await;
    let rotated = stack
        .operator
        .post(&format!("/v1/api-keys/{id}/rotate"), json!({"grace_period_seconds": 60}))
        .await
        .expect(200);
    let new = stack.operator.with_key(rotated.body["secret"].as_str().unwrap());

    // The retiring secret still reads during its grace period, but takes nothing over.
    old.get("/v1/api-keys").await.expect(200);
    refused(
        old.post(&format!("/v1/api-keys/{id}/rotate"), json!({"grace_period_seconds": 0})).await,
        403,
        "retiring_secret",
    );
    refused(old.patch(&format!("/v1/api-keys/{id}"), json!({"name": "mine"})).await, 403, "retiring_secret");
    let minted = json!({"name": "spare", "scopes": ["keys:read"]});
    refused(old.post("/v1/api-keys", minted).await, 403, "retiring_secret");

    // The new secret keeps the key, and may rotate it.
    new.get("/v1/api-keys").await.expect(200);
    assert_eq!(stack.operator.get(&format!("/v1/api-keys/{id}")).await.expect(200).body["name"], "x");
    new.post(&format!("/v1/api-keys/{id}/rotate"), json!({"grace_period_seconds": 0})).await.expect(200);
}
