//! Surviving failing machines: instances reach any live hub over NATS (no single hub they
//! depend on), and NATS credentials confine each instance to its own subjects and tenants.
//! Real hubs, nats-server with the shipped configuration, instances; kill = SIGKILL.

use std::time::Duration;

use async_nats::jetstream::consumer;
use e2e::{Api, HubProcess, InstanceProcess, NatsServer, OPERATOR_KEY, PgServer, TestDatabase, wait_until};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn organization(operator: &Api) -> String {
    let org = operator.post("/v1/organizations", json!({"name": "Acme", "email": "o@a.test", "plan": "pro"})).await;
    org.expect(201).body["id"].as_str().unwrap().to_owned()
}

async fn workspace(operator: &Api, org: &str, name: &str, instance: &str) -> String {
    let body = json!({"name": name, "instance_id": instance, "organization_id": org});
    operator.post("/v1/workspaces", body).await.expect(201).body["id"].as_str().unwrap().to_owned()
}

async fn token(operator: &Api, ws: &str) -> String {
    let reply = operator.post(&format!("/v1/workspaces/{ws}/access-token"), json!({"expires_in_seconds": 600})).await;
    reply.expect(200).body["access_token"].as_str().unwrap().to_owned()
}

/// Waits until `instance` accepts an access token of `ws` minted by `operator`'s hub.
async fn served(operator: &Api, instance: &InstanceProcess, ws: &str) -> Value {
    accepted(instance, ws, &token(operator, ws).await).await
}

/// Waits until `instance` accepts `token` (of `ws`); its answer.
async fn accepted(instance: &InstanceProcess, ws: &str, token: &str) -> Value {
    let client = e2e::api::client();
    wait_until(&format!("the instance to accept a token of {ws}"), Duration::from_secs(60), || {
        let request = client.get(instance.url("/v1/runtime/workspace")).bearer_auth(token).send();
        async move {
            let response = request.await.ok()?;
            if response.status() != StatusCode::OK {
                return None;
            }
            response.json::<Value>().await.ok()
        }
    })
    .await
}

