//! Cross-cutting layers: `Request-Id`, and "every error is a problem".

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{InternalCause, PROBLEM_JSON, Problem};

pub use shared::metadata::REQUEST_ID;

/// The request's id, in the request's and response's extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn valid_request_id(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    shared::metadata::is_request_id(text).then(|| text.to_owned())
}

/// Echoes a well-formed incoming `Request-Id`, otherwise makes one.
pub async fn request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(valid_request_id)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let header = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    request.headers_mut().insert(REQUEST_ID, header.clone());
    request.extensions_mut().insert(RequestId(id.clone()));
    let span =
        tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path());
    let mut response = tracing::Instrument::instrument(next.run(request), span).await;
    response.headers_mut().insert(REQUEST_ID, header);
    response.extensions_mut().insert(RequestId(id));
    response
}

/// Most bytes of an error body this layer rewrites.
const MAX_PROBLEM_BYTES: usize = 64 * 1024;

/// Makes every error response a problem with the request's id: rewrites the plain-text
/// rejections of lower layers (body limit, timeouts, method not allowed) and logs 500s.
pub async fn problems(request: Request, next: Next) -> Response {
    let request_id = request.extensions().get::<RequestId>().map(|r| r.0.clone());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    if let Some(InternalCause(cause)) = response.extensions().get::<InternalCause>() {
        tracing::error!(%method, %path, request_id = request_id.as_deref().unwrap_or(""), cause = %cause, "request failed");
    } else if status.is_server_error() {
        tracing::error!(%method, %path, %status, request_id = request_id.as_deref().unwrap_or(""), "request failed");
    }
    let is_problem =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    let (mut parts, body) = response.into_parts();
    let mut problem: Problem = if is_problem {
        match axum::body::to_bytes(body, MAX_PROBLEM_BYTES).await {
            Ok(bytes) => match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(mut value) => {
                    value["request_id"] = serde_json::json!(request_id);
                    parts.headers.remove(header::CONTENT_LENGTH);
                    if status == StatusCode::PAYLOAD_TOO_LARGE {
                        // As below: the connection closes after an oversized body.
                        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    return Response::from_parts(parts, Body::from(value.to_string()));
                }
                Err(_) => generic(status),
            },
            Err(_) => generic(status),
        }
    } else {
        generic(status)
    };
    problem.request_id = request_id;
    let mut rewritten = problem.into_response_with(status);
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        // The connection closes after an oversized body (`shared::serve` still reads the
        // rest of it, within bounds, so that this answer arrives rather than a reset).
        rewritten.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    for name in [header::WWW_AUTHENTICATE, header::RETRY_AFTER, header::ALLOW, REQUEST_ID] {
        if let Some(value) = parts.headers.get(&name) {
            rewritten.headers_mut().insert(name, value.clone());
        }
    }
    for name in ["ratelimit", "ratelimit-policy"] {
        if let Some(value) = parts.headers.get(name) {
            rewritten.headers_mut().insert(name, value.clone());
        }
    }
    rewritten
}

fn generic(status: StatusCode) -> Problem {
    let (code, detail) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body exceeds 1 MiB"),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "this method is not allowed on this path"),
        StatusCode::NOT_FOUND => ("not_found", "no such resource"),
        StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => (
            "unavailable",
            "the request timed out; a change it asked for may still be applied: read the resource, or retry with the same Idempotency-Key",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "content type must be application/json"),
        s if s.is_server_error() => ("internal", "an internal error occurred"),
        _ => ("bad_request", "the request is invalid"),
    };
    Problem::new(status, code, Some(detail.to_owned()))
}

pub async fn not_found() -> Response {
    Problem::new(StatusCode::NOT_FOUND, "not_found", Some("no such resource".into()))
        .into_response_with(StatusCode::NOT_FOUND)
}

/// A panic becomes an opaque 500; the panic message stays in the log, never in the body.
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("request handler panicked");
    super::error::ApiError::internal("handler panicked").into_response()
}
