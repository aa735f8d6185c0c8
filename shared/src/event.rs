//! The contract between typed domain events and the event store.
//!
//! Each aggregate has one past-tense enum of events. The store keeps `event_type` and
//! `schema_version` as columns beside the JSON payload, so old payloads can be upcast on
//! raw JSON before they are decoded into today's enum.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

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
    E::deserialize(Tagged { tag: event_type, data }).map_err(|source| {
        if source.to_string().starts_with("unknown variant") {
            DecodeError::UnknownType(event_type.to_owned())
        } else {
            DecodeError::Malformed { event_type: event_type.to_owned(), source }
        }
    })
}

/// `{"<tag>": <data>}` as a deserializer, without building that object: the payload is
/// read where it is (an aggregate's events are decoded each time it is loaded or applied).
struct Tagged<'a> {
    tag: &'a str,
    data: &'a serde_json::Value,
}

impl<'de> serde::Deserializer<'de> for Tagged<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_enum(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de> serde::de::EnumAccess<'de> for Tagged<'de> {
    type Error = serde_json::Error;
    type Variant = Payload<'de>;

    fn variant_seed<V: serde::de::DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), Self::Error> {
        use serde::de::IntoDeserializer;
        let variant = seed.deserialize(self.tag.into_deserializer())?;
        Ok((variant, Payload(self.data)))
    }
}

/// The payload of a variant, read as serde_json reads the value of a one-key object.
struct Payload<'a>(&'a serde_json::Value);

impl<'de> serde::de::VariantAccess<'de> for Payload<'de> {
    type Error = serde_json::Error;

    fn unit_variant(self) -> Result<(), Self::Error> {
        <()>::deserialize(self.0)
    }

    fn newtype_variant_seed<T: serde::de::DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Self::Error> {
        seed.deserialize(self.0)
    }

    fn tuple_variant<V: serde::de::Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            serde_json::Value::Array(_) => serde::Deserializer::deserialize_seq(self.0, visitor),
            other => Err(serde::de::Error::invalid_type(unexpected(other), &"tuple variant")),
        }
    }

    fn struct_variant<V: serde::de::Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            serde_json::Value::Object(_) => serde::Deserializer::deserialize_struct(self.0, "", fields, visitor),
            other => Err(serde::de::Error::invalid_type(unexpected(other), &"struct variant")),
        }
    }
}

fn unexpected(value: &serde_json::Value) -> serde::de::Unexpected<'_> {
    use serde::de::Unexpected;
    match value {
        serde_json::Value::Null => Unexpected::Unit,
        serde_json::Value::Bool(b) => Unexpected::Bool(*b),
        serde_json::Value::Number(_) => Unexpected::Other("number"),
        serde_json::Value::String(s) => Unexpected::Str(s),
        serde_json::Value::Array(_) => Unexpected::Seq,
        serde_json::Value::Object(_) => Unexpected::Map,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Sample {
        Unit,
        Newtype(String),
        Tuple(i64, bool),
        Struct {
            name: String,
            #[serde(default)]
            count: Option<u32>,
        },
    }

    /// Decoding as first defined: the tagged object built, then read.
    fn reference(event_type: &str, data: &serde_json::Value) -> Result<Sample, String> {
        let tagged = serde_json::Value::Object([(event_type.to_owned(), data.clone())].into_iter().collect());
        serde_json::from_value(tagged).map_err(|e| e.to_string())
    }

    #[test]
    fn a_payload_decodes_as_its_tagged_object_does() {
        let cases = [
            ("Unit", serde_json::json!(null)),
            ("Unit", serde_json::json!({})),
            ("Newtype", serde_json::json!("x")),
            ("Newtype", serde_json::json!(1)),
            ("Tuple", serde_json::json!([3, true])),
            ("Tuple", serde_json::json!([3])),
            ("Struct", serde_json::json!({"name": "a", "count": 2})),
            ("Struct", serde_json::json!({"name": "a"})),
            ("Struct", serde_json::json!({"count": "no"})),
            ("Struct", serde_json::json!(["a", 2])),
            ("Missing", serde_json::json!({})),
        ];
        for (event_type, data) in cases {
            let decoded = decode_tagged::<Sample>(event_type, &data).map_err(|e| match e {
                DecodeError::Malformed { source, .. } => source.to_string(),
                other => other.to_string(),
            });
            let expected = reference(event_type, &data).map_err(|message| {
                if message.starts_with("unknown variant") {
                    DecodeError::UnknownType(event_type.into()).to_string()
                } else {
                    message
                }
            });
            assert_eq!(decoded.is_ok(), expected.is_ok(), "{event_type} {data}: {decoded:?} / {expected:?}");
            if let (Ok(decoded), Ok(expected)) = (&decoded, &expected) {
                assert_eq!(decoded, expected);
            }
            if expected.as_ref().err().is_some_and(|m| m.starts_with("unknown event type")) {
                assert_eq!(decoded, expected);
            }
        }
    }
}
