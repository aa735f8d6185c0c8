//! `Idempotency-Key` on POST: the same key and body give the first response again (with
//! every `secret` replaced by null), another body under the same key is a 422, and a key
//! whose first request is still running is a 409. Keys are per principal, kept 24 hours.
//!
//! The first request claims the key with a lease before it runs, and the command marks it
//! committed in its own append transaction. Should the hub die before the response is
//! stored, a retry after the lease (60 s) runs the command again only if nothing was
//! committed; otherwise it gets a 409 telling the client to read the resource.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::AppState;
use super::auth::Principal;
use super::error::ApiError;

const LEASE_SECONDS: f64 = 60.0;
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
const REPLAYED_HEADERS: [header::HeaderName; 3] = [header::CONTENT_TYPE, header::LOCATION, header::ETAG];

enum Claim {
    Fresh,
    Replay(Response),
}

/// POST routes that only read: run again rather than replayed (a replay of the keyring
/// would hand back a data key destroyed since, undoing a deletion's crypto-shredding).
const READS: [&str; 1] = ["/v1/internal/keyring"];

pub async fn idempotency(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST || READS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let Some(raw_key) = request.headers().get("idempotency-key").cloned() else {
        return next.run(request).await;
    };
    let Some(principal) = request.extensions().get::<Principal>().map(Principal::subject) else {
        return next.run(request).await;
    };
    let key = match raw_key.to_str() {
        Ok(k) if shared::metadata::is_idempotency_key(k) => k.to_owned(),
        _ => {
            return ApiError::BadRequest {
                code: "invalid_idempotency_key",
                detail: "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
            }
            .into_response();
        }
    };
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return ApiError::PayloadTooLarge.into_response();
    };
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str());
    hasher.update([0]);
    hasher.update(parts.uri.path_and_query().map_or("", |p| p.as_str()));
    hasher.update([0]);
    hasher.update(&bytes);
    let request_hash = hasher.finalize().to_vec();

    match claim(&state, &principal, &key, &request_hash).await {
        Ok(Claim::Replay(response)) => return response,
        Ok(Claim::Fresh) => {}
        Err(error) => return error.into_response(),
    }
    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    match record(&state, &principal, &key, response).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn claim(state: &AppState, principal: &str, key: &str, request_hash: &[u8]) -> Result<Claim, ApiError> {
    let client = state.pool.get().await?;
    let inserted = client
        .execute(
            "INSERT INTO idempotency_keys (principal, key, request_hash, locked_until) \
             VALUES ($1, $2, $3, now() + make_interval(secs => $4)) ON CONFLICT DO NOTHING",
            &[&principal, &key, &request_hash, &LEASE_SECONDS],
        )
        .await?;
    if inserted == 1 {
        return Ok(Claim::Fresh);
    }
    let row = client
        .query_one(
            "SELECT request_hash, locked_until > now() AS locked, response_status, response_headers, response_body, \
             committed \
             FROM idempotency_keys WHERE principal = $1 AND key = $2",
            &[&principal, &key],
        )
        .await?;
    if row.try_get::<_, Vec<u8>>("request_hash")? != request_hash {
        return Err(ApiError::Validation {
            detail: "this Idempotency-Key was used with a different request".into(),
            errors: vec![super::error::FieldError {
                name: "Idempotency-Key".into(),
                constraint: "reused".into(),
                detail: "the key was first used with another method, path or body".into(),
            }],
        });
    }
    if let Some(status) = row.try_get::<_, Option<i32>>("response_status")? {
        return Ok(Claim::Replay(replay(status, row.try_get("response_headers")?, row.try_get("response_body")?)));
    }
    if row.try_get::<_, Option<bool>>("locked")? == Some(true) {
        return Err(ApiError::Conflict {
            code: "idempotency_key_in_flight",
            detail: "a request with this Idempotency-Key is still being processed".into(),
        });
    }
    if row.try_get::<_, bool>("committed")? {
        // The first attempt committed its events but died before storing its response.
        return Err(ApiError::Conflict {
            code: "idempotency_key_committed",
            detail: "the first request with this Idempotency-Key was applied but its response was lost; \
                     read the resource instead of retrying"
                .into(),
        });
    }
    // The first attempt died before committing anything: take its lease over and run again.
    let taken = client
        .execute(
            "UPDATE idempotency_keys SET locked_until = now() + make_interval(secs => $3) \
             WHERE principal = $1 AND key = $2 AND response_status IS NULL AND locked_until <= now()",
            &[&principal, &key, &LEASE_SECONDS],
        )
        .await?;
    if taken == 1 {
        Ok(Claim::Fresh)
    } else {
        Err(ApiError::Conflict {
            code: "idempotency_key_in_flight",
            detail: "a request with this Idempotency-Key is still being processed".into(),
        })
    }
}

