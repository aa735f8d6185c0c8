//! Lists at scale: cursor walks, refused cursors, deep page numbers and the plans of every
//! list query.

use std::collections::HashMap;

use std::time::Duration;

use e2e::{Api, HubProcess, OPERATOR_KEY, SmtpServer, TestDatabase, wait_until};
use serde_json::{Value, json};
use tokio::sync::mpsc;

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

async fn workspace(api: &Api, name: &str) -> String {
    let reply = api.post("/v1/workspaces", json!({"name": name})).await.expect(201);
    reply.body["id"].as_str().unwrap().to_owned()
}

fn ids(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|w| w["id"].as_str().unwrap().to_owned()).collect()
}

fn next_cursor(page: &Value) -> Option<String> {
    page["pagination"]["next_cursor"].as_str().map(str::to_owned)
}

fn encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn assert_problem(reply: &e2e::api::Reply, code: &str) {
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/problem+json"), "{}", reply.body);
    assert_eq!(reply.body["code"], code, "{}", reply.body);
    assert!(reply.body.get("items").is_none());
}

/// Walks `path` by `next_cursor` to its end; between pages, `churn` is asked to change the
/// list and waited for.
async fn walk(api: &Api, path: &str, churn: &mpsc::Sender<mpsc::Sender<()>>) -> Vec<String> {
    let mut seen = Vec::new();
    let mut page = api.get(path).await.expect(200).body;
    loop {
        seen.extend(ids(&page));
        let Some(cursor) = next_cursor(&page) else { break };
        let (done, mut changed) = mpsc::channel(1);
        churn.send(done).await.unwrap();
        changed.recv().await.unwrap();
        let separator = if path.contains('?') { '&' } else { '?' };
        page = api.get(&format!("{path}{separator}cursor={}", encoded(&cursor))).await.expect(200).body;
    }
    seen
}

#[tokio::test]
async fn a_cursor_walk_sees_every_workspace_that_lived_through_it_exactly_once_while_others_come_and_go() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let (_, admin) = organization(&operator, "walkers").await;
    let mut stable = Vec::new();
    let mut doomed = Vec::new();
    for i in 0..24 {
        stable.push(workspace(&admin, &format!("w-{i:03}")).await);
        doomed.push(workspace(&admin, &format!("w-{i:03}-doomed")).await);
    }

    // Another task inserts a workspace next to an existing one (before and after the
    // walk's position alike) and deletes a doomed one, each time the walk turns a page.
    let (churn, mut asks) = mpsc::channel::<mpsc::Sender<()>>(1);
    let churner = admin.clone();
    let task = tokio::spawn(async move {
        let mut n = 0;
        while let Some(done) = asks.recv().await {
            for _ in 0..2 {
                let near = (n * 7) % 24;
                churner.post("/v1/workspaces", json!({"name": format!("w-{near:03}-new-{n}")})).await.expect(201);
                if let Some(id) = doomed.pop() {
                    churner.delete(&format!("/v1/workspaces/{id}")).await.expect(204);
                }
                n += 1;
            }
            let _ = done.send(()).await;
        }
    });

    for path in [
        "/v1/workspaces?page_size=5&sort_by=name",
        "/v1/workspaces?page_size=4&sort_by=name&sort_order=desc",
        "/v1/workspaces?page_size=7",
        "/v1/workspaces?page_size=3&sort_order=desc&status=active",
    ] {
        let seen = walk(&admin, path, &churn).await;
        let mut times: HashMap<&str, usize> = HashMap::new();
        for id in &seen {
            *times.entry(id.as_str()).or_default() += 1;
        }
        assert!(times.values().all(|n| *n == 1), "{path}: an item came twice");
        for id in &stable {
            assert_eq!(times.get(id.as_str()), Some(&1), "{path}: a workspace that lived throughout was missed");
        }
    }
    drop(churn);
    task.await.unwrap();
}

