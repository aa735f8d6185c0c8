//! Admin API scopes, with stable wire names.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Scope {
    #[serde(rename = "*")]
    All,
    #[serde(rename = "orgs:read")]
    OrgsRead,
    #[serde(rename = "orgs:write")]
    OrgsWrite,
    #[serde(rename = "workspaces:read")]
    WorkspacesRead,
    #[serde(rename = "workspaces:write")]
    WorkspacesWrite,
    #[serde(rename = "users:read")]
    UsersRead,
    #[serde(rename = "users:write")]
    UsersWrite,
    #[serde(rename = "keys:read")]
    KeysRead,
    #[serde(rename = "keys:write")]
    KeysWrite,
    #[serde(rename = "interaction_keys:read")]
    InteractionKeysRead,
    #[serde(rename = "interaction_keys:write")]
    InteractionKeysWrite,
    #[serde(rename = "external_keys:read")]
    ExternalKeysRead,
    #[serde(rename = "external_keys:write")]
    ExternalKeysWrite,
    #[serde(rename = "audit:read")]
    AuditRead,
    #[serde(rename = "usage:read")]
    UsageRead,
    #[serde(rename = "settings:read")]
    SettingsRead,
    #[serde(rename = "settings:write")]
    SettingsWrite,
}

impl Scope {
    pub const ALL: [Scope; 17] = [
        Scope::All,
        Scope::OrgsRead,
        Scope::OrgsWrite,
        Scope::WorkspacesRead,
        Scope::WorkspacesWrite,
        Scope::UsersRead,
        Scope::UsersWrite,
        Scope::KeysRead,
        Scope::KeysWrite,
        Scope::InteractionKeysRead,
        Scope::InteractionKeysWrite,
        Scope::ExternalKeysRead,
        Scope::ExternalKeysWrite,
        Scope::AuditRead,
        Scope::UsageRead,
        Scope::SettingsRead,
        Scope::SettingsWrite,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::All => "*",
            Scope::OrgsRead => "orgs:read",
            Scope::OrgsWrite => "orgs:write",
            Scope::WorkspacesRead => "workspaces:read",
            Scope::WorkspacesWrite => "workspaces:write",
            Scope::UsersRead => "users:read",
            Scope::UsersWrite => "users:write",
            Scope::KeysRead => "keys:read",
            Scope::KeysWrite => "keys:write",
            Scope::InteractionKeysRead => "interaction_keys:read",
            Scope::InteractionKeysWrite => "interaction_keys:write",
            Scope::ExternalKeysRead => "external_keys:read",
            Scope::ExternalKeysWrite => "external_keys:write",
            Scope::AuditRead => "audit:read",
            Scope::UsageRead => "usage:read",
            Scope::SettingsRead => "settings:read",
            Scope::SettingsWrite => "settings:write",
        }
    }
}

/// A set of granted scopes; `*` grants everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct Scopes(BTreeSet<Scope>);

impl Scopes {
    pub fn all() -> Self {
        Self([Scope::All].into())
    }

    pub fn grants(&self, scope: Scope) -> bool {
        self.0.contains(&Scope::All) || self.0.contains(&scope)
    }

    /// Whether every scope of `other` is granted by `self`.
    pub fn covers(&self, other: &Scopes) -> bool {
        other.0.iter().all(|s| self.grants(*s))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<T: IntoIterator<Item = Scope>>(iter: T) -> Self {
        Self(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for scope in Scope::ALL {
            let json = serde_json::to_string(&scope).unwrap();
            assert_eq!(json, format!("\"{}\"", scope.as_str()));
            assert_eq!(serde_json::from_str::<Scope>(&json).unwrap(), scope);
        }
        assert!(serde_json::from_str::<Scope>("\"keys:admin\"").is_err());
    }

    #[test]
    fn the_wildcard_covers_everything_and_nothing_else_does() {
        let all = Scopes::all();
        let some: Scopes = [Scope::KeysRead, Scope::KeysWrite].into_iter().collect();
        assert!(all.covers(&some));
        assert!(!some.covers(&all));
        assert!(some.covers(&[Scope::KeysRead].into_iter().collect()));
        assert!(!some.covers(&[Scope::WorkspacesRead].into_iter().collect()));
    }
}
