//! Webhook delivery from the instances: every accepted interaction is POSTed to each
//! webhook URI of its workspace as a Standard Webhooks request (verified here with the
//! reference `standardwebhooks` library, during a secret rotation too), retried on
//! `WEBHOOK_RETRY_SCHEDULE` while the receiver fails, delivered exactly once after a crash
//! of the instance, refused for loopback destinations unless `WEBHOOK_ALLOW_PRIVATE=true`,
//! and listed and retried through `GET /v1/runtime/deliveries` and
//! `POST /v1/runtime/deliveries/{id}/retry`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use e2e::receiver::{Received, Receiver};
use e2e::{Api, HubProcess, NatsServer, OPERATOR_KEY, PgServer, Reply, TestDatabase, wait_until};
use reqwest::Method;
use serde_json::{Value, json};

const ALLOW_PRIVATE: (&str, &str) = ("WEBHOOK_ALLOW_PRIVATE", "true");
/// These tests present bad tokens on purpose.
const NO_THROTTLE: (&str, &str) = ("HUB_AUTH_FAILURES_PER_MINUTE", "100000");
const WAIT: Duration = Duration::from_secs(60);

#[track_caller]
fn refused(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status.as_u16(), status, "{}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/problem+json"), "{}", reply.text);
    assert_eq!(reply.body["code"], code, "{}", reply.text);
}

/// A workspace with its webhook URIs, of a new organization: (workspace id, its
/// `webhook_secret`, an admin key of the organization).
async fn workspace(operator: &Api, instance: Option<&str>, webhooks: &[String]) -> (String, String, Api) {
    let org = operator
        .post("/v1/organizations", json!({"name": "Acme", "email": "ops@acme.test", "plan": "pro"}))
        .await
        .expect(201);
    let org = org.body["id"].as_str().unwrap().to_owned();
    let key = operator.post("/v1/api-keys", json!({"name": "admin", "scopes": ["*"], "organization_id": org})).await;
    let admin = operator.with_key(key.expect(201).body["secret"].as_str().unwrap());
    let mut body = json!({"name": "Field", "webhook_uris": webhooks});
    if let Some(instance) = instance {
        body["instance_id"] = json!(instance);
    }
    let created = admin.post("/v1/workspaces", body).await.expect(201).body;
    (created["id"].as_str().unwrap().to_owned(), webhook_secret(&created), admin)
}

/// The `whsec_` form of the secret in a creation's or rotation's answer: `"whsec_" +
/// base64(UTF-8 bytes of secret)`, as Standard Webhooks libraries take it.
fn webhook_secret(answer: &Value) -> String {
    let secret = answer["secret"].as_str().expect("the secret is shown once");
    let whsec = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(secret.as_bytes()));
    assert_eq!(answer["webhook_secret"], whsec.as_str(), "`webhook_secret` is the same secret");
    whsec
}

/// A new interaction key of `workspace`.
async fn interaction_key(admin: &Api, workspace: &str) -> String {
    let external = admin
        .post(
            &format!("/v1/workspaces/{workspace}/external-keys"),
            json!({"provider": "van", "name": "VAN", "api_key": "van-credential-0001"}),
        )
        .await
        .expect(201);
    let body =
        json!({"name": "Canvass", "destination": {"type": "external_key", "external_key_id": external.body["id"]}});
    let created = admin.post(&format!("/v1/workspaces/{workspace}/interaction-keys"), body).await.expect(201);
    created.body["secret"].as_str().unwrap().to_owned()
}

/// A workspace access token, once the instance at `runtime` knows the workspace at
/// `secret_version`.
async fn access_token(admin: &Api, runtime: &Api, workspace: &str, secret_version: i64) -> Api {
    let reply = admin.post(&format!("/v1/workspaces/{workspace}/access-token"), json!({})).await.expect(200);
    let api = runtime.with_key(reply.body["access_token"].as_str().unwrap());
    wait_until("the workspace's secret to reach the instance", WAIT, || {
        let api = api.clone();
        async move { (api.get("/v1/runtime/workspace").await.body["secret_version"] == secret_version).then_some(()) }
    })
    .await;
    api
}

/// Posts an interaction until accepted (the key reaches the instance asynchronously).
async fn interact(ingest: &Api, n: usize) -> String {
    let body = json!({"type": "door.knocked", "payload": {"voter": n, "answer": "yes"}});
    wait_until("the interaction to be accepted", WAIT, || {
        let (ingest, body) = (ingest.clone(), body.clone());
        async move {
            let reply = ingest.post("/v1/interactions", body).await;
            assert!(matches!(reply.status.as_u16(), 202 | 401), "{}", reply.text);
            (reply.status == 202).then(|| reply.body["id"].as_str().unwrap().to_owned())
        }
    })
    .await
}

/// Every delivery of the token's workspace (all pages).
async fn deliveries(runtime: &Api) -> Vec<Value> {
    let mut items = Vec::new();
    let mut path = "/v1/runtime/deliveries?page_size=100".to_owned();
    loop {
        let page = runtime.get(&path).await.expect(200).body;
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["links"].as_array().unwrap().iter().find(|l| l["rel"] == "next") {
            Some(next) => path = next["href"].as_str().unwrap().to_owned(),
            None => return items,
        }
    }
}

