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
    match serde_path_to_error::deserialize(&mut deserializer) {
        Ok(value) => Ok(value),
        // JSON (and JSON Schema) counts `2.0` as the integer 2: read integral numbers as
        // integers and try again, still refusing duplicate fields.
        Err(error) if error.inner().to_string().starts_with("invalid type: floating point") => {
            serde_json::from_slice::<NoDuplicateKeys>(bytes).map_err(schema_error)?;
            let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(schema_error)?;
            integral_numbers_as_integers(&mut value);
            serde_path_to_error::deserialize(value)
                .map_err(|error| schema_error_at(error.path().to_string(), error.into_inner()))
        }
        Err(error) => Err(schema_error_at(error.path().to_string(), error.into_inner())),
    }
}

fn schema_error(error: serde_json::Error) -> ApiError {
    schema_error_at(".".into(), error)
}

fn schema_error_at(path: String, error: serde_json::Error) -> ApiError {
    let detail = clean_message(&error.to_string());
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
            name: if path == "." { String::new() } else { clean_message(&path) },
            constraint: constraint.into(),
            detail,
        }],
    }
}

/// Rewrites every number with an integral value that a float holds exactly (`2.0`, `-3e2`;
/// at most 2^53 in magnitude, beyond which the text may have been rounded) as that integer.
fn integral_numbers_as_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match value {
        Value::Number(number) => {
            if let Some(float) = number.as_f64().filter(|f| number.is_f64() && f.fract() == 0.0 && f.abs() <= EXACT) {
                // Exact: the value is an integer within ±2^53.
                *number = (float as i64).into();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(integral_numbers_as_integers),
        _ => {}
    }
}

/// Any JSON whose objects have no key twice (a parsed `Value` would keep the last).
struct NoDuplicateKeys;

impl<'de> serde::Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NoDuplicateKeys)
    }
}

impl<'de> serde::de::Visitor<'de> for NoDuplicateKeys {
    type Value = NoDuplicateKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<NoDuplicateKeys>()?.is_some() {}
        Ok(self)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!("duplicate field `{}`", clean_message(&key))));
            }
            map.next_value::<NoDuplicateKeys>()?;
        }
        Ok(self)
    }
}

/// serde's messages end with " at line L column C": keep the message, drop the position
/// noise, and never echo long input back.
/// Field names go through it too.
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

/// Query parameters: unknown or malformed parameters are a 422 problem, and so is one whose
/// percent-encoding is not UTF-8 (decoding would quietly turn it into U+FFFD).
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        if let Some(name) = not_utf8(query) {
            let detail = "percent-encodes bytes that are not UTF-8".to_owned();
            return Err(ApiError::Validation {
                detail: format!("invalid query parameters: {name} {detail}"),
                errors: vec![FieldError { name, constraint: "query".into(), detail }],
            });
        }
        let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded_parse(query));
        serde_path_to_error::deserialize(deserializer).map(Query).map_err(|error| {
            let name = clean_message(&error.path().to_string());
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

/// The name of the first parameter whose name or value is not UTF-8 once percent-decoded
/// (as far as it can be read, and short: input is never echoed back at length).
fn not_utf8(query: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decoded(name);
        let valid = std::str::from_utf8(&name).is_ok() && std::str::from_utf8(&percent_decoded(value)).is_ok();
        (!valid).then(|| String::from_utf8_lossy(&name).chars().take(64).collect())
    })
}

/// The bytes `part` percent-encodes; a `%` not followed by two hex digits stands for itself,
/// as in `form_urlencoded`.
fn percent_decoded(part: &str) -> Vec<u8> {
    let bytes = part.as_bytes();
    let hex = |at: usize| bytes.get(at).and_then(|&b| char::from(b).to_digit(16));
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        match (bytes[at], hex(at + 1), hex(at + 2)) {
            (b'%', Some(high), Some(low)) => {
                // Two hex digits: at most 0xFF.
                decoded.push(u8::try_from(high * 16 + low).unwrap_or(u8::MAX));
                at += 3;
            }
            (byte, _, _) => {
                decoded.push(byte);
                at += 1;
            }
        }
    }
    decoded
}

/// An optional JSON body: an empty body is `None` (e.g. `POST .../rotate` with defaults).
pub struct OptionalJson<T>(pub Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        // An empty body is no body, whatever its declared type (clients send
        // `Content-Type: application/json` with nothing after it).
        let (parts, body) = request.into_parts();
        let has_type = parts.headers.contains_key(header::CONTENT_TYPE);
        let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(|_| ApiError::PayloadTooLarge)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(None));
        }
        if !has_type {
            return Err(ApiError::UnsupportedMediaType);
        }
        let request = Request::from_parts(parts, axum::body::Body::from(bytes));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        count: u32,
        offset: Option<i64>,
    }

    #[test]
    fn an_integral_number_written_with_a_fraction_or_exponent_is_an_integer() {
        let body: Body = parse_json(br#"{"count": 2579.0, "offset": -3e2}"#).unwrap();
        assert_eq!((body.count, body.offset), (2579, Some(-300)));
    }

    #[test]
    fn a_query_parameter_is_refused_by_name_when_its_percent_encoding_is_not_utf8() {
        assert_eq!(not_utf8("page=1&name=%FF"), Some("name".to_owned()));
        assert_eq!(not_utf8("email=o%FE%40a.test"), Some("email".to_owned()));
        assert_eq!(not_utf8("name=%C3"), Some("name".to_owned()));
        assert_eq!(not_utf8("na%FFme=x"), Some("na\u{FFFD}me".to_owned()));
        for valid in ["", "name=%C3%A9", "name=%EF%BF%BD", "name=100%", "name=%zz%4", "a&&b=", "name=%e2%82%ac+x"] {
            assert_eq!(not_utf8(valid), None, "{valid}");
        }
        assert_eq!(percent_decoded("%e2%82%ac+%4"), "€+%4".as_bytes());
    }

    #[test]
    fn fractions_rounded_numbers_and_duplicate_fields_are_still_refused() {
        for refused in [
            &br#"{"count": 2.5}"#[..],
            br#"{"count": 1, "offset": -9223372036854775809}"#,
            br#"{"count": 1.0, "count": 2}"#,
        ] {
            let error = parse_json::<Body>(refused).expect_err(std::str::from_utf8(refused).unwrap());
            assert!(matches!(error, ApiError::Validation { .. }), "{error:?}");
        }
    }
}
