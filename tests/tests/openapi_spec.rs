//! `/openapi.json`: a valid OpenAPI 3.1 document that lists every implemented endpoint.
//!
//! Structural checks always run: the version and `info`, every implemented operation under
//! `paths`, responses with descriptions, every `$ref` resolving inside the document, path
//! templates and path parameters agreeing, unique operation ids. When Python's
//! `openapi-spec-validator` happens to be installed, the document is also run through it.
//!
//! The document also tells the truth a tester relies on: no credentials where none are
//! read, the paging bounds on every list, links from every create, the headers sent; and
//! an instance serves its own document. (`deploy/schemathesis.sh` checks the rest by
//! sending requests.)

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::process::{Command, Stdio};

use e2e::{HubProcess, InstanceProcess, NatsServer, PgServer, TestDatabase};
use serde_json::Value;

/// Every operation the hub implements, as its handlers declare them.
const ENDPOINTS: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("post", "/v1/organizations"),
    ("get", "/v1/organizations"),
    ("get", "/v1/organizations/count"),
    ("get", "/v1/organizations/{org_id}"),
    ("patch", "/v1/organizations/{org_id}"),
    ("delete", "/v1/organizations/{org_id}"),
    ("post", "/v1/api-keys"),
    ("get", "/v1/api-keys"),
    ("get", "/v1/api-keys/count"),
    ("get", "/v1/api-keys/{id}"),
    ("patch", "/v1/api-keys/{id}"),
    ("delete", "/v1/api-keys/{id}"),
    ("post", "/v1/api-keys/{id}/rotate"),
    ("post", "/v1/workspaces"),
    ("get", "/v1/workspaces"),
    ("get", "/v1/workspaces/count"),
    ("get", "/v1/workspaces/{id}"),
    ("patch", "/v1/workspaces/{id}"),
    ("delete", "/v1/workspaces/{id}"),
    ("get", "/v1/workspaces/{id}/tree"),
    ("post", "/v1/workspaces/{id}/archive"),
    ("post", "/v1/workspaces/{id}/restore"),
    ("get", "/v1/settings"),
    ("patch", "/v1/settings"),
    ("get", "/v1/events"),
    ("post", "/v1/workspaces/{id}/access-token"),
    ("post", "/v1/workspaces/{id}/rotate-secret"),
    ("get", "/v1/internal/keyring/{id}"),
    ("post", "/v1/internal/keyring"),
    ("get", "/v1/instances"),
    ("post", "/v1/instances/{id}/heartbeat"),
    ("get", "/v1/users"),
    ("get", "/v1/users/count"),
    ("get", "/v1/users/{id}"),
    ("patch", "/v1/users/{id}"),
    ("delete", "/v1/users/{id}"),
    ("get", "/v1/users/{id}/invitations"),
    ("post", "/v1/workspaces/{id}/invitations"),
    ("get", "/v1/workspaces/{id}/invitations"),
    ("get", "/v1/workspaces/{id}/invitations/count"),
    ("delete", "/v1/invitations/{id}"),
    ("post", "/v1/invitations/accept"),
    ("post", "/v1/invitations/decline"),
    ("get", "/v1/workspaces/{id}/members"),
    ("get", "/v1/workspaces/{id}/members/count"),
    ("patch", "/v1/workspaces/{id}/members/{user_id}"),
    ("delete", "/v1/workspaces/{id}/members/{user_id}"),
    ("get", "/v1/audit-logs"),
    ("get", "/v1/audit-logs/count"),
    ("get", "/v1/usage"),
    ("post", "/v1/apps"),
    ("get", "/v1/apps"),
    ("get", "/v1/apps/count"),
    ("get", "/v1/apps/{id}"),
    ("delete", "/v1/apps/{id}"),
    ("get", "/v1/partner/interaction-keys"),
    ("get", "/v1/partner/interaction-keys/count"),
    ("post", "/v1/partner/interaction-keys/{id}/secret"),
    ("post", "/v1/workspaces/{id}/interaction-keys"),
    ("get", "/v1/workspaces/{id}/interaction-keys"),
    ("get", "/v1/workspaces/{id}/interaction-keys/count"),
    ("delete", "/v1/workspaces/{id}/interaction-keys/{key_id}"),
];

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
const PARAMETER_LOCATIONS: [&str; 4] = ["query", "header", "path", "cookie"];

