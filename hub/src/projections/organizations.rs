//! `organizations` from the organization stream. The usage columns beside the quotas are
//! kept by triggers on the rows they count (migration V10), not here.

use shared::RecordedEvent;
use shared::events::OrganizationEvent;
use shared::events::organization::Quotas;
use uuid::Uuid;

use super::{SqlStep, params};

pub(super) fn steps(id: Uuid, event: &RecordedEvent) -> Result<Vec<SqlStep>, shared::DecodeError> {
    let (version, at) = (event.stream_version, event.recorded_at);
    let step = match event.decode::<OrganizationEvent>()? {
        OrganizationEvent::OrganizationCreated(e) => {
            let quotas = Quotas::default();
            SqlStep::new(
                "INSERT INTO organizations (id, name, email, plan, settings, status, version, created_at, updated_at, \
                 quota_workspaces, quota_api_keys, quota_interaction_keys, quota_pending_invitations) \
                 VALUES ($1, $2, $3, $4, '{}', 'active', $5, $6, $6, $7, $8, $9, $10)",
                params![
                    id,
                    e.name,
                    e.email,
                    e.plan,
                    version,
                    at,
                    quota(quotas.workspaces),
                    quota(quotas.api_keys),
                    quota(quotas.interaction_keys),
                    quota(quotas.pending_invitations),
                ],
            )
        }
        OrganizationEvent::OrganizationUpdated(e) => SqlStep::new(
            "UPDATE organizations SET name = COALESCE($2, name), email = COALESCE($3, email), \
             plan = COALESCE($4, plan), version = $5, updated_at = $6 WHERE id = $1",
            params![id, e.name, e.email, e.plan, version, at],
        ),
        OrganizationEvent::OrganizationSettingsChanged(settings) => SqlStep::new(
            "UPDATE organizations SET settings = $2, version = $3, updated_at = $4 WHERE id = $1",
            params![id, serde_json::to_value(settings).unwrap_or_default(), version, at],
        ),
        OrganizationEvent::OrganizationLimitsChanged(limits) => SqlStep::new(
            "UPDATE organizations SET rate_limit_ceiling_per_minute = $2, quota_workspaces = $3, \
             quota_api_keys = $4, quota_interaction_keys = $5, quota_pending_invitations = $6, \
             version = $7, updated_at = $8 WHERE id = $1",
            params![
                id,
                limits.rate_limit_ceiling_per_minute.map(quota),
                quota(limits.quotas.workspaces),
                quota(limits.quotas.api_keys),
                quota(limits.quotas.interaction_keys),
                quota(limits.quotas.pending_invitations),
                version,
                at,
            ],
        ),
        OrganizationEvent::OrganizationDeleted {} => SqlStep::new(
            "UPDATE organizations SET status = 'deleted', version = $2, updated_at = $3 WHERE id = $1",
            params![id, version, at],
        ),
    };
    Ok(vec![step])
}

/// A limit as an `integer` column; limits are bounded far below `i32::MAX` by `decide`.
fn quota(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}
