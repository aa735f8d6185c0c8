//! A recorded event as the store returns it and as it travels to the instances.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{DecodeError, DomainEvent};
use crate::hash::ChainFields;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = FeedEvent)]
pub struct RecordedEvent {
    pub position: i64,
    pub stream_id: String,
    pub stream_version: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub data: serde_json::Value,
    pub metadata: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
    /// Hex of the previous event's hash.
    #[serde(with = "hex_bytes")]
    #[schema(value_type = String)]
    pub prev_hash: Vec<u8>,
    /// Hex of `sha256(prev_hash ‖ canonical bytes of the event)`.
    #[serde(with = "hex_bytes")]
    #[schema(value_type = String)]
    pub hash: Vec<u8>,
}

impl RecordedEvent {
    pub fn chain_fields(&self) -> ChainFields<'_> {
        ChainFields {
            position: self.position,
            stream_id: &self.stream_id,
            stream_version: self.stream_version,
            event_id: self.event_id,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            data: &self.data,
            metadata: &self.metadata,
            recorded_at: self.recorded_at,
        }
    }

    /// Whether `hash` is what the chain rule gives for this event and its `prev_hash`.
    pub fn hash_is_valid(&self) -> bool {
        self.chain_fields().chain_hash(&self.prev_hash) == self.hash
    }

    /// Decodes the payload into the aggregate's event enum.
    pub fn decode<E: DomainEvent>(&self) -> Result<E, DecodeError> {
        E::decode(&self.event_type, self.schema_version, &self.data)
    }
}

mod hex_bytes {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    /// Decoded from the text as the parser hands it over, without an owned copy (a feed
    /// page holds two hashes per event).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_str(HexVisitor)
    }

    struct HexVisitor;

    impl serde::de::Visitor<'_> for HexVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a hex string")
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Vec<u8>, E> {
            if !text.len().is_multiple_of(2) {
                return Err(E::custom(hex::FromHexError::OddLength));
            }
            let mut bytes = vec![0; text.len() / 2];
            hex::decode_to_slice(text.as_bytes(), &mut bytes).map_err(E::custom)?;
            Ok(bytes)
        }
    }
}