#[tokio::test]
async fn a_substring_filter_matches_exactly_the_names_containing_its_text_ignoring_case_punctuation_included() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let (_, admin) = organization(&operator, "names").await;
    let (_, other) = organization(&operator, "others").await;
    workspace(&other, "ws-00042").await;
    for name in [
        "ws-00042",
        "WS-00042-b",
        "xs-000421",
        "ws00042",
        "ws-100042",
        "s-0004",
        "Acme Corp EU",
        "acme corp",
        "acme-corp eu",
        "off_50%",
        "offx50%",
        "off_50",
    ] {
        workspace(&admin, name).await;
    }
    let matching = |query: &'static str| {
        let admin = &admin;
        async move {
            let page = admin.get(&format!("/v1/workspaces?page_size=100&sort_by=name&{query}")).await.expect(200).body;
            let mut names: Vec<String> =
                page["items"].as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap().to_owned()).collect();
            names.sort();
            let count = admin.get(&format!("/v1/workspaces/count?{query}")).await.expect(200).body["count"].as_u64();
            assert_eq!(count, Some(names.len() as u64), "{query}");
            names
        }
    };
    assert_eq!(matching("name=s-00042").await, ["WS-00042-b", "ws-00042", "xs-000421"]);
    assert_eq!(matching("name=CORP%20E").await, ["Acme Corp EU", "acme-corp eu"]);
    assert_eq!(matching("name=me%20CORP%20").await, ["Acme Corp EU"]);
    assert_eq!(matching("name=corp").await, ["Acme Corp EU", "acme corp", "acme-corp eu"]);
    assert_eq!(matching("name=off_50%25").await, ["off_50%"]);
    assert_eq!(matching("name=f_5").await, ["off_50", "off_50%"]);
    assert_eq!(matching("name=00042-").await, ["WS-00042-b"]);
}

#[tokio::test]
async fn a_tampered_foreign_or_refiltered_cursor_is_refused_with_a_problem_and_shows_no_rows() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let (_, alpha) = organization(&operator, "alpha").await;
    let (_, beta) = organization(&operator, "beta").await;
    for i in 0..5 {
        workspace(&alpha, &format!("alpha-{i}")).await;
        workspace(&beta, &format!("beta-{i}")).await;
    }
    let first = alpha.get("/v1/workspaces?page_size=2&sort_by=name").await.expect(200).body;
    let cursor = next_cursor(&first).expect("a next cursor on a page with more after it");
    let next = alpha.get(&format!("/v1/workspaces?page_size=2&sort_by=name&cursor={}", encoded(&cursor))).await;
    let next = next.expect(200).body;
    assert_eq!(next["pagination"]["page"], 2);
    assert_eq!(next["items"][0]["name"], "alpha-2");

    // Altered anywhere: refused before anything is read.
    for at in [0, cursor.len() / 2, cursor.len() - 1] {
        let mut bytes = cursor.clone().into_bytes();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(bytes).unwrap();
        let reply = alpha.get(&format!("/v1/workspaces?page_size=2&sort_by=name&cursor={}", encoded(&altered))).await;
        assert_problem(&reply, "invalid_cursor");
    }
    for garbage in ["x", "e30.e30", "%00", &"A".repeat(5000)] {
        let reply = alpha.get(&format!("/v1/workspaces?sort_by=name&cursor={}", encoded(garbage))).await;
        assert_problem(&reply, "invalid_cursor");
    }

    // Issued for other filters, another sort or another organization.
    for other in ["sort_by=name&status=active", "sort_by=created_at", "sort_by=name&sort_order=desc", "name=alpha"] {
        let reply = alpha.get(&format!("/v1/workspaces?{other}&cursor={}", encoded(&cursor))).await;
        assert_problem(&reply, "cursor_mismatch");
    }
    let foreign = beta.get(&format!("/v1/workspaces?page_size=2&sort_by=name&cursor={}", encoded(&cursor))).await;
    assert_problem(&foreign, "cursor_mismatch");
    let operator_reply =
        operator.get(&format!("/v1/workspaces?page_size=2&sort_by=name&cursor={}", encoded(&cursor))).await;
    assert_problem(&operator_reply, "cursor_mismatch");
    let other_list = alpha.get(&format!("/v1/api-keys?page_size=2&sort_by=name&cursor={}", encoded(&cursor))).await;
    assert_problem(&other_list, "cursor_mismatch");

    let both = alpha.get(&format!("/v1/workspaces?sort_by=name&page=2&cursor={}", encoded(&cursor))).await;
    assert_eq!(both.status, 422, "{}", both.body);
}

