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

/// The organization's settings after the change (not the patch).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrganizationSettings {
    /// Requests per minute per key; `None` means the server default.
    pub rate_limit_per_minute: Option<u32>,
    /// Longest lifetime of a new admin key; `None` means unlimited.
    pub max_key_lifetime_days: Option<u32>,
}

/// Quotas set by the operator: the most of each resource the organization may hold at
/// once (deleted resources do not count, archived ones do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    pub workspaces: u32,
    pub api_keys: u32,
    pub interaction_keys: u32,
    pub pending_invitations: u32,
}

impl Default for Quotas {
    fn default() -> Self {
        Self { workspaces: 10_000, api_keys: 1000, interaction_keys: 100_000, pending_invitations: 1000 }
    }
}

/// The organization's operator-set limits after the change (not the patch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrganizationLimits {
    /// The most `rate_limit_per_minute` the organization may set for itself; `None` means
    /// the server default (`HUB_RATE_LIMIT_PER_MINUTE`).
    pub rate_limit_ceiling_per_minute: Option<u32>,
    pub quotas: Quotas,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrganizationEvent {
    OrganizationCreated(OrganizationCreated),
    OrganizationUpdated(OrganizationUpdated),
    OrganizationSettingsChanged(OrganizationSettings),
    OrganizationLimitsChanged(OrganizationLimits),
    OrganizationDeleted {},
}

impl DomainEvent for OrganizationEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::OrganizationCreated(_) => "OrganizationCreated",
            Self::OrganizationUpdated(_) => "OrganizationUpdated",
            Self::OrganizationSettingsChanged(_) => "OrganizationSettingsChanged",
            Self::OrganizationLimitsChanged(_) => "OrganizationLimitsChanged",
            Self::OrganizationDeleted {} => "OrganizationDeleted",
        }
    }

    fn decode(event_type: &str, schema_version: i32, data: &serde_json::Value) -> Result<Self, DecodeError> {
        if schema_version != 1 {
            return Err(DecodeError::UnsupportedVersion { event_type: event_type.to_owned(), version: schema_version });
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
        let deleted = OrganizationEvent::OrganizationDeleted {};
        let data = encode_untagged(&deleted).unwrap();
        assert_eq!(OrganizationEvent::decode("OrganizationDeleted", 1, &data).unwrap(), deleted);
    }

    #[test]
    fn limits_round_trip_with_every_quota_named() {
        let event = OrganizationEvent::OrganizationLimitsChanged(OrganizationLimits {
            rate_limit_ceiling_per_minute: Some(2000),
            quotas: Quotas { workspaces: 5, ..Quotas::default() },
        });
        let data = encode_untagged(&event).unwrap();
        assert_eq!(data["rate_limit_ceiling_per_minute"], 2000);
        assert_eq!(data["quotas"]["workspaces"], 5);
        assert_eq!(data["quotas"]["pending_invitations"], 1000);
        assert_eq!(OrganizationEvent::decode("OrganizationLimitsChanged", 1, &data).unwrap(), event);
    }

    #[test]
    fn unknown_types_and_versions_are_refused() {
        let data = serde_json::json!({});
        assert!(matches!(OrganizationEvent::decode("Nope", 1, &data), Err(DecodeError::UnknownType(_))));
        assert!(matches!(
            OrganizationEvent::decode("OrganizationDeleted", 9, &data),
            Err(DecodeError::UnsupportedVersion { .. })
        ));
    }
}
