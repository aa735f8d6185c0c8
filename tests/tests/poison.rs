//! No single request can stop event delivery: request metadata is bounded before it reaches
//! an event, an event over 256 KiB is refused, an event NATS still refuses travels as a
//! reference the instance resolves from the hub, and the relay's lag shows in `/readyz`.
//! Real hub, nats-server and instance processes.

use std::time::Duration;

use e2e::{Api, HubProcess, InstanceProcess, NatsServer, OPERATOR_KEY, PgServer, TestDatabase, wait_until};
use hub::store::{AppendError, Commit, EventStore, ExpectedVersion, NewEvent, WriterConfig};
use reqwest::Method;
use serde_json::{Value, json};
use shared::Metadata;
use shared::events::organization::{OrganizationCreated, OrganizationEvent};

struct Stack {
    nats: NatsServer,
    hub: HubProcess,
    operator: Api,
    _alpha: InstanceProcess,
    alpha_db: TestDatabase,
}

/// A hub publishing to `nats`, and instance `alpha` consuming from it.
async fn stack(nats: NatsServer, hub_env: &[(&str, &str)]) -> Stack {
    let db = TestDatabase::new().await;
    let nats_url = nats.url();
    let mut env = vec![("NATS_URL", nats_url.as_str())];
    env.extend_from_slice(hub_env);
    let hub = HubProcess::spawn(&db.url, &[], &env).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let alpha_db = PgServer::shared().empty_database().await;
    let alpha = InstanceProcess::instance("alpha", &alpha_db.url, &nats.url(), &hub.url("")).await;
    Stack { nats, hub, operator, _alpha: alpha, alpha_db }
}

async fn organization(operator: &Api, name: &str) -> String {
    let body = json!({"name": name, "email": "ops@example.test", "plan": "pro"});
    operator.post("/v1/organizations", body).await.expect(201).body["id"].as_str().unwrap().to_owned()
}

fn new_workspace(org: &str, name: &str) -> Value {
    json!({"name": name, "instance_id": "alpha", "organization_id": org})
}

/// The workspace's state on instance `alpha`, once `ready` holds for it.
async fn on_alpha(stack: &Stack, workspace: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let id: uuid::Uuid = workspace.parse().unwrap();
    wait_until(what, Duration::from_secs(30), || {
        let db = stack.alpha_db.clone();
        let ready = &ready;
        async move {
            let client = db.connect().await;
            let row = client.query_opt("SELECT state FROM workspaces WHERE id = $1", &[&id]).await.ok()??;
            let state: Value = row.get(0);
            ready(&state).then_some(state)
        }
    })
    .await
}

/// The metadata of every event of a stream, from the hub's feed.
async fn stream_metadata(operator: &Api, stream_id: &str) -> Vec<Value> {
    let page = operator.get(&format!("/v1/events?after=0&limit=1000&stream_id={stream_id}")).await.expect(200);
    page.body["items"].as_array().unwrap().iter().map(|e| e["metadata"].clone()).collect()
}

/// A PEM `PUBLIC KEY` block of about `bytes` bytes (the domain checks its shape only).
fn public_key(bytes: usize) -> String {
    let line = "A".repeat(64);
    let lines = vec![line.as_str(); bytes / 65].join("\n");
    format!("-----BEGIN PUBLIC KEY-----\n{lines}\n-----END PUBLIC KEY-----")
}

#[tokio::test]
async fn a_huge_traceparent_is_dropped_and_other_organizations_keep_receiving_events() {
    let stack = stack(NatsServer::start().unwrap(), &[]).await;
    let victim = organization(&stack.operator, "Victim").await;
    let other = organization(&stack.operator, "Other").await;
    let poison = "\"".repeat(400_000);

    let created = stack
        .operator
        .send(Method::POST, "/v1/workspaces", Some(&new_workspace(&victim, "Poisoned")), &[("traceparent", &poison)])
        .await;
    assert!(created.status.as_u16() < 500, "no 5xx for a huge traceparent: {} {}", created.status, created.text);
    let patched = match created.status.as_u16() {
        201 => {
            let id = created.body["id"].as_str().unwrap().to_owned();
            let body = json!({"settings": {"theme": "dark"}});
            let reply = stack
                .operator
                .send(Method::PATCH, &format!("/v1/workspaces/{id}"), Some(&body), &[("traceparent", &poison)])
                .await;
            assert!(reply.status.as_u16() < 500, "no 5xx for a huge traceparent: {} {}", reply.status, reply.text);
            Some(id)
        }
        status => {
            assert_eq!(created.header("content-type"), Some("application/problem+json"), "a {status} is a problem");
            None
        }
    };

    let fresh = stack.operator.post("/v1/workspaces", new_workspace(&other, "Fresh")).await.expect(201);
    let fresh = fresh.body["id"].as_str().unwrap();
    on_alpha(&stack, fresh, "another organization's workspace to reach its instance", |_| true).await;

    if let Some(id) = patched {
        for metadata in stream_metadata(&stack.operator, &format!("workspace-{id}")).await {
            assert!(metadata.get("traceparent").is_none(), "an invalid traceparent is never stored: {metadata:.200}");
        }
    }
}

