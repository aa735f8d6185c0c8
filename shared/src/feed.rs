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
        let mut links = Vec::new();
        if let Some(last) = events.last().filter(|_| events.len() as i64 == limit) {
            let mut href = format!("{PATH}?after={}&limit={limit}", last.position);
            if let Some(stream) = stream_id {
                href.push_str("&stream_id=");
                href.extend(form_urlencoded::byte_serialize(stream.as_bytes()));
            }
            links.push(FeedLink { rel: "next".into(), href });
        }
        Self { items: events, links }
    }
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

    #[test]
    fn a_query_sends_only_what_it_sets() {
        let query = FeedQuery { after: Some(5), limit: Some(10), stream_id: None };
        assert_eq!(serde_json::to_value(&query).unwrap(), serde_json::json!({"after": 5, "limit": 10}));
        let read: FeedQuery = serde_json::from_value(serde_json::json!({"stream_id": "workspace-1"})).unwrap();
        assert_eq!(read, FeedQuery { stream_id: Some("workspace-1".into()), ..FeedQuery::default() });
        assert!(serde_json::from_value::<FeedQuery>(serde_json::json!({"cursor": 1})).is_err());
    }
}
