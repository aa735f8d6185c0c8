//! The relay to NATS JetStream: real hub processes, real PostgreSQL, real nats-server.

use std::collections::HashSet;
use std::time::Duration;

use e2e::{Api, HubProcess, NatsServer, OPERATOR_KEY, TestDatabase, wait_until};
use serde_json::json;
use shared::RecordedEvent;

struct Published {
    subject: String,
    msg_id: String,
    traceparent: Option<String>,
    event: RecordedEvent,
}

/// Every message of `HUB_EVENTS`, once the stream holds `expected` of them.
async fn published(nats: &NatsServer, expected: u64) -> Vec<Published> {
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client);
    wait_until(&format!("{expected} messages in the stream"), Duration::from_secs(60), || {
        let js = js.clone();
        async move {
            let mut stream = js.get_stream("HUB_EVENTS").await.ok()?;
            let info = stream.info().await.ok()?;
            (info.state.messages >= expected).then_some(())
        }
    })
    .await;
    let mut stream = js.get_stream("HUB_EVENTS").await.unwrap();
    let count = stream.info().await.unwrap().state.messages;
    let mut out = Vec::new();
    for sequence in 1..=count {
        let message = stream.get_raw_message(sequence).await.unwrap();
        let msg_id = message.headers.get("Nats-Msg-Id").map(|v| v.to_string()).unwrap_or_default();
        out.push(Published {
            subject: message.subject.to_string(),
            msg_id,
            traceparent: message.headers.get("traceparent").map(|v| v.to_string()),
            event: serde_json::from_slice(&message.payload).unwrap(),
        });
    }
    out
}

async fn log_len(db: &TestDatabase) -> i64 {
    db.connect().await.query_one("SELECT count(*) FROM events", &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn the_relay_publishes_each_event_once_in_order_on_its_instance_subject() {
    let nats = NatsServer::start().unwrap();
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &[], &[("NATS_URL", &nats.url())]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let org = operator.post("/v1/organizations", json!({"name": "Acme", "email": "o@a.test", "plan": "pro"})).await;
    let org_id = org.expect(201).body["id"].as_str().unwrap().to_owned();
    let mut workspaces = Vec::new();
    for (name, instance) in [("A", "alpha"), ("B", "beta"), ("C", "alpha")] {
        let body = json!({"name": name, "instance_id": instance, "organization_id": org_id});
        workspaces.push((
            operator.post("/v1/workspaces", body).await.expect(201).body["id"].as_str().unwrap().to_owned(),
            instance,
        ));
    }
    let (first, _) = &workspaces[0];
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    operator
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/workspaces/{first}"),
            Some(&json!({"settings": {"x": 1}})),
            &[("traceparent", traceparent)],
        )
        .await
        .expect(200);

    let total = log_len(&db).await;
    let messages = published(&nats, total as u64).await;
    assert_eq!(messages.len() as i64, total, "each event once");
    for (i, message) in messages.iter().enumerate() {
        assert_eq!(message.event.position, i as i64 + 1, "in position order");
        assert_eq!(message.msg_id, message.event.event_id.to_string());
        assert!(message.event.hash_is_valid());
        match message.event.stream_id.strip_prefix("workspace-") {
            Some(id) => {
                let instance = workspaces.iter().find(|(w, _)| w == id).unwrap().1;
                assert_eq!(message.subject, format!("hub.events.{instance}.{id}"));
            }
            None => assert_eq!(message.subject, format!("hub.events.hub.{}", message.event.stream_id)),
        }
    }
    // The request's trace context travels in the event's metadata and as a NATS header.
    let traced = messages.last().unwrap();
    assert_eq!(traced.event.event_type, "WorkspaceUpdated");
    assert_eq!(traced.event.metadata["traceparent"], traceparent);
    assert_eq!(traced.traceparent.as_deref(), Some(traceparent));
    let client = db.connect().await;
    let checkpoint: i64 = client.query_one("SELECT position FROM relay_checkpoint", &[]).await.unwrap().get(0);
    assert_eq!(checkpoint, total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nats_restart_and_a_killed_leader_lose_and_duplicate_nothing() {
    let mut nats = NatsServer::start().unwrap();
    let db = TestDatabase::new().await;
    let env = [("NATS_URL", nats.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut hubs = [HubProcess::spawn(&db.url, &[], &env).await, HubProcess::spawn(&db.url, &[], &env).await];
    let leader = HubProcess::relay_leader(&hubs).await;
    let survivor = Api::new(&hubs[1 - leader].url(""), Some(OPERATOR_KEY));

    let writer = tokio::spawn(async move {
        for i in 0..120 {
            let body = json!({"name": format!("org {i}"), "email": format!("o{i}@x.test"), "plan": "free"});
            survivor.post("/v1/organizations", body).await.expect(201);
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    });
    wait_until("some events", Duration::from_secs(20), || {
        let db = db.clone();
        async move { (log_len(&db).await >= 20).then_some(()) }
    })
    .await;
    nats.stop();
    tokio::time::sleep(Duration::from_millis(700)).await;
    nats.restart().unwrap();
    wait_until("more events", Duration::from_secs(20), || {
        let db = db.clone();
        async move { (log_len(&db).await >= 60).then_some(()) }
    })
    .await;
    hubs[leader].kill();
    writer.await.unwrap();

    let total = log_len(&db).await;
    assert_eq!(total, 120);
    let messages = published(&nats, total as u64).await;
    let ids: HashSet<String> = messages.iter().map(|m| m.msg_id.clone()).collect();
    assert_eq!(messages.len() as i64, total, "the stream holds each event once");
    assert_eq!(ids.len() as i64, total);
    let positions: Vec<i64> = messages.iter().map(|m| m.event.position).collect();
    assert_eq!(positions, (1..=total).collect::<Vec<_>>(), "in order, none skipped");
    assert!(hubs[1 - leader].logs().contains("relay leader elected"), "the standby took over");
}