async fn fetch_spec() -> Value {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let response = reqwest::get(hub.url("/openapi.json")).await.expect("the hub answers /openapi.json");
    assert_eq!(response.status(), 200, "GET /openapi.json");
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert!(content_type.starts_with("application/json"), "content-type of /openapi.json: {content_type:?}");
    let text = response.text().await.expect("the document is readable");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("/openapi.json is not JSON ({e}): {text:.500}"))
}

/// `{name}` segments of a path template.
fn template_names(path: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else { break };
        names.insert(rest[start + 1..start + len].to_owned());
        rest = &rest[start + len + 1..];
    }
    names
}

/// Follows a local `$ref` (`#/components/...`), if `value` is one.
fn resolve<'a>(spec: &'a Value, value: &'a Value) -> Option<&'a Value> {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => reference.strip_prefix('#').and_then(|pointer| spec.pointer(pointer)),
        None => Some(value),
    }
}

/// Every `$ref` in the document, with the JSON path it was found at.
fn collect_refs(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let here = format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
                if key == "$ref" {
                    out.push((here, child.as_str().map_or_else(|| child.to_string(), str::to_owned)));
                } else {
                    collect_refs(child, &here, out);
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                collect_refs(child, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn is_status_key(key: &str) -> bool {
    if key == "default" {
        return true;
    }
    let bytes = key.as_bytes();
    bytes.len() == 3
        && (b'1'..=b'5').contains(&bytes[0])
        && ((bytes[1].is_ascii_digit() && bytes[2].is_ascii_digit()) || &bytes[1..] == b"XX")
}

/// Everything structurally wrong with the document.
fn structural_problems(spec: &Value) -> Vec<String> {
    let mut problems = Vec::new();

    match spec["openapi"].as_str() {
        Some(version) if version.starts_with("3.1") => {}
        other => problems.push(format!("`openapi` is {other:?}, not 3.1.x")),
    }
    for field in ["title", "version"] {
        if spec["info"][field].as_str().is_none_or(|s| s.trim().is_empty()) {
            problems.push(format!("`info.{field}` is missing or empty: {}", spec["info"][field]));
        }
    }
    let Some(paths) = spec["paths"].as_object() else {
        problems.push("`paths` is not an object".to_owned());
        return problems;
    };

    for (method, path) in ENDPOINTS {
        if !paths.get(*path).and_then(|item| item.get(*method)).is_some_and(Value::is_object) {
            problems.push(format!("{} {path} is not documented", method.to_uppercase()));
        }
    }

    let mut operation_ids: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut undescribed: Vec<String> = Vec::new();
    for (path, item) in paths {
        let operation = |method: &str| format!("{} {path}", method.to_uppercase());
        if !path.starts_with('/') {
            problems.push(format!("path {path:?} does not start with `/`"));
        }
        if path.contains(':') || path.contains('*') {
            problems.push(format!("path {path:?} uses router syntax instead of `{{name}}` templates"));
        }
        let Some(item) = item.as_object() else {
            problems.push(format!("path item {path} is not an object"));
            continue;
        };
        let templated = template_names(path);
        let shared_parameters = item.get("parameters").and_then(Value::as_array).cloned().unwrap_or_default();
        let methods: Vec<&str> = METHODS.into_iter().filter(|m| item.contains_key(*m)).collect();
        if methods.is_empty() {
            problems.push(format!("path {path} has no operation"));
        }
        for method in methods {
            let op = &item[method];
            let name = operation(method);
            if let Some(id) = op.get("operationId").and_then(Value::as_str) {
                operation_ids.entry(id.to_owned()).or_default().push(name.clone());
            }

            // Responses: a non-empty object of status codes, each with a description.
            match op.get("responses").and_then(Value::as_object) {
                Some(responses) if !responses.is_empty() => {
                    for (status, response) in responses {
                        if !is_status_key(status) {
                            problems.push(format!("{name}: response key {status:?} is not a status code"));
                        }
                        match resolve(spec, response) {
                            Some(response) if response["description"].is_string() => {}
                            Some(_) => undescribed.push(format!("{name} → {status}")),
                            None => problems.push(format!("{name}: response {status} is a dangling $ref")),
                        }
                    }
                }
                _ => problems.push(format!("{name}: `responses` is missing or empty")),
            }

            // Parameters: valid locations, no duplicates, path parameters matching the template.
            let own = op.get("parameters").and_then(Value::as_array).cloned().unwrap_or_default();
            let mut declared: BTreeMap<(String, String), Value> = BTreeMap::new();
            let mut own_keys = BTreeSet::new();
            for (is_own, parameter) in shared_parameters.iter().map(|p| (false, p)).chain(own.iter().map(|p| (true, p)))
            {
                let Some(parameter) = resolve(spec, parameter) else {
                    problems.push(format!("{name}: a parameter is a dangling $ref: {parameter}"));
                    continue;
                };
                let (Some(pname), Some(location)) = (parameter["name"].as_str(), parameter["in"].as_str()) else {
                    problems.push(format!("{name}: a parameter lacks `name` or `in`: {parameter}"));
                    continue;
                };
                if !PARAMETER_LOCATIONS.contains(&location) {
                    problems.push(format!("{name}: parameter `{pname}` is `in: {location}`"));
                }
                if parameter.get("schema").is_none() && parameter.get("content").is_none() {
                    problems.push(format!("{name}: parameter `{pname}` has neither `schema` nor `content`"));
                }
                let key = (pname.to_owned(), location.to_owned());
                if is_own && !own_keys.insert(key.clone()) {
                    problems.push(format!("{name}: parameter `{pname}` (in {location}) is declared twice"));
                }
                declared.insert(key, parameter.clone());
            }
            for template in &templated {
                match declared.get(&(template.clone(), "path".to_owned())) {
                    None => problems.push(format!("{name}: path parameter `{template}` is not declared `in: path`")),
                    Some(parameter) if parameter["required"] != true => {
                        problems.push(format!("{name}: path parameter `{template}` is not `required: true`"))
                    }
                    Some(_) => {}
                }
            }
            let stray: Vec<String> = declared
                .keys()
                .filter(|(pname, location)| location == "path" && !templated.contains(pname))
                .map(|(pname, _)| format!("`{pname}`"))
                .collect();
            if !stray.is_empty() {
                problems.push(format!(
                    "{name}: {} declared `in: path` but the path template has no such segment",
                    stray.join(", ")
                ));
            }

            if let Some(body) = op.get("requestBody") {
                match resolve(spec, body) {
                    Some(body) if body["content"].as_object().is_some_and(|c| !c.is_empty()) => {}
                    _ => problems.push(format!("{name}: `requestBody` has no `content`")),
                }
            }
        }
    }
    if !undescribed.is_empty() {
        problems.push(format!(
            "{} responses have no `description` (required by OpenAPI 3.1), e.g. {}",
            undescribed.len(),
            undescribed.iter().take(4).cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    for (id, operations) in operation_ids {
        if operations.len() > 1 {
            problems.push(format!("operationId `{id}` is used by {}", operations.join(", ")));
        }
    }

    // Every `$ref` points at an existing entry under `components`.
    let mut refs = Vec::new();
    collect_refs(spec, "#", &mut refs);
    let mut dangling: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (at, reference) in refs {
        let resolves = reference.starts_with("#/components/")
            && reference.strip_prefix('#').and_then(|pointer| spec.pointer(pointer)).is_some();
        if !resolves {
            dangling.entry(reference).or_default().push(at);
        }
    }
    for (reference, places) in dangling {
        let first: Vec<&str> = places.iter().take(3).map(String::as_str).collect();
        problems.push(format!(
            "$ref {reference:?} resolves to nothing under `components` ({} uses, e.g. {})",
            places.len(),
            first.join(", ")
        ));
    }
    problems
}

/// Runs Python's `openapi-spec-validator` over the document when it is installed:
/// `None` when it is not, else the errors it reports.
fn python_validator_errors(spec: &Value) -> Option<Vec<String>> {
    const SCRIPT: &str = r#"
import json, sys
try:
    from openapi_spec_validator import OpenAPIV31SpecValidator
except Exception:
    sys.exit(3)
doc = json.load(sys.stdin)
places = {}
crash = None
try:
    for e in OpenAPIV31SpecValidator(doc).iter_errors():
        where = "/" + "/".join(str(p) for p in getattr(e, "absolute_path", []) or [])
        places.setdefault(getattr(e, "message", str(e))[:300], []).append(where)
except Exception as e:
    crash = f"the validator stopped: {type(e).__name__}: {str(e)[:300]}"
lines = [f"{m} ({len(w)} places, e.g. {', '.join(w[:3])})" for m, w in places.items()]
if crash:
    lines.append(crash)
print("\n".join(lines))
sys.exit(1 if lines else 0)
"#;
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let document = serde_json::to_vec(spec).expect("the document serializes");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&document).expect("hand the document to python3");
    }
    let output = child.wait_with_output().ok()?;
    match output.status.code() {
        Some(0) => Some(Vec::new()),
        Some(3) => None,
        _ => {
            let stdout = String::from_utf8_lossy(&output.stdout);
            let mut errors: Vec<String> = stdout.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect();
            if errors.is_empty() {
                errors.push(format!("the validator failed: {}", String::from_utf8_lossy(&output.stderr)));
            }
            Some(errors)
        }
    }
}

#[tokio::test]
async fn openapi_json_is_valid_openapi_3_1_and_lists_every_implemented_endpoint() {
    let spec = fetch_spec().await;
    let mut problems = structural_problems(&spec);
    match python_validator_errors(&spec) {
        Some(errors) => problems.extend(errors.into_iter().map(|e| format!("openapi-spec-validator: {e}"))),
        None => println!("openapi-spec-validator is not installed: structural checks only"),
    }
    assert!(problems.is_empty(), "/openapi.json has {} problem(s):\n- {}", problems.len(), problems.join("\n- "));
}

#[test]
fn the_structural_checks_catch_what_they_claim_to() {
    let broken = serde_json::json!({
        "openapi": "3.0.3",
        "info": {"title": ""},
        "paths": {
            "/v1/things/{id}": {
                "get": {
                    "operationId": "same",
                    "parameters": [{"name": "page", "in": "path", "required": true, "schema": {"type": "integer"}}],
                    "responses": {"200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Nope"}}}}}
                },
                "delete": {"operationId": "same", "responses": {}}
            }
        },
        "components": {"schemas": {}}
    });
    let problems = structural_problems(&broken).join("\n");
    for expected in [
        "not 3.1.x",
        "`info.title`",
        "`info.version`",
        "GET /healthz is not documented",
        "1 responses have no `description`",
        "GET /v1/things/{id}: path parameter `id` is not declared `in: path`",
        "GET /v1/things/{id}: `page` declared `in: path` but the path template has no such segment",
        "DELETE /v1/things/{id}: `responses` is missing or empty",
        "operationId `same` is used by",
        "$ref \"#/components/schemas/Nope\" resolves to nothing",
    ] {
        assert!(problems.contains(expected), "missing {expected:?} in:\n{problems}");
    }
}