/// Waits until the delivery of interaction `id` to `url` has `status`, and returns it.
async fn delivery_with_status(runtime: &Api, id: &str, url: &str, status: &str) -> Value {
    wait_until(&format!("the delivery of {id} to {url} to be {status}"), WAIT, || {
        let runtime = runtime.clone();
        let (id, url, status) = (id.to_owned(), url.to_owned(), status.to_owned());
        async move {
            let found = deliveries(&runtime).await.into_iter().find(|d| d["interaction_id"] == id && d["url"] == url);
            found.filter(|d| d["status"] == status)
        }
    })
    .await
}

/// The successes the receiver answered per `webhook-id`.
fn successes(requests: &[Received]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for request in requests.iter().filter(|r| (200..300).contains(&r.answered)) {
        *counts.entry(request.id.clone()).or_default() += 1;
    }
    counts
}

/// The reference `standardwebhooks` library (PyPI) in a cached venv under `.data/`,
/// created on first use; the test fails when it cannot be created.
fn python() -> &'static PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let venv = root.join(".data").join("standardwebhooks-venv");
        let python = venv.join("bin").join("python");
        let ready = |python: &PathBuf| {
            std::process::Command::new(python)
                .args(["-c", "import standardwebhooks"])
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ready(&python) {
            let run = |program: &std::path::Path, args: &[&str]| {
                let out = std::process::Command::new(program).args(args).output().unwrap_or_else(|e| {
                    panic!("cannot run {}: {e} (install python3-venv: deploy/install-deps.sh)", program.display())
                });
                assert!(
                    out.status.success(),
                    "{} {args:?} failed: {}",
                    program.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            run("python3".as_ref(), &["-m", "venv", venv.to_str().unwrap()]);
            run(&venv.join("bin").join("pip"), &["install", "--quiet", "standardwebhooks==1.1.0"]);
            assert!(ready(&python), "standardwebhooks is not importable from {}", venv.display());
        }
        python
    })
}

