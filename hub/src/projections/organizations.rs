//! `organizations` from the organization stream.

use shared::RecordedEvent;
use shared::events::OrganizationEvent;
use uuid::Uuid;

use super::{SqlStep, params};

pub(super) fn steps(id: Uuid, event: &RecordedEvent) -> Result<Vec<SqlStep>, shared::DecodeError> {
    let (version, at) = (event.stream_version, event.recorded_at);
    let step = match event.decode::<OrganizationEvent>()? {
        OrganizationEvent::OrganizationCreated(e) => SqlStep::new(
            "INSERT INTO organizations (id, name, email, plan, settings, status, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, '{}', 'active', $5, $6, $6)",
            params![id, e.name, e.email, e.plan, version, at],
        ),
        OrganizationEvent::OrganizationUpdated(e) => SqlStep::new(
            "UPDATE organizations SET name = COALESCE($2, name), email = COALESCE($3, email), \
             plan = COALESCE($4, plan), version = $5, updated_at = $6 WHERE id = $1",
            params![id, e.name, e.email, e.plan, version, at],
        ),
        OrganizationEvent::OrganizationSettingsChanged(settings) => SqlStep::new(
            "UPDATE organizations SET settings = $2, version = $3, updated_at = $4 WHERE id = $1",
            params![id, serde_json::to_value(settings).unwrap_or_default(), version, at],
        ),
        OrganizationEvent::OrganizationDeleted {} => SqlStep::new(
            "UPDATE organizations SET status = 'deleted', version = $2, updated_at = $3 WHERE id = $1",
            params![id, version, at],
        ),
    };
    Ok(vec![step])
}
