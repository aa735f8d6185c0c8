//! `users` from the user streams.

use shared::RecordedEvent;
use shared::events::UserEvent;
use uuid::Uuid;

use super::{SqlStep, params};
use crate::columns::UserStatus;

fn status(id: Uuid, status: UserStatus, version: i64, at: chrono::DateTime<chrono::Utc>) -> SqlStep {
    SqlStep::new(
        "UPDATE users SET status = $2, version = $3, updated_at = $4 WHERE id = $1",
        params![id, status, version, at],
    )
}

pub(super) fn steps(id: Uuid, event: &RecordedEvent) -> Result<Vec<SqlStep>, shared::DecodeError> {
    let (version, at) = (event.stream_version, event.recorded_at);
    let step = match event.decode::<UserEvent>()? {
        UserEvent::UserCreated(e) => SqlStep::new(
            "INSERT INTO users (id, organization_id, email, name, status, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 'active', $5, $6, $6)",
            params![id, e.organization_id, e.email, e.name, version, at],
        ),
        UserEvent::UserRenamed(e) => SqlStep::new(
            "UPDATE users SET name = $2, version = $3, updated_at = $4 WHERE id = $1",
            params![id, e.name, version, at],
        ),
        UserEvent::UserDisabled {} => status(id, UserStatus::Disabled, version, at),
        UserEvent::UserEnabled {} => status(id, UserStatus::Active, version, at),
        UserEvent::UserDeleted {} => status(id, UserStatus::Deleted, version, at),
    };
    Ok(vec![step])
}
