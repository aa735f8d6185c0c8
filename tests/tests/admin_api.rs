//! The Admin API core through the real hub binary: keys, scopes, isolation, the tree.

use e2e::{Api, HubProcess, OPERATOR_KEY, TestDatabase, wait_until};
use serde_json::{Value, json};
use sha2::Digest;

struct Stack {
    _hub: HubProcess,
    operator: Api,
}

async fn stack(env: &[(&str, &str)]) -> Stack {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], env).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    Stack { _hub: hub, operator }
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

async fn workspace(api: &Api, name: &str, parent: Option<&str>) -> String {
    let reply = api.post("/v1/workspaces", json!({"name": name, "parent_id": parent})).await.expect(201);
    reply.body["id"].as_str().unwrap().to_owned()
}

fn names(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap().to_owned()).collect()
}

fn link<'a>(page: &'a Value, rel: &str) -> Option<&'a str> {
    page["links"].as_array().unwrap().iter().find(|l| l["rel"] == rel).and_then(|l| l["href"].as_str())
}

#[tokio::test]
async fn an_org_key_builds_a_three_level_tree_that_lists_counts_and_pages_consistently() {
    let stack = stack(&[]).await;
    let (org_id, admin) = organization(&stack.operator, "acme").await;
    let root = workspace(&admin, "Root", None).await;
    let mut middles = Vec::new();
    for i in 0..3 {
        let middle = workspace(&admin, &format!("Team {i}"), Some(&root)).await;
        for j in 0..2 {
            workspace(&admin, &format!("Leaf {i}.{j}"), Some(&middle)).await;
        }
        middles.push(middle);
    }

    let tree = admin.get(&format!("/v1/workspaces/{root}/tree")).await.expect(200).body;
    assert_eq!(tree["name"], "Root");
    let teams = tree["children"].as_array().unwrap();
    assert_eq!(teams.len(), 3);
    assert_eq!(teams[0]["name"], "Team 0");
    assert_eq!(teams[0]["children"].as_array().unwrap().len(), 2);
    assert_eq!(teams[2]["children"][1]["name"], "Leaf 2.1");
    let shallow = admin.get(&format!("/v1/workspaces/{root}/tree?depth=1")).await.expect(200).body;
    assert!(shallow["children"].as_array().unwrap().iter().all(|c| c["children"].as_array().unwrap().is_empty()));

    assert_eq!(admin.get("/v1/workspaces/count").await.expect(200).body["count"], 10);
    assert_eq!(admin.get("/v1/workspaces/count?name=leaf").await.expect(200).body["count"], 6);

    // Walk every page of a filtered list by its links: the filter stays, nothing repeats.
    let mut seen = Vec::new();
    let mut next = Some("/v1/workspaces?name=leaf&page_size=4&sort_by=name".to_owned());
    let mut pages = 0;
    while let Some(path) = next {
        let page = admin.get(&path).await.expect(200).body;
        assert!(link(&page, "self").unwrap().contains("name=leaf"));
        seen.extend(names(&page));
        next = link(&page, "next").map(str::to_owned);
        if let Some(next) = &next {
            assert!(
                next.contains("name=leaf") && next.contains("page_size=4") && next.contains("sort_by=name"),
                "{next}"
            );
        }
        pages += 1;
    }
    assert_eq!(pages, 2);
    assert_eq!(seen, ["Leaf 0.0", "Leaf 0.1", "Leaf 1.0", "Leaf 1.1", "Leaf 2.0", "Leaf 2.1"]);

    let children = admin.get(&format!("/v1/workspaces?parent_id={}", middles[1])).await.expect(200).body;
    assert_eq!(names(&children), ["Leaf 1.0", "Leaf 1.1"]);
    let got = admin.get(&format!("/v1/workspaces/{}", middles[1])).await.expect(200);
    assert_eq!(got.body["organization_id"], org_id.as_str());
    assert_eq!(got.body["parent_id"], root.as_str());
    assert_eq!(got.body["instance_id"], "embedded");
}

/// Creates a key with the given scopes (and optional workspace restriction) using `api`.
async fn key(api: &Api, scopes: &[&str], workspaces: &[&str]) -> (String, Api) {
    let reply = api
        .post("/v1/api-keys", json!({"name": "scoped", "scopes": scopes, "workspace_ids": workspaces}))
        .await
        .expect(201);
    (reply.body["id"].as_str().unwrap().to_owned(), api.with_key(reply.body["secret"].as_str().unwrap()))
}

