//! The instance's own OpenAPI 3.1 document: the runtime API (served by a single-node hub
//! at `/v1/runtime/openapi.json`), and with health and readiness the whole of a separate
//! instance (served at its `/openapi.json`).

use serde_json::{Value, json};
use utoipa::OpenApi;

/// An RFC 9457 problem, as every error of the instance is answered.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable, machine-readable.
    pub code: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Instance runtime API",
        description = "What a worker instance serves of the workspaces placed on it, to holders of a workspace \
            access token (`POST /v1/workspaces/{id}/access-token` on the hub), and the interactions posted with an \
            interaction key. Every response carries `Request-Id`."
    ),
    paths(
        crate::runtime::workspace,
        crate::ingest::interactions,
        crate::deliveries::list,
        crate::deliveries::count,
        crate::deliveries::retry
    ),
    tags((name = "runtime", description = "The data plane")),
    modifiers(&Bearer)
)]
struct RuntimeDoc;

struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        // Interaction keys may also come as the username of Basic, with an empty password.
        components.add_security_scheme("basic", SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)));
    }
}

/// The runtime API alone.
pub fn runtime() -> Value {
    let mut doc = serde_json::to_value(RuntimeDoc::openapi()).expect("the OpenAPI document serializes");
    headers(&mut doc);
    doc
}

/// A separate instance: the runtime API, `/healthz`, `/readyz` and this document.
pub fn standalone() -> Value {
    let mut doc = serde_json::to_value(RuntimeDoc::openapi()).expect("the OpenAPI document serializes");
    let problem = json!({"description": "Not ready (`not_ready`): a background task is down, NATS or the database is unreachable, or the consumer is stuck behind",
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}});
    doc["tags"]
        .as_array_mut()
        .into_iter()
        .for_each(|tags| tags.push(json!({"name": "operations", "description": "Health and readiness"})));
    doc["paths"]["/healthz"] = json!({"get": {
        "tags": ["operations"], "operationId": "healthz", "summary": "The process is up", "security": [],
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {
            "type": "object", "required": ["status"], "properties": {"status": {"type": "string", "const": "ok"}}}}}}}
    }});
    doc["paths"]["/readyz"] = json!({"get": {
        "tags": ["operations"], "operationId": "readyz", "summary": "Ready to serve", "security": [],
        "responses": {
            "200": {"description": "Ready", "content": {"application/json": {"schema": {
                "type": "object", "required": ["status", "applied_position", "lag", "workspace_count"],
                "properties": {
                    "status": {"type": "string", "const": "ready"},
                    "applied_position": {"type": "integer", "description": "The last position of the hub's log applied here"},
                    "lag": {"type": "integer", "minimum": 0, "description": "Events the hub has committed and this instance has not applied"},
                    "workspace_count": {"type": "integer", "minimum": 0}
                }}}}},
            "503": problem
        }
    }});
    doc["paths"]["/openapi.json"] = json!({"get": {
        "tags": ["operations"], "operationId": "openapi", "summary": "This document", "security": [],
        "responses": {"200": {"description": "The OpenAPI 3.1 document", "content": {"application/json": {"schema": {"type": "object"}}}}}
    }});
    headers(&mut doc);
    doc
}

/// `Request-Id` on every response, `Retry-After` with 429.
fn headers(doc: &mut Value) {
    doc["components"]["headers"] = json!({
        "Request-Id": {
            "description": "The request's id: the caller's own when it was at most 128 characters of `[A-Za-z0-9._-]`, else a generated one.",
            "required": true,
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,128}$"}
        },
        "Retry-After": {"description": "Seconds until the address may authenticate again.", "required": true, "schema": {"type": "integer", "minimum": 0}},
        "WWW-Authenticate": {"description": "The accepted scheme.", "required": true, "schema": {"type": "string"}}
    });
    let Some(paths) = doc["paths"].as_object_mut() else { return };
    for operation in paths.values_mut().filter_map(Value::as_object_mut).flat_map(|item| item.values_mut()) {
        let Some(responses) = operation.get_mut("responses").and_then(Value::as_object_mut) else { continue };
        for (status, response) in responses.iter_mut() {
            let mut names = vec!["Request-Id"];
            match status.as_str() {
                "429" => names.push("Retry-After"),
                "401" => names.push("WWW-Authenticate"),
                _ => {}
            }
            for name in names {
                response["headers"][name] = json!({"$ref": format!("#/components/headers/{name}")});
            }
        }
    }
}
