//! What instances and hubs say to each other over NATS core request/reply.
//!
//! An instance asks on `hub.link.<instance_id>.<op>`; every hub answers in the queue group
//! [`QUEUE`], so any live hub does. NATS permissions pin an instance to its own
//! `<instance_id>`, so the subject names the asker and a hub answers only about workspaces
//! placed on it. An instance receives replies in its own inbox, `_INBOX.<instance_id>.>`,
//! which no other instance may read. Every reply is a [`Reply`] in JSON.

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
    /// A page of the event feed: [`EventsRequest`] → `Vec<RecordedEvent>`.
    Events,
    /// The instance's progress: [`Heartbeat`] → [`HeartbeatReply`].
    Heartbeat,
    /// Creates (or keeps) the instance's durable consumer: `{}` → `()`.
    Consumer,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Self::DataKey => "data_key",
            Self::Events => "events",
            Self::Heartbeat => "heartbeat",
            Self::Consumer => "consumer",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [Self::DataKey, Self::Events, Self::Heartbeat, Self::Consumer].into_iter().find(|op| op.name() == name)
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
    format!("hub.events.{instance_id}.>")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataKeyRequest {
    pub workspace_id: Uuid,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataKey {
    pub workspace_id: Uuid,
    /// Hex of the data key sealed by the master key; `None` once destroyed (the workspace
    /// was deleted).
    pub sealed_data_key: Option<String>,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub applied_position: i64,
    pub workspace_count: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatReply {
    pub head_position: i64,
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
        assert_eq!(parse_subject("hub.link.alpha.nope"), None);
        assert_eq!(parse_subject("hub.events.alpha.x"), None);
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