#[tokio::test]
async fn other_organizations_and_other_subtrees_are_invisible() {
    let stack = stack(&[]).await;
    let (org_a, a) = organization(&stack.operator, "alpha").await;
    let (_org_b, b) = organization(&stack.operator, "beta").await;
    let root = workspace(&a, "Root", None).await;
    let team = workspace(&a, "Team", Some(&root)).await;
    let leaf = workspace(&a, "Leaf", Some(&team)).await;
    let other = workspace(&a, "Other", None).await;
    let (a_key, _) = key(&a, &["keys:read"], &[]).await;

    // Every path of alpha's resources answers 404 to beta's key.
    let paths = [
        ("GET", format!("/v1/organizations/{org_a}")),
        ("PATCH", format!("/v1/organizations/{org_a}")),
        ("GET", format!("/v1/workspaces/{team}")),
        ("PATCH", format!("/v1/workspaces/{team}")),
        ("DELETE", format!("/v1/workspaces/{leaf}")),
        ("GET", format!("/v1/workspaces/{root}/tree")),
        ("POST", format!("/v1/workspaces/{team}/archive")),
        ("POST", format!("/v1/workspaces/{team}/restore")),
        ("GET", format!("/v1/api-keys/{a_key}")),
        ("PATCH", format!("/v1/api-keys/{a_key}")),
        ("DELETE", format!("/v1/api-keys/{a_key}")),
        ("POST", format!("/v1/api-keys/{a_key}/rotate")),
        ("GET", format!("/v1/settings?organization_id={org_a}")),
    ];
    for (method, path) in &paths {
        let body = (*method == "PATCH").then(|| json!({"name": "stolen"}));
        let reply = b.send(method.parse().unwrap(), path, body.as_ref(), &[]).await;
        assert_eq!(reply.status, 404, "{method} {path}: {}", reply.text);
    }
    // Beta creating under alpha's parent cannot tell it exists either.
    let reply = b.post("/v1/workspaces", json!({"name": "x", "parent_id": root})).await.expect(422);
    assert_eq!(reply.body["errors"][0]["name"], "parent_id");
    // Lists and counts never show them.
    assert_eq!(b.get("/v1/workspaces/count").await.expect(200).body["count"], 0);
    assert!(b.get("/v1/workspaces").await.expect(200).body["items"].as_array().unwrap().is_empty());
    let b_keys = b.get("/v1/api-keys").await.expect(200).body;
    assert!(b_keys["items"].as_array().unwrap().iter().all(|k| k["organization_id"] != org_a.as_str()));
    let b_orgs = b.get("/v1/organizations").await.expect(200).body;
    assert_eq!(b_orgs["items"].as_array().unwrap().len(), 1);
    assert_ne!(b_orgs["items"][0]["id"], org_a.as_str());

    // A key restricted to Team sees Team and its descendants only.
    let (_, scoped) = key(&a, &["workspaces:read", "workspaces:write", "keys:read", "keys:write"], &[&team]).await;
    let visible = scoped.get("/v1/workspaces?sort_by=name").await.expect(200).body;
    assert_eq!(names(&visible), ["Leaf", "Team"]);
    assert_eq!(scoped.get("/v1/workspaces/count").await.expect(200).body["count"], 2);
    scoped.get(&format!("/v1/workspaces/{root}")).await.expect(404);
    scoped.get(&format!("/v1/workspaces/{other}")).await.expect(404);
    scoped.get(&format!("/v1/workspaces/{leaf}")).await.expect(200);
    let tree = scoped.get(&format!("/v1/workspaces/{team}/tree")).await.expect(200).body;
    assert_eq!(tree["children"][0]["name"], "Leaf");
    // It creates inside its subtree, never at the root or outside.
    scoped.post("/v1/workspaces", json!({"name": "Inner", "parent_id": leaf})).await.expect(201);
    scoped.post("/v1/workspaces", json!({"name": "Top"})).await.expect(403);
    scoped.post("/v1/workspaces", json!({"name": "Out", "parent_id": other})).await.expect(422);
    // Its keys stay inside its subtree too.
    scoped
        .post("/v1/api-keys", json!({"name": "k", "scopes": ["keys:read"], "workspace_ids": [leaf]}))
        .await
        .expect(201);
    scoped
        .post("/v1/api-keys", json!({"name": "k", "scopes": ["keys:read"], "workspace_ids": [other]}))
        .await
        .expect(403);
    scoped.post("/v1/api-keys", json!({"name": "k", "scopes": ["keys:read"]})).await.expect(403);
    let keys = scoped.get("/v1/api-keys").await.expect(200).body;
    assert!(keys["items"].as_array().unwrap().iter().all(|k| !k["workspace_ids"].as_array().unwrap().is_empty()));
    // Even with every scope, a restricted key cannot change the organization as a whole.
    let (_, restricted_all) = key(&a, &["*"], &[&team]).await;
    restricted_all.patch("/v1/settings", json!({"rate_limit_per_minute": 1})).await.expect(403);
    restricted_all.patch(&format!("/v1/organizations/{org_a}"), json!({"name": "mine"})).await.expect(403);
    // And a tenant never changes its own plan.
    a.patch(&format!("/v1/organizations/{org_a}"), json!({"plan": "enterprise"})).await.expect(403);
}

