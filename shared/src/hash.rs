//! The hash chain over the event log.
//!
//! `hash = sha256(prev_hash ‖ canonical bytes of the event)`. The canonical bytes are the
//! compact JSON of the envelope's fields with object keys sorted (serde_json's default map
//! is ordered), so the hub when appending, `hub events verify` and the instances all
//! compute the same bytes from what PostgreSQL returns.

use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

/// The `prev_hash` of the first event.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// The fields of an event that the chain covers.
pub struct ChainFields<'a> {
    pub position: i64,
    pub stream_id: &'a str,
    pub stream_version: i64,
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub schema_version: i32,
    pub data: &'a serde_json::Value,
    pub metadata: &'a serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}

/// The payload [`Canonical`] writes, as a value (the reference the tests compare with).
#[cfg(test)]
fn canonical_numbers(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or_default();
            stored_integer(f).unwrap_or_else(|| value.clone())
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical_numbers).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), canonical_numbers(v))).collect()),
        other => other.clone(),
    }
}

/// A payload with its numbers written the way PostgreSQL's jsonb gives them back: an
/// integral float that fits an integer becomes that integer (`1e16`, `1.0`, `-0.0`), so
/// the hash computed when appending equals the one computed from what the database returns.
struct Canonical<'a>(&'a serde_json::Value);

impl serde::Serialize for Canonical<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        use serde_json::Value;
        match self.0 {
            Value::Number(n) if n.is_f64() => match stored_integer(n.as_f64().unwrap_or_default()) {
                Some(integer) => integer.serialize(serializer),
                None => n.serialize(serializer),
            },
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Canonical(item))?;
                }
                seq.end()
            }
            Value::Object(map) => {
                let mut out = serializer.serialize_map(Some(map.len()))?;
                for (key, value) in map {
                    out.serialize_entry(key, &Canonical(value))?;
                }
                out.end()
            }
            other => other.serialize(serializer),
        }
    }
}

/// The integer the database gives back for the double `f`, if it gives back an integer.
/// The database keeps the decimal the double was sent as (its shortest round-trip form,
/// `2.812722529998191e16`) and prints it in full (`28127225299981910`), which above 2^53 is
/// not the double's exact value (`28127225299981912`); a reader parses that as an integer
/// when it fits one.
fn stored_integer(f: f64) -> Option<serde_json::Value> {
    if f.fract() != 0.0 {
        return None;
    }
    let text = serde_json::Number::from_f64(f)?.to_string();
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, exponent.parse::<i32>().ok()?),
        None => (text.as_str(), 0),
    };
    let (negative, mantissa) = mantissa.strip_prefix('-').map_or((false, mantissa), |m| (true, m));
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let fraction = fraction.trim_end_matches('0');
    let zeros = exponent.checked_sub(i32::try_from(fraction.len()).ok()?)?;
    // u64::MAX has 20 digits: a longer integer comes back as a float, like `f` itself.
    if !(0..=20).contains(&zeros) {
        return None;
    }
    let digits = format!("{whole}{fraction}{}", "0".repeat(zeros as usize));
    if negative {
        format!("-{digits}").parse::<i64>().ok().map(serde_json::Value::from)
    } else {
        digits.parse::<u64>().ok().map(serde_json::Value::from)
    }
}

impl ChainFields<'_> {
    /// The compact JSON of the fields, keys sorted, numbers as the database gives them back
    /// (written straight out, without building a copy of the payload first).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        use std::io::Write;
        let mut out = Vec::with_capacity(256);
        // Writing into a Vec cannot fail; the values are plain JSON.
        out.extend_from_slice(b"{\"data\":");
        let _ = serde_json::to_writer(&mut out, &Canonical(self.data));
        let _ = write!(out, ",\"event_id\":\"{}\",\"event_type\":", self.event_id);
        let _ = serde_json::to_writer(&mut out, self.event_type);
        out.extend_from_slice(b",\"metadata\":");
        let _ = serde_json::to_writer(&mut out, &Canonical(self.metadata));
        let _ = write!(
            out,
            ",\"position\":{},\"recorded_at\":\"{}\",\"schema_version\":{},\"stream_id\":",
            self.position,
            self.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            self.schema_version
        );
        let _ = serde_json::to_writer(&mut out, self.stream_id);
        let _ = write!(out, ",\"stream_version\":{}}}", self.stream_version);
        out
    }

    /// `sha256(prev_hash ‖ canonical bytes)`.
    pub fn chain_hash(&self, prev_hash: &[u8]) -> Vec<u8> {
        let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
        hasher.update(prev_hash);
        hasher.update(&self.canonical_bytes());
        hasher.finish().as_ref().to_vec()
    }
}