/// What `standardwebhooks.Webhook(secret).verify(body, headers)` says of each request:
/// `ok`, or the exception it raised.
fn verify(cases: &[(&str, &Received)]) -> Vec<String> {
    let python = python();
    let cases: Vec<Value> = cases
        .iter()
        .map(|(secret, r)| {
            json!({"secret": secret, "id": r.id, "timestamp": r.timestamp, "signature": r.signature, "body": r.body})
        })
        .collect();
    let file = e2e::process::new_dir("standardwebhooks").join("cases.json");
    std::fs::write(&file, serde_json::to_vec(&cases).unwrap()).unwrap();
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
out = []
for c in json.load(open(sys.argv[1])):
    try:
        Webhook(c["secret"]).verify(c["body"], {"webhook-id": c["id"], "webhook-timestamp": c["timestamp"], "webhook-signature": c["signature"]})
        out.append("ok")
    except Exception as e:
        out.append(f"{type(e).__name__}: {e}")
print(json.dumps(out))
"#;
    let out = std::process::Command::new(python).args(["-c", script]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `request` with only the `n`-th of its signatures.
fn only_signature(request: &Received, n: usize) -> Received {
    let signature = request.signature.split(' ').nth(n).unwrap().to_owned();
    Received { signature, ..request.clone() }
}

#[tokio::test]
async fn every_delivery_verifies_with_the_standard_webhooks_library_before_during_and_after_a_rotation() {
    let db = TestDatabase::new().await;
    let hub =
        HubProcess::spawn(&db.url, &["--single-node"], &[ALLOW_PRIVATE, ("WEBHOOK_RETRY_SCHEDULE", "1,1,1")]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let receiver = Receiver::start(204).await;
    let second = Receiver::start(200).await;
    let (ws, old_secret, admin) = workspace(&operator, None, &[receiver.url("/hooks"), second.url("/in?x=1")]).await;
    let ingest = Api::new(&hub.url(""), Some(&interaction_key(&admin, &ws).await));
    let runtime = access_token(&admin, &ingest, &ws, 1).await;

    let before = interact(&ingest, 1).await;
    let delivered = delivery_with_status(&runtime, &before, &receiver.url("/hooks"), "succeeded").await;
    assert_eq!(delivered["attempts"], 1, "{delivered}");
    assert_eq!(delivered["last_status_code"], 204, "{delivered}");
    wait_until("both receivers to get it", WAIT, || {
        let done = !receiver.requests_for(&before).is_empty() && !second.requests_for(&before).is_empty();
        async move { done.then_some(()) }
    })
    .await;
    let request = receiver.requests_for(&before).remove(0);
    let body: Value = serde_json::from_str(&request.body).unwrap();
    assert_eq!(body["type"], "door.knocked");
    assert!(chrono::DateTime::parse_from_rfc3339(body["timestamp"].as_str().unwrap()).is_ok(), "{body}");
    assert_eq!(
        body["data"],
        json!({"interaction_id": before, "workspace_id": ws,
               "interaction_key_id": body["data"]["interaction_key_id"], "payload": {"voter": 1, "answer": "yes"}})
    );
    assert!(body["data"]["interaction_key_id"].is_string(), "{body}");
    assert!(request.timestamp.parse::<i64>().is_ok(), "{}", request.timestamp);
    assert_eq!(request.signature.split(' ').count(), 1, "one secret, one signature: {}", request.signature);
    let tampered = Received { body: request.body.replace("yes", "no"), ..request.clone() };
    let other = second.requests_for(&before).remove(0);
    let verdicts = verify(&[(&old_secret, &request), (&old_secret, &other), (&old_secret, &tampered)]);
    assert_eq!(verdicts[..2], ["ok", "ok"]);
    assert!(verdicts[2].contains("No matching signature"), "a tampered body is refused: {}", verdicts[2]);

    // During the rotation's grace period: two signatures, the new secret's first.
    let rotated = admin.post(&format!("/v1/workspaces/{ws}/rotate-secret"), json!({"grace_period_seconds": 4})).await;
    let new_secret = webhook_secret(&rotated.expect(200).body);
    let runtime = access_token(&admin, &ingest, &ws, 2).await;
    let during = interact(&ingest, 2).await;
    delivery_with_status(&runtime, &during, &receiver.url("/hooks"), "succeeded").await;
    let request = receiver.requests_for(&during).remove(0);
    assert_eq!(request.signature.split(' ').count(), 2, "{}", request.signature);
    let (first, second_signature) = (only_signature(&request, 0), only_signature(&request, 1));
    let verdicts = verify(&[
        (&new_secret, &request),
        (&old_secret, &request),
        (&new_secret, &first),
        (&old_secret, &second_signature),
        (&old_secret, &first),
    ]);
    assert_eq!(verdicts[..4], ["ok", "ok", "ok", "ok"], "{verdicts:?}");
    assert!(verdicts[4].contains("No matching signature"), "the first signature is the new secret's: {verdicts:?}");

    // After the grace period: the new secret alone.
    let after = wait_until("the grace period to end", WAIT, || {
        let ingest = ingest.clone();
        let receiver = receiver.clone();
        let runtime = runtime.clone();
        async move {
            let id = interact(&ingest, 3).await;
            delivery_with_status(&runtime, &id, &receiver.url("/hooks"), "succeeded").await;
            let request = receiver.requests_for(&id).remove(0);
            (request.signature.split(' ').count() == 1).then_some(request)
        }
    })
    .await;
    let verdicts = verify(&[(&new_secret, &after), (&old_secret, &after)]);
    assert_eq!(verdicts[0], "ok");
    assert!(verdicts[1].contains("No matching signature"), "{verdicts:?}");
    assert!(!hub.logs().contains(&new_secret[6..]), "no secret in the logs");
}

#[tokio::test]
async fn a_failing_receiver_gets_every_retry_of_the_schedule_with_one_webhook_id_and_one_success_once_it_recovers() {
    let nats = NatsServer::start().unwrap();
    let hub_db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&hub_db.url, &[], &[("NATS_URL", &nats.url())]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let instance_db = PgServer::shared().empty_database().await;
    let schedule = ("WEBHOOK_RETRY_SCHEDULE", "1,1,1");
    let instance =
        HubProcess::instance_with_env("alpha", &instance_db.url, &nats.url(), &hub.url(""), &[ALLOW_PRIVATE, schedule])
            .await;
    let receiver = Receiver::start(503).await;
    let (ws, _, admin) = workspace(&operator, Some("alpha"), &[receiver.url("/hooks")]).await;
    let ingest = Api::new(&instance.url(""), Some(&interaction_key(&admin, &ws).await));
    let runtime = access_token(&admin, &ingest, &ws, 1).await;

    // Never answered with a 2xx: the first attempt and one retry per schedule entry, then failed.
    let exhausted = interact(&ingest, 1).await;
    let failed = delivery_with_status(&runtime, &exhausted, &receiver.url("/hooks"), "failed").await;
    assert_eq!(failed["attempts"], 4, "{failed}");
    assert_eq!(failed["last_status_code"], 503, "{failed}");
    assert!(failed["next_attempt_at"].is_null(), "{failed}");
    let attempts = receiver.requests_for(&exhausted);
    assert_eq!(attempts.len(), 4, "{attempts:?}");
    assert!(attempts.iter().all(|r| r.answered == 503));

    // Failing, then recovering: retried with the same webhook-id until the one success.
    let recovering = interact(&ingest, 2).await;
    wait_until("two failed attempts", WAIT, || {
        let tried = receiver.requests_for(&recovering).len() >= 2;
        async move { tried.then_some(()) }
    })
    .await;
    receiver.answer(200);
    let succeeded = delivery_with_status(&runtime, &recovering, &receiver.url("/hooks"), "succeeded").await;
    let attempts = receiver.requests_for(&recovering);
    assert_eq!(succeeded["attempts"], attempts.len(), "every attempt is counted: {succeeded}");
    assert_eq!(succeeded["last_status_code"], 200);
    assert_eq!(attempts.iter().filter(|r| r.answered == 200).count(), 1, "{attempts:?}");
    assert_eq!(attempts.last().unwrap().answered, 200, "nothing is sent after the success");
    assert!(attempts.iter().all(|r| r.id == recovering), "every attempt carries the interaction's id");

    // A failed delivery retried through the API: one more attempt, then succeeded for good.
    let retry = format!("/v1/runtime/deliveries/{}/retry", failed["id"].as_str().unwrap());
    let retried = runtime.post(&retry, json!({})).await.expect(202).body;
    assert_eq!(retried["status"], "pending", "{retried}");
    let done = delivery_with_status(&runtime, &exhausted, &receiver.url("/hooks"), "succeeded").await;
    assert_eq!(done["attempts"], 5, "{done}");
    assert_eq!(successes(&receiver.requests())[&exhausted], 1);
    let again =
        runtime.post(&format!("/v1/runtime/deliveries/{}/retry", done["id"].as_str().unwrap()), json!({})).await;
    refused(&again, 409, "delivery_succeeded");
    assert_eq!(receiver.requests_for(&exhausted).len(), 5, "a success is never repeated");
}

#[tokio::test]
async fn twenty_failing_deliveries_survive_a_kill_of_the_instance_and_each_succeeds_exactly_once() {
    let nats = NatsServer::start().unwrap();
    let hub_db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&hub_db.url, &[], &[("NATS_URL", &nats.url())]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let instance_db = PgServer::shared().empty_database().await;
    // Long enough that no delivery runs out of retries across the crash.
    let schedule = vec!["1"; 120].join(",");
    let env = [ALLOW_PRIVATE, ("WEBHOOK_RETRY_SCHEDULE", schedule.as_str())];
    let (nats_url, hub_url) = (nats.url(), hub.url(""));
    let start = || HubProcess::instance_with_env("alpha", &instance_db.url, &nats_url, &hub_url, &env);
    let mut instance = start().await;
    let receiver = Receiver::start(503).await;
    // Slow answers: the kill finds requests in flight, whose claims must run out first.
    receiver.delay(Duration::from_millis(300));
    let (ws, _, admin) = workspace(&operator, Some("alpha"), &[receiver.url("/hooks")]).await;
    let ingest = Api::new(&instance.url(""), Some(&interaction_key(&admin, &ws).await));
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(interact(&ingest, n).await);
    }
    wait_until("every delivery to have failed twice", WAIT, || {
        let failing = ids.iter().all(|id| receiver.requests_for(id).len() >= 2);
        async move { failing.then_some(()) }
    })
    .await;

    wait_until("requests in flight", WAIT, || {
        let busy = receiver.in_flight() > 0;
        async move { busy.then_some(()) }
    })
    .await;
    instance.kill();
    // The crash left deliveries claimed, their attempts unrecorded.
    let claimed = "SELECT count(*) FROM deliveries WHERE claimed_until > now()";
    let claimed: i64 = instance_db.connect().await.query_one(claimed, &[]).await.unwrap().get(0);
    assert!(claimed > 0, "the kill found requests in flight");
    let instance = start().await;
    receiver.answer(200);
    receiver.delay(Duration::ZERO);
    let runtime = access_token(&admin, &Api::new(&instance.url(""), None), &ws, 1).await;
    wait_until("all 20 deliveries to succeed", Duration::from_secs(120), || {
        let runtime = runtime.clone();
        async move {
            let all = deliveries(&runtime).await;
            (all.len() == 20 && all.iter().all(|d| d["status"] == "succeeded")).then_some(())
        }
    })
    .await;
    let successes = successes(&receiver.requests());
    for id in &ids {
        assert_eq!(successes.get(id), Some(&1), "{id} succeeded exactly once: {successes:?}");
    }
    assert_eq!(successes.len(), 20);
}

#[tokio::test]
async fn without_webhook_allow_private_loopback_destinations_are_refused_at_once_and_marked_failed() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let receiver = Receiver::start(200).await;
    let by_name = format!("http://localhost:{}/hooks", receiver.addr.port());
    let (ws, _, admin) = workspace(&operator, None, &[receiver.url("/hooks"), by_name.clone()]).await;
    let ingest = Api::new(&hub.url(""), Some(&interaction_key(&admin, &ws).await));
    let runtime = access_token(&admin, &ingest, &ws, 1).await;

    let id = interact(&ingest, 1).await;
    let failed = wait_until("both deliveries to fail", WAIT, || {
        let runtime = runtime.clone();
        async move {
            let all = deliveries(&runtime).await;
            (all.len() == 2 && all.iter().all(|d| d["status"] == "failed")).then_some(all)
        }
    })
    .await;
    for delivery in &failed {
        assert_eq!(delivery["interaction_id"], id.as_str());
        assert_eq!(delivery["attempts"], 1, "refused at once, no retry: {delivery}");
        assert!(delivery["last_status_code"].is_null(), "{delivery}");
        let why = delivery["last_error"].as_str().unwrap_or_default();
        assert!(why.contains("refused") && why.contains("WEBHOOK_ALLOW_PRIVATE"), "{delivery}");
    }
    let urls: Vec<&str> = failed.iter().map(|d| d["url"].as_str().unwrap()).collect();
    assert!(urls.contains(&by_name.as_str()), "a name resolving to loopback is refused too: {urls:?}");
    let count = runtime.get("/v1/runtime/deliveries/count?status=failed").await.expect(200);
    assert_eq!(count.body["count"], 2);
    assert!(receiver.requests().is_empty(), "the receiver got nothing");
}

#[tokio::test]
async fn redirects_are_not_followed_and_one_url_gets_at_most_eight_requests_at_once() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[ALLOW_PRIVATE, ("WEBHOOK_RETRY_SCHEDULE", "1")]).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let receiver = Receiver::start(307).await;
    let (ws, _, admin) = workspace(&operator, None, &[receiver.url("/hooks")]).await;
    let ingest = Api::new(&hub.url(""), Some(&interaction_key(&admin, &ws).await));
    let runtime = access_token(&admin, &ingest, &ws, 1).await;

    // A 307 is not a success and is not followed: retried once, then failed.
    let redirected = interact(&ingest, 1).await;
    let failed = delivery_with_status(&runtime, &redirected, &receiver.url("/hooks"), "failed").await;
    assert_eq!(failed["attempts"], 2, "{failed}");
    assert_eq!(failed["last_status_code"], 307, "{failed}");
    let requests = receiver.requests();
    assert!(requests.iter().all(|r| r.path == "/hooks"), "the Location was never followed: {requests:?}");

    // A slow receiver: many deliveries due at once, never more than 8 in flight to it.
    receiver.answer(200);
    receiver.delay(Duration::from_millis(300));
    let mut ids = Vec::new();
    for n in 0..24 {
        ids.push(interact(&ingest, n).await);
    }
    for id in &ids {
        delivery_with_status(&runtime, id, &receiver.url("/hooks"), "succeeded").await;
    }
    let most = receiver.max_in_flight();
    assert!((1..=8).contains(&most), "{most} requests at once to one URL");
}

