//! `POST /v1/interactions`: accepts an interaction authenticated by an interaction key and
//! stores it with its pending webhook deliveries, one per `webhook_uris` entry of its
//! workspace at that moment, in one transaction (the outbox a webhook sender drains). The
//! interactions of concurrent requests share that transaction (group commit, see
//! [`crate::ingest_batch`]); each is answered 202 only once it is committed.
//!
//! The key (`Authorization: Bearer <key>`, or Basic with the key as username) is checked
//! for shape and checksum first, with no lookup; then its peppered hash (the hub's pepper,
//! derived from the shared master key) is looked up in this instance's own
//! `interaction_keys` (or found among the keys recently found usable, see
//! [`crate::key_cache`]) and compared in constant time; the storing transaction checks it
//! again under its workspace's lock. No hub is asked. Unknown, revoked and
//! expired keys, and keys of deleted workspaces, get 401 (counted by the runtime API's
//! throttle like any failed authentication); a key of an archived workspace gets 403.
//!
//! Each outcome is counted for usage (see [`crate::usage`], in memory): an accepted
//! interaction, or a refusal once the key is known to this instance (expired, archived
//! workspace, a refused body); refusals of unknown keys belong to no workspace.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::Utc;
use shared::keys::{self, KeyKind};
use uuid::Uuid;

use crate::ingest_batch::Outcome;
use crate::interaction_keys::{Found, peek};
use crate::runtime::{RuntimeState, problem, unauthorized};

/// The largest request body accepted.
pub const MAX_BODY: usize = 256 * 1024;
/// The longest `type`.
pub const MAX_TYPE_LEN: usize = 100;
/// The pattern of `type`, as the OpenAPI document declares it.
pub const TYPE_PATTERN: &str = "^[a-z0-9._-]{1,100}$";

/// Where a webhook delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, postgres_types::ToSql, postgres_types::FromSql)]
#[postgres(name = "delivery_status")]
pub enum DeliveryStatus {
    #[postgres(name = "pending")]
    Pending,
    #[postgres(name = "succeeded")]
    Succeeded,
    #[postgres(name = "failed")]
    Failed,
}

/// An interaction as posted.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInteraction {
    /// What happened, in the sender's own terms.
    #[serde(rename = "type")]
    #[schema(min_length = 1, max_length = 100, pattern = "^[a-z0-9._-]{1,100}$")]
    pub kind: String,
    /// Any JSON value (required, `null` included).
    #[schema(value_type = Value)]
    pub payload: serde_json::Value,
}

/// The accepted interaction.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// The interaction's id (a UUIDv7), also the `webhook-id` of its deliveries.
    pub id: Uuid,
}

/// Accepts an interaction for the key's workspace.
#[utoipa::path(
    post,
    path = "/v1/interactions",
    tag = "runtime",
    security(("bearer" = []), ("basic" = [])),
    request_body(content = NewInteraction, description = "At most 256 KiB", content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted: stored with one pending delivery per webhook URI of the workspace", body = Accepted),
        (status = 400, description = "Malformed JSON (`malformed_json`) or an unreadable body (`unreadable_body`)", content_type = "application/problem+json", body = crate::openapi::Problem),
        (status = 401, description = "No key, or a malformed, unknown, revoked or expired one (`unauthorized`)", content_type = "application/problem+json", body = crate::openapi::Problem),
        (status = 403, description = "The workspace is archived (`workspace_archived`)", content_type = "application/problem+json", body = crate::openapi::Problem),
        (status = 413, description = "The body exceeds 256 KiB (`payload_too_large`)", content_type = "application/problem+json", body = crate::openapi::Problem),
        (status = 415, description = "The body is not JSON (`unsupported_media_type`)", content_type = "application/problem+json", body = crate::openapi::Problem),
        (status = 422, description = "The body does not fit the schema: not an object, a missing or unknown field, a bad `type` (`validation_failed`)", content_type = "application/problem+json", body = crate::openapi::Problem),
        (status = 429, description = "Too many failed authentications from this address (`too_many_failed_authentications`)", content_type = "application/problem+json", body = crate::openapi::Problem),
        (status = 503, description = "The instance's database or master key is unavailable (`unavailable`)", content_type = "application/problem+json", body = crate::openapi::Problem),
    )
)]
pub async fn interactions(State(state): State<Arc<RuntimeState>>, headers: HeaderMap, body: Body) -> Response {
    let mut identified = None;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    match accept(&state, &headers, body, deadline, &mut identified).await {
        Ok((workspace_id, key_id, id)) => {
            state.usage.accepted(workspace_id, key_id);
            (StatusCode::ACCEPTED, Json(Accepted { id })).into_response()
        }
        Err(response) => {
            // A refusal counts for the key's workspace once the key is known (an expired
            // key, an archived workspace, a bad body); unknown keys belong to no one, and a
            // 503 is the instance's failure, not the client's.
            if let Some((workspace_id, key_id)) = identified
                && response.status().is_client_error()
            {
                state.usage.rejected(workspace_id, key_id);
            }
            response
        }
    }
}

