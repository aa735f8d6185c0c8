//! `GET /v1/usage`: interactions accepted and refused by the instances, webhook deliveries
//! and admin requests, counted per hour and reported to the hub within 15 seconds, in
//! single-node and multi-instance mode; grouped by hour, day, interaction key or workspace;
//! a usage report sent twice counts once; an organization sees only its own counters and a
//! key restricted to workspaces only theirs; bad parameters get a 422 problem.

use std::time::Duration;

use e2e::{Api, HubProcess, NatsServer, OPERATOR_KEY, PgServer, Reply, TestDatabase, wait_until};
use serde_json::{Value, json};
use uuid::Uuid;

/// How long a request may take to be counted (the contract's bound).
const COUNTED_WITHIN: Duration = Duration::from_secs(15);
/// How long a change on the hub may take to reach an instance.
const WAIT: Duration = Duration::from_secs(30);

/// An organization with an admin key, as the operator creates them.
async fn organization(operator: &Api, name: &str) -> (String, Api) {
    let org = operator
        .post("/v1/organizations", json!({"name": name, "email": "ops@org.test", "plan": "pro"}))
        .await
        .expect(201);
    let org = org.body["id"].as_str().unwrap().to_owned();
    let key = operator.post("/v1/api-keys", json!({"name": "admin", "scopes": ["*"], "organization_id": org})).await;
    let admin = operator.with_key(key.expect(201).body["secret"].as_str().unwrap());
    (org, admin)
}

async fn workspace(admin: &Api, name: &str, instance: Option<&str>) -> String {
    let mut body = json!({"name": name});
    if let Some(instance) = instance {
        body["instance_id"] = json!(instance);
    }
    admin.post("/v1/workspaces", body).await.expect(201).body["id"].as_str().unwrap().to_owned()
}

/// An interaction key of `workspace`, routed to a new external key: (id, secret).
async fn interaction_key(admin: &Api, workspace: &str) -> (String, String) {
    let external = admin
        .post(
            &format!("/v1/workspaces/{workspace}/external-keys"),
            json!({"provider": "van", "name": "VAN", "api_key": "van-credential-0001"}),
        )
        .await
        .expect(201);
    let body = json!({"name": "Canvass",
        "destination": {"type": "external_key", "external_key_id": external.body["id"]}});
    let created = admin.post(&format!("/v1/workspaces/{workspace}/interaction-keys"), body).await.expect(201).body;
    (created["id"].as_str().unwrap().to_owned(), created["secret"].as_str().unwrap().to_owned())
}

fn interaction() -> Value {
    json!({"type": "door.knocked", "payload": {"voter": 42}})
}

/// Posts until the key is known where `api` points (it reaches the instance
/// asynchronously; refusals of an unknown key count for no one).
async fn first_accepted(api: &Api) {
    wait_until("the interaction to be accepted", WAIT, || {
        let api = api.clone();
        async move {
            let reply = api.post("/v1/interactions", interaction()).await;
            assert!(matches!(reply.status.as_u16(), 202 | 401), "{}", reply.text);
            (reply.status == 202).then_some(())
        }
    })
    .await
}

/// `count` more accepted interactions and one refused for its body, by a known key.
async fn traffic(api: &Api, count: usize) {
    for _ in 0..count {
        api.post("/v1/interactions", interaction()).await.expect(202);
    }
    api.post("/v1/interactions", json!({"type": "Not A Type", "payload": 1})).await.expect(422);
}

fn usage_path(period: &str, group_by: &str) -> String {
    format!("/v1/usage?period={period}&group_by={group_by}")
}

/// The sum of a counter over the items.
fn total(reply: &Reply, counter: &str) -> i64 {
    reply.body["items"].as_array().unwrap().iter().map(|item| item[counter].as_i64().unwrap()).sum()
}

/// The item whose key is `key`.
fn item<'a>(reply: &'a Reply, key: &str) -> &'a Value {
    reply.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["key"] == key)
        .unwrap_or_else(|| panic!("no item {key}: {}", reply.text))
}