#[test]
fn a_complete_well_formed_document_passes_the_structural_checks() {
    let mut paths = serde_json::Map::new();
    for (i, (method, path)) in ENDPOINTS.iter().enumerate() {
        let parameters: Vec<Value> = template_names(path)
            .into_iter()
            .map(|name| serde_json::json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .chain([serde_json::json!({"name": "page", "in": "query", "schema": {"type": "integer"}})])
            .collect();
        let operation = serde_json::json!({
            "operationId": format!("op{i}"),
            "parameters": parameters,
            "responses": {
                "200": {"description": "ok", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}},
                "4XX": {"$ref": "#/components/responses/Problem"}
            }
        });
        let item = paths.entry(path.to_string()).or_insert_with(|| serde_json::json!({}));
        item[*method] = operation;
    }
    let spec = serde_json::json!({
        "openapi": "3.1.0",
        "info": {"title": "Admin API", "version": "1.0.0"},
        "paths": paths,
        "components": {
            "schemas": {"Thing": {"type": "object"}},
            "responses": {"Problem": {"description": "a problem"}}
        }
    });
    assert_eq!(structural_problems(&spec), Vec::<String>::new());
}

/// The operation `method path` of the document.
fn operation<'a>(spec: &'a Value, method: &str, path: &str) -> &'a Value {
    let op = &spec["paths"][path][method];
    assert!(op.is_object(), "{} {path} is not documented", method.to_uppercase());
    op
}

