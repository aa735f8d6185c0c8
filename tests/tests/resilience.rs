//! Surviving failing machines: PostgreSQL restarted under running hubs and instances,
//! nats-server killed or away, and an instance that fell behind the stream's limits. Real
//! processes throughout; PostgreSQL and NATS are servers of the test's own so they can be
//! restarted.

use std::time::Duration;

use e2e::{Api, HubProcess, InstanceProcess, NatsServer, OPERATOR_KEY, PgServer, TestDatabase, wait_until};
use serde_json::json;

/// Whether `url` answers 200 now.
async fn ready(url: String) -> bool {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    client.get(url).send().await.is_ok_and(|r| r.status() == 200)
}

/// `/readyz` of `process` answers a 503 problem now.
async fn not_ready(process: &HubProcess) -> bool {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    match client.get(process.url("/readyz")).send().await {
        Ok(reply) => {
            let problem = reply.headers().get("content-type").is_some_and(|v| v == "application/problem+json");
            reply.status() == 503 && problem
        }
        Err(_) => false,
    }
}

async fn wait_ready(what: &str, process: &HubProcess, timeout: Duration) {
    let url = process.url("/readyz");
    wait_until(&format!("{what} /readyz to answer 200"), timeout, || {
        let url = url.clone();
        async move { ready(url).await.then_some(()) }
    })
    .await;
}

/// Whether the workspace `id` is materialized in `db` (in `schema`).
async fn materialized(db: &TestDatabase, schema: &str, id: &str) -> bool {
    let Ok((client, connection)) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await else {
        return false;
    };
    tokio::spawn(connection);
    let id: uuid::Uuid = id.parse().unwrap();
    let sql = format!("SELECT 1 FROM {schema}.workspaces WHERE id = $1 AND state IS NOT NULL");
    client.query_opt(&sql, &[&id]).await.ok().flatten().is_some()
}

async fn wait_materialized(what: &str, db: &TestDatabase, schema: &str, id: &str, timeout: Duration) {
    wait_until(what, timeout, || async move { materialized(db, schema, id).await.then_some(()) }).await;
}

async fn organization(operator: &Api) -> String {
    let body = json!({"name": "Acme", "email": "o@a.test", "plan": "pro"});
    operator.post("/v1/organizations", body).await.expect(201).body["id"].as_str().unwrap().to_owned()
}

/// Creates a workspace, retrying while the hub answers 503 (its database is coming back).
async fn workspace(operator: &Api, org: &str, name: &str, instance: Option<&str>) -> String {
    let mut body = json!({"name": name, "organization_id": org});
    if let Some(instance) = instance {
        body["instance_id"] = json!(instance);
    }
    wait_until(&format!("the hub to create {name}"), Duration::from_secs(30), || {
        let (operator, body) = (operator.clone(), body.clone());
        async move {
            let reply = operator.post("/v1/workspaces", body).await;
            (reply.status == 201).then(|| reply.body["id"].as_str().unwrap().to_owned())
        }
    })
    .await
}

/// A PostgreSQL server of this test's own, with the hub's migrated template.
async fn own_postgres() -> PgServer {
    let server =
        tokio::task::spawn_blocking(|| PgServer::start(e2e::postgres::Durability::Off).unwrap()).await.unwrap();
    server.create_template().await.unwrap();
    server
}

