//! The admin API key aggregate.

use chrono::{DateTime, Duration, Utc};
use ipnet::IpNet;
use uuid::Uuid;

use super::{Aggregate, DomainError, values};
use crate::events::api_key::{ApiKeyCreated, ApiKeyEvent, ApiKeyRotated, ApiKeyUpdated};
use crate::metadata::Actor;
use crate::scope::Scopes;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiKey {
    pub exists: bool,
    pub revoked: bool,
    pub organization_id: Uuid,
    pub name: String,
    pub scopes: Scopes,
    pub workspace_ids: Vec<Uuid>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// What the principal creating or changing a key holds: nobody grants more than that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grantor {
    pub scopes: Scopes,
    /// `None`: not restricted to workspaces.
    pub workspace_ids: Option<Vec<Uuid>>,
}

#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub organization_id: Uuid,
    pub name: String,
    pub scopes: Scopes,
    pub workspace_ids: Vec<Uuid>,
    pub expires_at: Option<DateTime<Utc>>,
    pub allowed_ips: Vec<IpNet>,
    pub owner_user_id: Option<Uuid>,
    pub created_by: Actor,
    pub key_hash: Vec<u8>,
    pub partial_key_hint: String,
    pub grantor: Grantor,
    pub max_lifetime_days: Option<u32>,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub enum ApiKeyCommand {
    Create(Box<NewApiKey>),
    Update { name: Option<String>, scopes: Option<Scopes>, grantor: Grantor },
    Rotate { key_hash: Vec<u8>, partial_key_hint: String, grace_period: Duration, now: DateTime<Utc>, grantor: Grantor },
    Revoke { grantor: Grantor },
}

/// Longest grace period of a rotation.
pub const MAX_GRACE_PERIOD_SECONDS: i64 = 30 * 24 * 3600;
/// Most entries in `allowed_ips` and `workspace_ids`.
pub const MAX_LIST_ENTRIES: usize = 100;

impl Aggregate for ApiKey {
    type Event = ApiKeyEvent;
    type Command = ApiKeyCommand;

    const CATEGORY: &'static str = "key";

    fn apply(&mut self, event: &ApiKeyEvent) {
        match event {
            ApiKeyEvent::ApiKeyCreated(e) => {
                self.exists = true;
                self.organization_id = e.organization_id;
                self.name.clone_from(&e.name);
                self.scopes = e.scopes.clone();
                self.workspace_ids.clone_from(&e.workspace_ids);
                self.expires_at = e.expires_at;
            }
            ApiKeyEvent::ApiKeyUpdated(e) => {
                if let Some(name) = &e.name {
                    self.name.clone_from(name);
                }
                if let Some(scopes) = &e.scopes {
                    self.scopes = scopes.clone();
                }
            }
            ApiKeyEvent::ApiKeyRotated(_) => {}
            ApiKeyEvent::ApiKeyRevoked {} => self.revoked = true,
        }
    }

    fn decide(&self, command: ApiKeyCommand) -> Result<Vec<ApiKeyEvent>, DomainError> {
        if let ApiKeyCommand::Create(new) = command {
            if self.exists {
                return Err(DomainError::conflict("already_exists", "the key already exists"));
            }
            return create(*new).map(|e| vec![ApiKeyEvent::ApiKeyCreated(e)]);
        }
        if !self.exists {
            return Err(DomainError::NotFound("api key"));
        }
        match command {
            ApiKeyCommand::Create(_) => unreachable!("handled above"),
            ApiKeyCommand::Revoke { grantor } => {
                self.check_power(&grantor)?;
                Ok(if self.revoked { vec![] } else { vec![ApiKeyEvent::ApiKeyRevoked {}] })
            }
            _ if self.revoked => Err(DomainError::conflict("key_revoked", "the key is revoked")),
            ApiKeyCommand::Update { name, scopes, grantor } => {
                self.check_power(&grantor)?;
                let name = name.map(|n| values::name("name", &n, 200)).transpose()?.filter(|n| *n != self.name);
                let scopes = scopes.map(|s| check_scopes(s, &grantor)).transpose()?.filter(|s| *s != self.scopes);
                if name.is_none() && scopes.is_none() {
                    return Ok(vec![]);
                }
                Ok(vec![ApiKeyEvent::ApiKeyUpdated(ApiKeyUpdated { name, scopes })])
            }
            ApiKeyCommand::Rotate { key_hash, partial_key_hint, grace_period, now, grantor } => {
                self.check_power(&grantor)?;
                if grace_period < Duration::zero() || grace_period > Duration::seconds(MAX_GRACE_PERIOD_SECONDS) {
                    return Err(DomainError::invalid(
                        "grace_period_seconds",
                        "range",
                        format!("grace_period_seconds must be between 0 and {MAX_GRACE_PERIOD_SECONDS}"),
                    ));
                }
                Ok(vec![ApiKeyEvent::ApiKeyRotated(ApiKeyRotated {
                    key_hash: hex::encode(key_hash),
                    partial_key_hint,
                    previous_key_expires_at: now + grace_period,
                })])
            }
        }
    }
}