fn unavailable() -> Response {
    problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the instance database is unavailable")
}

/// How long `POST /v1/interactions` may take, its body included; past it, an interaction
/// not yet being stored is withdrawn and answered 503 (this route keeps its own deadline
/// rather than the runtime API's timeout, which would answer without knowing whether the
/// interaction was stored).
pub const DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

fn timed_out() -> Response {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        &format!("the interaction could not be stored within {} seconds; it was not stored", DEADLINE.as_secs()),
    )
}

/// Why a key or a body is refused (small, so results carrying it stay small).
#[derive(Debug)]
pub struct Refused {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        problem(self.status, self.code, &self.detail)
    }
}

fn invalid(detail: &str) -> Refused {
    Refused { status: StatusCode::UNPROCESSABLE_ENTITY, code: "validation_failed", detail: detail.to_owned() }
}

fn refused_key(detail: &str) -> Refused {
    Refused { status: StatusCode::UNAUTHORIZED, code: "unauthorized", detail: detail.to_owned() }
}

/// Stores the interaction: its workspace, key and id. `identified` is set as soon as the
/// presented key is found to be one of this instance's keys.
async fn accept(
    state: &RuntimeState,
    headers: &HeaderMap,
    body: Body,
    deadline: tokio::time::Instant,
    identified: &mut Option<(Uuid, Uuid)>,
) -> Result<(Uuid, Uuid, Uuid), Response> {
    let presented =
        credentials(headers).ok_or_else(|| unauthorized("send `Authorization: Bearer <interaction key>`"))?;
    keys::parse(KeyKind::Interaction, &presented).map_err(|_| unauthorized("not a valid interaction key"))?;
    let hasher = state
        .key_hasher
        .as_ref()
        .ok_or_else(|| problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the instance has no HUB_MASTER_KEY"))?;
    let hash = hasher.hash(&presented);
    drop(presented);

    // Authenticated before the body is read, without holding any lock while it arrives:
    // a key found usable moments ago, or one statement with no lock. The batch's
    // transaction checks again under the workspace's lock.
    let found = match state.key_cache.get(&hash) {
        Some(found) => Some(found),
        None => {
            let looked_up = tokio::time::timeout_at(deadline, async {
                let client = state.pool.get().await.map_err(|_| unavailable())?;
                peek(&client, &hash).await.map_err(|_| unavailable())
            });
            let found = looked_up.await.map_err(|_| timed_out())??;
            if let Ok(key) = usable(found.as_ref(), &hash) {
                state.key_cache.insert(key);
            }
            found
        }
    };
    *identified = known(found.as_ref(), &hash);
    usable(found.as_ref(), &hash).map_err(IntoResponse::into_response)?;

    let (interaction, size) =
        tokio::time::timeout_at(deadline, read(headers, body)).await.map_err(|_| timed_out())??;
    match state.ingest.store(hash, interaction, size, deadline).await {
        Outcome::Stored { workspace_id, interaction_key_id, id, deliveries } => {
            tracing::debug!(interaction = %id, workspace = %workspace_id, interaction_key = %interaction_key_id, deliveries, "interaction accepted");
            Ok((workspace_id, interaction_key_id, id))
        }
        Outcome::Refused { identified: again, refused } => {
            *identified = again;
            Err(refused.into_response())
        }
        Outcome::Unavailable => Err(unavailable()),
        Outcome::TimedOut => Err(timed_out()),
    }
}

/// The workspace and id of the key the presented hash belongs to, usable or not.
pub(crate) fn known(found: Option<&Found>, hash: &[u8]) -> Option<(Uuid, Uuid)> {
    found.filter(|k| keys::constant_time_eq(&k.key_hash, hash)).map(|k| (k.workspace_id, k.id))
}

/// The key, when it may be used now: 401 when unknown (a revoked key has no row) or
/// expired, 403 when its workspace is archived.
pub(crate) fn usable<'a>(found: Option<&'a Found>, hash: &[u8]) -> Result<&'a Found, Refused> {
    let key = found
        .filter(|k| keys::constant_time_eq(&k.key_hash, hash))
        .ok_or_else(|| refused_key("unknown interaction key"))?;
    if key.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(refused_key("the interaction key has expired"));
    }
    if key.archived {
        return Err(Refused {
            status: StatusCode::FORBIDDEN,
            code: "workspace_archived",
            detail: "the workspace is archived".into(),
        });
    }
    Ok(key)
}

