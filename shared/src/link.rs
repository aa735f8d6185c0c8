//! What instances and hubs say to each other over NATS core request/reply.
//!
//! An instance asks on `hub.link.<instance_id>.<op>`; every hub answers in the queue group
//! [`QUEUE`], so any live hub does. NATS permissions pin an instance to its own
//! `<instance_id>`, so the subject names the asker and a hub answers only about workspaces
//! placed on it. An instance receives replies in its own inbox, `_INBOX.<instance_id>.>`,
//! which no other instance may read. Every reply is a [`Reply`] in JSON.
//!
//! The heartbeat and the data keys travel the same way over HTTP, the instances' fallback
//! when no hub answers here (`POST /v1/instances/{id}/heartbeat`,
//! `GET /v1/internal/keyring/{id}`, see [`KeyringEntry`], and `POST /v1/internal/keyring`,
//! see [`DataKeysReply`]).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A NATS URL without its credentials, and the credentials (`nats://user:password@host:port`,
/// as `NATS_URL` may carry them: the NATS client reads them from its options, not the URL).
pub fn split_credentials(url: &str) -> (String, Option<(String, String)>) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("nats", url));
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            (format!("{scheme}://{host}"), Some((user.to_owned(), password.to_owned())))
        }
        None => (url.to_owned(), None),
    }
}

/// The queue group every hub answers link requests in.
pub const QUEUE: &str = "hubs";
/// What the hubs subscribe to: every instance's requests.
pub const SUBSCRIPTION: &str = "hub.link.*.*";

/// A request of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A workspace's data key, sealed by the master key: [`DataKeyRequest`] → [`DataKey`].
    DataKey,
    /// Many workspaces' data keys at once: [`DataKeysRequest`] → [`DataKeysReply`].
    DataKeys,
    /// A page of the event feed: [`EventsRequest`] → `Vec<RecordedEvent>`.
    Events,
    /// The instance's progress: [`Heartbeat`] → [`HeartbeatReply`].
    Heartbeat,
    /// Creates (or keeps) the instance's durable consumer: `{}` → `()`.
    Consumer,
    /// The instance's usage counters since its last report: [`UsageReport`] → `()`.
    Usage,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Self::DataKey => "data_key",
            Self::DataKeys => "data_keys",
            Self::Events => "events",
            Self::Heartbeat => "heartbeat",
            Self::Consumer => "consumer",
            Self::Usage => "usage",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [Self::DataKey, Self::DataKeys, Self::Events, Self::Heartbeat, Self::Consumer, Self::Usage]
            .into_iter()
            .find(|op| op.name() == name)
    }
}

/// The subject an instance asks `op` on.
pub fn subject(instance_id: &str, op: Op) -> String {
    format!("hub.link.{instance_id}.{}", op.name())
}

/// The instance and the operation a request subject names.
pub fn parse_subject(subject: &str) -> Option<(&str, Op)> {
    let rest = subject.strip_prefix("hub.link.")?;
    let (instance, op) = rest.split_once('.')?;
    Some((instance, Op::parse(op)?))
}

/// The inbox prefix of an instance's connection (its replies arrive under it).
pub fn inbox_prefix(instance_id: &str) -> String {
    format!("_INBOX.{instance_id}")
}

/// The durable consumer of an instance and the subjects it is filtered on.
pub fn consumer_name(instance_id: &str) -> String {
    format!("instance-{instance_id}")
}

pub fn consumer_filter(instance_id: &str) -> String {
    crate::relayed::instance_subjects(instance_id)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataKeyRequest {
    pub workspace_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DataKey {
    pub workspace_id: Uuid,
    /// Hex of the data key sealed by the master key; `null` once destroyed (the workspace
    /// was deleted).
    pub sealed_data_key: Option<String>,
}

/// The most data keys one request asks for (over NATS and over HTTP): a reply of that
/// many fits in one NATS message with room to spare (about 200 bytes each).
pub const MAX_DATA_KEYS: usize = 1000;

/// Many workspaces' data keys in one request (a rebuild, or a batch that creates many
/// workspaces, needs one key per workspace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DataKeysRequest {
    /// The workspaces, 1 to [`MAX_DATA_KEYS`] of them.
    pub workspace_ids: Vec<Uuid>,
}

/// The keys a [`DataKeysRequest`] asked for: one item per workspace the hubs hold a key
/// for (over NATS, only of workspaces placed on the asker); the others are left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DataKeysReply {
    pub items: Vec<DataKey>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsRequest {
    /// Events with a position greater than this.
    pub after: i64,
    /// At most this many (and at most what fits in one NATS message).
    pub limit: i64,
    /// Only this stream's events (`workspace-<uuid>` of a workspace placed on the asker);
    /// without it, the events of every workspace placed on the asker.
    #[serde(default)]
    pub stream_id: Option<String>,
}

/// An instance's progress, over NATS and over HTTP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    #[schema(minimum = 0)]
    pub applied_position: i64,
    #[schema(minimum = 0)]
    pub workspace_count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeartbeatReply {
    /// The log's head when the heartbeat was recorded (instances report their lag from it).
    pub head_position: i64,
}

/// What an instance counted since its previous report. Its `id` makes a retried report
/// count once: a hub records the ids it applied in the transaction that adds the counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageReport {
    pub id: Uuid,
    pub counts: Vec<UsageCount>,
}

/// The counters of one workspace, interaction key and hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageCount {
    pub workspace_id: Uuid,
    pub interaction_key_id: Uuid,
    /// The start of the hour (UTC).
    pub hour: chrono::DateTime<chrono::Utc>,
    pub interactions_accepted: i64,
    pub interactions_rejected: i64,
    pub deliveries_succeeded: i64,
    pub deliveries_failed: i64,
}

