//! Grants: what a principal holds, compared on the four powers of a key (scopes,
//! workspaces, addresses, lifetime). Nobody grants beyond what they hold, and nobody revokes
//! or takes over a key their grant does not cover.

use std::collections::HashMap;

use chrono::{DateTime, SubsecRound as _, Utc};
use ipnet::IpNet;
use uuid::Uuid;

use crate::scope::Scopes;

/// What the principal creating, changing, rotating or revoking a key holds: nobody grants
/// more than that, and nobody takes over a key their own grant does not cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grantor {
    /// The operator holds everything and may rotate any key.
    pub operator: bool,
    pub scopes: Scopes,
    /// `None`: not restricted to workspaces.
    pub workspace_ids: Option<Vec<Uuid>>,
    /// The user the principal is bound to; the keys it creates are bound to the same user.
    pub owner_user_id: Option<Uuid>,
    /// Empty: usable from any address.
    pub allowed_ips: Vec<IpNet>,
    /// `None`: never expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// Authenticated with the previous secret of a rotated key, during its grace period: a
    /// secret on its way out (perhaps leaked) may still read, but not take over keys.
    pub retiring: bool,
}

impl Grantor {
    pub fn operator() -> Self {
        Self {
            operator: true,
            scopes: Scopes::all(),
            workspace_ids: None,
            owner_user_id: None,
            allowed_ips: Vec::new(),
            expires_at: None,
            retiring: false,
        }
    }

    /// Refuses a secret being retired: rotating, changing or minting keys with it would
    /// let its holder outlast the rotation meant to shut it out.
    pub fn check_not_retiring(&self) -> Result<(), crate::domain::DomainError> {
        if self.retiring {
            return Err(crate::domain::DomainError::Denied {
                code: "retiring_secret",
                detail: "this secret is being retired by a rotation: use the key's new secret".into(),
            });
        }
        Ok(())
    }

    pub fn reach(&self) -> Reach<'_> {
        Reach {
            scopes: &self.scopes,
            workspace_ids: self.workspace_ids.as_deref(),
            allowed_ips: &self.allowed_ips,
            expires_at: self.expires_at,
        }
    }
}

/// Each workspace's ancestors, itself included, as the tree holds them: what lets the pure
/// rules tell whether one set of workspaces lies within another's subtrees. It must hold
/// every workspace the compared grants name; a workspace it lacks is within nothing.
pub type Ancestry = HashMap<Uuid, Vec<Uuid>>;

/// The four powers a grant is compared on: scopes, workspaces, addresses, lifetime.
#[derive(Debug, Clone, Copy)]
pub struct Reach<'a> {
    pub scopes: &'a Scopes,
    /// `None`: every workspace of the organization.
    pub workspace_ids: Option<&'a [Uuid]>,
    /// Empty: any address.
    pub allowed_ips: &'a [IpNet],
    /// `None`: forever.
    pub expires_at: Option<DateTime<Utc>>,
}

impl Reach<'_> {
    /// Whether everything `inner` may do, `self` may do too.
    pub fn covers(&self, inner: &Reach<'_>, ancestry: &Ancestry) -> bool {
        self.scopes.covers(inner.scopes)
            && workspaces_cover(self.workspace_ids, inner.workspace_ids, ancestry)
            && ips_cover(self.allowed_ips, inner.allowed_ips)
            && self.expires_at.is_none_or(|outer| inner.expires_at.is_some_and(|at| stored(at) <= stored(outer)))
    }

    /// Covers `inner` and holds more in at least one of the four powers.
    pub fn wider_than(&self, inner: &Reach<'_>, ancestry: &Ancestry) -> bool {
        self.covers(inner, ancestry) && !inner.covers(self, ancestry)
    }
}

/// A time as the read models keep it (whole microseconds): a key's expiry read back from
/// the database must compare equal to the one in its event.
pub(super) fn stored(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

/// `None` is every workspace; `Some(roots)` is the subtrees under `roots`.
pub(super) fn workspaces_cover(outer: Option<&[Uuid]>, inner: Option<&[Uuid]>, ancestry: &Ancestry) -> bool {
    match (outer, inner) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(roots), Some(ids)) => {
            !ids.is_empty()
                && ids.iter().all(|id| {
                    roots.contains(id) || ancestry.get(id).is_some_and(|up| up.iter().any(|a| roots.contains(a)))
                })
        }
    }
}

/// Empty is every address; otherwise every range of `inner` lies within one of `outer`.
pub fn ips_cover(outer: &[IpNet], inner: &[IpNet]) -> bool {
    outer.is_empty() || (!inner.is_empty() && inner.iter().all(|net| outer.iter().any(|o| o.contains(net))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::Scope;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn addresses_cover_only_what_lies_within_them() {
        assert!(ips_cover(&[], &nets(&["10.0.0.0/8"])));
        assert!(ips_cover(&nets(&["127.0.0.0/8"]), &nets(&["127.0.0.1/32"])));
        assert!(!ips_cover(&nets(&["127.0.0.1/32"]), &nets(&["127.0.0.0/8"])));
        assert!(!ips_cover(&nets(&["127.0.0.1/32"]), &[]), "anywhere is wider than one address");
        assert!(!ips_cover(&nets(&["127.0.0.1/32"]), &nets(&["127.0.0.1/32", "10.0.0.0/8"])));
        assert!(!ips_cover(&nets(&["0.0.0.0/0"]), &nets(&["::1/128"])));
    }

    #[test]
    fn a_grant_is_wider_when_it_covers_and_holds_more_in_one_power() {
        let (root, team) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let ancestry: Ancestry = [(root, vec![root]), (team, vec![root, team])].into();
        let scopes: Scopes = [Scope::KeysRead].into_iter().collect();
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let reach =
            |workspaces, expires_at| Reach { scopes: &scopes, workspace_ids: workspaces, allowed_ips: &[], expires_at };
        let everything = reach(None, None);
        assert!(everything.covers(&everything, &ancestry) && !everything.wider_than(&everything, &ancestry));
        let (roots, teams) = ([root], [team]);
        assert!(reach(Some(&roots[..]), None).wider_than(&reach(Some(&teams[..]), None), &ancestry));
        assert!(!reach(Some(&teams[..]), None).covers(&reach(Some(&roots[..]), None), &ancestry));
        assert!(everything.wider_than(&reach(None, Some(at)), &ancestry));
        assert!(!reach(None, Some(at)).covers(&everything, &ancestry));
        // Compared as the database keeps times: to the microsecond.
        let precise = reach(None, Some(at + chrono::Duration::nanoseconds(500)));
        assert!(reach(None, Some(at)).covers(&precise, &ancestry));
    }
}
