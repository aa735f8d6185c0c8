//! The response headers the server sends, declared on the responses that carry them.

use serde_json::{Map, Value, json};

pub(super) fn declare(doc: &mut Value) {
    let components = doc["components"].as_object_mut().expect("the document has components");
    components.insert("headers".into(), definitions());
    let public: Vec<String> = super::PUBLIC.iter().map(|(method, path)| format!("{method} {path}")).collect();
    let Some(paths) = doc["paths"].as_object_mut() else { return };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for (method, operation) in item.iter_mut() {
            if !super::METHODS.contains(&method.as_str()) {
                continue;
            }
            // Operations without credentials (public, or an invitation token in the body)
            // are not rate limited per key.
            let keyed =
                !public.contains(&format!("{method} {path}")) && operation.get("security") != Some(&json!([{}]));
            let Some(responses) = operation.get_mut("responses").and_then(Value::as_object_mut) else { continue };
            for (status, response) in responses.iter_mut() {
                let mut names = vec!["Request-Id"];
                if keyed {
                    names.extend(["RateLimit-Policy", "RateLimit"]);
                }
                match status.as_str() {
                    "201" => names.extend(["Location", "ETag"]),
                    "200" => names.push("ETag"),
                    "4XX" => names.extend(["Retry-After", "WWW-Authenticate"]),
                    "503" => names.push("Retry-After"),
                    _ => {}
                }
                let Some(response) = response.as_object_mut() else { continue };
                let headers = response.entry("headers").or_insert_with(|| Value::Object(Map::new()));
                for name in names {
                    headers[name] = json!({"$ref": format!("#/components/headers/{name}")});
                }
            }
        }
    }
}

fn definitions() -> Value {
    json!({
        "Request-Id": {
            "description": "The request's id: the caller's own when it was at most 128 characters of `[A-Za-z0-9._-]`, else a generated one.",
            "required": true,
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,128}$"}
        },
        "RateLimit-Policy": {
            "description": "The key's rate limit (IETF RateLimit fields): `\"default\";q=<requests>;w=<seconds>`. Absent when the request carried no valid key.",
            "schema": {"type": "string"}
        },
        "RateLimit": {
            "description": "What remains of the key's window: `\"default\";r=<remaining>;t=<seconds to reset>`.",
            "schema": {"type": "string"}
        },
        "Location": {
            "description": "The created resource.",
            "schema": {"type": "string"}
        },
        "ETag": {
            "description": "The resource's version, for `If-Match` on a later change. Only on single resources.",
            "schema": {"type": "string"}
        },
        "Retry-After": {
            "description": "With 429 (rate limited or too many failed authentications) and some 503s: seconds to wait.",
            "schema": {"type": "integer", "minimum": 0}
        },
        "WWW-Authenticate": {
            "description": "With 401: the accepted schemes.",
            "schema": {"type": "string"}
        }
    })
}
