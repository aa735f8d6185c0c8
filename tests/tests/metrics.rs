//! `GET /metrics` on the hub and on an instance: Prometheus text that a Prometheus parser
//! reads, whose series move under load, and whose labels name no tenant.

use std::time::Duration;

use e2e::{Api, HubProcess, InstanceProcess, NatsServer, OPERATOR_KEY, PgServer, TestDatabase, wait_until};
use prom_text_format_parser::{Scrape, Type, ValueType};
use serde_json::json;

/// Scrapes `url` without credentials and parses the answer.
async fn scrape(url: &str) -> Scrape {
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.unwrap();
    Scrape::parse(&text).unwrap_or_else(|error| panic!("not the Prometheus text format: {error:?}\n{text}"))
}

/// The sum of the samples of `name` carrying `labels` (a histogram counts its
/// observations); `None` when there is no such series.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let metric = scrape.metrics.iter().find(|m| m.name == name)?;
    let wanted = if metric.kind == Type::Histogram { ValueType::Count } else { ValueType::Sample };
    let matching: Vec<f64> = metric
        .samples
        .iter()
        .filter(|s| s.value.value_type == wanted)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.iter().any(|l| l.key == *k && l.value == *v)))
        .map(|s| s.value.value.as_f64())
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

fn count(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(scrape, name, labels).unwrap_or(0.0)
}

/// Waits until a scrape of `url` satisfies `check`, and returns that scrape.
async fn scrape_until(what: &str, url: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
    wait_until(what, Duration::from_secs(30), || {
        let scraped = scrape(url);
        let check = &check;
        async move {
            let scraped = scraped.await;
            check(&scraped).then_some(scraped)
        }
    })
    .await
}

/// No label of any series holds one of `ids`.
fn assert_no_label_holds(scrape: &Scrape, ids: &[&str]) {
    for metric in &scrape.metrics {
        for label in metric.samples.iter().flat_map(|s| s.labels.iter()) {
            for id in ids {
                assert!(!label.value.contains(id), "{} has {}={}", metric.name, label.key, label.value);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_and_instance_metrics_move_under_load_and_name_no_tenant() {
    let nats = NatsServer::start().unwrap();
    let db = TestDatabase::new().await;
    let env = [("NATS_URL", nats.url()), ("HUB_AUTH_FAILURES_PER_MINUTE", "3".to_owned())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let hub = HubProcess::spawn(&db.url, &[], &env).await;
    let instance_db = PgServer::shared().empty_database().await;
    let instance = InstanceProcess::instance("alpha", &instance_db.url, &nats.url(), &hub.url("")).await;
    let (hub_metrics, instance_metrics) = (hub.url("/metrics"), instance.url("/metrics"));
    let hub_before = scrape(&hub_metrics).await;
    let instance_before = scrape(&instance_metrics).await;

    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let org = operator.post("/v1/organizations", json!({"name": "Acme", "email": "o@a.test", "plan": "pro"})).await;
    let org = org.expect(201).body["id"].as_str().unwrap().to_owned();
    let key = operator.post("/v1/api-keys", json!({"name": "admin", "scopes": ["*"], "organization_id": org})).await;
    let admin = operator.with_key(key.expect(201).body["secret"].as_str().unwrap());
    let mut workspaces = Vec::new();
    for name in ["W1", "W2", "W3"] {
        let body = json!({"name": name, "instance_id": "alpha", "organization_id": org});
        workspaces
            .push(operator.post("/v1/workspaces", body).await.expect(201).body["id"].as_str().unwrap().to_owned());
    }
    operator.get(&format!("/v1/workspaces/{}", workspaces[0])).await.expect(200);
    // Without SMTP_URL the invitation's email waits in the outbox.
    let invitation = json!({"email": "ada@example.test", "role": "member"});
    admin.post(&format!("/v1/workspaces/{}/invitations", workspaces[0]), invitation).await.expect(201);
    // The organization's own rate limit, then one request of a fresh key past it.
    admin.patch("/v1/settings", json!({"rate_limit_per_minute": 2})).await.expect(200);
    let key = operator.post("/v1/api-keys", json!({"name": "busy", "scopes": ["*"], "organization_id": org})).await;
    let busy = operator.with_key(key.expect(201).body["secret"].as_str().unwrap());
    for _ in 0..2 {
        busy.get("/v1/workspaces/count").await.expect(200);
    }
    busy.get("/v1/workspaces/count").await.expect(429);
    // Three failed authentications, then the address is refused.
    let stranger = operator.with_key("not-a-key-of-this-hub");
    for _ in 0..3 {
        stranger.get("/v1/workspaces").await.expect(401);
    }
    stranger.get("/v1/workspaces").await.expect(429);
    let head = operator.get("/readyz").await.expect(200).body["head_position"].as_f64().unwrap();
    // A token the instance cannot verify.
    let runtime = Api::new(&instance.url(""), Some("not.a.token"));
    runtime.get("/v1/runtime/workspace").await.expect(401);

    let hub_after = scrape_until("the relay to publish the whole log", &hub_metrics, |s| {
        value(s, "relay_published_position", &[]).is_some_and(|p| p >= head)
            && value(s, "relay_lag_events", &[]).is_some()
    })
    .await;
    let moved =
        |name: &str, labels: &[(&str, &str)]| count(&hub_after, name, labels) - count(&hub_before, name, labels);
    let created = [("method", "POST"), ("route", "/v1/workspaces"), ("status", "201")];
    assert_eq!(moved("http_requests_total", &created), 3.0);
    assert_eq!(moved("http_request_duration_seconds", &created), 3.0);
    let read = [("method", "GET"), ("route", "/v1/workspaces/{id}"), ("status", "200")];
    assert_eq!(moved("http_requests_total", &read), 1.0, "requests are labelled with their route's template");
    assert!(moved("authentication_failures_total", &[]) >= 3.0);
    assert_eq!(moved("rate_limit_refusals_total", &[("limit", "requests")]), 1.0);
    assert_eq!(moved("rate_limit_refusals_total", &[("limit", "failed_authentications")]), 1.0);
    assert!(
        moved("event_store_append_commits_total", &[]) >= 7.0,
        "organization, keys, workspaces, invitation, settings"
    );
    assert!(moved("event_store_append_batch_events", &[]) >= 1.0);
    assert!(moved("event_store_append_batch_duration_seconds", &[]) >= 1.0);
    assert!(count(&hub_after, "email_outbox_depth", &[]) >= 1.0, "the invitation's email is pending");
    assert_eq!(count(&hub_after, "relay_lag_events", &[]), 0.0);
    assert!(value(&hub_after, "event_store_append_queue_depth", &[]).is_some());

    let instance_after = scrape_until("the instance to apply its workspaces", &instance_metrics, |s| {
        count(s, "instance_applied_events_total", &[]) >= 3.0 && value(s, "instance_lag_events", &[]).is_some()
    })
    .await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        count(&instance_after, name, labels) - count(&instance_before, name, labels)
    };
    let refused = [("method", "GET"), ("route", "/v1/runtime/workspace"), ("status", "401")];
    assert_eq!(moved("http_requests_total", &refused), 1.0);
    assert_eq!(moved("http_request_duration_seconds", &refused), 1.0);
    assert_eq!(moved("authentication_failures_total", &[]), 1.0);
    assert!(count(&instance_after, "instance_applied_position", &[]) > 0.0);

    let mut ids: Vec<&str> = workspaces.iter().map(String::as_str).collect();
    ids.push(&org);
    assert_no_label_holds(&hub_after, &ids);
    assert_no_label_holds(&instance_after, &ids);
}