#[tokio::test]
async fn deliveries_are_listed_by_status_and_page_and_the_routes_refuse_bad_tokens_ids_and_queries() {
    let db = TestDatabase::new().await;
    let env = [ALLOW_PRIVATE, NO_THROTTLE, ("WEBHOOK_RETRY_SCHEDULE", "1")];
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &env).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let ok = Receiver::start(200).await;
    let down = Receiver::start(503).await;
    let (ws, _, admin) = workspace(&operator, None, &[ok.url("/a"), down.url("/b")]).await;
    let ingest = Api::new(&hub.url(""), Some(&interaction_key(&admin, &ws).await));
    let runtime = access_token(&admin, &ingest, &ws, 1).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(interact(&ingest, n).await);
    }
    wait_until("three successes and three failures", WAIT, || {
        let runtime = runtime.clone();
        async move {
            let all = deliveries(&runtime).await;
            let settled = all.iter().filter(|d| d["status"] != "pending").count();
            (all.len() == 6 && settled == 6).then_some(())
        }
    })
    .await;

    // Filters, counts, pages and cursors.
    let page = runtime.get("/v1/runtime/deliveries?status=succeeded").await.expect(200).body;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(|d| d["url"] == ok.url("/a").as_str() && d["attempts"] == 1), "{page}");
    let keys: Vec<&String> = items[0].as_object().unwrap().keys().collect();
    for field in ["id", "interaction_id", "url", "status", "attempts", "last_status_code", "next_attempt_at"] {
        assert!(keys.iter().any(|k| *k == field), "{field} in {keys:?}");
    }
    assert_eq!(page["pagination"], json!({"page": 1, "page_size": 20}));
    let failed = runtime.get("/v1/runtime/deliveries?status=failed").await.expect(200).body;
    assert!(failed["items"].as_array().unwrap().iter().all(|d| d["attempts"] == 2 && d["last_status_code"] == 503));
    assert_eq!(runtime.get("/v1/runtime/deliveries/count").await.expect(200).body["count"], 6);
    assert_eq!(runtime.get("/v1/runtime/deliveries/count?status=pending").await.expect(200).body["count"], 0);

    let first = runtime.get("/v1/runtime/deliveries?page_size=4&sort_order=desc").await.expect(200).body;
    assert_eq!(first["items"].as_array().unwrap().len(), 4);
    let next = first["links"].as_array().unwrap().iter().find(|l| l["rel"] == "next").unwrap()["href"].clone();
    assert_eq!(next, "/v1/runtime/deliveries?page_size=4&sort_order=desc&page=2");
    let by_page = runtime.get(next.as_str().unwrap()).await.expect(200).body;
    let cursor = first["pagination"]["next_cursor"].as_str().unwrap();
    let by_cursor = runtime
        .get(&format!("/v1/runtime/deliveries?page_size=4&sort_order=desc&cursor={cursor}"))
        .await
        .expect(200)
        .body;
    assert_eq!(by_page["items"], by_cursor["items"]);
    assert_eq!(by_cursor["items"].as_array().unwrap().len(), 2);
    assert!(by_cursor["pagination"].get("next_cursor").is_none(), "{by_cursor}");
    let all_ids: Vec<&Value> = first["items"].as_array().unwrap().iter().map(|d| &d["id"]).collect();
    assert!(by_page["items"].as_array().unwrap().iter().all(|d| !all_ids.contains(&&d["id"])));
    // A cursor is tied to its filter and sort.
    let foreign = runtime.get(&format!("/v1/runtime/deliveries?page_size=4&cursor={cursor}")).await;
    refused(&foreign, 422, "invalid_cursor");

    // Bad queries: a problem, never a 5xx.
    for query in [
        "status=bogus",
        "page_size=101",
        "page_size=0",
        "page=0",
        "page=abc",
        "page=10000",
        "unknown=1",
        "sort_by=url",
        "sort_order=up",
        "cursor=not-a-cursor",
        "page=2&cursor=x",
    ] {
        let reply = runtime.get(&format!("/v1/runtime/deliveries?{query}")).await;
        assert_eq!(reply.status, 422, "{query}: {}", reply.text);
        assert_eq!(reply.header("content-type"), Some("application/problem+json"), "{query}");
    }
    refused(&runtime.get("/v1/runtime/deliveries?page=1000&page_size=100").await, 422, "page_too_deep");
    refused(&runtime.get("/v1/runtime/deliveries/count?status=x").await, 422, "validation_failed");

    // Tokens: none, garbage, another workspace's.
    for api in [runtime.anonymous(), runtime.with_key("not-a-token")] {
        let reply = api.get("/v1/runtime/deliveries").await;
        refused(&reply, 401, "unauthorized");
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
        refused(
            &api.post("/v1/runtime/deliveries/00000000-0000-0000-0000-000000000000/retry", json!({})).await,
            401,
            "unauthorized",
        );
    }
    let (other, _, other_admin) = workspace(&operator, None, &[]).await;
    let stranger = access_token(&other_admin, &ingest, &other, 1).await;
    assert_eq!(stranger.get("/v1/runtime/deliveries").await.expect(200).body["items"], json!([]));
    let failed_id = failed["items"][0]["id"].as_str().unwrap();
    refused(&stranger.post(&format!("/v1/runtime/deliveries/{failed_id}/retry"), json!({})).await, 404, "not_found");

    // Bad ids.
    refused(&runtime.post("/v1/runtime/deliveries/not-a-uuid/retry", json!({})).await, 422, "validation_failed");
    let unknown = "/v1/runtime/deliveries/0190a5e4-0000-7000-8000-000000000000/retry";
    refused(&runtime.post(unknown, json!({})).await, 404, "not_found");
    let reply = runtime.send(Method::POST, "/v1/runtime/deliveries/%FF%FE/retry", None, &[]).await;
    assert!(matches!(reply.status.as_u16(), 404 | 422), "{}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/problem+json"));

    // The retry of a failed delivery, then of a pending one.
    let retried = runtime.post(&format!("/v1/runtime/deliveries/{failed_id}/retry"), json!({})).await.expect(202);
    assert_eq!(retried.body["status"], "pending");
    assert_eq!(retried.body["attempts"], 2);

    // The single-node hub's runtime document declares the routes and their constraints.
    let doc = operator.anonymous().get("/v1/runtime/openapi.json").await.expect(200).body;
    let list = &doc["paths"]["/v1/runtime/deliveries"]["get"];
    for status in ["200", "401", "403", "422", "429"] {
        assert!(list["responses"][status].is_object(), "{status}: {list}");
    }
    let params = list["parameters"].as_array().unwrap();
    let param = |name: &str| params.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("{name}: {list}"));
    assert_eq!(param("page_size")["schema"]["maximum"], 100);
    let status_schema = serde_json::to_string(&param("status")["schema"]).unwrap();
    let status_schema = if status_schema.contains("$ref") {
        serde_json::to_string(&doc["components"]["schemas"]["Status"]).unwrap()
    } else {
        status_schema
    };
    assert!(status_schema.contains("pending") && status_schema.contains("failed"), "{status_schema}");
    let retry = &doc["paths"]["/v1/runtime/deliveries/{id}/retry"]["post"];
    for status in ["202", "401", "404", "409", "422"] {
        assert!(retry["responses"][status].is_object(), "{status}: {retry}");
    }
    let _ = ids;
}

