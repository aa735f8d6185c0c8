//! Events of a technology partner app (stream `app-<uuid>`). They hold the app key's
//! peppered hash and hint, never the key.

use serde::{Deserialize, Serialize};

use crate::event::{DecodeError, DomainEvent, decode_tagged};

/// A source app is handed interaction keys (it claims their secrets); a destination app
/// receives interactions routed to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(feature = "postgres", derive(postgres_types::ToSql, postgres_types::FromSql))]
#[cfg_attr(feature = "postgres", postgres(name = "app_kind"))]
#[serde(rename_all = "snake_case")]
pub enum AppKind {
    #[cfg_attr(feature = "postgres", postgres(name = "source"))]
    Source,
    #[cfg_attr(feature = "postgres", postgres(name = "destination"))]
    Destination,
}

impl AppKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Destination => "destination",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppRegistered {
    pub name: String,
    pub kind: AppKind,
    pub contact_email: String,
    /// Hex of the peppered SHA-256 of the app key.
    pub key_hash: String,
    pub partial_key_hint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppEvent {
    AppRegistered(AppRegistered),
    /// The app key fails from now on; keys provisioned to or routed to the app are revoked
    /// by events in their workspaces' streams.
    AppRevoked {},
}

impl DomainEvent for AppEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::AppRegistered(_) => "AppRegistered",
            Self::AppRevoked {} => "AppRevoked",
        }
    }

    fn decode(event_type: &str, schema_version: i32, data: &serde_json::Value) -> Result<Self, DecodeError> {
        if schema_version != 1 {
            return Err(DecodeError::UnsupportedVersion { event_type: event_type.to_owned(), version: schema_version });
        }
        decode_tagged(event_type, data)
    }
}