/// Waits (at most 15 s) until `admin` sees `accepted` and `rejected` interactions in the
/// last 24 hours.
async fn counted(admin: &Api, accepted: i64, rejected: i64) -> Reply {
    wait_until("the interactions to be counted", COUNTED_WITHIN, || {
        let admin = admin.clone();
        async move {
            let reply = admin.get(&usage_path("24h", "hour")).await.expect(200);
            let seen = (total(&reply, "interactions_accepted"), total(&reply, "interactions_rejected"));
            assert!(seen.0 <= accepted && seen.1 <= rejected, "counted too much: {}", reply.text);
            (seen == (accepted, rejected)).then_some(reply)
        }
    })
    .await
}

/// Checks every grouping of what `admin` sees: `accepted` and `rejected` interactions by
/// key `key_id` of workspace `ws`, and the admin requests made so far.
async fn groupings_agree(admin: &Api, ws: &str, key_id: &str, accepted: i64, rejected: i64) {
    let by_hour = counted(admin, accepted, rejected).await;
    assert_eq!((by_hour.body["period"].clone(), by_hour.body["group_by"].clone()), (json!("24h"), json!("hour")));
    for item in by_hour.body["items"].as_array().unwrap() {
        let start = chrono::DateTime::parse_from_rfc3339(item["key"].as_str().unwrap()).unwrap();
        assert_eq!(start.timestamp() % 3600, 0, "an hour's start: {item}");
        assert_eq!(item.as_object().unwrap().len(), 6, "{item}");
    }
    // The admin requests of this test: organization, keys, workspace... all counted.
    let admin_requests = wait_until("the admin requests to be counted", COUNTED_WITHIN, || {
        let admin = admin.clone();
        async move {
            let reply = admin.get(&usage_path("24h", "hour")).await.expect(200);
            let requests = total(&reply, "admin_requests");
            (requests >= 4).then_some(requests)
        }
    })
    .await;

    let by_day = admin.get(&usage_path("7d", "day")).await.expect(200);
    assert_eq!(by_day.body["period"], "7d");
    assert_eq!(total(&by_day, "interactions_accepted"), accepted);
    for item in by_day.body["items"].as_array().unwrap() {
        assert!(item["key"].as_str().unwrap().ends_with("T00:00:00Z"), "a day's start: {item}");
    }
    assert!(total(&by_day, "admin_requests") >= admin_requests);

    let by_key = admin.get(&usage_path("30d", "interaction_key")).await.expect(200);
    assert_eq!(by_key.body["items"].as_array().unwrap().len(), 1, "{}", by_key.text);
    let mine = item(&by_key, key_id);
    assert_eq!(
        (mine["interactions_accepted"].as_i64(), mine["interactions_rejected"].as_i64()),
        (Some(accepted), Some(rejected))
    );
    assert_eq!((mine["deliveries_succeeded"].as_i64(), mine["deliveries_failed"].as_i64()), (Some(0), Some(0)));
    assert_eq!(mine["admin_requests"], 0, "admin requests belong to no interaction key");

    let by_workspace = admin.get(&usage_path("24h", "workspace")).await.expect(200);
    let mine = item(&by_workspace, ws);
    assert_eq!(mine["interactions_accepted"], accepted);
    assert!(mine["admin_requests"].as_i64().unwrap() >= 2, "requests on the workspace's routes count for it: {mine}");

    // The defaults: the last 24 hours by hour; a workspace filter keeps to that workspace.
    let defaults = admin.get("/v1/usage").await.expect(200);
    assert_eq!((defaults.body["period"].clone(), defaults.body["group_by"].clone()), (json!("24h"), json!("hour")));
    assert_eq!(total(&defaults, "interactions_accepted"), accepted);
    let filtered = admin.get(&format!("/v1/usage?group_by=workspace&workspace_id={ws}")).await.expect(200);
    assert_eq!(filtered.body["items"].as_array().unwrap().len(), 1, "{}", filtered.text);
    let other = admin.get(&format!("/v1/usage?workspace_id={}", Uuid::now_v7())).await.expect(200);
    assert_eq!(other.body["items"], json!([]));
}