/// A workspace's data key over HTTP (`GET /v1/internal/keyring/{id}`; a destroyed key is
/// `410 Gone` there rather than a `null`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyringEntry {
    pub workspace_id: Uuid,
    /// Hex of the data key sealed by the master key (instances hold the master key).
    pub sealed_data_key: String,
}

/// Why a hub did not answer a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct LinkError {
    /// Stable: `bad_request`, `not_placed_here`, `too_large`, `unavailable`.
    pub code: String,
    pub detail: String,
}

impl LinkError {
    pub fn new(code: &str, detail: impl Into<String>) -> Self {
        Self { code: code.to_owned(), detail: detail.into() }
    }
}

/// A hub's answer: `{"Ok": …}` or `{"Err": {"code", "detail"}}`.
pub type Reply<T> = Result<T, LinkError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_names_the_instance_and_the_operation() {
        assert_eq!(subject("alpha", Op::DataKey), "hub.link.alpha.data_key");
        assert_eq!(parse_subject("hub.link.alpha.data_key"), Some(("alpha", Op::DataKey)));
        assert_eq!(parse_subject("hub.link.beta.events"), Some(("beta", Op::Events)));
        assert_eq!(parse_subject("hub.link.alpha.usage"), Some(("alpha", Op::Usage)));
        assert_eq!(parse_subject("hub.link.alpha.data_keys"), Some(("alpha", Op::DataKeys)));
        assert_eq!(parse_subject("hub.link.alpha.nope"), None);
        assert_eq!(parse_subject("hub.events.alpha.x"), None);
    }

    #[test]
    fn the_payloads_keep_their_wire_names() {
        let id = Uuid::now_v7();
        let beat = Heartbeat { applied_position: 7, workspace_count: 2 };
        let json = serde_json::json!({"applied_position": 7, "workspace_count": 2});
        assert_eq!(serde_json::to_value(&beat).unwrap(), json);
        assert_eq!(serde_json::from_value::<Heartbeat>(json).unwrap(), beat);
        assert!(
            serde_json::from_value::<Heartbeat>(
                serde_json::json!({"applied_position": 7, "workspace_count": 2, "x": 1})
            )
            .is_err()
        );
        let reply = HeartbeatReply { head_position: 9 };
        assert_eq!(serde_json::to_value(&reply).unwrap(), serde_json::json!({"head_position": 9}));
        let key = KeyringEntry { workspace_id: id, sealed_data_key: "ab".into() };
        let json = serde_json::json!({"workspace_id": id, "sealed_data_key": "ab"});
        assert_eq!(serde_json::to_value(&key).unwrap(), json);
        assert_eq!(serde_json::from_value::<KeyringEntry>(json).unwrap(), key);
        let request = serde_json::to_value(DataKeyRequest { workspace_id: id }).unwrap();
        assert_eq!(request, serde_json::json!({"workspace_id": id}));
        let key = DataKey { workspace_id: id, sealed_data_key: None };
        assert_eq!(
            serde_json::to_value(&key).unwrap(),
            serde_json::json!({"workspace_id": id, "sealed_data_key": null})
        );
        let request = EventsRequest { after: 3, limit: 10, stream_id: None };
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            serde_json::json!({"after": 3, "limit": 10, "stream_id": null})
        );
        assert_eq!(consumer_name("alpha"), "instance-alpha");
        assert_eq!(consumer_filter("alpha"), "hub.events.alpha.>");
        assert_eq!(inbox_prefix("alpha"), "_INBOX.alpha");
    }

    #[test]
    fn the_shipped_nats_permissions_name_the_same_stream_consumers_and_subjects() {
        let instance = include_str!("../../deploy/nats/instance-user.conf.in").replace("@USER@", "alpha");
        let (stream, consumer) = (crate::relayed::STREAM, consumer_name("alpha"));
        for allowed in [
            format!("\"$JS.API.STREAM.INFO.{stream}\""),
            format!("\"$JS.API.CONSUMER.INFO.{stream}.{consumer}\""),
            format!("\"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}\""),
            format!("\"$JS.ACK.{stream}.{consumer}.>\""),
            format!("\"{}\"", subject("alpha", Op::DataKey).replace(Op::DataKey.name(), ">")),
            format!("\"{}.>\"", inbox_prefix("alpha")),
        ] {
            assert!(instance.contains(&allowed), "an instance may use {allowed}");
        }
        let hub = include_str!("../../deploy/nats/hub-user.conf.in");
        assert!(hub.contains(&format!("\"{}\"", crate::relayed::SUBJECTS)), "the hubs publish the events");
        assert!(hub.contains(&format!("\"{}\"", SUBSCRIPTION.replace("*.*", ">"))), "the hubs answer the link");
    }

    #[test]
    fn credentials_come_out_of_a_nats_url() {
        assert_eq!(
            split_credentials("nats://alpha:pa:ss@127.0.0.1:4222"),
            ("nats://127.0.0.1:4222".to_owned(), Some(("alpha".to_owned(), "pa:ss".to_owned())))
        );
        assert_eq!(split_credentials("nats://127.0.0.1:4222"), ("nats://127.0.0.1:4222".to_owned(), None));
    }

    #[test]
    fn a_reply_is_ok_or_a_coded_error() {
        let error: Reply<()> = Err(LinkError::new("not_placed_here", "no"));
        let json = serde_json::to_value(&error).unwrap();
        assert_eq!(json["Err"]["code"], "not_placed_here");
        assert_eq!(serde_json::from_value::<Reply<()>>(json).unwrap(), error);
    }
}
