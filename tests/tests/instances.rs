//! Worker instances: real hub, real nats-server, real instance processes, each instance
//! with its own PostgreSQL database. An instance's state must equal a replay of the log.

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::{Api, HubProcess, InstanceProcess, NatsServer, OPERATOR_KEY, PgServer, TestDatabase, wait_until};
use serde_json::{Value, json};
use shared::RecordedEvent;
use shared::domain::Aggregate;
use shared::domain::workspace::Workspace;
use uuid::Uuid;

/// Workspace id → (stream version, state, or `None` once deleted).
type States = BTreeMap<Uuid, (i64, Option<Value>)>;

/// What `instance_id` must hold: the hub's log folded with the domain's own `apply`.
async fn replay(operator: &Api, instance_id: &str) -> States {
    let mut events: Vec<RecordedEvent> = Vec::new();
    loop {
        let page = operator.get(&format!("/v1/events?after={}&limit=1000", events.len())).await.expect(200).body;
        let items: Vec<RecordedEvent> = serde_json::from_value(page["items"].clone()).unwrap();
        if items.is_empty() {
            break;
        }
        events.extend(items);
    }
    let mut workspaces: BTreeMap<Uuid, (i64, Workspace)> = BTreeMap::new();
    for event in &events {
        let Some(id) = event.stream_id.strip_prefix("workspace-").and_then(|s| s.parse().ok()) else { continue };
        let entry = workspaces.entry(id).or_default();
        entry.1.apply(&event.decode().unwrap());
        entry.0 = event.stream_version;
    }
    workspaces
        .into_iter()
        .filter(|(_, (_, w))| w.instance_id.as_deref() == Some(instance_id))
        .map(|(id, (version, w))| (id, (version, (!w.deleted).then(|| serde_json::to_value(&w).unwrap()))))
        .collect()
}

async fn materialized(db: &TestDatabase) -> States {
    let client = db.connect().await;
    let rows = client.query("SELECT id, stream_version, state FROM workspaces", &[]).await.unwrap();
    rows.iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect()
}

async fn converged(operator: &Api, db: &TestDatabase, instance_id: &str) -> States {
    wait_until(&format!("{instance_id} to equal a replay of the log"), Duration::from_secs(60), || {
        let (operator, db) = (operator.clone(), db.clone());
        async move {
            let expected = replay(&operator, instance_id).await;
            (materialized(&db).await == expected).then_some(expected)
        }
    })
    .await
}

struct Stack {
    nats: NatsServer,
    hub: HubProcess,
    operator: Api,
    org: String,
}

async fn stack() -> Stack {
    let nats = NatsServer::start().unwrap();
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &[], &[("NATS_URL", &nats.url())]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let org = operator.post("/v1/organizations", json!({"name": "Acme", "email": "o@a.test", "plan": "pro"})).await;
    let org = org.expect(201).body["id"].as_str().unwrap().to_owned();
    Stack { nats, hub, operator, org }
}

impl Stack {
    async fn workspace(&self, name: &str, instance: &str) -> String {
        let body = json!({"name": name, "instance_id": instance, "organization_id": self.org});
        self.operator.post("/v1/workspaces", body).await.expect(201).body["id"].as_str().unwrap().to_owned()
    }

    async fn instance(&self, id: &str) -> (InstanceProcess, TestDatabase) {
        let db = PgServer::shared().empty_database().await;
        let process = InstanceProcess::instance(id, &db.url, &self.nats.url(), &self.hub.url("")).await;
        (process, db)
    }
}

#[tokio::test]
async fn each_instance_materializes_exactly_its_own_workspaces() {
    let stack = stack().await;
    let (_alpha, alpha_db) = stack.instance("alpha").await;
    let (_beta, beta_db) = stack.instance("beta").await;
    let a1 = stack.workspace("A1", "alpha").await;
    let a2 = stack.workspace("A2", "alpha").await;
    let b1 = stack.workspace("B1", "beta").await;
    stack
        .operator
        .patch(
            &format!("/v1/workspaces/{a1}"),
            json!({"settings": {"theme": "dark"}, "webhook_uris": ["https://h.test/in"]}),
        )
        .await
        .expect(200);
    stack.operator.delete(&format!("/v1/workspaces/{a2}")).await.expect(204);

    let alpha = converged(&stack.operator, &alpha_db, "alpha").await;
    let beta = converged(&stack.operator, &beta_db, "beta").await;
    let a1: Uuid = a1.parse().unwrap();
    assert_eq!(alpha.keys().copied().collect::<Vec<_>>().len(), 2);
    assert_eq!(alpha[&a1].1.as_ref().unwrap()["settings"], json!({"theme": "dark"}));
    assert_eq!(alpha[&a1].1.as_ref().unwrap()["webhook_uris"], json!(["https://h.test/in"]));
    assert!(alpha[&a2.parse::<Uuid>().unwrap()].1.is_none(), "a deleted workspace's state is dropped");
    assert_eq!(beta.keys().copied().collect::<Vec<_>>(), [b1.parse::<Uuid>().unwrap()]);
}

