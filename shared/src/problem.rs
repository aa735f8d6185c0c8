//! RFC 9457 problem details as the hub and the instances both answer them: the media type,
//! the `type` URI of a `code`, and the plain problem response of an instance.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The media type of every problem.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// The `type` of the problem with the stable `code`.
pub fn type_uri(code: &str) -> String {
    format!("https://admin-api.dev/problems/{code}")
}

/// A problem with `status`, `code` and `detail` (no request id, no field errors).
pub fn response(status: StatusCode, code: &str, detail: &str) -> Response {
    answer(status, body(status, code, detail))
}

/// A problem that carries the request's id, in its body and its `Request-Id` header (for
/// answers given before any layer that adds it).
pub fn response_with_id(status: StatusCode, code: &str, detail: &str, request_id: &str) -> Response {
    let mut body = body(status, code, detail);
    body["request_id"] = serde_json::Value::from(request_id);
    let mut response = answer(status, body);
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(crate::metadata::REQUEST_ID, value);
    }
    response
}

fn body(status: StatusCode, code: &str, detail: &str) -> serde_json::Value {
    serde_json::json!({
        "type": type_uri(code),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
        "code": code,
    })
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_names_its_code_in_its_type_and_its_media_type() {
        assert_eq!(type_uri("not_ready"), "https://admin-api.dev/problems/not_ready");
        let response = response(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "starting");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
    }
}