/// Truncates a timestamp to PostgreSQL's microsecond precision, so the value hashed at
/// append time is the value read back.
pub fn to_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(data: &'a serde_json::Value, metadata: &'a serde_json::Value) -> ChainFields<'a> {
        ChainFields {
            position: 1,
            stream_id: "org-1",
            stream_version: 1,
            event_id: Uuid::nil(),
            event_type: "OrganizationCreated",
            schema_version: 1,
            data,
            metadata,
            recorded_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
        }
    }

    /// The canonical bytes as first defined: the envelope built as a JSON value (keys
    /// sorted by the map), the payloads copied with their numbers rewritten.
    fn reference_bytes(f: &ChainFields<'_>) -> Vec<u8> {
        let value = serde_json::json!({
            "position": f.position,
            "stream_id": f.stream_id,
            "stream_version": f.stream_version,
            "event_id": f.event_id,
            "event_type": f.event_type,
            "schema_version": f.schema_version,
            "data": canonical_numbers(f.data),
            "metadata": canonical_numbers(f.metadata),
            "recorded_at": f.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        });
        serde_json::to_vec(&value).unwrap()
    }

    #[test]
    fn canonical_bytes_are_those_of_the_sorted_envelope_value() {
        let payloads = [
            r#"{}"#,
            r#"{"name":"a \"b\" \\ \n é","b":[1,2.5,1e16,-0.0,1.0,1e300,{"z":null,"a":true}],"a":{"y":-3,"x":"é"}}"#,
            r#"[1.0, "x", [], {"k": 2.0}]"#,
            r#"2.812722529998191e16"#,
            r#""text""#,
        ];
        let metadata: serde_json::Value =
            serde_json::from_str(r#"{"actor":{"type":"user","id":"u\u0001"},"traceparent":"00-ab"}"#).unwrap();
        for payload in payloads {
            let data: serde_json::Value = serde_json::from_str(payload).unwrap();
            let mut f = fields(&data, &metadata);
            f.stream_id = "workspace-\"odd\"";
            f.event_type = "Type\twith tab";
            f.position = 1 << 40;
            f.stream_version = 7;
            f.schema_version = 2;
            assert_eq!(
                String::from_utf8(f.canonical_bytes()).unwrap(),
                String::from_utf8(reference_bytes(&f)).unwrap(),
                "{payload}"
            );
        }
    }

    #[test]
    fn the_hash_is_the_sha256_of_the_previous_hash_then_the_canonical_bytes() {
        use sha2::{Digest, Sha256};
        let (data, meta) = (serde_json::json!({"plan": "pro", "seats": 1.5}), serde_json::json!({"actor": "op"}));
        let f = fields(&data, &meta);
        let prev = [7u8; 32];
        let expected = Sha256::new().chain_update(prev).chain_update(f.canonical_bytes()).finalize();
        assert_eq!(f.chain_hash(&prev), expected.to_vec());
        // A fixed vector (Python's hashlib over the same bytes): the log's hashes never
        // change with the implementation.
        let empty = serde_json::json!({});
        assert_eq!(
            hex::encode(fields(&empty, &empty).chain_hash(&GENESIS_HASH)),
            "5c25634abd5c5a7ef7dc02f4621b995243cc9d3c5a82b0399f6a43623d052e57"
        );
    }

    #[test]
    fn key_order_of_the_payload_does_not_change_the_hash() {
        let meta = serde_json::json!({});
        let a: serde_json::Value = serde_json::from_str(r#"{"b":1,"a":{"y":2,"x":3}}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{"a":{"x":3,"y":2},"b":1}"#).unwrap();
        assert_eq!(fields(&a, &meta).chain_hash(&GENESIS_HASH), fields(&b, &meta).chain_hash(&GENESIS_HASH));
    }

    #[test]
    fn any_changed_field_or_previous_hash_changes_the_hash() {
        let meta = serde_json::json!({});
        let data = serde_json::json!({"name": "acme"});
        let other = serde_json::json!({"name": "acme2"});
        let base = fields(&data, &meta).chain_hash(&GENESIS_HASH);
        assert_ne!(base, fields(&other, &meta).chain_hash(&GENESIS_HASH));
        assert_ne!(base, fields(&data, &meta).chain_hash(&[1; 32]));
        let mut moved = fields(&data, &meta);
        moved.position = 2;
        assert_ne!(base, moved.chain_hash(&GENESIS_HASH));
    }

    #[test]
    fn numbers_hash_alike_in_the_forms_jsonb_rewrites_them_to() {
        let meta = serde_json::json!({});
        let pairs = [("1e16", "10000000000000000"), ("-0.0", "0.0"), ("1.0", "1"), ("2.5", "2.5"), ("1e300", "1e300")];
        for (written, read_back) in pairs {
            let a: serde_json::Value = serde_json::from_str(&format!(r#"{{"x":{written}}}"#)).unwrap();
            let b: serde_json::Value = serde_json::from_str(&format!(r#"{{"x":{read_back}}}"#)).unwrap();
            let (a, b) = (fields(&a, &meta).chain_hash(&GENESIS_HASH), fields(&b, &meta).chain_hash(&GENESIS_HASH));
            assert_eq!(a, b, "{written}");
        }
    }

    #[test]
    fn truncation_to_micros_is_stable() {
        let at = DateTime::from_timestamp_nanos(1_700_000_000_123_456_789);
        assert_eq!(to_micros(at).timestamp_subsec_nanos(), 123_456_000);
        assert_eq!(to_micros(to_micros(at)), to_micros(at));
    }
}
