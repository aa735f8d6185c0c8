//! Events of the organization aggregate (stream `org-<uuid>`).

use serde::{Deserialize, Serialize};

use crate::event::{DecodeError, DomainEvent, decode_tagged};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrganizationCreated {
    pub name: String,
    pub email: String,
    pub plan: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrganizationUpdated {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrganizationEvent {
    OrganizationCreated(OrganizationCreated),
    OrganizationUpdated(OrganizationUpdated),
    OrganizationDeleted {},
}

impl DomainEvent for OrganizationEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::OrganizationCreated(_) => "OrganizationCreated",
            Self::OrganizationUpdated(_) => "OrganizationUpdated",
            Self::OrganizationDeleted {} => "OrganizationDeleted",
        }
    }

    fn decode(
        event_type: &str,
        schema_version: i32,
        data: &serde_json::Value,
    ) -> Result<Self, DecodeError> {
        if schema_version != 1 {
            return Err(DecodeError::UnsupportedVersion {
                event_type: event_type.to_owned(),
                version: schema_version,
            });
        }
        decode_tagged(event_type, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::encode_untagged;

    #[test]
    fn an_event_round_trips_through_its_stored_form() {
        let event = OrganizationEvent::OrganizationCreated(OrganizationCreated {
            name: "Acme".into(),
            email: "ops@acme.test".into(),
            plan: "pro".into(),
        });
        let data = encode_untagged(&event).unwrap();
        assert_eq!(data["name"], "Acme");
        let back = OrganizationEvent::decode(event.event_type(), 1, &data).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn unknown_types_and_versions_are_refused() {
        let data = serde_json::json!({});
        assert!(matches!(
            OrganizationEvent::decode("Nope", 1, &data),
            Err(DecodeError::UnknownType(_))
        ));
        assert!(matches!(
            OrganizationEvent::decode("OrganizationDeleted", 9, &data),
            Err(DecodeError::UnsupportedVersion { .. })
        ));
    }
}