#[tokio::test]
async fn page_numbers_past_ten_thousand_items_are_refused_naming_the_cursor() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let (_, admin) = organization(&operator, "deep").await;
    workspace(&admin, "only").await;
    admin.get("/v1/workspaces?page=100&page_size=100").await.expect(200);
    admin.get("/v1/workspaces?page=500&page_size=20").await.expect(200);
    for deep in ["page=101&page_size=100", "page=501", "page=10001&page_size=1"] {
        let reply = admin.get(&format!("/v1/workspaces?{deep}")).await;
        assert_problem(&reply, "page_too_deep");
        assert!(reply.body["detail"].as_str().unwrap().contains("cursor"), "{}", reply.body);
    }
    for list in ["/v1/users", "/v1/api-keys", "/v1/organizations"] {
        assert_problem(&admin.get(&format!("{list}?page=101&page_size=100")).await, "page_too_deep");
    }
}

/// Fills the read models with enough rows that reading any of them whole is a choice the
/// planner would not make if an index served the query.
async fn load(db: &TestDatabase) -> hub::http::lists::Subjects {
    let client = db.connect().await;
    let org = uuid::Uuid::new_v4();
    let workspace = uuid::Uuid::new_v4();
    // Straight into the tables, around the projections' triggers: only the plans matter here.
    client
        .batch_execute(&format!(
            "SET session_replication_role = replica;
             INSERT INTO organizations (id, name, email, plan, status, version, created_at, updated_at)
               SELECT CASE WHEN n = 0 THEN '{org}'::uuid ELSE gen_random_uuid() END, 'org-' || n, 'o@x.test', 'pro',
                      CASE WHEN n % 10 = 0 THEN 'deleted' ELSE 'active' END::organization_status, 1,
                      now() - n * interval '1 second', now()
                 FROM generate_series(0, 2000) n;
             INSERT INTO workspaces (id, organization_id, parent_id, instance_id, name, status, settings,
                                     webhook_uris, public_keys, ancestors, version, created_at, updated_at)
               SELECT id, CASE WHEN n % 4 = 0 THEN gen_random_uuid() ELSE '{org}'::uuid END,
                      CASE WHEN n % 1000 = 1 THEN '{workspace}'::uuid END,
                      'instance-' || (n % 3), 'bench-' || n,
                      (ARRAY['active', 'active', 'active', 'archived', 'deleted'])[1 + n % 5]::workspace_status,
                      '{{}}', '[]', '[]', CASE WHEN n % 1000 = 1 THEN ARRAY['{workspace}'::uuid, id] ELSE ARRAY[id] END, 1,
                      now() - n * interval '1 second', now()
                 FROM (SELECT gen_random_uuid() AS id, n FROM generate_series(1, 100000) n) s;
             INSERT INTO workspaces (id, organization_id, parent_id, instance_id, name, status, settings,
                                     webhook_uris, public_keys, ancestors, version, created_at, updated_at)
               VALUES ('{workspace}', '{org}', NULL, 'instance-0', 'root', 'active', '{{}}', '[]', '[]',
                       ARRAY['{workspace}'::uuid], 1, now(), now());
             INSERT INTO users (id, organization_id, email, name, status, version, created_at, updated_at)
               SELECT gen_random_uuid(), CASE WHEN n % 4 = 0 THEN gen_random_uuid() ELSE '{org}'::uuid END,
                      'user-' || n || '@x.test', 'User ' || n,
                      (ARRAY['active', 'active', 'disabled', 'deleted'])[1 + n % 4]::user_status, 1,
                      now() - n * interval '1 second', now()
                 FROM generate_series(1, 50000) n;
             INSERT INTO api_keys (id, organization_id, name, scopes, workspace_ids, allowed_ips, created_by_type,
                                   key_hash, partial_key_hint, version, created_at, updated_at, revoked_at,
                                   expires_at, owner_user_id)
               SELECT gen_random_uuid(), CASE WHEN n % 4 = 0 THEN gen_random_uuid() ELSE '{org}'::uuid END,
                      'key-' || n, ARRAY['*'],
                      CASE WHEN n % 2 = 0 THEN ARRAY['{workspace}'::uuid] ELSE ARRAY[]::uuid[] END,
                      ARRAY[]::text[], 'operator', sha256(n::text::bytea), 'ak_…', 1,
                      now() - n * interval '1 second', now(),
                      CASE WHEN n % 5 = 0 THEN now() END, CASE WHEN n % 3 = 0 THEN now() + (n - 25000) * interval '1 minute' END,
                      CASE WHEN n % 7 = 0 THEN gen_random_uuid() END
                 FROM generate_series(1, 50000) n;
             INSERT INTO api_key_usage (key_id, last_used_at) SELECT id, now() FROM api_keys;
             INSERT INTO members (workspace_id, user_id, role, joined_at)
               SELECT CASE WHEN n % 200 = 0 THEN '{workspace}'::uuid ELSE gen_random_uuid() END, u.id,
                      'member', now() - n * interval '1 second'
                 FROM (SELECT id, row_number() OVER () AS n FROM users) u;
             INSERT INTO invitations (id, workspace_id, email, role, status, token_hash, expires_at, created_at,
                                      updated_at)
               SELECT gen_random_uuid(), CASE WHEN n % 200 = 0 THEN '{workspace}'::uuid ELSE gen_random_uuid() END,
                      'user-' || n || '@x.test', 'member',
                      (ARRAY['pending', 'accepted'])[1 + n % 2]::invitation_status, sha256(('i' || n)::bytea),
                      now() + interval '1 day', now() - n * interval '1 second', now()
                 FROM generate_series(1, 50000) n;
             INSERT INTO audit_log (position, id, event_type, recorded_at, actor_type, actor_id, actor_ip,
                                    organization_id, workspace_id, resource_type, resource_id, data, request_id)
               SELECT n, gen_random_uuid(),
                      (ARRAY['WorkspaceCreated', 'WorkspaceUpdated', 'ApiKeyCreated', 'MemberAdded'])[1 + n % 4],
                      now() - (200000 - n) * interval '1 second', 'api_key', 'k-' || (n % 100), '192.0.2.1',
                      CASE WHEN n % 4 = 0 THEN gen_random_uuid() ELSE '{org}'::uuid END,
                      CASE WHEN n % 200 = 0 THEN '{workspace}'::uuid WHEN n % 3 = 0 THEN NULL ELSE gen_random_uuid() END,
                      'workspace', gen_random_uuid(), '{{}}', 'req-' || n
                 FROM generate_series(1, 100000) n;
             INSERT INTO external_keys (id, workspace_id, organization_id, provider, name, key_hint, settings,
                                        created_at)
               SELECT gen_random_uuid(), CASE WHEN n % 200 = 0 THEN '{workspace}'::uuid ELSE gen_random_uuid() END,
                      '{org}', 'van', 'ext-' || n, 'x9Zq', '{{}}', now() - n * interval '1 second'
                 FROM generate_series(1, 20000) n;
             RESET session_replication_role;"
        ))
        .await
        .expect("load the read models");
    client.batch_execute("VACUUM ANALYZE").await.expect("vacuum and analyze the read models");
    hub::http::lists::Subjects {
        organization_id: org,
        workspace_id: workspace,
        instance_id: "instance-1".into(),
        email: "user-1@x.test".into(),
    }
}