fn replay(status: i32, headers: Option<serde_json::Value>, body: Option<Vec<u8>>) -> Response {
    let status = u16::try_from(status).ok().and_then(|s| StatusCode::from_u16(s).ok()).unwrap_or(StatusCode::OK);
    let mut response = Response::new(Body::from(body.unwrap_or_default()));
    *response.status_mut() = status;
    if let Some(serde_json::Value::Object(map)) = headers {
        for (name, value) in map {
            if let (Ok(name), Some(Ok(value))) =
                (header::HeaderName::try_from(name), value.as_str().map(HeaderValue::from_str))
            {
                response.headers_mut().insert(name, value);
            }
        }
    }
    response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// Stores the response (secrets nulled) and hands the original on; a 5xx releases the
/// key instead, so the client may retry.
async fn record(state: &AppState, principal: &str, key: &str, response: Response) -> Result<Response, ApiError> {
    let client = state.pool.get().await?;
    if response.status().is_server_error() {
        // Released for a retry only if the command committed nothing.
        client
            .execute(
                "DELETE FROM idempotency_keys WHERE principal = $1 AND key = $2 AND NOT committed",
                &[&principal, &key],
            )
            .await?;
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.map_err(ApiError::internal)?;
    let stored_body = scrub_secrets(&parts.headers, &bytes);
    let mut stored_headers = serde_json::Map::new();
    for name in REPLAYED_HEADERS {
        if let Some(value) = parts.headers.get(&name).and_then(|v| v.to_str().ok()) {
            stored_headers.insert(name.to_string(), serde_json::Value::String(value.to_owned()));
        }
    }
    client
        .execute(
            "UPDATE idempotency_keys SET response_status = $3, response_headers = $4, response_body = $5, \
             locked_until = NULL WHERE principal = $1 AND key = $2",
            &[
                &principal,
                &key,
                &i32::from(parts.status.as_u16()),
                &serde_json::Value::Object(stored_headers),
                &stored_body,
            ],
        )
        .await?;
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// The response fields that carry a secret shown once.
const SECRET_FIELDS: [&str; 3] = ["secret", "webhook_secret", "access_token"];

/// A JSON body with every secret field set to null: a replay never repeats a secret.
fn scrub_secrets(headers: &HeaderMap, bytes: &[u8]) -> Vec<u8> {
    let is_json = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("json"));
    if !is_json {
        return bytes.to_vec();
    }
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(mut value) => {
            null_secrets(&mut value);
            serde_json::to_vec(&value).unwrap_or_default()
        }
        Err(_) => Vec::new(),
    }
}

fn null_secrets(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (name, field) in map.iter_mut() {
                if SECRET_FIELDS.contains(&name.as_str()) {
                    *field = serde_json::Value::Null;
                } else {
                    null_secrets(field);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(null_secrets),
        _ => {}
    }
}

/// Deletes keys older than the retention (24 h, plus an hour of slack), hourly.
pub fn spawn_sweeper(pool: deadpool_postgres::Pool) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            ticker.tick().await;
            let swept = async {
                let client = pool.get().await.map_err(|e| e.to_string())?;
                client
                    .execute("DELETE FROM idempotency_keys WHERE created_at < now() - interval '25 hours'", &[])
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            if let Err(error) = swept {
                tracing::warn!(%error, "could not sweep old idempotency keys");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_nulled_at_any_depth() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let body = br#"{"id":"1","secret":"adm_x","webhook_secret":"whsec_x","nested":{"items":[{"secret":"s2","name":"n"}]}}"#;
        let scrubbed: serde_json::Value = serde_json::from_slice(&scrub_secrets(&headers, body)).unwrap();
        assert_eq!(scrubbed["secret"], serde_json::Value::Null);
        assert_eq!(scrubbed["webhook_secret"], serde_json::Value::Null);
        assert_eq!(scrubbed["nested"]["items"][0]["secret"], serde_json::Value::Null);
        assert_eq!(scrubbed["nested"]["items"][0]["name"], "n");
    }
}