#[tokio::test]
async fn in_single_node_mode_usage_reflects_accepted_interactions_within_15_seconds_grouped_as_asked() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let (_, admin) = organization(&operator, "Acme").await;
    let ws = workspace(&admin, "Field", None).await;
    let (key_id, secret) = interaction_key(&admin, &ws).await;
    let ingest = Api::new(&hub.url(""), Some(&secret));
    first_accepted(&ingest).await;
    traffic(&ingest, 4).await;

    groupings_agree(&admin, &ws, &key_id, 5, 1).await;
}

#[tokio::test]
async fn in_multi_instance_mode_usage_reflects_accepted_interactions_within_15_seconds_grouped_as_asked() {
    let nats = NatsServer::start().unwrap();
    let hub_db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&hub_db.url, &[], &[("NATS_URL", &nats.url())]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let (_, admin) = organization(&operator, "Acme").await;
    let instance_db = PgServer::shared().empty_database().await;
    let instance = HubProcess::instance_over_nats("alpha", &instance_db.url, &nats.url()).await;
    let ws = workspace(&admin, "Field", Some("alpha")).await;
    let (key_id, secret) = interaction_key(&admin, &ws).await;
    let ingest = Api::new(&instance.url(""), Some(&secret));
    first_accepted(&ingest).await;
    traffic(&ingest, 2).await;

    groupings_agree(&admin, &ws, &key_id, 3, 1).await;
    // The instance keeps its own counters, and its outbox empties once a hub applied it.
    let client = instance_db.connect().await;
    let row = client
        .query_one(
            "SELECT sum(interactions_accepted)::int8, (SELECT count(*) FROM usage_reports) FROM usage_counters",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (3, 0));
}

/// A NATS connection of instance `id`, as its credentials allow (its own inbox).
async fn as_instance(nats: &NatsServer, id: &str) -> async_nats::Client {
    let (url, credentials) = shared::link::split_credentials(&nats.url_as(id));
    let (user, password) = credentials.unwrap();
    async_nats::ConnectOptions::with_user_and_password(user, password)
        .custom_inbox_prefix(shared::link::inbox_prefix(id))
        .connect(url)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_usage_report_sent_again_counts_once_and_only_for_the_reporting_instances_workspaces() {
    let nats = NatsServer::start().unwrap();
    let hub_db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&hub_db.url, &[], &[("NATS_URL", &nats.url())]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let (_, admin) = organization(&operator, "Acme").await;
    let on_alpha = workspace(&admin, "Alpha", Some("alpha")).await;
    let on_beta = workspace(&admin, "Beta", Some("beta")).await;
    let key = Uuid::now_v7();
    let hour = chrono::Utc::now().format("%Y-%m-%dT%H:00:00Z").to_string();
    let count = |workspace: &str| {
        json!({"workspace_id": workspace, "interaction_key_id": key, "hour": hour, "interactions_accepted": 5,
               "interactions_rejected": 2, "deliveries_succeeded": 3, "deliveries_failed": 1})
    };
    let report = json!({"id": Uuid::now_v7(), "counts": [count(&on_alpha), count(&on_beta)]});
    let alpha = as_instance(&nats, "alpha").await;
    let subject = shared::link::subject("alpha", shared::link::Op::Usage);
    for _ in 0..3 {
        // Sent again as an instance does when a hub's reply was lost.
        let reply = alpha.request(subject.clone(), serde_json::to_vec(&report).unwrap().into()).await.unwrap();
        let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(reply, json!({"Ok": null}));
    }

    let by_workspace = admin.get(&usage_path("24h", "workspace")).await.expect(200);
    let counted = item(&by_workspace, &on_alpha);
    for (counter, value) in [
        ("interactions_accepted", 5),
        ("interactions_rejected", 2),
        ("deliveries_succeeded", 3),
        ("deliveries_failed", 1),
    ] {
        assert_eq!(counted[counter], value, "{counter} counted once: {}", by_workspace.text);
    }
    assert!(
        by_workspace.body["items"].as_array().unwrap().iter().all(|item| item["key"] != on_beta.as_str()),
        "alpha reports nothing of beta's workspaces: {}",
        by_workspace.text
    );

    // A report that is not one is refused, and counts nothing.
    let reply = alpha.request(subject, b"{\"id\": 1}".to_vec().into()).await.unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["Err"]["code"], "bad_request");
    let again = admin.get(&usage_path("24h", "workspace")).await.expect(200);
    assert_eq!(item(&again, &on_alpha)["interactions_accepted"], 5);
}