async fn restart_postgres(server: PgServer) -> PgServer {
    tokio::task::spawn_blocking(move || {
        let mut server = server;
        server.restart().unwrap();
        server
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgresql_restart_under_a_hub_and_two_instances_heals_without_restarting_them() {
    let pg = own_postgres().await;
    let nats = NatsServer::start().unwrap();
    let hub_db = pg.migrated_database().await;
    let hub = HubProcess::spawn(&hub_db.url, &[], &[("NATS_URL", &nats.url())]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let (alpha_db, beta_db) = (pg.empty_database().await, pg.empty_database().await);
    let alpha = InstanceProcess::instance("alpha", &alpha_db.url, &nats.url(), &hub.url("")).await;
    let beta = InstanceProcess::instance("beta", &beta_db.url, &nats.url(), &hub.url("")).await;
    let org = organization(&operator).await;
    let a1 = workspace(&operator, &org, "A1", Some("alpha")).await;
    let b1 = workspace(&operator, &org, "B1", Some("beta")).await;
    wait_materialized("A1 on alpha", &alpha_db, "public", &a1, Duration::from_secs(30)).await;
    wait_materialized("B1 on beta", &beta_db, "public", &b1, Duration::from_secs(30)).await;

    let _pg = restart_postgres(pg).await;

    let a2 = workspace(&operator, &org, "A2", Some("alpha")).await;
    let b2 = workspace(&operator, &org, "B2", Some("beta")).await;
    wait_materialized("A2 on alpha after the restart", &alpha_db, "public", &a2, Duration::from_secs(30)).await;
    wait_materialized("B2 on beta after the restart", &beta_db, "public", &b2, Duration::from_secs(30)).await;
    for (name, process) in [("the hub", &hub), ("alpha", &alpha), ("beta", &beta)] {
        wait_ready(name, process, Duration::from_secs(30)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgresql_restart_under_a_single_node_hub_heals_its_embedded_instance() {
    let pg = own_postgres().await;
    let db = pg.migrated_database().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let org = organization(&operator).await;
    let w1 = workspace(&operator, &org, "W1", None).await;
    wait_materialized("W1 in the embedded instance", &db, "instance", &w1, Duration::from_secs(30)).await;

    let _pg = restart_postgres(pg).await;

    let w2 = workspace(&operator, &org, "W2", None).await;
    wait_materialized("W2 in the embedded instance after the restart", &db, "instance", &w2, Duration::from_secs(30))
        .await;
    wait_ready("the single-node hub", &hub, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_killed_during_fifty_writes_loses_none_of_them_on_the_instance() {
    let mut nats = NatsServer::start().unwrap();
    let hub_db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&hub_db.url, &[], &[("NATS_URL", &nats.url())]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let alpha_db = PgServer::shared().empty_database().await;
    let _alpha = InstanceProcess::instance("alpha", &alpha_db.url, &nats.url(), &hub.url("")).await;
    let org = organization(&operator).await;

    let writer = {
        let (operator, org) = (operator.clone(), org.clone());
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..50 {
                ids.push(workspace(&operator, &org, &format!("W{i}"), Some("alpha")).await);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            ids
        })
    };
    wait_until("some writes", Duration::from_secs(30), || {
        let db = hub_db.clone();
        async move {
            let client = db.connect().await;
            let count: i64 = client
                .query_one("SELECT count(*) FROM events WHERE event_type = 'WorkspaceCreated'", &[])
                .await
                .unwrap()
                .get(0);
            (count >= 10).then_some(())
        }
    })
    .await;
    nats.kill();
    tokio::time::sleep(Duration::from_millis(700)).await;
    nats.restart().unwrap();
    let ids = writer.await.unwrap();

    for id in &ids {
        wait_materialized("every write on the instance", &alpha_db, "public", id, Duration::from_secs(60)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_is_not_ready_while_nats_is_away_and_ready_once_it_returns() {
    let mut nats = NatsServer::start().unwrap();
    let hub_db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&hub_db.url, &[], &[("NATS_URL", &nats.url())]).await;
    let alpha_db = PgServer::shared().empty_database().await;
    let alpha = InstanceProcess::instance("alpha", &alpha_db.url, &nats.url(), &hub.url("")).await;
    wait_ready("alpha", &alpha, Duration::from_secs(30)).await;

    nats.stop();
    let stopped = std::time::Instant::now();
    wait_until("alpha /readyz to answer a 503 problem", Duration::from_secs(15), || async {
        not_ready(&alpha).await.then_some(())
    })
    .await;
    // Away for 20 s in all, then back on the same store.
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(stopped.elapsed())).await;
    assert!(not_ready(&alpha).await, "still not ready while NATS is away");
    nats.restart().unwrap();
    wait_ready("alpha", &alpha, Duration::from_secs(30)).await;

    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let org = organization(&operator).await;
    let w = workspace(&operator, &org, "W", Some("alpha")).await;
    wait_materialized("a write after NATS returned", &alpha_db, "public", &w, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_behind_the_streams_first_message_catches_up_from_the_hubs_feed() {
    let nats = NatsServer::start().unwrap();
    let hub_db = TestDatabase::new().await;
    let nats_url = nats.url();
    let js = async_nats::jetstream::new(nats.client().await);
    // The stream exists already, without limits: the next hub brings its limits in.
    let mut first = HubProcess::spawn(&hub_db.url, &[], &[("NATS_URL", nats_url.as_str())]).await;
    wait_until("the relay to create the stream", Duration::from_secs(30), || {
        let js = js.clone();
        async move { js.get_stream("HUB_EVENTS").await.ok().map(|_| ()) }
    })
    .await;
    first.kill();
    let env = [("NATS_URL", nats_url.as_str()), ("HUB_EVENTS_MAX_MESSAGES", "5")];
    let hub = HubProcess::spawn(&hub_db.url, &[], &env).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let org = organization(&operator).await;
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(workspace(&operator, &org, &format!("W{i}"), Some("alpha")).await);
    }
    // The stream keeps only its last 5 messages: most of alpha's workspaces are gone from it.
    wait_until("the stream to discard its oldest messages", Duration::from_secs(30), || {
        let js = js.clone();
        async move {
            let mut stream = js.get_stream("HUB_EVENTS").await.ok()?;
            let state = stream.info().await.ok()?.state.clone();
            (state.messages <= 5 && state.last_sequence >= 13).then_some(())
        }
    })
    .await;

    let alpha_db = PgServer::shared().empty_database().await;
    let _alpha = InstanceProcess::instance("alpha", &alpha_db.url, &nats.url(), &hub.url("")).await;
    for id in &ids {
        wait_materialized("every workspace of alpha", &alpha_db, "public", id, Duration::from_secs(30)).await;
    }
}

/// A write that waits on a stuck lock holder fails with a 503 after `lock_timeout`
/// instead of hanging, and the hub writes again once the holder is gone.
async fn write_behind_a_stuck_lock(lock_timeout: &str) -> u16 {
    let db = TestDatabase::new().await;
    let env = [("DATABASE_LOCK_TIMEOUT_SECONDS", lock_timeout)];
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &env).await;
    let mut holder = db.connect().await;
    let transaction = holder.transaction().await.unwrap();
    // Blocks every insert into the log, as a writer stalled mid-transaction would.
    transaction.batch_execute("LOCK TABLE events IN EXCLUSIVE MODE").await.unwrap();
    let body = json!({"name": "Acme", "email": "o@a.test", "plan": "pro"});
    // The client gives up well before the hub's own 30 s request timeout.
    let client = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap();
    let reply = client
        .post(hub.url("/v1/organizations"))
        .bearer_auth(OPERATOR_KEY)
        .json(&body)
        .send()
        .await
        .expect("the hub answers while the lock is held");
    let status = reply.status().as_u16();
    transaction.rollback().await.unwrap();
    Api::new(&hub.url(""), Some(OPERATOR_KEY)).post("/v1/organizations", body).await.expect(201);
    status
}

#[tokio::test]
async fn a_write_stuck_behind_a_lock_holder_fails_fast_and_the_hub_writes_again_once_it_is_gone() {
    assert_eq!(write_behind_a_stuck_lock("1").await, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_whose_consumer_is_stuck_behind_is_not_ready_until_it_progresses() {
    let nats = NatsServer::start().unwrap();
    let hub_db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&hub_db.url, &[], &[("NATS_URL", &nats.url())]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let alpha_db = PgServer::shared().empty_database().await;
    // No lock timeout: the consumer waits on the lock below for as long as it is held.
    let env = [("INSTANCE_CONSUMER_STALL_SECONDS", "2"), ("DATABASE_LOCK_TIMEOUT_SECONDS", "0")];
    let alpha = InstanceProcess::instance_with_env("alpha", &alpha_db.url, &nats.url(), &hub.url(""), &env).await;
    let org = organization(&operator).await;
    let w1 = workspace(&operator, &org, "W1", Some("alpha")).await;
    wait_materialized("W1 on alpha", &alpha_db, "public", &w1, Duration::from_secs(30)).await;
    wait_ready("alpha", &alpha, Duration::from_secs(30)).await;

    let mut holder = alpha_db.connect().await;
    let transaction = holder.transaction().await.unwrap();
    transaction.batch_execute("LOCK TABLE workspaces IN EXCLUSIVE MODE").await.unwrap();
    let w2 = workspace(&operator, &org, "W2", Some("alpha")).await;
    wait_until("alpha /readyz to answer a 503 problem", Duration::from_secs(30), || async {
        not_ready(&alpha).await.then_some(())
    })
    .await;

    transaction.rollback().await.unwrap();
    wait_materialized("W2 on alpha once the lock is gone", &alpha_db, "public", &w2, Duration::from_secs(30)).await;
    wait_ready("alpha", &alpha, Duration::from_secs(30)).await;
}