/// Lists are read as the planner chooses: no list may read a large table (10,000 rows or
/// more) whole. A count reads every row it counts, and of a narrow table the planner may
/// rightly prefer to read it whole when most of it is counted; so counts are checked for an
/// index that serves them (with sequential scans priced out), and the counts the
/// organizations' counters answer must not read the workspaces at all.
#[tokio::test]
async fn no_list_or_count_statement_reads_a_large_table_from_end_to_end() {
    let db = TestDatabase::new().await;
    let subjects = load(&db).await;
    let client = db.connect().await;
    let large: Vec<String> = client
        .query("SELECT relname::text FROM pg_class WHERE relkind = 'r' AND reltuples >= 10000", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for table in
        ["workspaces", "users", "api_keys", "api_key_usage", "members", "invitations", "audit_log", "external_keys"]
    {
        assert!(large.iter().any(|t| t == table), "{table} is loaded large: {large:?}");
    }
    let statements = hub::http::lists::statements(&subjects);
    assert!(statements.len() > 200, "every list, sort, filter and principal: {}", statements.len());
    let mut scans = Vec::new();
    for statement in &statements {
        let count = statement.name.contains("/count");
        client.batch_execute(if count { "SET enable_seqscan = off" } else { "RESET enable_seqscan" }).await.unwrap();
        let rows = client
            .query(&format!("EXPLAIN {}", statement.sql), &statement.params())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", statement.name, statement.sql));
        let plan: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
        let reads_whole = plan.iter().any(|line| {
            large.iter().any(|table| {
                line.contains(&format!("Seq Scan on {table} ")) || line.ends_with(&format!("Seq Scan on {table}"))
            })
        });
        if reads_whole {
            scans.push(format!("{}\n{}\n{}", statement.name, statement.sql, plan.join("\n")));
        }
    }
    assert!(
        scans.is_empty(),
        "{} of {} plans read a table whole:\n\n{}",
        scans.len(),
        statements.len(),
        scans.join("\n\n")
    );
}

/// The counts the organization's counters answer, next to the same counts over the rows
/// (a `name=` filter every workspace matches sends them through the index instead).
async fn counts(api: &Api) -> [(i64, i64); 3] {
    let mut out = [(0, 0); 3];
    for (i, status) in ["", "status=active", "status=archived"].iter().enumerate() {
        let counter = api.get(&format!("/v1/workspaces/count?{status}")).await.expect(200).body["count"].as_i64();
        let rows = api.get(&format!("/v1/workspaces/count?name=c-&{status}")).await.expect(200).body["count"].as_i64();
        out[i] = (counter.unwrap(), rows.unwrap());
    }
    out
}

#[tokio::test]
async fn counts_by_status_stay_exact_through_archives_restores_deletes_and_a_rebuild() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let (_, admin) = organization(&operator, "counted").await;
    let (_, other) = organization(&operator, "elsewhere").await;
    workspace(&other, "c-elsewhere").await;
    let root = workspace(&admin, "c-root").await;
    let mut children = Vec::new();
    for i in 0..4 {
        let child = admin.post("/v1/workspaces", json!({"name": format!("c-{i}"), "parent_id": root})).await;
        children.push(child.expect(201).body["id"].as_str().unwrap().to_owned());
    }
    let lone = workspace(&admin, "c-lone").await;
    assert_eq!(counts(&admin).await, [(6, 6), (6, 6), (0, 0)]);

    admin.post(&format!("/v1/workspaces/{root}/archive"), json!({})).await.expect(200);
    assert_eq!(counts(&admin).await, [(6, 6), (1, 1), (5, 5)]);
    admin.post(&format!("/v1/workspaces/{root}/restore"), json!({})).await.expect(200);
    admin.post(&format!("/v1/workspaces/{}/archive", children[1]), json!({})).await.expect(200);
    assert_eq!(counts(&admin).await, [(6, 6), (5, 5), (1, 1)]);
    admin.delete(&format!("/v1/workspaces/{}", children[1])).await.expect(204);
    admin.delete(&format!("/v1/workspaces/{lone}")).await.expect(204);
    assert_eq!(counts(&admin).await, [(4, 4), (4, 4), (0, 0)]);
    admin.post(&format!("/v1/workspaces/{root}/archive"), json!({})).await.expect(200);
    admin.delete(&format!("/v1/workspaces/{root}?cascade=true")).await.expect(204);
    assert_eq!(counts(&admin).await, [(0, 0), (0, 0), (0, 0)]);
    let survivor = workspace(&admin, "c-survivor").await;
    admin.post(&format!("/v1/workspaces/{survivor}/archive"), json!({})).await.expect(200);
    let before = counts(&admin).await;
    assert_eq!(before, [(1, 1), (0, 0), (1, 1)]);
    assert_eq!(counts(&operator).await, [(2, 2), (1, 1), (1, 1)], "the operator counts every organization");

    let out = e2e::binaries::hub_command(&db.url, &["projections", "rebuild"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(counts(&admin).await, before, "a rebuild recreates the counters");
}

/// Walks `path` by `next_cursor` alone, with nothing changing.
async fn walk_quietly(api: &Api, path: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut next = Some(path.to_owned());
    while let Some(current) = next {
        let page = api.get(&current).await.expect(200).body;
        seen.extend(ids(&page));
        next = next_cursor(&page).map(|cursor| format!("{path}&cursor={}", encoded(&cursor)));
        // Past the first page the `next` link goes by cursor too.
        if next.is_some() && current.contains("cursor=") {
            let link = page["links"].as_array().unwrap().iter().find(|l| l["rel"] == "next").unwrap();
            assert!(link["href"].as_str().unwrap().contains("cursor="), "{path}: {link}");
        }
    }
    seen
}

#[tokio::test]
async fn every_list_walks_by_cursor_through_the_same_items_as_one_large_page() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let (_, admin) = organization(&operator, "lister").await;
    for i in 0..3 {
        organization(&operator, &format!("lister-{i}")).await;
    }
    for i in 0..6 {
        admin
            .post("/v1/api-keys", json!({"name": format!("key {}", 5 - i), "scopes": ["keys:read"]}))
            .await
            .expect(201);
    }
    let ws = workspace(&admin, "invited").await;
    for i in 0..4 {
        workspace(&admin, &format!("other {i}")).await;
    }
    for i in 0..5 {
        let invitation = json!({"email": format!("person{i}@example.test"), "role": "member"});
        admin.post(&format!("/v1/workspaces/{ws}/invitations"), invitation).await.expect(201);
    }
    let lists = [
        (&admin, "/v1/api-keys?sort_by=name"),
        (&admin, "/v1/api-keys?sort_order=desc"),
        (&admin, "/v1/api-keys?status=active&sort_by=name&sort_order=desc"),
        (&operator, "/v1/organizations?sort_by=name"),
        (&operator, "/v1/organizations?sort_order=desc"),
        (&operator, "/v1/workspaces?sort_by=name"),
        (&admin, "/v1/workspaces?sort_by=name&sort_order=desc"),
        (&admin, &format!("/v1/workspaces/{ws}/invitations?sort_order=desc")),
        (&admin, &format!("/v1/workspaces/{ws}/invitations?status=pending")),
        (&admin, "/v1/audit-logs?sort_order=desc"),
        (&admin, "/v1/audit-logs?event_type=ApiKeyCreated"),
        (&operator, "/v1/audit-logs?sort_order=asc"),
        (&admin, &format!("/v1/audit-logs?workspace_id={ws}&sort_order=asc")),
    ];
    for (api, path) in lists {
        let whole = ids(&api.get(&format!("{path}&page_size=100")).await.expect(200).body);
        assert!(whole.len() >= 4, "{path}: {whole:?}");
        assert_eq!(walk_quietly(api, &format!("{path}&page_size=2")).await, whole, "{path}");
        assert_eq!(walk_quietly(api, &format!("{path}&page_size=3")).await, whole, "{path}");
    }
}

/// User counts from the counters next to the same counts over the rows (an `email=` filter
/// every user matches).
async fn user_counts(api: &Api) -> [(i64, i64); 3] {
    let mut out = [(0, 0); 3];
    for (i, status) in ["", "status=active", "status=disabled"].iter().enumerate() {
        let counter = api.get(&format!("/v1/users/count?{status}")).await.expect(200).body["count"].as_i64();
        let rows = api.get(&format!("/v1/users/count?email=%40&{status}")).await.expect(200).body["count"].as_i64();
        out[i] = (counter.unwrap(), rows.unwrap());
    }
    out
}

#[tokio::test]
async fn user_counts_by_status_stay_exact_as_users_join_are_disabled_and_deleted() {
    let db = TestDatabase::new().await;
    let smtp = SmtpServer::start().expect("start the SMTP server");
    let hub = HubProcess::spawn(
        &db.url,
        &["--single-node"],
        &[("SMTP_URL", &smtp.url()), ("HUB_PUBLIC_URL", "https://console.example.test")],
    )
    .await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let (_, admin) = organization(&operator, "people").await;
    let ws = workspace(&admin, "team").await;
    let mut users = Vec::new();
    for i in 0..3 {
        let email = format!("person{i}@example.test");
        admin
            .post(&format!("/v1/workspaces/{ws}/invitations"), json!({"email": email, "role": "member"}))
            .await
            .expect(201);
        let mail = wait_until(&format!("an email to {email}"), Duration::from_secs(30), || {
            let found = smtp.received().into_iter().find(|m| m.to == email);
            async move { found }
        })
        .await;
        let token = mail.link_token("https://console.example.test/invitations/accept").expect("an accept link");
        let accepted = admin.anonymous().post("/v1/invitations/accept", json!({"token": token, "name": "P"})).await;
        users.push(accepted.expect(200).body["user_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(user_counts(&admin).await, [(3, 3), (3, 3), (0, 0)]);
    admin.patch(&format!("/v1/users/{}", users[0]), json!({"status": "disabled"})).await.expect(200);
    admin.patch(&format!("/v1/users/{}", users[1]), json!({"status": "disabled"})).await.expect(200);
    assert_eq!(user_counts(&admin).await, [(3, 3), (1, 1), (2, 2)]);
    admin.patch(&format!("/v1/users/{}", users[1]), json!({"status": "active"})).await.expect(200);
    admin.delete(&format!("/v1/users/{}", users[0])).await.expect(204);
    assert_eq!(user_counts(&admin).await, [(2, 2), (2, 2), (0, 0)]);
    assert_eq!(user_counts(&operator).await, [(2, 2), (2, 2), (0, 0)]);
    let out = e2e::binaries::hub_command(&db.url, &["projections", "rebuild"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(user_counts(&admin).await, [(2, 2), (2, 2), (0, 0)], "a rebuild recreates the counters");
}