#[tokio::test]
async fn health_readiness_and_the_document_itself_need_no_credentials_and_everything_else_does() {
    let spec = fetch_spec().await;
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        assert_eq!(operation(&spec, "get", path)["security"], serde_json::json!([]), "GET {path} declares credentials");
    }
    // The rest inherit the document's bearer/basic requirement, or (accepting an invitation,
    // with its token in the body) declare that none is needed.
    assert_eq!(spec["security"], serde_json::json!([{"bearer": []}, {"basic": []}]));
    for (method, path) in ENDPOINTS.iter().filter(|(_, p)| !["/healthz", "/readyz"].contains(p)) {
        let security = &operation(&spec, method, path)["security"];
        let public = path.starts_with("/v1/invitations/") && *method == "post";
        if public {
            assert_eq!(security, &serde_json::json!([{}]), "{method} {path}");
        } else {
            assert!(security.is_null(), "{method} {path} overrides the document's security: {security}");
        }
    }
}

#[tokio::test]
async fn every_list_operation_declares_the_paging_bounds_the_server_enforces() {
    let spec = fetch_spec().await;
    let mut lists = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        let Some(parameters) = item["get"]["parameters"].as_array() else { continue };
        let find = |name: &str| parameters.iter().find(|p| p["name"] == name && p["in"] == "query");
        let Some(page) = find("page") else { continue };
        lists += 1;
        let page_size = find("page_size").unwrap_or_else(|| panic!("GET {path} has `page` but no `page_size`"));
        assert_eq!(
            (&page["schema"]["minimum"], &page["schema"]["maximum"]),
            (&1.into(), &100_000.into()),
            "GET {path}: page"
        );
        assert_eq!(
            (&page_size["schema"]["minimum"], &page_size["schema"]["maximum"]),
            (&1.into(), &100.into()),
            "GET {path}: page_size"
        );
    }
    assert!(lists >= 10, "only {lists} list operations found");
    let events = operation(&spec, "get", "/v1/events")["parameters"].as_array().unwrap();
    let limit = events.iter().find(|p| p["name"] == "limit").expect("GET /v1/events has `limit`");
    assert_eq!(limit["schema"]["minimum"], 1);
    assert!(limit["schema"]["maximum"].is_u64(), "GET /v1/events: `limit` has no maximum");
}