#[tokio::test]
async fn a_lost_message_is_fetched_from_the_hub() {
    let stack = stack().await;
    let ws = stack.workspace("W", "alpha").await;
    for i in 0..3 {
        stack.operator.patch(&format!("/v1/workspaces/{ws}"), json!({"settings": {"n": i}})).await.expect(200);
    }
    // Remove the workspace's second event from the stream before any instance reads it.
    let nats = stack.nats.client().await;
    let js = async_nats::jetstream::new(nats);
    let removed = wait_until("the relay to publish the workspace's events", Duration::from_secs(30), || {
        let (js, ws) = (js.clone(), ws.clone());
        async move {
            let mut stream = js.get_stream("HUB_EVENTS").await.ok()?;
            let count = stream.info().await.ok()?.state.messages;
            let (mut seen, mut second) = (0, None);
            for sequence in 1..=count {
                let message = stream.get_raw_message(sequence).await.ok()?;
                let event: RecordedEvent = serde_json::from_slice(&message.payload).ok()?;
                if event.stream_id.ends_with(ws.as_str()) {
                    seen += 1;
                    if event.stream_version == 2 {
                        second = Some(sequence);
                    }
                }
            }
            if seen == 5 { second } else { None }
        }
    })
    .await;
    let stream = js.get_stream("HUB_EVENTS").await.unwrap();
    assert!(stream.delete_message(removed).await.unwrap());

    let (alpha, alpha_db) = stack.instance("alpha").await;
    let states = converged(&stack.operator, &alpha_db, "alpha").await;
    assert_eq!(states[&ws.parse::<Uuid>().unwrap()].0, 5, "created, secret issued, three changes");
    assert!(alpha.logs().contains("gap detected"), "the instance noticed the gap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_instance_converges_and_a_rebuild_equals_the_live_state() {
    let stack = stack().await;
    let (mut alpha, alpha_db) = stack.instance("alpha").await;
    let workspaces = [stack.workspace("K1", "alpha").await, stack.workspace("K2", "alpha").await];
    let writer = {
        let operator = stack.operator.clone();
        let workspaces = workspaces.clone();
        tokio::spawn(async move {
            for i in 0..60 {
                let ws = &workspaces[i % 2];
                operator.patch(&format!("/v1/workspaces/{ws}"), json!({"settings": {"i": i}})).await.expect(200);
            }
        })
    };
    wait_until("the instance to apply some events", Duration::from_secs(30), || {
        let db = alpha_db.clone();
        async move {
            let client = db.connect().await;
            let applied: i64 = client.query_one("SELECT applied_position FROM instance_state", &[]).await.ok()?.get(0);
            (applied > 10).then_some(())
        }
    })
    .await;
    alpha.kill();
    writer.await.unwrap();
    let alpha = InstanceProcess::instance("alpha", &alpha_db.url, &stack.nats.url(), &stack.hub.url("")).await;
    let live = converged(&stack.operator, &alpha_db, "alpha").await;
    assert_eq!(
        live.values().map(|(v, _)| v).sum::<i64>(),
        64,
        "every event applied once (2 × 2 at creation, 60 changes)"
    );
    drop(alpha);

    let run = |command: &str| {
        let out = std::process::Command::new(e2e::binaries::binary("instance"))
            .arg(command)
            .env("INSTANCE_ID", "alpha")
            .env("INSTANCE_DATABASE_URL", &alpha_db.url)
            .env("HUB_URL", stack.hub.url(""))
            .env("HUB_OPERATOR_KEY", OPERATOR_KEY)
            .output()
            .unwrap();
        assert!(out.status.success(), "{command}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let before = run("digest");
    assert!(run("rebuild").starts_with("rebuilt from 64 events"));
    assert_eq!(run("digest"), before, "a rebuild equals the live state");
    assert_eq!(materialized(&alpha_db).await, live);
}

#[tokio::test]
async fn instances_report_their_progress_and_new_workspaces_go_to_the_least_loaded() {
    let stack = stack().await;
    let (alpha, _alpha_db) = stack.instance("alpha").await;
    let (_beta, _beta_db) = stack.instance("beta").await;
    wait_until("both instances to report", Duration::from_secs(30), || {
        let operator = stack.operator.clone();
        async move { (operator.get("/v1/instances").await.body["items"].as_array()?.len() == 2).then_some(()) }
    })
    .await;
    let mut placed = BTreeMap::new();
    for i in 0..4 {
        let body = json!({"name": format!("auto {i}"), "organization_id": stack.org});
        let reply = stack.operator.post("/v1/workspaces", body).await.expect(201);
        *placed.entry(reply.body["instance_id"].as_str().unwrap().to_owned()).or_insert(0) += 1;
    }
    assert_eq!(placed, BTreeMap::from([("alpha".to_owned(), 2), ("beta".to_owned(), 2)]), "placed evenly");

    wait_until("the instances to report their workspaces", Duration::from_secs(30), || {
        let operator = stack.operator.clone();
        async move {
            let items = operator.get("/v1/instances").await.body["items"].as_array()?.clone();
            let reported = |i: &Value| {
                i["workspace_count"] == 2 && i["applied_position"].as_i64() > Some(0) && i["lag"].as_i64().is_some()
            };
            items.iter().all(reported).then_some(())
        }
    })
    .await;
    let ready: Value = reqwest::get(alpha.url("/readyz")).await.unwrap().json().await.unwrap();
    assert_eq!(ready["workspace_count"], 2);
    assert!(ready["applied_position"].as_i64().unwrap() > 0);
    // The operator only.
    let key =
        stack.operator.post("/v1/api-keys", json!({"name": "k", "scopes": ["*"], "organization_id": stack.org})).await;
    stack.operator.with_key(key.expect(201).body["secret"].as_str().unwrap()).get("/v1/instances").await.expect(403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_nats_restarts_and_kills_of_the_relay_and_an_instance_every_instance_equals_a_replay() {
    let mut nats = NatsServer::start().unwrap();
    let db = TestDatabase::new().await;
    let env = [("NATS_URL", nats.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut hubs = [HubProcess::spawn(&db.url, &[], &env).await, HubProcess::spawn(&db.url, &[], &env).await];
    let leader = HubProcess::relay_leader(&hubs).await;
    let survivor_url = hubs[1 - leader].url("");
    let operator = Api::new(&survivor_url, Some(OPERATOR_KEY));
    let org = operator.post("/v1/organizations", json!({"name": "Acme", "email": "o@a.test", "plan": "pro"})).await;
    let org = org.expect(201).body["id"].as_str().unwrap().to_owned();
    let mut workspaces = Vec::new();
    for (i, instance) in ["alpha", "beta", "alpha", "beta"].iter().enumerate() {
        let body = json!({"name": format!("W{i}"), "instance_id": instance, "organization_id": org});
        workspaces
            .push(operator.post("/v1/workspaces", body).await.expect(201).body["id"].as_str().unwrap().to_owned());
    }
    let alpha_db = PgServer::shared().empty_database().await;
    let beta_db = PgServer::shared().empty_database().await;
    let mut alpha = InstanceProcess::instance("alpha", &alpha_db.url, &nats.url(), &survivor_url).await;
    let _beta = InstanceProcess::instance("beta", &beta_db.url, &nats.url(), &survivor_url).await;

    let writer = {
        let (operator, workspaces) = (operator.clone(), workspaces.clone());
        tokio::spawn(async move {
            for i in 0..200 {
                let ws = &workspaces[i % workspaces.len()];
                operator.patch(&format!("/v1/workspaces/{ws}"), json!({"settings": {"i": i}})).await.expect(200);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let progress = |at_least: i64| {
        let db = db.clone();
        async move {
            let count: i64 = db.connect().await.query_one("SELECT count(*) FROM events", &[]).await.unwrap().get(0);
            (count >= at_least).then_some(())
        }
    };
    wait_until("writes to flow", Duration::from_secs(30), || progress(40)).await;
    nats.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.restart().unwrap();
    wait_until("more writes", Duration::from_secs(30), || progress(90)).await;
    hubs[leader].kill();
    wait_until("more writes", Duration::from_secs(30), || progress(140)).await;
    alpha.kill();
    wait_until("more writes", Duration::from_secs(30), || progress(180)).await;
    alpha = InstanceProcess::instance("alpha", &alpha_db.url, &nats.url(), &survivor_url).await;
    writer.await.unwrap();

    let alpha_state = converged(&operator, &alpha_db, "alpha").await;
    let beta_state = converged(&operator, &beta_db, "beta").await;
    // 2 creation events per workspace, then 200 changes spread over the four.
    let versions = |s: &States| s.values().map(|(v, _)| *v).sum::<i64>();
    assert_eq!(versions(&alpha_state) + versions(&beta_state), 4 * 2 + 200, "nothing lost, nothing applied twice");
    assert!(hubs[1 - leader].logs().contains("relay leader elected"), "the standby hub took over the relay");
    drop(alpha);
}