#[tokio::test]
async fn only_a_valid_traceparent_and_bounded_request_metadata_reach_the_event() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &[], &[]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let cases = [
        (valid, Some(valid)),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", None),
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", None),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", None),
        ("not a trace context", None),
    ];
    for (i, (traceparent, kept)) in cases.into_iter().enumerate() {
        let body = json!({"name": format!("Org {i}"), "email": "ops@example.test", "plan": "pro"});
        let long_key = "k".repeat(300);
        let reply = operator
            .send(
                Method::POST,
                "/v1/organizations",
                Some(&body),
                &[("traceparent", traceparent), ("request-id", "a:b"), ("idempotency-key", &format!("key-{i}"))],
            )
            .await
            .expect(201);
        let id = reply.body["id"].as_str().unwrap();
        let metadata = stream_metadata(&operator, &format!("org-{id}")).await.remove(0);
        assert_eq!(metadata["traceparent"].as_str(), kept, "traceparent {traceparent}");
        assert_eq!(metadata["idempotency_key"], json!(format!("key-{i}")));
        let request_id = metadata["request_id"].as_str().unwrap();
        assert_eq!(Some(request_id), reply.header("request-id"), "the event keeps the request's id");
        assert_ne!(request_id, "a:b", "':' is not allowed in a Request-Id");

        let patch = json!({"name": format!("Org {i} renamed")});
        operator
            .send(Method::PATCH, &format!("/v1/organizations/{id}"), Some(&patch), &[("idempotency-key", &long_key)])
            .await
            .expect(200);
        let metadata = stream_metadata(&operator, &format!("org-{id}")).await.remove(1);
        assert!(metadata.get("idempotency_key").is_none(), "an over-long idempotency key is not stored");
    }
}

#[tokio::test]
async fn an_over_long_or_invalid_request_id_is_replaced_by_a_generated_one_on_hub_and_instance() {
    let stack = stack(NatsServer::start().unwrap(), &[]).await;
    let client = e2e::api::client();
    for base in [stack.hub.url(""), stack._alpha.url("")] {
        let get = |id: String| {
            let request = client.get(format!("{base}/healthz")).header("request-id", id.as_str()).send();
            async move { request.await.unwrap().headers().get("request-id").map(|v| v.to_str().unwrap().to_owned()) }
        };
        let echoed = "A-z_0.9".repeat(18);
        assert_eq!(echoed.len(), 126);
        assert_eq!(get(echoed.clone()).await.as_deref(), Some(echoed.as_str()), "{base}: a valid id is echoed");
        for bad in ["x".repeat(129), "a:b".into(), "a b".into(), "ä".into(), "a/b".into()] {
            let answered = get(bad.clone()).await.unwrap_or_else(|| panic!("{base}: every response has a Request-Id"));
            assert_ne!(answered, bad, "{base}: an invalid id is replaced");
            assert!(answered.parse::<uuid::Uuid>().is_ok(), "{base}: the replacement is generated: {answered}");
        }
        let none = client.get(format!("{base}/healthz")).send().await.unwrap();
        assert!(none.headers().contains_key("request-id"), "{base}: a Request-Id without one asked");
    }
}

