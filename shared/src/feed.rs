//! `GET /v1/events`, the hub's raw event feed in position order: the query a hub reads and
//! an instance sends, and the page a hub writes and an instance reads (an instance falls
//! back to it when no hub answers over NATS).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::RecordedEvent;

/// The feed's path on the hub.
pub const PATH: &str = "/v1/events";
/// Events in a page unless the query says otherwise.
pub const DEFAULT_LIMIT: i64 = 100;
/// The most events one page holds (over HTTP, and over NATS as far as a message allows).
pub const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    /// Events with a position greater than this (default 0: from the start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<i64>,
    /// At most this many events (default 100, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// Only this stream's events, e.g. `workspace-<uuid>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<String>,
}

/// A page of the feed: events with their hashes in hex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = Feed)]
pub struct FeedPage {
    pub items: Vec<RecordedEvent>,
    /// `next` while a full page came back (more may follow).
    pub links: Vec<FeedLink>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FeedLink {
    pub rel: String,
    pub href: String,
}

impl FeedPage {
    /// The page of `events` answering `query` (with `limit` applied): a `next` link when it
    /// is full.
    pub fn new(events: Vec<RecordedEvent>, limit: i64, stream_id: Option<&str>) -> Self {
        let links = links(events.last().map(|e| e.position), events.len(), limit, stream_id);
        Self { items: events, links }
    }
}

/// A page's links: `next` after `last` when the page holds `limit` events.
fn links(last: Option<i64>, len: usize, limit: i64, stream_id: Option<&str>) -> Vec<FeedLink> {
    let mut links = Vec::new();
    if let Some(last) = last.filter(|_| len as i64 == limit) {
        let mut href = format!("{PATH}?after={last}&limit={limit}");
        if let Some(stream) = stream_id {
            href.push_str("&stream_id=");
            href.extend(form_urlencoded::byte_serialize(stream.as_bytes()));
        }
        links.push(FeedLink { rel: "next".into(), href });
    }
    links
}

/// An event as the hub reads it to serve the feed: its payload and metadata kept as the
/// JSON text the database gave, so a page is written without parsing and re-encoding them.
#[derive(Debug, Clone, PartialEq)]
pub struct RawEvent {
    pub position: i64,
    pub stream_id: String,
    pub stream_version: i64,
    pub event_id: uuid::Uuid,
    pub event_type: String,
    pub schema_version: i32,
    /// JSON text (trusted: what PostgreSQL's jsonb output gives).
    pub data: String,
    /// JSON text, as `data`.
    pub metadata: String,
    pub recorded_at: chrono::DateTime<chrono::Utc>,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// The JSON of the page of `events` answering a query with `limit` applied: the same
/// document [`FeedPage`] serializes to (the same fields, in the same order, with the same
/// values), the payloads copied as they are.
pub fn raw_page(events: &[RawEvent], limit: i64, stream_id: Option<&str>) -> Vec<u8> {
    let size: usize = events.iter().map(|e| e.data.len() + e.metadata.len() + 400).sum();
    let mut out = Vec::with_capacity(size + 200);
    out.extend_from_slice(b"{\"items\":[");
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_event(&mut out, event);
    }
    out.extend_from_slice(b"],\"links\":");
    let links = links(events.last().map(|e| e.position), events.len(), limit, stream_id);
    // Writing into a Vec fails only on a value serde cannot write; these are plain strings.
    serde_json::to_writer(&mut out, &links).unwrap_or_default();
    out.push(b'}');
    out
}

fn write_event(out: &mut Vec<u8>, event: &RawEvent) {
    use std::io::Write;
    // Every value below is a string, a number or a timestamp: writing into a Vec cannot fail.
    let _ = write!(out, "{{\"position\":{},\"stream_id\":", event.position);
    let _ = serde_json::to_writer(&mut *out, &event.stream_id);
    let _ =
        write!(out, ",\"stream_version\":{},\"event_id\":\"{}\",\"event_type\":", event.stream_version, event.event_id);
    let _ = serde_json::to_writer(&mut *out, &event.event_type);
    let _ = write!(out, ",\"schema_version\":{},\"data\":", event.schema_version);
    out.extend_from_slice(event.data.as_bytes());
    out.extend_from_slice(b",\"metadata\":");
    out.extend_from_slice(event.metadata.as_bytes());
    out.extend_from_slice(b",\"recorded_at\":");
    let _ = serde_json::to_writer(&mut *out, &event.recorded_at);
    out.extend_from_slice(b",\"prev_hash\":\"");
    write_hex(out, &event.prev_hash);
    out.extend_from_slice(b"\",\"hash\":\"");
    write_hex(out, &event.hash);
    out.extend_from_slice(b"\"}");
}

/// Lowercase hex of `bytes`, written in place.
fn write_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    out.resize(start + bytes.len() * 2, 0);
    // The slice is exactly twice as long as `bytes`: encoding cannot fail.
    let _ = hex::encode_to_slice(bytes, &mut out[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(position: i64) -> RecordedEvent {
        RecordedEvent {
            position,
            stream_id: "workspace-0190b5c4-0000-7000-8000-000000000001".into(),
            stream_version: position,
            event_id: uuid::Uuid::now_v7(),
            event_type: "WorkspaceUpdated".into(),
            schema_version: 1,
            data: serde_json::json!({"name": "x"}),
            metadata: serde_json::json!({"actor": {"type": "system", "id": null}}),
            recorded_at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            prev_hash: vec![0xab; 32],
            hash: vec![0xcd; 32],
        }
    }

    #[test]
    fn a_page_reads_back_as_the_same_events_with_hex_hashes() {
        let page = FeedPage::new(vec![event(1), event(2)], 100, None);
        let json = serde_json::to_value(&page).unwrap();
        let item = &json["items"][0];
        let fields: Vec<&str> = item.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = [
            "position",
            "stream_id",
            "stream_version",
            "event_id",
            "event_type",
            "schema_version",
            "data",
            "metadata",
            "recorded_at",
            "prev_hash",
            "hash",
        ];
        expected.sort_unstable();
        assert_eq!(fields, expected);
        assert_eq!(item["prev_hash"], "ab".repeat(32));
        assert_eq!(item["recorded_at"], "2027-01-15T08:00:00Z");
        assert_eq!(json["links"], serde_json::json!([]), "not a full page");
        assert_eq!(serde_json::from_value::<FeedPage>(json).unwrap(), page);
    }

    #[test]
    fn a_full_page_links_to_the_next_with_the_same_filter() {
        let page = FeedPage::new(vec![event(6), event(7)], 2, Some("workspace-1 &x"));
        assert_eq!(
            page.links,
            [FeedLink { rel: "next".into(), href: "/v1/events?after=7&limit=2&stream_id=workspace-1+%26x".into() }]
        );
        assert_eq!(FeedPage::new(vec![event(7)], 2, None).links, []);
    }

    fn raw(event: &RecordedEvent, data: &str, metadata: &str) -> RawEvent {
        RawEvent {
            position: event.position,
            stream_id: event.stream_id.clone(),
            stream_version: event.stream_version,
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            data: data.into(),
            metadata: metadata.into(),
            recorded_at: event.recorded_at,
            prev_hash: event.prev_hash.clone(),
            hash: event.hash.clone(),
        }
    }

    #[test]
    fn a_raw_page_is_the_document_the_parsed_page_serializes_to() {
        let mut parsed = vec![event(1), event(2)];
        parsed[1].stream_id = "a\"b\\c\u{1}é".into();
        parsed[1].recorded_at = chrono::DateTime::from_timestamp_micros(1_800_000_000_123_456).unwrap();
        parsed[1].data = serde_json::json!({"name": "x \"y\"\n", "n": 1.5, "list": [1, {"b": null}]});
        for (limit, stream) in [(2, Some("workspace-1 &x")), (100, None)] {
            let expected = serde_json::to_vec(&FeedPage::new(parsed.clone(), limit, stream)).unwrap();
            // Payloads in serde's own compact form: the very bytes the parsed page writes.
            let compact: Vec<RawEvent> = parsed
                .iter()
                .map(|e| raw(e, &serde_json::to_string(&e.data).unwrap(), &serde_json::to_string(&e.metadata).unwrap()))
                .collect();
            assert_eq!(
                String::from_utf8(raw_page(&compact, limit, stream)).unwrap(),
                String::from_utf8(expected).unwrap()
            );
            // Payloads as jsonb writes them (its spacing and key order): the same values.
            let spaced: Vec<RawEvent> = parsed
                .iter()
                .map(|e| {
                    raw(
                        e,
                        &serde_json::to_string_pretty(&e.data).unwrap(),
                        r#"{"actor": {"id": null, "type": "system"}}"#,
                    )
                })
                .collect();
            let read: FeedPage = serde_json::from_slice(&raw_page(&spaced, limit, stream)).unwrap();
            assert_eq!(read, FeedPage::new(parsed.clone(), limit, stream));
        }
        assert_eq!(raw_page(&[], 100, None), br#"{"items":[],"links":[]}"#);
    }

    #[test]
    fn a_query_sends_only_what_it_sets() {
        let query = FeedQuery { after: Some(5), limit: Some(10), stream_id: None };
        assert_eq!(serde_json::to_value(&query).unwrap(), serde_json::json!({"after": 5, "limit": 10}));
        let read: FeedQuery = serde_json::from_value(serde_json::json!({"stream_id": "workspace-1"})).unwrap();
        assert_eq!(read, FeedQuery { stream_id: Some("workspace-1".into()), ..FeedQuery::default() });
        assert!(serde_json::from_value::<FeedQuery>(serde_json::json!({"cursor": 1})).is_err());
    }
}