/// The key presented in `Authorization`: Bearer, or Basic with the key as username and an
/// empty password.
fn credentials(headers: &HeaderMap) -> Option<String> {
    let value = crate::runtime::single_authorization(headers)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    let secret = if scheme.eq_ignore_ascii_case("bearer") {
        Some(rest.to_owned())
    } else if scheme.eq_ignore_ascii_case("basic") {
        base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|pair| pair.strip_suffix(':').filter(|user| !user.contains(':')).map(str::to_owned))
    } else {
        None
    };
    secret.filter(|s| !s.is_empty() && s.len() <= 512)
}

/// Reads and checks the body: 415 without a JSON media type, 413 past 256 KiB, 400 when
/// malformed, 422 when it does not fit the schema. Also returns the body's size.
async fn read(headers: &HeaderMap, body: Body) -> Result<(NewInteraction, usize), Response> {
    let is_json =
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).and_then(|v| v.split(';').next()).is_some_and(
            |v| {
                let v = v.trim().to_ascii_lowercase();
                v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
            },
        );
    if !is_json {
        return Err(problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        ));
    }
    let too_large = || {
        let mut response =
            problem(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the request body exceeds 256 KiB");
        // The connection closes after an oversized body (`shared::serve` still reads the
        // rest of it, within bounds, so that this answer arrives rather than a reset).
        response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
        response
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY as u64) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY + 1).await.map_err(|error| {
        let limited = std::iter::successors(Some(&error as &dyn std::error::Error), |e| e.source())
            .any(|e| e.to_string().contains("length limit"));
        if limited {
            too_large()
        } else {
            problem(StatusCode::BAD_REQUEST, "unreadable_body", "the request body could not be read")
        }
    })?;
    if bytes.len() > MAX_BODY {
        return Err(too_large());
    }
    parse(&bytes).map(|interaction| (interaction, bytes.len())).map_err(IntoResponse::into_response)
}