impl ApiKey {
    /// Nobody changes, rotates or revokes a key holding scopes they do not hold.
    fn check_power(&self, grantor: &Grantor) -> Result<(), DomainError> {
        if grantor.scopes.covers(&self.scopes) {
            Ok(())
        } else {
            Err(DomainError::Forbidden { detail: "this key holds scopes the caller does not hold".into() })
        }
    }
}

fn check_scopes(scopes: Scopes, grantor: &Grantor) -> Result<Scopes, DomainError> {
    if scopes.is_empty() {
        return Err(DomainError::invalid("scopes", "required", "a key needs at least one scope"));
    }
    if !grantor.scopes.covers(&scopes) {
        return Err(DomainError::Forbidden { detail: "a key cannot grant scopes beyond its own".into() });
    }
    Ok(scopes)
}

fn create(new: NewApiKey) -> Result<ApiKeyCreated, DomainError> {
    let name = values::name("name", &new.name, 200)?;
    let scopes = check_scopes(new.scopes, &new.grantor)?;
    let mut workspace_ids = new.workspace_ids;
    workspace_ids.sort_unstable();
    workspace_ids.dedup();
    if workspace_ids.len() > MAX_LIST_ENTRIES {
        return Err(DomainError::invalid("workspace_ids", "max_items", format!("at most {MAX_LIST_ENTRIES} entries")));
    }
    if new.allowed_ips.len() > MAX_LIST_ENTRIES {
        return Err(DomainError::invalid("allowed_ips", "max_items", format!("at most {MAX_LIST_ENTRIES} entries")));
    }
    if new.grantor.workspace_ids.is_some() && workspace_ids.is_empty() {
        return Err(DomainError::Forbidden {
            detail: "a key restricted to workspaces can only create keys restricted to workspaces".into(),
        });
    }
    if let Some(expires_at) = new.expires_at
        && expires_at <= new.now
    {
        return Err(DomainError::invalid("expires_at", "future", "expires_at must be in the future"));
    }
    if let Some(days) = new.max_lifetime_days {
        let latest = new.now + Duration::days(i64::from(days));
        if new.expires_at.is_none_or(|at| at > latest) {
            return Err(DomainError::invalid(
                "expires_at",
                "max_key_lifetime",
                format!("the organization allows keys of at most {days} days: set expires_at"),
            ));
        }
    }
    Ok(ApiKeyCreated {
        organization_id: new.organization_id,
        name,
        scopes,
        workspace_ids,
        expires_at: new.expires_at,
        allowed_ips: new.allowed_ips,
        owner_user_id: new.owner_user_id,
        created_by: new.created_by,
        key_hash: hex::encode(new.key_hash),
        partial_key_hint: new.partial_key_hint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::testing::given;
    use crate::scope::Scope;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn scopes(list: &[Scope]) -> Scopes {
        list.iter().copied().collect()
    }

    fn operator() -> Grantor {
        Grantor { scopes: Scopes::all(), workspace_ids: None }
    }

    fn new_key(grantor: Grantor, wanted: &[Scope]) -> NewApiKey {
        NewApiKey {
            organization_id: Uuid::nil(),
            name: "ci".into(),
            scopes: scopes(wanted),
            workspace_ids: vec![],
            expires_at: None,
            allowed_ips: vec![],
            owner_user_id: None,
            created_by: Actor::system(),
            key_hash: vec![1, 2],
            partial_key_hint: "adm_...abcd".into(),
            grantor,
            max_lifetime_days: None,
            now: now(),
        }
    }

    fn created() -> ApiKeyEvent {
        ApiKeyEvent::ApiKeyCreated(create(new_key(operator(), &[Scope::KeysRead, Scope::KeysWrite])).unwrap())
    }

    #[test]
    fn a_key_is_created_with_its_hash_never_its_secret() {
        let state = given::<ApiKey>([])
            .when(ApiKeyCommand::Create(Box::new(new_key(operator(), &[Scope::KeysRead, Scope::KeysWrite]))))
            .then([created()]);
        assert!(state.exists);
        let ApiKeyEvent::ApiKeyCreated(event) = created() else { unreachable!() };
        assert_eq!(event.key_hash, "0102");
    }

    #[test]
    fn no_key_grants_more_scopes_than_its_creator_holds() {
        let limited = Grantor { scopes: scopes(&[Scope::KeysRead, Scope::KeysWrite]), workspace_ids: None };
        given::<ApiKey>([])
            .when(ApiKeyCommand::Create(Box::new(new_key(limited.clone(), &[Scope::WorkspacesWrite]))))
            .then_error(|e| matches!(e, DomainError::Forbidden { .. }));
        given::<ApiKey>([])
            .when(ApiKeyCommand::Create(Box::new(new_key(limited.clone(), &[Scope::All]))))
            .then_error(|e| matches!(e, DomainError::Forbidden { .. }));
        given::<ApiKey>([created()])
            .when(ApiKeyCommand::Update { name: None, scopes: Some(scopes(&[Scope::AuditRead])), grantor: limited })
            .then_error(|e| matches!(e, DomainError::Forbidden { .. }));
    }

    #[test]
    fn a_workspace_restricted_creator_only_makes_restricted_keys() {
        let restricted = Grantor { scopes: Scopes::all(), workspace_ids: Some(vec![Uuid::from_u128(7)]) };
        given::<ApiKey>([])
            .when(ApiKeyCommand::Create(Box::new(new_key(restricted, &[Scope::KeysRead]))))
            .then_error(|e| matches!(e, DomainError::Forbidden { .. }));
    }

    #[test]
    fn expiry_must_be_future_and_within_the_organization_limit() {
        let mut past = new_key(operator(), &[Scope::KeysRead]);
        past.expires_at = Some(now() - Duration::seconds(1));
        given::<ApiKey>([])
            .when(ApiKeyCommand::Create(Box::new(past)))
            .then_error(|e| matches!(e, DomainError::Invalid { field: "expires_at", constraint: "future", .. }));
        let mut unlimited = new_key(operator(), &[Scope::KeysRead]);
        unlimited.max_lifetime_days = Some(30);
        given::<ApiKey>([])
            .when(ApiKeyCommand::Create(Box::new(unlimited.clone())))
            .then_error(|e| matches!(e, DomainError::Invalid { constraint: "max_key_lifetime", .. }));
        unlimited.expires_at = Some(now() + Duration::days(29));
        let events = ApiKey::default().decide(ApiKeyCommand::Create(Box::new(unlimited))).unwrap();
        assert!(matches!(&events[..], [ApiKeyEvent::ApiKeyCreated(e)] if e.expires_at.is_some()));
    }

    #[test]
    fn a_revoked_key_stays_revoked() {
        let revoked = [created(), ApiKeyEvent::ApiKeyRevoked {}];
        given::<ApiKey>(revoked.clone()).when(ApiKeyCommand::Revoke { grantor: operator() }).then([]);
        given::<ApiKey>(revoked)
            .when(ApiKeyCommand::Rotate {
                key_hash: vec![3],
                partial_key_hint: "h".into(),
                grace_period: Duration::zero(),
                now: now(),
                grantor: operator(),
            })
            .then_error(|e| matches!(e, DomainError::Conflict { code: "key_revoked", .. }));
    }

    #[test]
    fn a_weaker_key_can_neither_rotate_nor_revoke_nor_change_a_stronger_one() {
        let weaker = Grantor { scopes: scopes(&[Scope::KeysRead, Scope::KeysWrite]), workspace_ids: None };
        let strong = ApiKeyEvent::ApiKeyCreated(create(new_key(operator(), &[Scope::All])).unwrap());
        let forbidden = |e: &DomainError| matches!(e, DomainError::Forbidden { .. });
        given::<ApiKey>([strong.clone()]).when(ApiKeyCommand::Revoke { grantor: weaker.clone() }).then_error(forbidden);
        given::<ApiKey>([strong.clone()])
            .when(ApiKeyCommand::Rotate {
                key_hash: vec![1],
                partial_key_hint: "h".into(),
                grace_period: Duration::zero(),
                now: now(),
                grantor: weaker.clone(),
            })
            .then_error(forbidden);
        given::<ApiKey>([strong])
            .when(ApiKeyCommand::Update { name: Some("x".into()), scopes: None, grantor: weaker })
            .then_error(forbidden);
    }

    #[test]
    fn rotation_bounds_the_grace_period() {
        let rotate = |seconds| ApiKeyCommand::Rotate {
            key_hash: vec![9],
            partial_key_hint: "adm_...wxyz".into(),
            grace_period: Duration::seconds(seconds),
            now: now(),
            grantor: operator(),
        };
        given::<ApiKey>([created()]).when(rotate(-1)).then_error(|e| matches!(e, DomainError::Invalid { .. }));
        given::<ApiKey>([created()]).when(rotate(60)).then([ApiKeyEvent::ApiKeyRotated(ApiKeyRotated {
            key_hash: "09".into(),
            partial_key_hint: "adm_...wxyz".into(),
            previous_key_expires_at: now() + Duration::seconds(60),
        })]);
    }
}
