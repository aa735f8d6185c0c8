//! OpenTelemetry traces: real hub and instance processes exporting over OTLP/HTTP to a
//! collector run by the test, which decodes what it receives as the protobuf
//! `ExportTraceServiceRequest`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use e2e::{Api, HubProcess, InstanceProcess, NatsServer, OPERATOR_KEY, PgServer, TestDatabase, wait_until};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use serde_json::json;

/// A span as the collector received it, ids in hex.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

/// A minimal OTLP/HTTP trace collector on a free loopback port.
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<Received>>>,
}

impl Collector {
    async fn start() -> Collector {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new().route("/v1/traces", axum::routing::post(receive)).with_state(spans.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Collector { url, spans }
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }

    fn trace(&self, trace_id: &str) -> Vec<Received> {
        self.spans().into_iter().filter(|s| s.trace_id == trace_id).collect()
    }
}

async fn receive(State(spans): State<Arc<Mutex<Vec<Received>>>>, body: Bytes) -> axum::http::StatusCode {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return axum::http::StatusCode::BAD_REQUEST;
    };
    let mut received = spans.lock().unwrap();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .and_then(|a| a.value.as_ref()?.value.as_ref())
            .map(|v| match v {
                Value::StringValue(s) => s.clone(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
            received.push(Received {
                service: service.clone(),
                name: span.name,
                trace_id: hex::encode(span.trace_id),
                span_id: hex::encode(span.span_id),
                parent_span_id: hex::encode(span.parent_span_id),
            });
        }
    }
    axum::http::StatusCode::OK
}

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN_ID: &str = "b7ad6b7169203331";

fn caller_traceparent() -> String {
    format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01")
}

async fn organization(operator: &Api) -> String {
    let org = operator.post("/v1/organizations", json!({"name": "Acme", "email": "o@a.test", "plan": "pro"})).await;
    org.expect(201).body["id"].as_str().unwrap().to_owned()
}

async fn create_traced_workspace(operator: &Api, org: &str, instance: &str) -> String {
    let body = json!({"name": "Traced", "instance_id": instance, "organization_id": org});
    let traceparent = caller_traceparent();
    let created =
        operator.send(reqwest::Method::POST, "/v1/workspaces", Some(&body), &[("traceparent", &traceparent)]).await;
    created.expect(201).body["id"].as_str().unwrap().to_owned()
}

/// The stored event's metadata, read back through the event feed.
async fn stored_traceparent(operator: &Api, workspace: &str) -> Option<String> {
    let page = operator.get("/v1/events?after=0&limit=1000").await.expect(200).body;
    let event =
        page["items"].as_array().unwrap().iter().find(|e| e["stream_id"] == format!("workspace-{workspace}"))?;
    event["metadata"]["traceparent"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn a_write_is_one_trace_from_the_hub_request_through_the_relay_to_the_instance_apply() {
    let collector = Collector::start().await;
    let nats = NatsServer::start().unwrap();
    let db = TestDatabase::new().await;
    let otel = [("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100")];
    let mut hub_env = vec![("NATS_URL", nats.url())];
    hub_env.extend(otel.iter().map(|(k, v)| (*k, v.to_string())));
    let hub_env: Vec<(&str, &str)> = hub_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let hub = HubProcess::spawn(&db.url, &[], &hub_env).await;
    let instance_db = PgServer::shared().empty_database().await;
    let _instance =
        InstanceProcess::instance_with_env("alpha", &instance_db.url, &nats.url(), &hub.url(""), &otel).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let org = organization(&operator).await;
    let workspace = create_traced_workspace(&operator, &org, "alpha").await;

    let wanted =
        [("hub", "POST /v1/workspaces"), ("hub", "append"), ("hub", "relay.publish"), ("instance", "instance.apply")];
    let spans = wait_until("the write's spans from the hub and the instance", Duration::from_secs(60), || {
        let spans = collector.trace(TRACE_ID);
        let complete =
            wanted.iter().all(|(service, name)| spans.iter().any(|s| s.service == *service && s.name == *name));
        async move { complete.then_some(spans) }
    })
    .await;
    let find = |name: &str| spans.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("{name} in {spans:#?}"));
    let request = find("POST /v1/workspaces");
    assert_eq!(request.parent_span_id, CALLER_SPAN_ID, "the caller's span is the request's parent");
    assert_eq!(find("append").parent_span_id, request.span_id, "the append is the request's child");
    // The event carries the request's span context: the relay and the instance continue it.
    assert_eq!(stored_traceparent(&operator, &workspace).await, Some(format!("00-{TRACE_ID}-{}-01", request.span_id)));
    assert_eq!(find("relay.publish").parent_span_id, request.span_id);
    assert_eq!(find("instance.apply").parent_span_id, request.span_id);
    for span in &spans {
        let linked = span.parent_span_id == CALLER_SPAN_ID || spans.iter().any(|p| p.span_id == span.parent_span_id);
        assert!(linked, "every span's parent is in the trace or is the caller's: {span:?} in {spans:#?}");
    }
    // Only the request's own work is in its trace: the organization's creation is not.
    assert!(spans.iter().all(|s| s.name != "POST /v1/organizations"), "{spans:#?}");
}

// The collector answers on the test's runtime while `terminate` blocks a thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_otlp_endpoint_nothing_is_exported_and_the_callers_traceparent_is_stored() {
    let collector = Collector::start().await;
    let db = TestDatabase::new().await;
    // Only the general variable turns the export on; the per-signal one alone does not.
    let traces_endpoint = format!("{}/v1/traces", collector.url);
    let mut hub = HubProcess::spawn(
        &db.url,
        &[],
        &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &traces_endpoint), ("OTEL_BSP_SCHEDULE_DELAY", "100")],
    )
    .await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let org = organization(&operator).await;
    let workspace = create_traced_workspace(&operator, &org, "alpha").await;
    assert_eq!(stored_traceparent(&operator, &workspace).await, Some(caller_traceparent()));
    // A graceful exit flushes whatever an exporter would hold.
    assert!(hub.terminate().is_some_and(|status| status.success()));
    assert!(collector.spans().is_empty(), "{:#?}", collector.spans());
}

