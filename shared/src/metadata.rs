//! Who caused an event, and in which request: stored in the `metadata` column.
//!
//! Every field that comes from a request is bounded here, so no request header can make
//! an event large (a huge one once stopped every instance's event delivery).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "postgres", derive(postgres_types::ToSql, postgres_types::FromSql))]
#[cfg_attr(feature = "postgres", postgres(name = "actor_type"))]
#[serde(rename_all = "snake_case")]
pub enum ActorType {
    #[cfg_attr(feature = "postgres", postgres(name = "operator"))]
    Operator,
    #[cfg_attr(feature = "postgres", postgres(name = "api_key"))]
    ApiKey,
    #[cfg_attr(feature = "postgres", postgres(name = "user"))]
    User,
    #[cfg_attr(feature = "postgres", postgres(name = "app"))]
    App,
    #[cfg_attr(feature = "postgres", postgres(name = "system"))]
    System,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    #[serde(rename = "type")]
    pub kind: ActorType,
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

impl Actor {
    pub fn system() -> Self {
        Self { kind: ActorType::System, id: None, ip: None }
    }
}

/// Event metadata. Never holds a secret: it is written to the immutable log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub actor: Actor,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// W3C `traceparent` of the request that caused the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl Metadata {
    pub fn system() -> Self {
        Self { actor: Actor::system(), request_id: None, idempotency_key: None, traceparent: None }
    }

    /// The same metadata without any request field that breaks its bounds: such a field
    /// is dropped, never stored.
    pub fn bounded(&self) -> Self {
        Self {
            actor: self.actor.clone(),
            request_id: self.request_id.clone().filter(|id| is_request_id(id)),
            idempotency_key: self.idempotency_key.clone().filter(|key| is_idempotency_key(key)),
            traceparent: self.traceparent.clone().filter(|tp| is_traceparent(tp)),
        }
    }
}

pub const MAX_REQUEST_ID_LENGTH: usize = 128;

/// The header that carries a request's id, on the hub's and the instances' responses alike.
pub const REQUEST_ID: axum::http::HeaderName = axum::http::HeaderName::from_static("request-id");
pub const MAX_IDEMPOTENCY_KEY_LENGTH: usize = 255;

/// A `Request-Id` worth echoing: 1 to 128 characters of `[A-Za-z0-9._-]`.
pub fn is_request_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_REQUEST_ID_LENGTH
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// An `Idempotency-Key`: 1 to 255 visible ASCII characters.
pub fn is_idempotency_key(text: &str) -> bool {
    !text.is_empty() && text.len() <= MAX_IDEMPOTENCY_KEY_LENGTH && text.bytes().all(|b| b.is_ascii_graphic())
}

/// A W3C trace-context `traceparent`: `<version>-<trace id>-<parent id>-<flags>` in
/// lowercase hex, 2-32-16-2 digits, trace and parent id not all zero, version `ff`
/// invalid. Fields a later version may append are not kept: the value is exactly the 55
/// characters of the version 00 layout.
pub fn is_traceparent(text: &str) -> bool {
    let hex =
        |part: &str, len: usize| part.len() == len && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let nonzero = |part: &str| part.bytes().any(|b| b != b'0');
    if text.len() != 55 {
        return false;
    }
    let parts: Vec<&str> = text.split('-').collect();
    let [version, trace_id, parent_id, flags] = parts[..] else {
        return false;
    };
    hex(version, 2)
        && version != "ff"
        && hex(trace_id, 32)
        && nonzero(trace_id)
        && hex(parent_id, 16)
        && nonzero(parent_id)
        && hex(flags, 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_traceparent_must_follow_the_w3c_syntax() {
        assert!(is_traceparent(VALID));
        assert!(is_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"));
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "0-04bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-é",
        ] {
            assert!(!is_traceparent(bad), "{bad:?}");
        }
        assert!(!is_traceparent(&"\"".repeat(400_000)));
    }

    #[test]
    fn request_ids_and_idempotency_keys_are_bounded() {
        assert!(is_request_id(&"a".repeat(128)));
        assert!(is_request_id("A-z_0.9"));
        for bad in ["", "a:b", "a b", "a/b", "é"] {
            assert!(!is_request_id(bad), "{bad:?}");
        }
        assert!(!is_request_id(&"a".repeat(129)));
        assert!(is_idempotency_key(&"k".repeat(255)));
        assert!(!is_idempotency_key(&"k".repeat(256)));
        assert!(!is_idempotency_key("a b"));
        assert!(!is_idempotency_key(""));
    }

    #[test]
    fn bounded_metadata_drops_the_fields_out_of_bounds() {
        let metadata = Metadata {
            actor: Actor::system(),
            request_id: Some("x".repeat(129)),
            idempotency_key: Some("k".repeat(256)),
            traceparent: Some("\"".repeat(1000)),
        };
        assert_eq!(metadata.bounded(), Metadata::system());
        let fine = Metadata {
            actor: Actor::system(),
            request_id: Some("req-1".into()),
            idempotency_key: Some("key-1".into()),
            traceparent: Some(VALID.into()),
        };
        assert_eq!(fine.bounded(), fine);
    }
}
