//! Which read-model rows a principal may see, written once for every list, count and get.
//!
//! The rule: nothing deleted; only the principal's own organization (the operator sees
//! every organization); a key restricted to workspaces sees only what lies in its subtrees.
//! Each table's queries name it by a fixed alias (`o`, `w`, `u`, `k`, `a`, `g`), which the clauses
//! here use. Rows of other tables (members, invitations, secrets) are reached through a
//! visible workspace (`workspaces::find`).

use super::auth::Principal;
use super::sql::Filter;

/// The read models the rule is written for, by their alias in the queries.
#[derive(Debug, Clone, Copy)]
pub enum Table {
    /// `organizations o`: live, and the principal's own.
    Organizations,
    /// `workspaces w`: live, of the organization, inside the key's subtrees.
    Workspaces,
    /// `users u`: live, of the organization; a key restricted to workspaces sees the users
    /// who are members of a live workspace inside its subtrees.
    Users,
    /// `api_keys k`: of the organization; a key restricted to workspaces sees only keys
    /// restricted to workspaces inside its own subtrees.
    ApiKeys,
    /// `audit_log a`: of the organization (deleted things' history included); a key
    /// restricted to workspaces sees only the rows of workspaces inside its subtrees as
    /// they are now, never the rows of the organization as a whole (its keys, users,
    /// settings).
    AuditLog,
    /// `usage_counters g`: of the organization; a key restricted to workspaces sees only the
    /// counters of workspaces inside its subtrees, never those of the organization as a
    /// whole.
    Usage,
}

impl Filter {
    /// Adds the clauses that keep to the rows of `table` that `principal` may see.
    pub fn visible_to(&mut self, principal: &Principal, table: Table) -> &mut Self {
        let own = principal.organization_id();
        let roots = principal.workspace_roots().map(<[_]>::to_vec);
        match table {
            Table::Organizations => {
                self.clause("o.status = 'active'");
                if let Some(own) = own {
                    self.bind("o.id = $?", Box::new(own));
                }
            }
            Table::Workspaces => {
                self.clause("w.status <> 'deleted'");
                if let Some(own) = own {
                    self.bind("w.organization_id = $?", Box::new(own));
                }
                if let Some(roots) = roots {
                    self.bind("w.ancestors && $?", Box::new(roots));
                }
            }
            Table::Users => {
                self.clause("u.status <> 'deleted'");
                if let Some(own) = own {
                    self.bind("u.organization_id = $?", Box::new(own));
                }
                if let Some(roots) = roots {
                    self.bind(
                        "EXISTS (SELECT 1 FROM members m JOIN workspaces w ON w.id = m.workspace_id \
                         WHERE m.user_id = u.id AND w.status <> 'deleted' AND w.ancestors && $?)",
                        Box::new(roots),
                    );
                }
            }
            Table::ApiKeys => {
                if let Some(own) = own {
                    self.bind("k.organization_id = $?", Box::new(own));
                }
                if let Some(roots) = roots {
                    self.bind(
                        "cardinality(k.workspace_ids) > 0 AND NOT EXISTS (SELECT 1 FROM unnest(k.workspace_ids) w(id) \
                         WHERE NOT EXISTS (SELECT 1 FROM workspaces x WHERE x.id = w.id AND x.ancestors && $?))",
                        Box::new(roots),
                    );
                }
            }
            Table::AuditLog => {
                if let Some(own) = own {
                    self.bind("a.organization_id = $?", Box::new(own));
                }
                if let Some(roots) = roots {
                    self.bind(
                        "EXISTS (SELECT 1 FROM workspaces x WHERE x.id = a.workspace_id AND x.ancestors && $?)",
                        Box::new(roots),
                    );
                }
            }
            Table::Usage => {
                if let Some(own) = own {
                    self.bind("g.organization_id = $?", Box::new(own));
                }
                if let Some(roots) = roots {
                    self.bind(
                        "EXISTS (SELECT 1 FROM workspaces x WHERE x.id = g.workspace_id AND x.ancestors && $?)",
                        Box::new(roots),
                    );
                }
            }
        }
        self
    }
}
