//! `Request-Id` on every response of the instance, as on the hub: an incoming one of at
//! most 128 characters of `[A-Za-z0-9._-]` is echoed, anything else replaced by a new id.
//! A problem body carries it too (`request_id`), as the hub's do.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

pub use shared::metadata::REQUEST_ID;

pub async fn request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|text| shared::metadata::is_request_id(text))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    let header = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    request.headers_mut().insert(REQUEST_ID, header.clone());
    let span =
        tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path());
    let mut response = tracing::Instrument::instrument(next.run(request), span).await;
    response.headers_mut().insert(REQUEST_ID, header);
    with_request_id(response, &id).await
}

/// Most bytes of a problem body rewritten to carry the request id.
const MAX_PROBLEM_BYTES: usize = 64 * 1024;

async fn with_request_id(response: Response, id: &str) -> Response {
    let is_problem = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !is_problem {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_PROBLEM_BYTES).await else {
        return Response::from_parts(parts, axum::body::Body::empty());
    };
    let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(mut problem) if problem.is_object() => {
            problem["request_id"] = serde_json::Value::from(id);
            parts.headers.remove(axum::http::header::CONTENT_LENGTH);
            problem.to_string().into()
        }
        _ => bytes,
    };
    Response::from_parts(parts, axum::body::Body::from(body))
}