#[tokio::test]
async fn an_answer_that_never_comes_times_out_and_is_retried_and_an_endless_answer_is_read_only_a_little() {
    let db = TestDatabase::new().await;
    let env = [ALLOW_PRIVATE, ("WEBHOOK_RETRY_SCHEDULE", "1,1,1,1")];
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &env).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let receiver = Receiver::start(200).await;
    let url = receiver.url("/hooks");
    let (ws, _, admin) = workspace(&operator, None, std::slice::from_ref(&url)).await;
    let ingest = Api::new(&hub.url(""), Some(&interaction_key(&admin, &ws).await));
    let runtime = access_token(&admin, &ingest, &ws, 1).await;

    // The receiver holds its answer for an hour: the attempt gives up after its 15 s
    // timeout and the delivery waits for its retry.
    receiver.delay(Duration::from_secs(3600));
    let slow = interact(&ingest, 1).await;
    let timed_out = wait_until("the first attempt to time out", WAIT, || {
        let runtime = runtime.clone();
        let slow = slow.clone();
        async move {
            let found = deliveries(&runtime).await.into_iter().find(|d| d["interaction_id"] == slow);
            found.filter(|d| d["last_error"].as_str().is_some_and(|e| e.contains("timed out")))
        }
    })
    .await;
    assert_eq!(timed_out["status"], "pending", "{timed_out}");
    receiver.delay(Duration::ZERO);
    let delivered = delivery_with_status(&runtime, &slow, &url, "succeeded").await;
    assert!(delivered["attempts"].as_i64().is_some_and(|n| n >= 2), "{delivered}");

    // An answer whose body never ends is a success at once: a little of it is read and
    // the connection dropped, long before the request's timeout.
    receiver.endless_body(true);
    let endless = interact(&ingest, 2).await;
    let delivered = delivery_with_status(&runtime, &endless, &url, "succeeded").await;
    assert_eq!(delivered["attempts"], 1, "{delivered}");
    wait_until("the sender to drop the endless answer", WAIT, || {
        let receiver = receiver.clone();
        async move { (receiver.streamed().1 == 0).then_some(()) }
    })
    .await;
    let (written, _) = receiver.streamed();
    // What the receiver could write before the sender went away is the answer's first
    // chunk plus what the sockets' buffers held; reading the body to the timeout would
    // have taken gigabytes over loopback.
    assert!(written < 32 << 20, "{written} bytes of the endless answer were taken");
}