#[tokio::test]
async fn every_endpoint_needs_its_scope_and_no_key_grants_beyond_its_own() {
    let stack = stack(&[]).await;
    let (org, admin) = organization(&stack.operator, "gamma").await;
    let ws = workspace(&admin, "W", None).await;
    let (some_key, _) = key(&admin, &["keys:read"], &[]).await;
    let cases: Vec<(&str, String, Option<Value>, &str)> = vec![
        ("GET", "/v1/organizations".into(), None, "orgs:read"),
        ("GET", "/v1/organizations/count".into(), None, "orgs:read"),
        ("GET", format!("/v1/organizations/{org}"), None, "orgs:read"),
        ("PATCH", format!("/v1/organizations/{org}"), Some(json!({"plan": "free"})), "orgs:write"),
        ("GET", "/v1/api-keys".into(), None, "keys:read"),
        ("GET", "/v1/api-keys/count".into(), None, "keys:read"),
        ("GET", format!("/v1/api-keys/{some_key}"), None, "keys:read"),
        ("POST", "/v1/api-keys".into(), Some(json!({"name": "n", "scopes": ["keys:read"]})), "keys:write"),
        ("PATCH", format!("/v1/api-keys/{some_key}"), Some(json!({"name": "n"})), "keys:write"),
        ("POST", format!("/v1/api-keys/{some_key}/rotate"), Some(json!({})), "keys:write"),
        ("DELETE", format!("/v1/api-keys/{some_key}"), None, "keys:write"),
        ("GET", "/v1/workspaces".into(), None, "workspaces:read"),
        ("GET", "/v1/workspaces/count".into(), None, "workspaces:read"),
        ("GET", format!("/v1/workspaces/{ws}"), None, "workspaces:read"),
        ("GET", format!("/v1/workspaces/{ws}/tree"), None, "workspaces:read"),
        ("POST", "/v1/workspaces".into(), Some(json!({"name": "n"})), "workspaces:write"),
        ("PATCH", format!("/v1/workspaces/{ws}"), Some(json!({"name": "n"})), "workspaces:write"),
        ("POST", format!("/v1/workspaces/{ws}/archive"), None, "workspaces:write"),
        ("POST", format!("/v1/workspaces/{ws}/restore"), None, "workspaces:write"),
        ("DELETE", format!("/v1/workspaces/{ws}"), None, "workspaces:write"),
        ("GET", "/v1/settings".into(), None, "settings:read"),
        ("PATCH", "/v1/settings".into(), Some(json!({"max_key_lifetime_days": 30})), "settings:write"),
    ];
    // A key holding every scope but the one an endpoint needs gets 403 there.
    let all = [
        "orgs:read",
        "orgs:write",
        "workspaces:read",
        "workspaces:write",
        "users:read",
        "users:write",
        "keys:read",
        "keys:write",
        "interaction_keys:read",
        "interaction_keys:write",
        "external_keys:read",
        "external_keys:write",
        "audit:read",
        "usage:read",
        "settings:read",
        "settings:write",
    ];
    for (method, path, body, needed) in &cases {
        let others: Vec<&str> = all.iter().copied().filter(|s| s != needed).collect();
        let (_, lacking) = key(&admin, &others, &[]).await;
        let reply = lacking.send(method.parse().unwrap(), path, body.as_ref(), &[]).await;
        assert_eq!(reply.status, 403, "{method} {path} without {needed}: {}", reply.text);
        assert_eq!(reply.body["code"], "forbidden");
    }
    // Operator-only endpoints refuse even an all-scopes key.
    admin.post("/v1/organizations", json!({"name": "x", "email": "x@x.test", "plan": "free"})).await.expect(403);
    admin.delete(&format!("/v1/organizations/{org}")).await.expect(403);

    let (_, reader) = key(&admin, &["keys:read", "keys:write"], &[]).await;
    reader.post("/v1/api-keys", json!({"name": "wider", "scopes": ["workspaces:write"]})).await.expect(403);
    reader.post("/v1/api-keys", json!({"name": "wider", "scopes": ["*"]})).await.expect(403);
    let (narrow_id, _) = key(&reader, &["keys:read"], &[]).await;
    reader.patch(&format!("/v1/api-keys/{narrow_id}"), json!({"scopes": ["audit:read"]})).await.expect(403);
    reader.post("/v1/api-keys", json!({"name": "same", "scopes": ["keys:read"]})).await.expect(201);
    // Nor can it take over a stronger key by rotating, revoking or changing it.
    let (strong_id, strong) = key(&admin, &["*"], &[]).await;
    reader.post(&format!("/v1/api-keys/{strong_id}/rotate"), json!({})).await.expect(403);
    reader.patch(&format!("/v1/api-keys/{strong_id}"), json!({"scopes": ["keys:read"]})).await.expect(403);
    reader.delete(&format!("/v1/api-keys/{strong_id}")).await.expect(403);
    strong.get("/v1/api-keys").await.expect(200);
}