/// Two hubs on one database and one nats-server.
async fn two_hubs(nats: &NatsServer, db: &TestDatabase) -> [HubProcess; 2] {
    let env = [("NATS_URL", nats.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    [HubProcess::spawn(&db.url, &[], &env).await, HubProcess::spawn(&db.url, &[], &env).await]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_hub_in_hub_url_killed_new_workspaces_written_through_another_hub_are_served() {
    let nats = NatsServer::start().unwrap();
    let db = TestDatabase::new().await;
    let [mut first, second] = two_hubs(&nats, &db).await;
    let alpha_db = PgServer::shared().empty_database().await;
    let alpha = InstanceProcess::instance("alpha", &alpha_db.url, &nats.url(), &first.url("")).await;
    let operator = Api::new(&second.url(""), Some(OPERATOR_KEY));
    let org = organization(&operator).await;
    let before = workspace(&operator, &org, "Before", "alpha").await;
    served(&operator, &alpha, &before).await;

    first.kill();
    let after = workspace(&operator, &org, "After", "alpha").await;
    let body = served(&operator, &alpha, &after).await;
    assert_eq!(body["name"], "After");
    // Later writes to it reach the instance too.
    operator.patch(&format!("/v1/workspaces/{after}"), json!({"settings": {"theme": "dark"}})).await.expect(200);
    wait_until("the update to reach the instance", Duration::from_secs(30), || {
        let request = served(&operator, &alpha, &after);
        async move { (request.await["settings"]["theme"] == "dark").then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_without_hub_url_or_operator_key_is_served_by_whichever_hub_lives() {
    let nats = NatsServer::start().unwrap();
    let db = TestDatabase::new().await;
    let [mut first, second] = two_hubs(&nats, &db).await;
    let operator = Api::new(&second.url(""), Some(OPERATOR_KEY));
    let org = organization(&operator).await;
    // Created before the instance exists: applied (and its key fetched) from the stream.
    let early = workspace(&operator, &org, "Early", "alpha").await;
    let alpha_db = PgServer::shared().empty_database().await;
    let alpha = InstanceProcess::instance_over_nats("alpha", &alpha_db.url, &nats.url()).await;
    served(&operator, &alpha, &early).await;

    first.kill();
    let late = workspace(&operator, &org, "Late", "alpha").await;
    served(&operator, &alpha, &late).await;
    // The instance reports itself through NATS as well.
    wait_until("the instance's heartbeat", Duration::from_secs(30), || {
        let operator = operator.clone();
        async move {
            let list = operator.get("/v1/instances").await.expect(200).body;
            list["items"].as_array()?.iter().any(|i| i["id"] == "alpha" && i["workspace_count"] == 2).then_some(())
        }
    })
    .await;
    // Its data keys live in its own database, sealed: a token is served with no hub at all.
    let keys = alpha_db.connect().await.query_one("SELECT count(*) FROM data_keys", &[]).await.unwrap();
    assert_eq!(keys.get::<_, i64>(0), 2);
    let token = token(&operator, &early).await;
    drop(second);
    accepted(&alpha, &early, &token).await;
}

/// Connects to `nats` as `user` (an instance's credentials), with its own inbox prefix.
async fn connect_as(nats: &NatsServer, user: &str) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password(user.to_owned(), e2e::nats::password(user))
        .custom_inbox_prefix(format!("_INBOX.{user}"))
        .request_timeout(Some(Duration::from_secs(3)))
        .connect(format!("nats://127.0.0.1:{}", nats.port))
        .await
        .unwrap()
}

/// A stack with instances alpha and beta, one workspace on each; returns their ids.
async fn placed(nats: &NatsServer) -> (HubProcess, Api, InstanceProcess, InstanceProcess, String, String) {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &[], &[("NATS_URL", &nats.url())]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let org = organization(&operator).await;
    let alpha_db = PgServer::shared().empty_database().await;
    let beta_db = PgServer::shared().empty_database().await;
    let alpha = InstanceProcess::instance_over_nats("alpha", &alpha_db.url, &nats.url()).await;
    let beta = InstanceProcess::instance_over_nats("beta", &beta_db.url, &nats.url()).await;
    let on_alpha = workspace(&operator, &org, "A", "alpha").await;
    let on_beta = workspace(&operator, &org, "B", "beta").await;
    served(&operator, &alpha, &on_alpha).await;
    served(&operator, &beta, &on_beta).await;
    (hub, operator, alpha, beta, on_alpha, on_beta)
}

async fn stream_messages(nats: &NatsServer) -> u64 {
    let js = async_nats::jetstream::new(nats.client().await);
    js.get_stream("HUB_EVENTS").await.unwrap().info().await.unwrap().state.messages
}

#[tokio::test]
async fn nats_refuses_connections_without_credentials_and_an_instance_cannot_publish_events() {
    let nats = NatsServer::start().unwrap();
    let (_hub, operator, _alpha, _beta, on_alpha, _) = placed(&nats).await;
    assert!(async_nats::connect(format!("nats://127.0.0.1:{}", nats.port)).await.is_err(), "anonymous connection");
    let wrong = async_nats::ConnectOptions::with_user_and_password("alpha".into(), "not-the-password".into());
    assert!(wrong.connect(format!("nats://127.0.0.1:{}", nats.port)).await.is_err(), "wrong password");

    let before = stream_messages(&nats).await;
    let alpha = connect_as(&nats, "alpha").await;
    let js = async_nats::jetstream::new(alpha.clone());
    let forged = json!({"forged": true}).to_string();
    for subject in [format!("hub.events.alpha.{on_alpha}"), "hub.events.beta.x".to_owned(), "hub.events.hub.x".into()] {
        let ack = js.publish(subject.clone(), forged.clone().into()).await;
        let stored = match ack {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        };
        assert!(!stored, "a forged event on {subject} was stored");
        alpha.publish(subject, forged.clone().into()).await.unwrap();
    }
    alpha.flush().await.unwrap();
    // A real write after the forgeries: once the stream holds it, it holds nothing else.
    operator.patch(&format!("/v1/workspaces/{on_alpha}"), json!({"settings": {"n": 1}})).await.expect(200);
    wait_until("the real event in the stream", Duration::from_secs(30), || {
        let nats = &nats;
        async move { (stream_messages(nats).await > before).then_some(()) }
    })
    .await;
    assert_eq!(stream_messages(&nats).await, before + 1, "only the hub's event was stored");
}

#[tokio::test]
async fn an_instance_cannot_consume_another_instances_subjects() {
    let nats = NatsServer::start().unwrap();
    let (_hub, _operator, _alpha, _beta, _, _) = placed(&nats).await;
    let js = async_nats::jetstream::new(connect_as(&nats, "alpha").await);
    // Its own consumer is readable: the refusals below are about beta's.
    js.get_consumer_from_stream::<consumer::pull::Config, _, _>("instance-alpha", "HUB_EVENTS").await.unwrap();
    assert!(
        js.get_consumer_from_stream::<consumer::pull::Config, _, _>("instance-beta", "HUB_EVENTS").await.is_err(),
        "alpha read beta's consumer"
    );
    let stream = js.get_stream_no_info("HUB_EVENTS").await.unwrap();
    for filter in ["hub.events.beta.>", "hub.events.>"] {
        let created = stream
            .create_consumer(consumer::pull::Config { filter_subject: filter.into(), ..Default::default() })
            .await;
        assert!(created.is_err(), "alpha created a consumer on {filter}");
    }
    let created = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("instance-alpha".into()),
            filter_subject: "hub.events.beta.>".into(),
            ..Default::default()
        })
        .await;
    assert!(created.is_err(), "alpha re-pointed its own consumer at beta's subjects");
    let next = js.get_consumer_from_stream::<consumer::pull::Config, _, _>("instance-alpha", "HUB_EVENTS").await;
    assert_eq!(next.unwrap().cached_info().config.filter_subject, "hub.events.alpha.>");
    let client = connect_as(&nats, "alpha").await;
    let pulled = client
        .request("$JS.API.CONSUMER.MSG.NEXT.HUB_EVENTS.instance-beta", json!({"batch": 1}).to_string().into())
        .await;
    assert!(pulled.is_err(), "alpha pulled from beta's consumer");
}

/// A link request as `user` on `subject`; the reply's JSON.
async fn ask(client: &async_nats::Client, subject: &str, body: Value) -> Result<Value, async_nats::RequestError> {
    let reply = client.request(subject.to_owned(), body.to_string().into()).await?;
    Ok(serde_json::from_slice(&reply.payload).unwrap())
}

#[tokio::test]
async fn an_instance_obtains_data_keys_and_events_only_of_workspaces_placed_on_it() {
    let nats = NatsServer::start().unwrap();
    let (_hub, _operator, _alpha, _beta, on_alpha, on_beta) = placed(&nats).await;
    let alpha = connect_as(&nats, "alpha").await;

    let own = ask(&alpha, "hub.link.alpha.data_key", json!({"workspace_id": on_alpha})).await.unwrap();
    assert!(own["Ok"]["sealed_data_key"].is_string(), "{own}");
    let other = ask(&alpha, "hub.link.alpha.data_key", json!({"workspace_id": on_beta})).await.unwrap();
    assert_eq!(other["Err"]["code"], "not_placed_here", "{other}");
    assert!(!other.to_string().contains("sealed"), "{other}");
    // Asking in beta's name is refused by NATS itself.
    assert!(ask(&alpha, "hub.link.beta.data_key", json!({"workspace_id": on_beta})).await.is_err());
    // Asked together, the other instance's key is left out.
    let both = ask(&alpha, "hub.link.alpha.data_keys", json!({"workspace_ids": [on_alpha, on_beta]})).await.unwrap();
    let items = both["Ok"]["items"].as_array().unwrap_or_else(|| panic!("{both}"));
    assert_eq!(items.len(), 1, "{both}");
    assert_eq!(items[0]["workspace_id"], on_alpha.to_string());
    assert_eq!(items[0]["sealed_data_key"], own["Ok"]["sealed_data_key"]);
    let none = ask(&alpha, "hub.link.alpha.data_keys", json!({"workspace_ids": []})).await.unwrap();
    assert_eq!(none["Err"]["code"], "bad_request", "{none}");
    assert!(ask(&alpha, "hub.link.beta.data_keys", json!({"workspace_ids": [on_beta]})).await.is_err());

    let stream = ask(
        &alpha,
        "hub.link.alpha.events",
        json!({"after": 0, "limit": 100, "stream_id": format!("workspace-{on_beta}")}),
    );
    assert_eq!(stream.await.unwrap()["Err"]["code"], "not_placed_here");
    let page = ask(&alpha, "hub.link.alpha.events", json!({"after": 0, "limit": 1000})).await.unwrap();
    let events = page["Ok"].as_array().unwrap();
    assert!(!events.is_empty());
    assert!(events.iter().all(|e| e["stream_id"] == format!("workspace-{on_alpha}")), "{page}");
}

#[tokio::test]
async fn an_instance_over_nats_alone_fills_a_gap_from_the_hubs() {
    let nats = NatsServer::start().unwrap();
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &[], &[("NATS_URL", &nats.url())]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let org = organization(&operator).await;
    let ws = workspace(&operator, &org, "W", "alpha").await;
    for i in 0..3 {
        operator.patch(&format!("/v1/workspaces/{ws}"), json!({"settings": {"n": i}})).await.expect(200);
    }
    // The workspace's third event disappears from the stream before the instance reads it.
    let js = async_nats::jetstream::new(nats.client().await);
    let lost = wait_until("the relay to publish the workspace's events", Duration::from_secs(30), || {
        let (js, ws) = (js.clone(), ws.clone());
        async move {
            let mut stream = js.get_stream("HUB_EVENTS").await.ok()?;
            let count = stream.info().await.ok()?.state.messages;
            let mut mine = Vec::new();
            for sequence in 1..=count {
                let message = stream.get_raw_message(sequence).await.ok()?;
                if message.subject.ends_with(ws.as_str()) {
                    mine.push(sequence);
                }
            }
            (mine.len() == 5).then(|| mine[2])
        }
    })
    .await;
    assert!(js.get_stream("HUB_EVENTS").await.unwrap().delete_message(lost).await.unwrap());

    let alpha_db = PgServer::shared().empty_database().await;
    let alpha = InstanceProcess::instance_over_nats("alpha", &alpha_db.url, &nats.url()).await;
    // The workspace is served once its first events are applied; the rest follows the gap.
    let token = token(&operator, &ws).await;
    let client = e2e::api::client();
    wait_until("the instance to apply the events after the gap", Duration::from_secs(60), || {
        let request = client.get(alpha.url("/v1/runtime/workspace")).bearer_auth(&token).send();
        async move {
            let body = request.await.ok()?.json::<Value>().await.ok()?;
            (body["settings"] == json!({"n": 2})).then_some(())
        }
    })
    .await;
    assert!(alpha.logs().contains("gap detected"), "{}", alpha.logs());
}

#[tokio::test]
async fn an_instance_fetches_at_start_the_keys_of_workspaces_it_applied_without_one() {
    let nats = NatsServer::start().unwrap();
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &[], &[("NATS_URL", &nats.url())]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let org = organization(&operator).await;
    let ws = workspace(&operator, &org, "W", "alpha").await;
    let alpha_db = PgServer::shared().empty_database().await;
    let mut alpha = InstanceProcess::instance_over_nats("alpha", &alpha_db.url, &nats.url()).await;
    served(&operator, &alpha, &ws).await;
    alpha.kill();
    // As an instance upgraded from a version that kept no keys.
    alpha_db.connect().await.execute("DELETE FROM data_keys", &[]).await.unwrap();
    let alpha = InstanceProcess::instance_over_nats("alpha", &alpha_db.url, &nats.url()).await;
    served(&operator, &alpha, &ws).await;
}