#[tokio::test]
async fn usage_is_kept_to_the_callers_organization_and_workspaces_and_bad_parameters_get_a_422() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let (org, admin) = organization(&operator, "Acme").await;
    let (_, other_admin) = organization(&operator, "Other").await;
    let ws = workspace(&admin, "Field", None).await;
    let sibling = workspace(&admin, "Office", None).await;
    let (_, secret) = interaction_key(&admin, &ws).await;
    let ingest = Api::new(&hub.url(""), Some(&secret));
    first_accepted(&ingest).await;
    traffic(&ingest, 1).await;
    counted(&admin, 2, 1).await;

    // Another organization sees none of it, even naming the workspace.
    for path in [usage_path("30d", "workspace"), format!("/v1/usage?workspace_id={ws}&group_by=interaction_key")] {
        let seen = other_admin.get(&path).await.expect(200);
        assert_eq!(total(&seen, "interactions_accepted"), 0, "{}", seen.text);
    }
    // The operator sees every organization's, or one.
    let everyone = operator.get(&format!("/v1/usage?group_by=workspace&organization_id={org}")).await.expect(200);
    assert_eq!(item(&everyone, &ws)["interactions_accepted"], 2);

    // A key restricted to a workspace sees that subtree only, never the organization's own
    // admin requests.
    let restricted = |workspace: &str, scopes: Value| {
        let admin = admin.clone();
        let body = json!({"name": "restricted", "scopes": scopes, "workspace_ids": [workspace]});
        async move {
            let created = admin.post("/v1/api-keys", body).await.expect(201);
            admin.with_key(created.body["secret"].as_str().unwrap())
        }
    };
    let inside = restricted(&ws, json!(["usage:read"])).await;
    let seen = inside.get(&usage_path("24h", "workspace")).await.expect(200);
    assert_eq!(seen.body["items"].as_array().unwrap().len(), 1, "{}", seen.text);
    assert_eq!(item(&seen, &ws)["interactions_accepted"], 2);
    let beside = restricted(&sibling, json!(["usage:read"])).await;
    let seen = beside.get(&usage_path("24h", "hour")).await.expect(200);
    assert_eq!(total(&seen, "interactions_accepted"), 0, "{}", seen.text);
    let seen = beside.get(&format!("/v1/usage?workspace_id={ws}")).await.expect(200);
    assert_eq!(seen.body["items"], json!([]));

    // `usage:read` is needed.
    let no_scope = restricted(&ws, json!(["workspaces:read"])).await;
    let reply = no_scope.get("/v1/usage").await;
    assert_eq!(reply.status.as_u16(), 403, "{}", reply.text);

    for bad in [
        "/v1/usage?period=1y",
        "/v1/usage?period=",
        "/v1/usage?group_by=month",
        "/v1/usage?group_by=HOUR",
        "/v1/usage?workspace_id=nope",
        "/v1/usage?organization_id=1",
        "/v1/usage?limit=5",
        "/v1/usage?period=24h&period=7d",
    ] {
        let reply = admin.get(bad).await;
        assert_eq!(reply.status.as_u16(), 422, "{bad}: {}", reply.text);
        assert_eq!(reply.header("content-type"), Some("application/problem+json"), "{bad}");
        assert_eq!(reply.body["code"], "validation_failed", "{bad}: {}", reply.text);
    }
    let _ = Api::anonymous(&admin).get("/v1/usage").await.expect(401);
}