#[tokio::test]
async fn revoked_expired_malformed_and_rotated_out_keys_get_401() {
    let stack = stack(&[]).await;
    let (_, admin) = organization(&stack.operator, "delta").await;

    let (id, revoked) = key(&admin, &["keys:read"], &[]).await;
    revoked.get("/v1/api-keys").await.expect(200);
    admin.delete(&format!("/v1/api-keys/{id}")).await.expect(204);
    let reply = revoked.get("/v1/api-keys").await.expect(401);
    assert!(reply.header("www-authenticate").is_some());
    assert_eq!(admin.get(&format!("/v1/api-keys/{id}")).await.expect(200).body["status"], "revoked");

    let expires_at = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let reply = admin
        .post("/v1/api-keys", json!({"name": "short", "scopes": ["keys:read"], "expires_at": expires_at}))
        .await
        .expect(201);
    let (short_id, short) =
        (reply.body["id"].as_str().unwrap().to_owned(), admin.with_key(reply.body["secret"].as_str().unwrap()));
    short.get("/v1/api-keys").await.expect(200);
    e2e::wait_until("the key to expire", std::time::Duration::from_secs(15), || {
        let short = short.clone();
        async move { (short.get("/v1/api-keys").await.status == 401).then_some(()) }
    })
    .await;
    assert_eq!(admin.get(&format!("/v1/api-keys/{short_id}")).await.expect(200).body["status"], "expired");

    // One changed character breaks the checksum: refused before any lookup.
    let reply = admin.post("/v1/api-keys", json!({"name": "typo", "scopes": ["keys:read"]})).await.expect(201);
    let secret = reply.body["secret"].as_str().unwrap().to_owned();
    let mut typo: Vec<char> = secret.chars().collect();
    typo[10] = if typo[10] == 'x' { 'y' } else { 'x' };
    admin.with_key(&typo.into_iter().collect::<String>()).get("/v1/api-keys").await.expect(401);
    admin.with_key("adm_0000").get("/v1/api-keys").await.expect(401);

    // Basic auth with the key as username works like Bearer.
    let basic =
        reqwest::Client::new().get(admin.url("/v1/api-keys")).basic_auth(&secret, Some("")).send().await.unwrap();
    assert_eq!(basic.status(), 200);

    // Rotation: the old secret works during the grace period, then stops; the new one works.
    let key_id = reply.body["id"].as_str().unwrap().to_owned();
    let old = admin.with_key(&secret);
    let rotated =
        admin.post(&format!("/v1/api-keys/{key_id}/rotate"), json!({"grace_period_seconds": 3})).await.expect(200);
    assert_eq!(rotated.header("cache-control"), Some("no-store"));
    let new = admin.with_key(rotated.body["secret"].as_str().unwrap());
    assert_ne!(rotated.body["secret"].as_str().unwrap(), secret);
    old.get("/v1/api-keys").await.expect(200);
    new.get("/v1/api-keys").await.expect(200);
    e2e::wait_until("the grace period to end", std::time::Duration::from_secs(15), || {
        let old = old.clone();
        async move { (old.get("/v1/api-keys").await.status == 401).then_some(()) }
    })
    .await;
    new.get("/v1/api-keys").await.expect(200);
}

