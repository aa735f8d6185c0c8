//! The contract between typed domain events and the event store.
//!
//! Each aggregate has one past-tense enum of events. The store keeps `event_type` and
//! `schema_version` as columns beside the JSON payload, so old payloads can be upcast on
//! raw JSON before they are decoded into today's enum.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A typed event of one aggregate.
pub trait DomainEvent: Serialize + DeserializeOwned + Sized {
    /// The stable name stored in the `event_type` column, e.g. `OrganizationCreated`.
    fn event_type(&self) -> &'static str;

    /// The version of this event's payload schema.
    fn schema_version(&self) -> i32 {
        1
    }

    /// Decodes a stored payload. Implementations upcast older `schema_version`s here.
    fn decode(event_type: &str, schema_version: i32, data: &serde_json::Value) -> Result<Self, DecodeError>;
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type `{0}`")]
    UnknownType(String),
    #[error("unsupported schema version {version} of `{event_type}`")]
    UnsupportedVersion { event_type: String, version: i32 },
    #[error("malformed `{event_type}` payload: {source}")]
    Malformed {
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Decodes an externally tagged payload `{"<EventType>": {...}}` written by `encode_tagged`.
///
/// Events are stored as the inner object only; the tag is the `event_type` column. This
/// helper rebuilds the tagged form so serde can pick the variant.
pub fn decode_tagged<E: DeserializeOwned>(event_type: &str, data: &serde_json::Value) -> Result<E, DecodeError> {
    let tagged = serde_json::Value::Object([(event_type.to_owned(), data.clone())].into_iter().collect());
    serde_json::from_value(tagged).map_err(|source| {
        if source.to_string().starts_with("unknown variant") {
            DecodeError::UnknownType(event_type.to_owned())
        } else {
            DecodeError::Malformed { event_type: event_type.to_owned(), source }
        }
    })
}

/// Encodes an externally tagged enum value to its inner payload (the tag is stored apart).
pub fn encode_untagged<E: Serialize>(event: &E) -> serde_json::Result<serde_json::Value> {
    match serde_json::to_value(event)? {
        serde_json::Value::Object(map) if map.len() == 1 => {
            Ok(map.into_iter().next().map(|(_, v)| v).unwrap_or_default())
        }
        other => Ok(other),
    }
}
