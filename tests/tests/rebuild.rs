//! `instance rebuild` over a large mixed log: real hub, nats-server and instance. Most
//! events are appended straight through the hub's event store (as the benchmarks load
//! them), the rest come through the API; the rebuild, over NATS and over HTTP, must give
//! exactly the state the live instance applied: same digest, same data keys, same
//! checkpoint.

use std::time::Duration;

use e2e::{Api, HubProcess, InstanceProcess, NatsServer, OPERATOR_KEY, PgServer, TestDatabase, wait_until};
use hub::store::{Commit, EventStore, ExpectedVersion, NewEvent, StreamAppend, WriterConfig};
use serde_json::json;
use shared::Metadata;
use shared::events::WorkspaceEvent;
use shared::events::workspace::{
    Destination, InteractionKeyCreated, InteractionKeyRevocation, InteractionKeyRevoked, KeyAlgorithm, PublicKey,
    WorkspaceUpdated,
};
use shared::metadata::Actor;
use uuid::Uuid;

/// Workspaces of the instance under test, and of another instance (never rebuilt here).
const MINE: usize = 30;
const OTHERS: usize = 3;
/// Events appended to each workspace straight through the store: whole rounds of [`round`].
const DIRECT_PER_WORKSPACE: usize = 8 * 42;

/// An organization's admin key.
async fn admin(operator: &Api, org: &str) -> Api {
    let key = operator.post("/v1/api-keys", json!({"name": "admin", "scopes": ["*"], "organization_id": org})).await;
    operator.with_key(key.expect(201).body["secret"].as_str().unwrap())
}

/// An interaction key of `workspace` routed to a new external key: its id.
async fn interaction_key(admin: &Api, workspace: &str) -> String {
    let external = admin
        .post(
            &format!("/v1/workspaces/{workspace}/external-keys"),
            json!({"provider": "van", "name": "VAN", "api_key": "van-credential-0001"}),
        )
        .await
        .expect(201);
    let body = json!({"name": "Canvass",
        "destination": {"type": "external_key", "external_key_id": external.body["id"]}});
    let created = admin.post(&format!("/v1/workspaces/{workspace}/interaction-keys"), body).await.expect(201);
    created.body["id"].as_str().unwrap().to_owned()
}

/// A random peppered-hash look-alike, unique per key.
fn key_hash() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

/// Event `n` of a workspace's direct load: a round of eight changes of every kind the
/// instance keeps (renames, settings, webhook URIs, public keys, an archive and its restore,
/// an interaction key created, the previous round's key revoked), so a workspace ends each
/// round live and not archived, holding one key from the load.
fn round(n: usize, keys: &mut Vec<Uuid>) -> WorkspaceEvent {
    let update = |update: WorkspaceUpdated| WorkspaceEvent::WorkspaceUpdated(update);
    match n % 8 {
        0 => update(WorkspaceUpdated { name: Some(format!("renamed-{n}")), ..Default::default() }),
        1 => {
            update(WorkspaceUpdated { settings: Some(json!({"n": n, "nested": {"odd": n % 2}})), ..Default::default() })
        }
        2 => update(WorkspaceUpdated {
            webhook_uris: Some((0..n % 3).map(|i| format!("https://hooks.test/{n}/{i}")).collect()),
            ..Default::default()
        }),
        3 => update(WorkspaceUpdated {
            public_keys: Some(vec![PublicKey {
                id: format!("k{n}"),
                algorithm: KeyAlgorithm::Ed25519,
                key: format!("-----BEGIN PUBLIC KEY-----\nkey{n}\n-----END PUBLIC KEY-----\n"),
            }]),
            ..Default::default()
        }),
        4 => WorkspaceEvent::WorkspaceArchived {},
        5 => WorkspaceEvent::WorkspaceRestored {},
        6 => {
            let id = Uuid::now_v7();
            keys.push(id);
            WorkspaceEvent::InteractionKeyCreated(InteractionKeyCreated {
                interaction_key_id: id,
                name: format!("key {n}"),
                destination: Destination::App { app_id: Uuid::now_v7() },
                source_app_id: None,
                key_hash: key_hash(),
                partial_key_hint: "ik_...abcd".into(),
                expires_at: (n % 16 == 6).then(|| chrono::Utc::now() + chrono::Duration::days(30)),
                sealed_secret: None,
                created_by: Actor::system(),
            })
        }
        _ => {
            let revoked = if keys.len() > 1 { keys.remove(0) } else { Uuid::now_v7() };
            WorkspaceEvent::InteractionKeyRevoked(InteractionKeyRevoked {
                interaction_key_id: revoked,
                reason: InteractionKeyRevocation::Deleted,
            })
        }
    }
}