#[tokio::test]
async fn cycles_duplicate_names_and_stale_versions_are_refused() {
    let stack = stack(&[]).await;
    let (_, admin) = organization(&stack.operator, "epsilon").await;
    let root = workspace(&admin, "Root", None).await;
    let child = workspace(&admin, "Child", Some(&root)).await;
    let grandchild = workspace(&admin, "Grandchild", Some(&child)).await;

    let reply = admin.patch(&format!("/v1/workspaces/{root}"), json!({"parent_id": grandchild})).await.expect(409);
    assert_eq!(reply.body["code"], "cycle");
    admin.patch(&format!("/v1/workspaces/{root}"), json!({"parent_id": root})).await.expect(409);

    let reply = admin.post("/v1/workspaces", json!({"name": "child", "parent_id": root})).await.expect(409);
    assert_eq!(reply.body["code"], "name_taken");
    // The same name is fine elsewhere in the tree, and a move into a clash is refused too.
    let other = workspace(&admin, "Child", Some(&child)).await;
    let reply = admin.patch(&format!("/v1/workspaces/{other}"), json!({"parent_id": root})).await.expect(409);
    assert_eq!(reply.body["code"], "name_taken");

    // A legal move re-parents the whole subtree.
    let moved = admin.patch(&format!("/v1/workspaces/{grandchild}"), json!({"parent_id": null})).await.expect(200);
    assert_eq!(moved.body["parent_id"], Value::Null);

    let stale = admin.get(&format!("/v1/workspaces/{child}")).await.expect(200).header("etag").unwrap().to_owned();
    let current =
        admin.patch(&format!("/v1/workspaces/{child}"), json!({"webhook_uris": ["https://hooks.test/in"]})).await;
    let etag = current.expect(200).header("etag").unwrap().to_owned();
    assert_ne!(etag, stale);
    let stale = stale.as_str();
    let reply = admin
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/workspaces/{child}"),
            Some(&json!({"name": "C2"})),
            &[("if-match", stale)],
        )
        .await
        .expect(412);
    assert_eq!(reply.body["code"], "precondition_failed");
    admin
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/workspaces/{child}"),
            Some(&json!({"name": "C2"})),
            &[("if-match", &etag)],
        )
        .await
        .expect(200);
    admin
        .send(reqwest::Method::DELETE, &format!("/v1/workspaces/{other}"), None, &[("if-match", "\"99\"")])
        .await
        .expect(412);

    // Settings change by merge patch; archive and restore carry the subtree; delete needs cascade.
    let patched = admin
        .patch(&format!("/v1/workspaces/{root}"), json!({"settings": {"a": {"b": 1}, "webhook": "x"}}))
        .await
        .expect(200);
    assert_eq!(patched.body["settings"], json!({"a": {"b": 1}, "webhook": "x"}));
    let patched =
        admin.patch(&format!("/v1/workspaces/{root}"), json!({"settings": {"a": {"c": 2}, "webhook": null}})).await;
    assert_eq!(patched.expect(200).body["settings"], json!({"a": {"b": 1, "c": 2}}));
    admin.post(&format!("/v1/workspaces/{root}/archive"), json!({})).await.expect(200);
    assert_eq!(admin.get(&format!("/v1/workspaces/{other}")).await.expect(200).body["status"], "archived");
    admin.patch(&format!("/v1/workspaces/{child}"), json!({"name": "nope"})).await.expect(409);
    admin.post(&format!("/v1/workspaces/{root}/restore"), json!({})).await.expect(200);
    assert_eq!(admin.get(&format!("/v1/workspaces/{other}")).await.expect(200).body["status"], "active");
    let reply = admin.delete(&format!("/v1/workspaces/{root}")).await.expect(409);
    assert_eq!(reply.body["code"], "has_children");
    admin.delete(&format!("/v1/workspaces/{root}?cascade=true")).await.expect(204);
    admin.get(&format!("/v1/workspaces/{other}")).await.expect(404);
    // The deleted name is free again.
    workspace(&admin, "Root", None).await;
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_result_and_refuses_another_body() {
    let stack = stack(&[]).await;
    let (_, admin) = organization(&stack.operator, "zeta").await;
    let post = |body: Value, key: &'static str| {
        let admin = admin.clone();
        async move { admin.send(reqwest::Method::POST, "/v1/workspaces", Some(&body), &[("idempotency-key", key)]).await }
    };
    let first = post(json!({"name": "Once"}), "create-once").await.expect(201);
    let again = post(json!({"name": "Once"}), "create-once").await.expect(201);
    let mut expected = first.body.clone();
    assert!(first.body["webhook_secret"].as_str().is_some_and(|s| s.starts_with("whsec_")));
    expected["secret"] = Value::Null;
    expected["webhook_secret"] = Value::Null;
    assert_eq!(again.body, expected, "the replay is the first response, its secrets withheld");
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(admin.get("/v1/workspaces/count?name=Once").await.expect(200).body["count"], 1);
    let other = post(json!({"name": "Twice"}), "create-once").await.expect(422);
    assert_eq!(other.body["errors"][0]["constraint"], "reused");

    // A key-creating replay never repeats the secret.
    let body = json!({"name": "ci", "scopes": ["keys:read"]});
    let created = admin
        .send(reqwest::Method::POST, "/v1/api-keys", Some(&body), &[("idempotency-key", "key-once")])
        .await
        .expect(201);
    assert!(created.body["secret"].as_str().is_some_and(|s| s.starts_with("adm_")));
    let replay = admin
        .send(reqwest::Method::POST, "/v1/api-keys", Some(&body), &[("idempotency-key", "key-once")])
        .await
        .expect(201);
    assert_eq!(replay.body["secret"], Value::Null);
    assert_eq!(replay.body["id"], created.body["id"]);
    assert_eq!(admin.get("/v1/api-keys/count?name=ci").await.expect(200).body["count"], 1);
}

