//! Who caused an event, and in which request: stored in the `metadata` column.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorType {
    Operator,
    ApiKey,
    User,
    App,
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
}