#[tokio::test]
async fn an_event_over_256_kib_is_refused_by_the_store_and_nothing_is_appended() {
    let db = TestDatabase::new().await;
    let store = EventStore::start(db.pool(4), WriterConfig::default());
    let event = |name: String| {
        let created = OrganizationCreated { name, email: "ops@example.test".into(), plan: "free".into() };
        NewEvent::new(&OrganizationEvent::OrganizationCreated(created), &Metadata::system()).unwrap()
    };
    // Quotes double when escaped: the JSON of this name is over 256 KiB, its text is not.
    let oversized = event("\"".repeat(140 * 1024));
    let refused = store.commit(Commit::single("org-big", ExpectedVersion::NoStream, vec![oversized])).await;
    assert!(matches!(refused, Err(AppendError::TooLarge { .. })), "refused as too large: {refused:?}");
    assert!(store.read_all(0, 10).await.unwrap().is_empty(), "nothing was appended");

    let fits = event("x".repeat(200 * 1024));
    store.commit(Commit::single("org-fits", ExpectedVersion::NoStream, vec![fits])).await.unwrap();
    assert_eq!(store.read_all(0, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_event_nats_refuses_reaches_the_instance_as_a_reference_and_later_events_keep_flowing() {
    let nats = NatsServer::start_with_config("max_payload: 65536\n").unwrap();
    assert_eq!(nats.info().unwrap()["max_payload"], json!(65536));
    let stack = stack(nats, &[]).await;
    let org = organization(&stack.operator, "Acme").await;
    let ws = stack.operator.post("/v1/workspaces", new_workspace(&org, "W")).await.expect(201);
    let ws = ws.body["id"].as_str().unwrap().to_owned();

    // Ten keys of 8,000 bytes: an event of about 80 KB, over the server's 64 KiB payload.
    let keys: Vec<Value> =
        (0..10).map(|i| json!({"id": format!("k{i}"), "algorithm": "rs256", "key": public_key(8_000)})).collect();
    stack.operator.patch(&format!("/v1/workspaces/{ws}"), json!({"public_keys": keys})).await.expect(200);
    let state = on_alpha(&stack, &ws, "the large event to reach alpha", |s| {
        s["public_keys"].as_array().is_some_and(|k| k.len() == 10)
    })
    .await;
    assert_eq!(state["public_keys"][9]["key"], json!(public_key(8_000)));

    stack.operator.patch(&format!("/v1/workspaces/{ws}"), json!({"settings": {"after": true}})).await.expect(200);
    on_alpha(&stack, &ws, "a later event to reach alpha", |s| s["settings"]["after"] == json!(true)).await;
    let other = stack.operator.post("/v1/workspaces", new_workspace(&org, "Later")).await.expect(201);
    on_alpha(&stack, other.body["id"].as_str().unwrap(), "a later workspace to reach alpha", |_| true).await;
}

#[tokio::test]
async fn readyz_shows_the_relay_lag_and_answers_503_while_the_relay_is_stalled() {
    let mut stack = stack(NatsServer::start().unwrap(), &[("HUB_RELAY_STALL_SECONDS", "2")]).await;
    let client = e2e::api::client();
    let readyz = || {
        let request = client.get(stack.hub.url("/readyz")).send();
        async move {
            let response = request.await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    organization(&stack.operator, "Acme").await;
    let caught_up = wait_until("the relay to catch up", Duration::from_secs(30), || {
        let answer = readyz();
        async move { answer.await.1["relay"]["lag"].as_i64().filter(|lag| *lag == 0).map(|_| ()) }
    });
    caught_up.await;
    let (status, body) = readyz().await;
    assert_eq!(status, 200);
    assert!(body["relay"]["position"].as_i64().unwrap() >= 1, "{body}");

    stack.nats.stop();
    organization(&stack.operator, "Written while NATS is down").await;
    let stalled = wait_until("/readyz to report the stalled relay", Duration::from_secs(60), || {
        let answer = readyz();
        async move {
            let (status, body) = answer.await;
            (status == 503).then_some(body)
        }
    })
    .await;
    assert_eq!(stalled["code"], json!("relay_stalled"), "{stalled}");
    assert!(stalled["detail"].as_str().unwrap().contains("behind"), "{stalled}");

    wait_until("the stalled relay to be logged", Duration::from_secs(30), || {
        let logged = stack.hub.logs().contains("relay is behind the event log and not progressing");
        async move { logged.then_some(()) }
    })
    .await;

    stack.nats.restart().unwrap();
    wait_until("/readyz to recover once NATS is back", Duration::from_secs(60), || {
        let answer = readyz();
        async move {
            let (status, body) = answer.await;
            (status == 200 && body["relay"]["lag"] == json!(0)).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn a_single_node_hub_has_no_relay_and_stays_ready() {
    let db = TestDatabase::new().await;
    let env = [("HUB_RELAY_STALL_SECONDS", "1"), ("NATS_URL", "nats://127.0.0.1:1")];
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &env).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    organization(&operator, "Acme").await;
    let ready = reqwest::get(hub.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], json!("ready"));
    assert!(body["head_position"].as_i64().unwrap() >= 1, "{body}");
    assert!(body.get("relay").is_none(), "no relay runs in single-node mode: {body}");
}

#[tokio::test]
async fn an_event_the_stream_keeps_refusing_is_sent_as_a_reference_after_a_few_attempts() {
    let nats = NatsServer::start().unwrap();
    // A stream whose own message limit (32 KiB) is under the server's max_payload: the
    // server acks such a publish with an error, every time.
    let js = async_nats::jetstream::new(nats.client().await);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "HUB_EVENTS".into(),
        subjects: vec!["hub.events.>".into()],
        max_message_size: 32 * 1024,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .unwrap();
    let stack = stack(nats, &[]).await;
    let org = organization(&stack.operator, "Acme").await;
    let ws = stack.operator.post("/v1/workspaces", new_workspace(&org, "W")).await.expect(201);
    let ws = ws.body["id"].as_str().unwrap().to_owned();

    let keys: Vec<Value> =
        (0..5).map(|i| json!({"id": format!("k{i}"), "algorithm": "rs256", "key": public_key(8_000)})).collect();
    stack.operator.patch(&format!("/v1/workspaces/{ws}"), json!({"public_keys": keys})).await.expect(200);
    on_alpha(&stack, &ws, "the refused event to reach alpha", |s| {
        s["public_keys"].as_array().is_some_and(|k| k.len() == 5)
    })
    .await;
    stack.operator.patch(&format!("/v1/workspaces/{ws}"), json!({"settings": {"after": true}})).await.expect(200);
    on_alpha(&stack, &ws, "a later event to reach alpha", |s| s["settings"]["after"] == json!(true)).await;
    assert!(stack.hub.logs().contains("relay publish failed"), "the refusals were logged");
}