#[tokio::test]
async fn every_create_operation_links_to_the_operations_on_what_it_created() {
    let spec = fetch_spec().await;
    let mut creates = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        let Some(created) = item["post"]["responses"].get("201") else { continue };
        creates.push(path.clone());
        let links = created["links"].as_object().unwrap_or_else(|| panic!("POST {path}: the 201 has no links"));
        assert!(!links.is_empty(), "POST {path}: the 201 has no links");
        for (name, link) in links {
            let target =
                link["operationId"].as_str().unwrap_or_else(|| panic!("POST {path}: link {name} names no operation"));
            let exists = spec["paths"]
                .as_object()
                .unwrap()
                .values()
                .flat_map(|item| item.as_object().unwrap().values())
                .any(|op| op["operationId"] == target);
            assert!(exists, "POST {path}: link {name} points at no operation");
            let uses_the_id = link["parameters"].as_object().unwrap().values().any(|v| v == "$response.body#/id");
            assert!(uses_the_id, "POST {path}: link {name} does not pass the created id: {link}");
        }
        assert!(created["headers"]["Location"].is_object(), "POST {path}: the 201 does not declare Location");
    }
    for expected in ["/v1/organizations", "/v1/api-keys", "/v1/workspaces", "/v1/workspaces/{id}/invitations"] {
        assert!(creates.iter().any(|p| p == expected), "POST {expected} answers no 201");
    }
    let workspace = &spec["paths"]["/v1/workspaces"]["post"]["responses"]["201"]["links"];
    for target in ["get_workspace", "update_workspace", "delete_workspace"] {
        assert!(workspace[target].is_object(), "creating a workspace does not link to {target}: {workspace}");
    }
}