#[tokio::test]
async fn a_backlog_for_a_saturated_receiver_is_not_read_when_the_sender_looks_for_due_deliveries() {
    let db = TestDatabase::new().await;
    let env = [ALLOW_PRIVATE, ("WEBHOOK_RETRY_SCHEDULE", "1")];
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &env).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let receiver = Receiver::start(200).await;
    receiver.delay(Duration::from_secs(3600));
    let url = receiver.url("/slow");
    let (ws, _, admin) = workspace(&operator, None, std::slice::from_ref(&url)).await;
    let ingest = Api::new(&hub.url(""), Some(&interaction_key(&admin, &ws).await));
    let interaction = interact(&ingest, 0).await;

    // A backlog of 5,000 due deliveries to the receiver, which holds every request: once
    // its 8 slots are taken, every other row waits.
    // The embedded instance keeps its tables in the schema `instance`.
    let client = db.connect().await;
    client.batch_execute("SET search_path = instance").await.unwrap();
    client
        .execute(
            "INSERT INTO deliveries (id, interaction_id, workspace_id, url, status, next_attempt_at) \
             SELECT gen_random_uuid(), d.interaction_id, d.workspace_id, d.url, 'pending', now() - interval '1 second' \
             FROM deliveries d, generate_series(1, 5000) WHERE d.interaction_id = $1::text::uuid",
            &[&interaction],
        )
        .await
        .unwrap();
    wait_until("the receiver's eight slots to be taken", WAIT, || {
        let receiver = receiver.clone();
        async move { (receiver.in_flight() == 8).then_some(()) }
    })
    .await;
    client.batch_execute("ANALYZE deliveries").await.unwrap();

    // The sender's search for due deliveries, with that URI saturated: it finds none, and
    // its plan reads none of the backlog's rows to learn it, planned for these values or
    // generic (the plan the sender runs, see `sender::CLAIM_PLANS`).
    let saturated = vec![url.clone()];
    let full: Vec<uuid::Uuid> = Vec::new();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&saturated, &64i64, &8i64, &full];
    for plans in ["SET LOCAL plan_cache_mode = auto", instance::webhooks::sender::CLAIM_PLANS] {
        client.batch_execute("BEGIN").await.unwrap();
        client.batch_execute(plans).await.unwrap();
        let due = client.query(instance::webhooks::sender::DUE, &params).await.unwrap();
        assert!(due.is_empty(), "{plans}: {} due rows to a saturated URI", due.len());
        let plan: Vec<String> = client
            .query(&format!("EXPLAIN (ANALYZE, BUFFERS) {}", instance::webhooks::sender::DUE), &params)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        client.batch_execute("ROLLBACK").await.unwrap();
        let removed: u64 = plan
            .iter()
            .filter_map(|line| line.trim().strip_prefix("Rows Removed by Filter: "))
            .map(|n| n.parse::<u64>().unwrap())
            .sum();
        let plan = plan.join("\n");
        assert!(removed < 100, "{plans}: {removed} rows read and dropped:\n{plan}");
        assert!(!plan.contains("Seq Scan"), "{plans}: {plan}");
    }
}