#[tokio::test]
async fn the_501st_request_in_a_minute_is_refused_for_that_key_only() {
    let stack = stack(&[]).await;
    let (_, admin) = organization(&stack.operator, "eta").await;
    let (_, busy) = key(&admin, &["workspaces:read"], &[]).await;
    let (_, quiet) = key(&admin, &["workspaces:read"], &[]).await;
    let first = busy.get("/v1/workspaces/count").await.expect(200);
    assert_eq!(first.header("ratelimit-policy"), Some("\"default\";q=500;w=60"));
    assert!(first.header("ratelimit").unwrap().starts_with("\"default\";r=499;t="));
    let requests = (0..499).map(|_| busy.get("/v1/workspaces/count"));
    for reply in futures::future::join_all(requests).await {
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let refused = busy.get("/v1/workspaces/count").await.expect(429);
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_eq!(refused.body["code"], "rate_limited");
    assert!(refused.header("ratelimit").unwrap().starts_with("\"default\";r=0;"));
    quiet.get("/v1/workspaces/count").await.expect(200);

    // An organization's own limit replaces the default (for every key of the organization).
    let (_, limited) = key(&admin, &["workspaces:read"], &[]).await;
    admin.patch("/v1/settings", json!({"rate_limit_per_minute": 3})).await.expect(200);
    for _ in 0..3 {
        limited.get("/v1/workspaces/count").await.expect(200);
    }
    limited.get("/v1/workspaces/count").await.expect(429);
}

#[tokio::test]
async fn no_secret_reaches_the_event_log_the_logs_or_any_read() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[("RUST_LOG", "debug")]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let (_, admin) = organization(&operator, "theta").await;
    let mut secrets = vec![OPERATOR_KEY.to_owned(), e2e::MASTER_KEY.to_owned()];
    let mut ids = Vec::new();
    for i in 0..3 {
        let reply =
            admin.post("/v1/api-keys", json!({"name": format!("k{i}"), "scopes": ["keys:read"]})).await.expect(201);
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        secrets.push(reply.body["secret"].as_str().unwrap().to_owned());
        ids.push(reply.body["id"].as_str().unwrap().to_owned());
    }
    let rotated = admin.post(&format!("/v1/api-keys/{}/rotate", ids[0]), json!({})).await.expect(200);
    secrets.push(rotated.body["secret"].as_str().unwrap().to_owned());
    // Use the keys, including a failed attempt with a near-miss of one of them.
    admin.with_key(&secrets[3]).get("/v1/api-keys").await.expect(200);
    let near_miss = format!("{}x", &secrets[4]);
    admin.with_key(&near_miss).get("/v1/api-keys").await.expect(401);
    secrets.push(near_miss);
    let ws = workspace(&admin, "W", None).await;

    let mut reads = Vec::new();
    for path in ["/v1/api-keys", "/v1/api-keys/count", "/v1/workspaces", "/v1/organizations", "/v1/settings"] {
        reads.push(admin.get(path).await.expect(200).text);
    }
    for id in &ids {
        let reply = admin.get(&format!("/v1/api-keys/{id}")).await.expect(200);
        assert!(reply.body.get("secret").is_none(), "a read shows no secret field");
        assert!(reply.body["partial_key_hint"].as_str().unwrap().starts_with("adm_..."));
        reads.push(reply.text);
    }
    reads.push(admin.get(&format!("/v1/workspaces/{ws}")).await.expect(200).text);

    let client = db.connect().await;
    let rows = client.query("SELECT data::text || metadata::text FROM events", &[]).await.unwrap();
    let log_text: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let tables = client
        .query(
            "SELECT row_to_json(k)::text FROM api_keys k UNION ALL SELECT row_to_json(i)::text FROM idempotency_keys i",
            &[],
        )
        .await
        .unwrap();
    let table_text: Vec<String> = tables.iter().map(|r| r.get(0)).collect();
    let logs = hub.logs();
    assert!(logs.len() > 1000, "debug logs were written");
    for secret in &secrets {
        let probe = &secret[..secret.len().min(40)];
        assert!(!log_text.iter().any(|t| t.contains(probe)), "a secret is in the event log");
        assert!(!table_text.iter().any(|t| t.contains(probe)), "a secret is in a read model");
        assert!(!reads.iter().any(|t| t.contains(probe)), "a secret is in a read response");
        assert!(!logs.contains(probe), "a secret is in the hub's logs");
    }
}