#[tokio::test]
async fn responses_declare_the_request_id_rate_limit_and_etag_headers() {
    let spec = fetch_spec().await;
    let get = &operation(&spec, "get", "/v1/workspaces/{id}")["responses"];
    for header in ["Request-Id", "RateLimit-Policy", "RateLimit", "ETag"] {
        assert!(get["200"]["headers"][header].is_object(), "GET /v1/workspaces/{{id}} 200 lacks {header}");
    }
    assert!(get["4XX"]["headers"]["Retry-After"].is_object(), "4XX responses do not declare Retry-After");
    let health = &operation(&spec, "get", "/healthz")["responses"]["200"]["headers"];
    assert!(health["Request-Id"].is_object() && health["RateLimit"].is_null(), "/healthz headers: {health}");
}

#[tokio::test]
async fn a_worker_instance_serves_the_openapi_document_of_its_runtime_api() {
    let nats = NatsServer::start().unwrap();
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &[], &[("NATS_URL", &nats.url())]).await;
    let instance_db = PgServer::shared().empty_database().await;
    let instance = InstanceProcess::instance("alpha", &instance_db.url, &nats.url(), &hub.url("")).await;
    let response = reqwest::get(instance.url("/openapi.json")).await.expect("the instance answers /openapi.json");
    assert_eq!(response.status(), 200, "GET /openapi.json of an instance");
    let spec: Value = response.json().await.expect("the document is JSON");
    let problems = structural_problems_of_paths(&spec);
    assert!(problems.is_empty(), "the instance's document: {problems:?}");
    let runtime = operation(&spec, "get", "/v1/runtime/workspace");
    assert_eq!(runtime["security"], serde_json::json!([{"bearer": []}]));
    assert!(runtime["responses"]["200"]["content"]["application/json"]["schema"].is_object());
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        assert_eq!(operation(&spec, "get", path)["security"], serde_json::json!([]), "GET {path} of the instance");
    }
    // A single-node hub serves the same runtime API beside its own routes.
    let single = HubProcess::spawn(&TestDatabase::new().await.url, &["--single-node"], &[]).await;
    let embedded: Value = reqwest::get(single.url("/v1/runtime/openapi.json")).await.unwrap().json().await.unwrap();
    assert!(embedded["paths"]["/v1/runtime/workspace"]["get"].is_object(), "{embedded}");
}

/// The checks of [`structural_problems`] that do not depend on the hub's endpoint list.
fn structural_problems_of_paths(spec: &Value) -> Vec<String> {
    structural_problems(spec).into_iter().filter(|p| !p.ends_with("is not documented")).collect()
}