#[tokio::test]
async fn receivers_that_never_answer_hold_a_quarter_of_the_senders_slots_and_other_workspaces_are_still_served() {
    let db = TestDatabase::new().await;
    let env = [ALLOW_PRIVATE, ("WEBHOOK_RETRY_SCHEDULE", "1")];
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &env).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let hung = Receiver::start(200).await;
    hung.delay(Duration::from_secs(3600));
    let paths: Vec<String> = (0..8).map(|n| hung.url(&format!("/hung-{n}"))).collect();
    let (noisy, _, noisy_admin) = workspace(&operator, None, &paths).await;
    let noisy_ingest = Api::new(&hub.url(""), Some(&interaction_key(&noisy_admin, &noisy).await));
    for n in 0..20 {
        interact(&noisy_ingest, n).await;
    }
    // 160 deliveries due to 8 URIs that never answer: the workspace gets its share of the
    // 64 slots, 16, and no more.
    wait_until("the noisy workspace's share of requests to be in flight", WAIT, || {
        let hung = hung.clone();
        async move { (hung.in_flight() >= 16).then_some(()) }
    })
    .await;

    let ok = Receiver::start(200).await;
    let (quiet, _, quiet_admin) = workspace(&operator, None, &[ok.url("/quiet")]).await;
    let quiet_ingest = Api::new(&hub.url(""), Some(&interaction_key(&quiet_admin, &quiet).await));
    let runtime = access_token(&quiet_admin, &quiet_ingest, &quiet, 1).await;
    for n in 0..5 {
        let id = interact(&quiet_ingest, n).await;
        let delivered = delivery_with_status(&runtime, &id, &ok.url("/quiet"), "succeeded").await;
        assert_eq!(delivered["attempts"], 1, "{delivered}");
    }
    assert_eq!(hung.max_in_flight(), 16, "one workspace never holds more than a quarter of the slots");
}

