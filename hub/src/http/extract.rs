//! Extractors whose rejections are `ApiError`s, so malformed input always gets a problem.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::error::{ApiError, FieldError};

/// A JSON request body: 415 without a JSON content type, 413 over the limit, 400 when
/// malformed, 422 when well-formed but of the wrong shape (unknown field, wrong type).
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                let v = v.trim().to_ascii_lowercase();
                v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
            });
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest { code: "unreadable_body", detail: "the request body could not be read".into() }
            }
        })?;
        parse_json(&bytes).map(Json)
    }
}

/// Parses a request body: invalid JSON is a 400; valid JSON that is not an object, or
/// does not fit the schema (unknown field, wrong type, missing field), is a 422 naming
/// the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Syntax first, so a schema error early in the body cannot hide a syntax error later.
    serde_json::from_slice::<serde_json::Value>(bytes).map_err(|error| ApiError::BadRequest {
        code: "malformed_json",
        detail: format!("malformed JSON: {}", clean_message(&error.to_string())),
    })?;
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::invalid("", "type", "the request body must be a JSON object"));
    }
    // Deserialized from the bytes (not a parsed value) so duplicate fields are refused.
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let detail = clean_message(&error.into_inner().to_string());
        let constraint = if detail.starts_with("unknown field") {
            "unknown_field"
        } else if detail.starts_with("missing field") {
            "required"
        } else {
            "type"
        };
        ApiError::Validation {
            detail: format!("the request body does not match the schema: {detail}"),
            errors: vec![FieldError {
                name: if path == "." { String::new() } else { path },
                constraint: constraint.into(),
                detail,
            }],
        }
    })
}

/// serde's messages end with " at line L column C": keep the message, drop the position
/// noise, and never echo long input back.
fn clean_message(message: &str) -> String {
    let message = message.split(" at line ").next().unwrap_or(message);
    message.chars().take(300).collect()
}

/// A path parameter: a malformed id is a 400 problem, never axum's plain-text rejection.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state).await.map(|p| Path(p.0)).map_err(|_| {
            ApiError::BadRequest {
                code: "invalid_path",
                detail: "a path parameter is malformed (ids are UUIDs)".into(),
            }
        })
    }
}

/// Query parameters: unknown or malformed parameters are a 422 problem.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded_parse(query));
        serde_path_to_error::deserialize(deserializer).map(Query).map_err(|error| {
            let name = error.path().to_string();
            let detail = clean_message(&error.into_inner().to_string());
            ApiError::Validation {
                detail: format!("invalid query parameters: {detail}"),
                errors: vec![FieldError { name, constraint: "query".into(), detail }],
            }
        })
    }
}

fn form_urlencoded_parse(query: &str) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(query.as_bytes())
}

/// An optional JSON body: an empty body is `None` (e.g. `POST .../rotate` with defaults).
pub struct OptionalJson<T>(pub Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let declared_empty = request.headers().get(header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() == b"0");
        let has_type = request.headers().contains_key(header::CONTENT_TYPE);
        if declared_empty || !has_type {
            let bytes = Bytes::from_request(request, state).await.map_err(|_| ApiError::PayloadTooLarge)?;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(OptionalJson(None));
            }
            return Err(ApiError::UnsupportedMediaType);
        }
        Json::<T>::from_request(request, state).await.map(|Json(value)| OptionalJson(Some(value)))
    }
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
pub fn double_option<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    serde::Deserialize::deserialize(deserializer).map(Some)
}
