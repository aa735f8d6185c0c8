//! Events of a user of an organization (stream `user-<uuid>`).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{DecodeError, DomainEvent, decode_tagged};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserCreated {
    pub organization_id: Uuid,
    pub email: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRenamed {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserEvent {
    UserCreated(UserCreated),
    UserRenamed(UserRenamed),
    UserDisabled {},
    UserEnabled {},
    UserDeleted {},
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::UserCreated(_) => "UserCreated",
            Self::UserRenamed(_) => "UserRenamed",
            Self::UserDisabled {} => "UserDisabled",
            Self::UserEnabled {} => "UserEnabled",
            Self::UserDeleted {} => "UserDeleted",
        }
    }

    fn decode(event_type: &str, schema_version: i32, data: &serde_json::Value) -> Result<Self, DecodeError> {
        if schema_version != 1 {
            return Err(DecodeError::UnsupportedVersion { event_type: event_type.to_owned(), version: schema_version });
        }
        decode_tagged(event_type, data)
    }
}