#[tokio::test]
async fn a_delivery_whose_interaction_is_gone_is_marked_failed_and_holds_none_of_its_urls_slots() {
    let db = TestDatabase::new().await;
    let env = [ALLOW_PRIVATE, ("WEBHOOK_RETRY_SCHEDULE", "1")];
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &env).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let receiver = Receiver::start(200).await;
    let url = receiver.url("/orphans");
    let (ws, _, admin) = workspace(&operator, None, std::slice::from_ref(&url)).await;
    let ingest = Api::new(&hub.url(""), Some(&interaction_key(&admin, &ws).await));
    let first = interact(&ingest, 0).await;

    // Eight due deliveries to the URL, oldest of all, whose interaction no longer exists
    // (an operator's clean-up of `interactions`, say): as many as the URL's slots.
    let client = db.connect().await;
    client.batch_execute("SET search_path = instance").await.unwrap();
    client
        .execute(
            "INSERT INTO deliveries (id, interaction_id, workspace_id, url, status, next_attempt_at) \
             SELECT gen_random_uuid(), gen_random_uuid(), d.workspace_id, d.url, 'pending', now() - interval '1 hour' \
             FROM deliveries d, generate_series(1, 8) WHERE d.interaction_id = $1::text::uuid",
            &[&first],
        )
        .await
        .unwrap();

    // Later interactions are still delivered, and the orphans end failed, never sent.
    let mut later = Vec::new();
    for n in 1..=5 {
        later.push(interact(&ingest, n).await);
    }
    wait_until("every later interaction to be delivered", WAIT, || {
        let (receiver, later) = (receiver.clone(), later.clone());
        async move { later.iter().all(|id| !receiver.requests_for(id).is_empty()).then_some(()) }
    })
    .await;
    wait_until("the orphaned deliveries to be marked failed", WAIT, || {
        let client = &client;
        async move {
            let row = client
                .query_one(
                    "SELECT count(*) FILTER (WHERE d.status = 'failed' AND d.last_error IS NOT NULL), count(*) \
                     FROM deliveries d WHERE NOT EXISTS (SELECT 1 FROM interactions i WHERE i.id = d.interaction_id)",
                    &[],
                )
                .await
                .unwrap();
            (row.get::<_, i64>(0) == 8 && row.get::<_, i64>(1) == 8).then_some(())
        }
    })
    .await;
    let sent: usize = receiver.requests().len();
    assert_eq!(sent, 6, "the first interaction, the five later ones, and no orphan");
}

#[tokio::test]
async fn one_url_still_gets_at_most_eight_requests_at_once_after_the_sender_restarts() {
    let db = TestDatabase::new().await;
    let env = [ALLOW_PRIVATE, ("WEBHOOK_RETRY_SCHEDULE", "60")];
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &env).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let slow = Receiver::start(200).await;
    slow.delay(Duration::from_secs(3600));
    let (ws, _, admin) = workspace(&operator, None, &[slow.url("/slow")]).await;
    let ingest = Api::new(&hub.url(""), Some(&interaction_key(&admin, &ws).await));
    for n in 0..20 {
        interact(&ingest, n).await;
    }
    wait_until("the slow URL's eight slots to be taken", WAIT, || {
        let slow = slow.clone();
        async move { (slow.in_flight() == 8).then_some(()) }
    })
    .await;

    // The database goes away under the hub (its sessions cut, new ones refused), which
    // restarts the sender while its eight requests to the slow URL are still in flight.
    let config = PgServer::shared().url("postgres").parse().unwrap();
    let client = hub::db::connect(&config).await.unwrap();
    client
        .batch_execute(&format!(
            "ALTER DATABASE {0} ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{0}' AND pid <> pg_backend_pid()",
            db.name
        ))
        .await
        .unwrap();
    wait_until("the webhook sender to restart", WAIT, || {
        let logs = hub.logs();
        async move { logs.lines().any(|l| l.contains("webhook sender") && l.contains("restarting")).then_some(()) }
    })
    .await;
    client.batch_execute(&format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", db.name)).await.unwrap();

    // The restarted sender claims again: a delivery to another URL goes out, and the
    // slow URL's twelve due deliveries were due before it.
    let fast = Receiver::start(200).await;
    let (other, _, other_admin) = workspace(&operator, None, &[fast.url("/fast")]).await;
    let other_ingest = Api::new(&hub.url(""), Some(&interaction_key(&other_admin, &other).await));
    interact(&other_ingest, 0).await;
    wait_until("the other URL's delivery", WAIT, || {
        let fast = fast.clone();
        async move { fast.requests().iter().any(|r| r.answered == 200).then_some(()) }
    })
    .await;
    assert_eq!(slow.in_flight(), 8, "the requests in flight before the restart still hold their slots");
    assert_eq!(slow.max_in_flight(), 8, "never more than eight requests at once to one URL");
}

#[tokio::test]
async fn a_retry_asked_while_the_last_attempt_is_in_flight_starts_a_new_round_after_it() {
    let db = TestDatabase::new().await;
    let env = [ALLOW_PRIVATE, ("WEBHOOK_RETRY_SCHEDULE", "1")];
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &env).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let receiver = Receiver::start(503).await;
    let url = receiver.url("/down");
    let (ws, _, admin) = workspace(&operator, None, std::slice::from_ref(&url)).await;
    let ingest = Api::new(&hub.url(""), Some(&interaction_key(&admin, &ws).await));
    let runtime = access_token(&admin, &ingest, &ws, 1).await;

    // The schedule allows one retry: the second attempt is the last. The receiver holds
    // each request for 3 s, then answers 503.
    receiver.delay(Duration::from_secs(3));
    let id = interact(&ingest, 0).await;
    wait_until("the second, last attempt to be in flight", WAIT, || {
        let receiver = receiver.clone();
        async move { (receiver.requests().len() == 1 && receiver.in_flight() == 1).then_some(()) }
    })
    .await;
    let delivery = deliveries(&runtime).await.into_iter().find(|d| d["interaction_id"] == id).unwrap();
    let retried = runtime
        .post(&format!("/v1/runtime/deliveries/{}/retry", delivery["id"].as_str().unwrap()), json!({}))
        .await
        .expect(202);
    assert_eq!(retried.body["status"], "pending", "{}", retried.text);

    // The retry's new round counts the attempt in flight as its first: once it fails, the
    // schedule's one retry follows, and only its failure ends the delivery.
    let failed = delivery_with_status(&runtime, &id, &url, "failed").await;
    assert_eq!(failed["attempts"], 3, "{failed}");
    assert_eq!(receiver.requests_for(&id).len(), 3);
}