/// Appends [`DIRECT_PER_WORKSPACE`] events to each workspace, eight per workspace in each
/// commit: returns how many.
async fn load(store: &EventStore, workspaces: &[String]) -> usize {
    let mut keys: Vec<Vec<Uuid>> = vec![Vec::new(); workspaces.len()];
    let mut appended = 0;
    for start in (0..DIRECT_PER_WORKSPACE).step_by(8) {
        let appends = workspaces
            .iter()
            .zip(keys.iter_mut())
            .map(|(ws, keys)| StreamAppend {
                stream_id: format!("workspace-{ws}"),
                expected: ExpectedVersion::Any,
                events: (start..start + 8)
                    .map(|n| NewEvent::new(&round(n, keys), &Metadata::system()).unwrap())
                    .collect(),
            })
            .collect::<Vec<_>>();
        appended += appends.iter().map(|a| a.events.len()).sum::<usize>();
        store.commit(Commit { appends, extra: Vec::new() }).await.unwrap();
    }
    appended
}

/// Runs `instance <command>` for `alpha` on `db` with `env`; its standard output.
fn instance(command: &str, db: &TestDatabase, env: &[(&str, &str)]) -> String {
    let out = std::process::Command::new(e2e::binaries::binary("instance"))
        .arg(command)
        .env("INSTANCE_ID", "alpha")
        .env("INSTANCE_DATABASE_URL", &db.url)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(out.status.success(), "{command}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// What the digest leaves out: the data keys and the instance's checkpoint.
async fn keys_and_checkpoint(db: &TestDatabase) -> (String, i64) {
    let client = db.connect().await;
    let keys = "SELECT coalesce(string_agg(workspace_id::text || ':' || encode(sealed_data_key, 'hex'), ',' \
                ORDER BY workspace_id), '') FROM data_keys";
    let keys: String = client.query_one(keys, &[]).await.unwrap().get(0);
    let applied = client.query_one("SELECT applied_position FROM instance_state", &[]).await.unwrap().get(0);
    (keys, applied)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_of_ten_thousand_mixed_events_equals_the_live_state_over_nats_and_http() {
    let nats = NatsServer::start().unwrap();
    let hub_db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&hub_db.url, &[], &[("NATS_URL", &nats.url())]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let org = operator.post("/v1/organizations", json!({"name": "Acme", "email": "o@a.test", "plan": "pro"})).await;
    let org = org.expect(201).body["id"].as_str().unwrap().to_owned();
    let admin = admin(&operator, &org).await;
    let instance_db = PgServer::shared().empty_database().await;
    let live = InstanceProcess::instance("alpha", &instance_db.url, &nats.url(), &hub.url("")).await;

    // Through the API: the workspaces (with their data keys), webhook URIs, secret
    // rotations, archives and restores, interaction keys created and revoked.
    let mut mine = Vec::new();
    for (i, instance) in (0..MINE + OTHERS).map(|i| (i, if i < MINE { "alpha" } else { "beta" })) {
        let body = json!({"name": format!("w{i}"), "instance_id": instance, "organization_id": org});
        let id = admin.post("/v1/workspaces", body).await.expect(201).body["id"].as_str().unwrap().to_owned();
        if instance == "alpha" {
            mine.push(id);
        }
    }
    let ws = |i: usize| format!("/v1/workspaces/{}", mine[i]);
    admin.patch(&ws(0), json!({"webhook_uris": ["https://hooks.test/a"], "settings": {"t": 1}})).await.expect(200);
    admin.post(&format!("{}/rotate-secret", ws(1)), json!({"grace_period_seconds": 60})).await.expect(200);
    admin.post(&format!("{}/archive", ws(2)), json!({})).await.expect(200);
    admin.post(&format!("{}/restore", ws(2)), json!({})).await.expect(200);
    let revoked = interaction_key(&admin, &mine[3]).await;
    let kept = interaction_key(&admin, &mine[3]).await;
    admin.delete(&format!("{}/interaction-keys/{revoked}", ws(3))).await.expect(204);

    // Straight through the store: rounds of every kind of change on every workspace.
    let store = EventStore::start(hub_db.pool(4), WriterConfig::default());
    let appended = load(&store, &mine).await;
    assert!(appended >= 10_000, "{appended} events appended");

    // Through the API again, on top of the load: rotations, a revocation, deletions
    // (one directly deleted workspace too).
    admin.post(&format!("{}/rotate-secret", ws(4)), json!({})).await.expect(200);
    admin.post(&format!("{}/rotate-secret", ws(4)), json!({})).await.expect(200);
    admin.delete(&format!("{}/interaction-keys/{kept}", ws(3))).await.expect(204);
    admin.delete(&ws(5)).await.expect(204);
    admin.delete(&ws(6)).await.expect(204);
    let deleted = vec![NewEvent::new(&WorkspaceEvent::WorkspaceDeleted {}, &Metadata::system()).unwrap()];
    store.append(format!("workspace-{}", mine[7]), ExpectedVersion::Any, deleted).await.unwrap();

    // The live instance applies the whole log of its workspaces.
    let streams: Vec<String> = mine.iter().map(|id| format!("workspace-{id}")).collect();
    let hub_client = hub_db.connect().await;
    let expected: i64 = hub_client
        .query_one("SELECT count(*) FROM events WHERE stream_id = ANY($1)", &[&streams])
        .await
        .unwrap()
        .get(0);
    assert!(expected > 10_000, "{expected} events of the instance's workspaces");
    let client = instance_db.connect().await;
    wait_until("the live instance to apply every event", Duration::from_secs(120), || {
        let client = &client;
        async move {
            let applied: i64 = client
                .query_one("SELECT sum(stream_version)::int8 FROM workspaces", &[])
                .await
                .ok()?
                .try_get(0)
                .ok()?;
            (applied == expected).then_some(())
        }
    })
    .await;
    drop(live);
    let digest = instance("digest", &instance_db, &[]);
    let before = keys_and_checkpoint(&instance_db).await;
    assert_eq!(before.0.matches(',').count() + 1, MINE - 3, "a data key for each live workspace");
    let live_keys: i64 = client.query_one("SELECT count(*) FROM interaction_keys", &[]).await.unwrap().get(0);
    assert_eq!(live_keys, MINE as i64 - 3, "the load's last key of each live workspace, the API's revoked");

    // Over NATS (as the instance's own NATS user), then over HTTP: both equal the live state.
    let nats_url = e2e::nats::url_as(&nats.url(), "alpha");
    let hub_url = hub.url("");
    for env in [vec![("NATS_URL", nats_url.as_str())], vec![("HUB_URL", &hub_url), ("HUB_OPERATOR_KEY", OPERATOR_KEY)]]
    {
        let report = instance("rebuild", &instance_db, &env);
        assert_eq!(report, format!("rebuilt from {expected} events"), "{env:?}");
        assert_eq!(instance("digest", &instance_db, &[]), digest, "a rebuild equals the live state: {env:?}");
        assert_eq!(keys_and_checkpoint(&instance_db).await, before, "same data keys and checkpoint: {env:?}");
    }

    // An event of the log altered behind the hub's back stops the rebuild, which names it.
    let tampered: i64 = hub_client
        .query_one(
            "SELECT position FROM events WHERE stream_id = ANY($1) ORDER BY position OFFSET 5000 LIMIT 1",
            &[&streams],
        )
        .await
        .unwrap()
        .get(0);
    hub_client
        .batch_execute(&format!(
            "ALTER TABLE events DISABLE TRIGGER USER; \
             UPDATE events SET recorded_at = recorded_at + interval '1 second' WHERE position = {tampered}; \
             ALTER TABLE events ENABLE ALWAYS TRIGGER events_no_update_or_delete; \
             ALTER TABLE events ENABLE ALWAYS TRIGGER events_no_truncate;"
        ))
        .await
        .unwrap();
    let out = std::process::Command::new(e2e::binaries::binary("instance"))
        .arg("rebuild")
        .env("INSTANCE_ID", "alpha")
        .env("INSTANCE_DATABASE_URL", &instance_db.url)
        .envs([("HUB_URL", hub_url.as_str()), ("HUB_OPERATOR_KEY", OPERATOR_KEY)])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a rebuild over a tampered log succeeded: {stderr}");
    assert!(stderr.contains(&format!("event at position {tampered} fails its hash check")), "{stderr}");
}
