//! Every list and count statement the hub sends, built by the lists' own code, so their
//! query plans can be checked (the e2e test that no list reads a large table from end
//! to end runs `EXPLAIN` on each of them).

use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::auth::{KeyPrincipal, Principal};
use super::cursor::{KeyValue, Keyset, Listing, SortKind};
use super::pagination::Paging;
use super::sql::Filter;
use super::{api_keys, audit_logs, external_keys, invitations, members, organizations, users, workspaces};

/// One statement with its parameters.
pub struct Statement {
    /// What it is: the list, the principal and the query string.
    pub name: String,
    pub sql: String,
    filter: Filter,
}

impl Statement {
    pub fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.filter.params()
    }
}

/// The rows the statements are asked about: one organization, a workspace of it (parent
/// filter, members, invitations) and an email (a user's invitations).
pub struct Subjects {
    pub organization_id: Uuid,
    pub workspace_id: Uuid,
    pub instance_id: String,
    pub email: String,
}

/// Each sort of each list, first page and a page after a cursor, with each filter alone,
/// for the operator, a key of the organization and a key restricted to one workspace; and
/// each count.
pub fn statements(subjects: &Subjects) -> Vec<Statement> {
    let principals = [
        ("operator", Principal::Operator),
        ("key", key(subjects.organization_id, None)),
        ("restricted key", key(subjects.organization_id, Some(vec![subjects.workspace_id]))),
    ];
    let orders = ["asc", "desc"];
    let mut out = Vec::new();
    let mut push = |name: String, built: Result<(String, Filter), super::error::ApiError>| {
        if let Ok((sql, filter)) = built {
            out.push(Statement { name, sql, filter });
        }
    };
    let ws = subjects.workspace_id;
    let workspace_filters = [
        String::new(),
        "name=ench-12".to_owned(),
        format!("parent_id={ws}"),
        "status=archived".to_owned(),
        "status=active".to_owned(),
        format!("instance_id={}", subjects.instance_id),
    ];
    for (who, principal) in &principals {
        for filters in &workspace_filters {
            for sort in ["created_at", "name"] {
                for order in orders {
                    let qs = format!("sort_by={sort}&sort_order={order}&{filters}");
                    let Ok(query) = workspaces::WorkspaceQuery::parse(&qs) else { continue };
                    for listing in listings(query.keyset()) {
                        push(format!("workspaces {who} {qs}"), workspaces::list_sql(principal, &query, &listing));
                    }
                }
            }
            if let Ok(query) = workspaces::WorkspaceQuery::parse(filters) {
                push(format!("workspaces/count {who} {filters}"), workspaces::count_sql(principal, &query));
            }
        }
        for filters in ["", "name=key-1", "status=active", "status=expired", "status=revoked", "status=suspended"] {
            for sort in ["created_at", "name"] {
                for order in orders {
                    let qs = format!("sort_by={sort}&sort_order={order}&{filters}");
                    let Ok(query) = serde_urlencoded::from_str::<api_keys::ApiKeyQuery>(&qs) else { continue };
                    for listing in listings(query.keyset()) {
                        push(format!("api-keys {who} {qs}"), api_keys::list_sql(principal, &query, &listing));
                    }
                }
            }
            if let Ok(query) = serde_urlencoded::from_str(filters) {
                push(format!("api-keys/count {who} {filters}"), api_keys::count_sql(principal, &query));
            }
        }
        for filters in ["", "email=user-1", "status=disabled"] {
            for sort in ["created_at", "name", "email"] {
                for order in orders {
                    let qs = format!("sort_by={sort}&sort_order={order}&{filters}");
                    let Ok(query) = serde_urlencoded::from_str::<users::UserQuery>(&qs) else { continue };
                    for listing in listings(query.keyset()) {
                        push(format!("users {who} {qs}"), users::list_sql(principal, &query, &listing));
                    }
                }
            }
            if let Ok(query) = serde_urlencoded::from_str(filters) {
                push(format!("users/count {who} {filters}"), users::count_sql(principal, &query));
            }
        }
        for status in [None, Some("pending")] {
            let qs = status.map(|s| format!("status={s}")).unwrap_or_default();
            let Ok(query) = serde_urlencoded::from_str::<users::UserInvitationQuery>(&qs) else { continue };
            for listing in listings(users::USER_INVITATIONS) {
                push(
                    format!("users/{{id}}/invitations {who} {qs}"),
                    Ok(users::user_invitations_sql(
                        principal,
                        subjects.email.clone(),
                        subjects.organization_id,
                        query.status(),
                        &listing,
                    )),
                );
            }
        }
        let audit_filters = [
            String::new(),
            format!("workspace_id={ws}"),
            format!("actor_id={}", Uuid::nil()),
            "event_type=WorkspaceCreated".to_owned(),
            "from=2026-01-01T00:00:00Z".to_owned(),
            format!("organization_id={}", subjects.organization_id),
        ];
        for filters in &audit_filters {
            for order in orders {
                let qs = format!("sort_order={order}&{filters}");
                let Ok(query) = serde_urlencoded::from_str::<audit_logs::AuditLogQuery>(&qs) else { continue };
                for listing in listings(query.keyset()) {
                    push(format!("audit-logs {who} {qs}"), audit_logs::list_sql(principal, &query, &listing));
                }
            }
            if let Ok(query) = serde_urlencoded::from_str(filters) {
                push(format!("audit-logs/count {who} {filters}"), audit_logs::count_sql(principal, &query));
            }
        }
        for filters in ["", "name=org-1"] {
            for sort in ["created_at", "name"] {
                for order in orders {
                    let qs = format!("sort_by={sort}&sort_order={order}&{filters}");
                    let Ok(query) = serde_urlencoded::from_str::<organizations::OrganizationQuery>(&qs) else {
                        continue;
                    };
                    for listing in listings(query.keyset()) {
                        push(format!("organizations {who} {qs}"), organizations::list_sql(principal, &query, &listing));
                    }
                }
            }
            if let Ok(query) = serde_urlencoded::from_str(filters) {
                push(format!("organizations/count {who} {filters}"), organizations::count_sql(principal, &query));
            }
        }
    }
    for filters in ["", "role=admin"] {
        let Ok(query) = serde_urlencoded::from_str::<members::MemberQuery>(filters) else { continue };
        for listing in listings(members::MEMBERS) {
            push(format!("members {filters}"), Ok(members::list_sql(ws, &query, &listing)));
        }
        push(format!("members/count {filters}"), Ok(members::count_sql(ws, &query)));
    }
    for filters in ["", "status=pending", "sort_order=desc"] {
        let Ok(query) = serde_urlencoded::from_str::<invitations::InvitationQuery>(filters) else { continue };
        for listing in listings(query.keyset()) {
            push(format!("invitations {filters}"), Ok(invitations::list_sql(ws, &query, &listing)));
        }
        push(format!("invitations/count {filters}"), Ok(invitations::count_sql(ws, &query)));
    }
    for filters in ["", "provider=van", "sort_order=desc"] {
        let Ok(query) = serde_urlencoded::from_str::<external_keys::ExternalKeyQuery>(filters) else { continue };
        for listing in listings(query.keyset()) {
            push(format!("external-keys {filters}"), Ok(external_keys::list_sql(ws, &query, &listing)));
        }
        push(format!("external-keys/count {filters}"), Ok(external_keys::count_sql(ws, &query)));
    }
    out
}

fn key(organization_id: Uuid, workspace_ids: Option<Vec<Uuid>>) -> Principal {
    Principal::Key(KeyPrincipal {
        id: Uuid::nil(),
        organization_id,
        scopes: shared::scope::Scopes::all(),
        workspace_ids,
        rate_limit_per_minute: None,
        owner_user_id: None,
        allowed_ips: Vec::new(),
        expires_at: None,
        retiring: false,
    })
}

/// The first page of 100, and a page of 100 after a position in the middle of the order.
fn listings(keyset: Keyset) -> [Listing; 2] {
    let paging = Paging { page: 1, page_size: 100 };
    let key = match keyset.kind {
        SortKind::Text => KeyValue::Text("m".into()),
        SortKind::Time => KeyValue::Time(chrono::Utc::now() - chrono::Duration::minutes(1)),
        SortKind::UniqueInteger => KeyValue::Integer(1_000),
    };
    [
        Listing::at(keyset, paging, None),
        Listing::at(keyset, Paging { page: 2, ..paging }, Some((key, Uuid::from_u128(u128::MAX / 2)))),
    ]
}