/// Every row of the read models, in a stable order.
async fn read_models(db: &TestDatabase) -> Vec<String> {
    let client = db.connect().await;
    let mut rows = Vec::new();
    for table in hub::projections::rebuild::TABLES {
        let sql = format!("SELECT row_to_json(t)::text FROM {table} t ORDER BY 1");
        rows.extend(client.query(&sql, &[]).await.unwrap().iter().map(|r| r.get::<_, String>(0)));
    }
    rows
}

#[tokio::test]
async fn rebuilding_the_read_models_from_the_log_gives_identical_rows() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let (_, admin) = organization(&operator, "iota").await;
    let root = workspace(&admin, "Root", None).await;
    let child = workspace(&admin, "Child", Some(&root)).await;
    let leaf = workspace(&admin, "Leaf", Some(&child)).await;
    admin.patch(&format!("/v1/workspaces/{leaf}"), json!({"parent_id": root, "settings": {"x": 1}})).await.expect(200);
    admin.post(&format!("/v1/workspaces/{child}/archive"), json!({})).await.expect(200);
    let (key_id, _) = key(&admin, &["keys:read"], &[&root]).await;
    admin.post(&format!("/v1/api-keys/{key_id}/rotate"), json!({"grace_period_seconds": 60})).await.expect(200);
    admin.patch("/v1/settings", json!({"max_key_lifetime_days": 90})).await.expect(200);
    let other = workspace(&admin, "Doomed", None).await;
    admin.delete(&format!("/v1/workspaces/{other}")).await.expect(204);

    let before = read_models(&db).await;
    let events: i64 = db.connect().await.query_one("SELECT count(*) FROM events", &[]).await.unwrap().get(0);
    assert_eq!(
        before.len() as i64,
        1 + 2 + 4 + events,
        "one organization, two keys, four workspaces, an audit row per event"
    );
    let out = e2e::binaries::hub_command(&db.url, &["projections", "rebuild"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(read_models(&db).await, before, "a rebuild reproduces every row");
    // The rebuilt models serve the API as before.
    let tree = admin.get(&format!("/v1/workspaces/{root}/tree")).await.expect(200).body;
    assert_eq!(tree["children"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_retry_after_a_crash_never_runs_a_committed_command_twice() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let (_, admin) = organization(&operator, "kappa").await;
    let post = |key: &'static str, name: &'static str| {
        let admin = admin.clone();
        async move {
            admin
                .send(
                    reqwest::Method::POST,
                    "/v1/workspaces",
                    Some(&json!({"name": name})),
                    &[("idempotency-key", key)],
                )
                .await
        }
    };
    post("committed", "Once").await.expect(201);
    let client = db.connect().await;
    // As if the hub died after the commit, before storing the response, and the lease ran out.
    let forget = "UPDATE idempotency_keys SET response_status = NULL, response_body = NULL, \
                  locked_until = now() - interval '1 second' WHERE key = $1";
    assert_eq!(client.execute(forget, &[&"committed"]).await.unwrap(), 1);
    let retry = post("committed", "Once").await.expect(409);
    assert_eq!(retry.body["code"], "idempotency_key_committed");
    assert_eq!(admin.get("/v1/workspaces/count?name=Once").await.expect(200).body["count"], 1);

    // As if the hub died before committing: the retry runs the command.
    let subject: String =
        client.query_one("SELECT principal FROM idempotency_keys WHERE key = 'committed'", &[]).await.unwrap().get(0);
    // The claim such a request leaves: its hash, an expired lease, nothing committed.
    let body = serde_json::to_vec(&json!({"name": "Twice"})).unwrap();
    let hash = sha2::Sha256::new_with_prefix(b"POST\0/v1/workspaces\0").chain_update(&body).finalize().to_vec();
    client
        .execute(
            "INSERT INTO idempotency_keys (principal, key, request_hash, locked_until) \
             VALUES ($1, 'uncommitted', $2, now() - interval '1 second')",
            &[&subject, &hash],
        )
        .await
        .unwrap();
    post("uncommitted", "Twice").await.expect(201);
    assert_eq!(admin.get("/v1/workspaces/count?name=Twice").await.expect(200).body["count"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_child_created_while_its_parent_is_deleted_never_outlives_it() {
    let stack = stack(&[]).await;
    let (_, admin) = organization(&stack.operator, "lambda").await;
    let mut both = 0;
    for round in 0..15 {
        let parent = workspace(&admin, &format!("P{round}"), None).await;
        let path = format!("/v1/workspaces/{parent}");
        let (deleted, created) = tokio::join!(
            admin.delete(&path),
            admin.post("/v1/workspaces", json!({"name": "child", "parent_id": parent})),
        );
        assert!(
            !deleted.status.is_server_error() && !created.status.is_server_error(),
            "{} / {}",
            deleted.text,
            created.text
        );
        if deleted.status == 204 && created.status == 201 {
            both += 1;
        }
    }
    assert_eq!(both, 0, "a delete and a child create both succeeded");
    // No live workspace anywhere has a deleted parent.
    let orphans = admin.get("/v1/workspaces?name=child&page_size=100").await.expect(200).body;
    for child in orphans["items"].as_array().unwrap() {
        let parent = child["parent_id"].as_str().unwrap();
        admin.get(&format!("/v1/workspaces/{parent}")).await.expect(200);
    }
}

#[tokio::test]
async fn allowed_ips_restrict_where_a_key_works_and_use_is_recorded_in_batches() {
    let stack = stack(&[]).await;
    let (_, admin) = organization(&stack.operator, "mu").await;
    let elsewhere = admin
        .post("/v1/api-keys", json!({"name": "office", "scopes": ["keys:read"], "allowed_ips": ["10.0.0.0/8"]}))
        .await
        .expect(201);
    let refused = admin.with_key(elsewhere.body["secret"].as_str().unwrap()).get("/v1/api-keys").await.expect(403);
    assert_eq!(refused.header("content-type"), Some("application/problem+json"));
    let here = admin
        .post(
            "/v1/api-keys",
            json!({"name": "local", "scopes": ["keys:read"], "allowed_ips": ["127.0.0.1", "::1/128"]}),
        )
        .await
        .expect(201);
    let id = here.body["id"].as_str().unwrap().to_owned();
    assert_eq!(here.body["last_used_at"], Value::Null);
    admin.with_key(here.body["secret"].as_str().unwrap()).get("/v1/api-keys").await.expect(200);
    // Recorded in memory and written in batches: visible within a few seconds.
    let path = format!("/v1/api-keys/{id}");
    wait_until("last_used_at to be recorded", std::time::Duration::from_secs(15), || {
        let request = admin.get(&path);
        async move { request.await.body["last_used_at"].as_str().map(|_| ()) }
    })
    .await;
}

/// A POST whose body is optional, sent with `Content-Type: application/json` and no body
/// at all (no `Content-Length`, as curl sends it), over a raw connection.
async fn post_without_body(hub: &HubProcess, path: &str, key: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = reqwest::Url::parse(&hub.url("")).unwrap();
    let mut stream = tokio::net::TcpStream::connect((url.host_str().unwrap(), url.port().unwrap())).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn an_optional_body_may_be_absent_even_with_a_json_content_type() {
    let stack = stack(&[]).await;
    let (_, admin) = organization(&stack.operator, "acme").await;
    let ws = workspace(&admin, "Home", None).await;
    let answer = post_without_body(&stack._hub, &format!("/v1/workspaces/{ws}/access-token"), OPERATOR_KEY).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("access_token"), "{answer}");
}