// The collector answers on the test's runtime while `terminate` blocks a thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_still_batched_are_exported_on_a_graceful_exit() {
    let collector = Collector::start().await;
    let db = TestDatabase::new().await;
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "600000")];
    let mut hub = HubProcess::spawn(&db.url, &[], &env).await;
    let operator = Api::new(&hub.url(""), Some(OPERATOR_KEY));
    let org = organization(&operator).await;
    create_traced_workspace(&operator, &org, "alpha").await;
    assert!(collector.trace(TRACE_ID).is_empty(), "nothing is sent before the batch is due");
    assert!(hub.terminate().is_some_and(|status| status.success()));
    let spans = collector.trace(TRACE_ID);
    assert!(spans.iter().any(|s| s.service == "hub" && s.name == "POST /v1/workspaces"), "{spans:#?}");
}

#[tokio::test]
async fn an_unusable_otlp_endpoint_is_a_warning_and_requests_are_still_served() {
    let db = TestDatabase::new().await;
    // Not a URI at all: the exporter cannot be built.
    let bad = HubProcess::spawn(&db.url, &[], &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://[::1")]).await;
    let operator = Api::new(&bad.url(""), Some(OPERATOR_KEY));
    organization(&operator).await;
    assert!(bad.logs().contains("no trace exporter could be built"), "{}", bad.logs());
    // A URI nobody listens on: every export fails, no request waits for it, and the exit
    // stays graceful.
    let closed = format!("http://127.0.0.1:{}", e2e::process::free_port());
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", closed.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100")];
    let mut unreachable = HubProcess::spawn(&db.url, &[], &env).await;
    let operator = Api::new(&unreachable.url(""), Some(OPERATOR_KEY));
    for _ in 0..3 {
        organization(&operator).await;
    }
    assert!(unreachable.terminate().is_some_and(|status| status.success()));
}