/// Parses a body already read: syntax first (400), then shape and constraints (422).
pub fn parse(bytes: &[u8]) -> Result<NewInteraction, Refused> {
    // One pass when the body fits, as nearly every one does; a body that does not is read
    // again to tell bad syntax from a bad shape. Only an object is read into the struct
    // (serde would also take an array, by position).
    let object = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let interaction = if object { serde_json::from_slice::<NewInteraction>(bytes) } else { Err(not_an_object()) };
    let interaction = interaction.map_err(|error| {
        if serde_json::from_slice::<serde_json::Value>(bytes).is_err() {
            return Refused {
                status: StatusCode::BAD_REQUEST,
                code: "malformed_json",
                detail: "the request body is not valid JSON".into(),
            };
        }
        if !object {
            return invalid("the request body must be a JSON object");
        }
        // serde's message names the field (never a value of the body).
        let message = error.to_string();
        let message = message.split(" at line ").next().unwrap_or_default();
        invalid(&format!("invalid interaction: {message}"))
    })?;
    if interaction.kind.is_empty()
        || interaction.kind.len() > MAX_TYPE_LEN
        || !interaction.kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        return Err(invalid("`type` must be 1-100 characters of [a-z0-9._-]"));
    }
    if holds_nul(&interaction.payload) {
        // PostgreSQL's jsonb cannot store U+0000; refused here rather than by the database.
        return Err(invalid("`payload` may not contain the character U+0000"));
    }
    Ok(interaction)
}

/// The error standing for a body that is not an object (never shown: [`parse`] answers it
/// with its own message).
fn not_an_object() -> serde_json::Error {
    <serde_json::Error as serde::de::Error>::custom("not a JSON object")
}

/// Whether any string or object key of `value` contains U+0000.
fn holds_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(text) => text.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(holds_nul),
        serde_json::Value::Object(fields) => fields.iter().any(|(key, value)| key.contains('\0') || holds_nul(value)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn status(body: &str) -> StatusCode {
        match parse(body.as_bytes()) {
            Ok(_) => StatusCode::ACCEPTED,
            Err(refused) => refused.status,
        }
    }

    #[test]
    fn bodies_are_refused_by_syntax_then_shape_then_type() {
        assert_eq!(status(r#"{"type": "call.completed", "payload": {"a": 1}}"#), StatusCode::ACCEPTED);
        assert_eq!(status(r#"{"type": "x", "payload": null}"#), StatusCode::ACCEPTED);
        assert_eq!(status(&format!(r#"{{"type": "{}", "payload": 1}}"#, "a".repeat(100))), StatusCode::ACCEPTED);
        assert_eq!(status(r#"{"type": "x", "payload": "#), StatusCode::BAD_REQUEST);
        assert_eq!(status(r#"[1]"#), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status(r#"["x", 1]"#), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status(r#"["x", "#), StatusCode::BAD_REQUEST);
        assert_eq!(status(r#"{"type": "x"}"#), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status(r#"{"type": "x", "payload": 1, "extra": 2}"#), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status(r#"{"type": "Call", "payload": 1}"#), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status(r#"{"type": "", "payload": 1}"#), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status(r#"{"type": 5, "payload": 1}"#), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            status(&format!(r#"{{"type": "{}", "payload": 1}}"#, "a".repeat(101))),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(status(r#"{"type": "x", "type": "y", "payload": 1}"#), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status(r#"{"type": "x", "payload": ["a\u0000"]}"#), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status(r#"{"type": "x", "payload": {"k\u0000": 1}}"#), StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn a_key_is_read_from_bearer_or_from_basic_with_an_empty_password() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            credentials(&headers)
        };
        assert_eq!(with("Bearer ik_abc").as_deref(), Some("ik_abc"));
        let basic = base64::engine::general_purpose::STANDARD.encode("ik_abc:");
        assert_eq!(with(&format!("Basic {basic}")).as_deref(), Some("ik_abc"));
        let with_password = base64::engine::general_purpose::STANDARD.encode("ik_abc:pw");
        assert_eq!(with(&format!("Basic {with_password}")), None);
        assert_eq!(with("Bearer "), None);
        assert_eq!(with("Token ik_abc"), None);
        assert_eq!(credentials(&HeaderMap::new()), None);
    }
}
