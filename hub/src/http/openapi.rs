//! The OpenAPI 3.1 document, generated from the handlers' annotations and then completed
//! with what annotations cannot say (see the submodules): the constraints the server
//! enforces, where no credentials are needed, the response headers, and the links from
//! each created resource to the operations on it.

mod constraints;
mod headers;
mod links;

use std::sync::Arc;

use axum::Json;
use serde_json::{Value, json};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Admin API",
        description = "Event-sourced Admin API for multi-tenant platforms. Every response carries `Request-Id` \
            (an incoming one of at most 128 characters of `[A-Za-z0-9._-]` is echoed, anything else is replaced by \
            a generated id). `traceparent` is kept only when it is a valid W3C trace context. A change that would \
            record an event over 256 KiB (the JSON of its data and metadata) is refused with 413, code \
            `event_too_large`."
    ),
    tags(
        (name = "operations", description = "Health and readiness"),
        (name = "organizations", description = "Tenants (operator)"),
        (name = "api keys", description = "Admin API keys"),
        (name = "workspaces", description = "The workspace tree"),
        (name = "settings", description = "Organization settings"),
        (name = "usage", description = "Interactions, deliveries and admin requests counted per hour"),
        (name = "users", description = "Users, invitations and workspace members"),
        (name = "apps", description = "Technology partner apps (operator)"),
        (name = "partner", description = "What a technology partner app sees, with its app key (`pak_...`); no other key is accepted here")
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []), ("basic" = []))
)]
struct ApiDoc;

/// Declares the two ways to present a key: Bearer, or Basic with the key as username.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        components.add_security_scheme("basic", SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)));
    }
}

pub fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Operations anyone may call: no credentials are read.
const PUBLIC: &[(&str, &str)] =
    &[("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics"), ("get", "/openapi.json")];

/// The served document: the generated one, completed.
pub fn finish(api: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(api).expect("the OpenAPI document serializes");
    add_self(&mut doc);
    for (method, path) in PUBLIC {
        if let Some(operation) = doc.pointer_mut(&format!("/paths/{}/{method}", escape(path))) {
            operation["security"] = json!([]);
            operation["responses"]["4XX"] = credentials_sent_anyway();
        }
    }
    optional_bodies(&mut doc);
    constraints::declare(&mut doc);
    headers::declare(&mut doc);
    links::declare(&mut doc);
    doc
}

/// Credentials sent to an operation that needs none are still checked, as everywhere.
fn credentials_sent_anyway() -> Value {
    json!({
        "description": "Only when credentials are sent anyway: a key past its rate limit (429 `rate_limited`), an \
            address past its failed authentications (429), a key used from an address it may not be used from (403)",
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    })
}

/// `/openapi.json` itself, so a client learns that it needs no credentials.
fn add_self(doc: &mut Value) {
    doc["paths"]["/openapi.json"] = json!({
        "get": {
            "tags": ["operations"],
            "summary": "This document",
            "operationId": "openapi",
            "responses": {"200": {"description": "The OpenAPI 3.1 document", "content": {"application/json": {"schema": {"type": "object"}}}}}
        }
    });
}

/// An optional body may be left out, but when present it is a JSON object: `null` is refused
/// like any other non-object body.
fn optional_bodies(doc: &mut Value) {
    for operation in operations_mut(doc) {
        let Some(content) = operation.pointer_mut("/requestBody/content").and_then(Value::as_object_mut) else {
            continue;
        };
        for media in content.values_mut() {
            let Some(alternatives) = media.pointer("/schema/oneOf").and_then(Value::as_array) else { continue };
            let not_null: Vec<Value> =
                alternatives.iter().filter(|schema| schema.get("type") != Some(&json!("null"))).cloned().collect();
            if let [only] = &not_null[..] {
                media["schema"] = only.clone();
            }
        }
    }
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Every operation of the document.
fn operations_mut(doc: &mut Value) -> impl Iterator<Item = &mut Value> {
    doc["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.iter_mut().filter(|(method, _)| METHODS.contains(&method.as_str())).map(|(_, op)| op))
}

/// A path as one JSON pointer segment.
fn escape(path: &str) -> String {
    path.replace('~', "~0").replace('/', "~1")
}

pub(super) async fn serve(api: Arc<Value>) -> Json<Value> {
    Json((*api).clone())
}
