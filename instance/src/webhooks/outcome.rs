//! What the result of an attempt does to its delivery: success ends it, a refusal fails it
//! at once, anything else is retried while `WEBHOOK_RETRY_SCHEDULE` lasts and then fails.
//!
//! Every update names the attempt it records (`attempts` as the claim left it) and applies
//! only to a pending delivery: an outcome that arrives after the row was claimed again
//! (its lease ran out) or retried through the API changes nothing.

use std::time::Duration;

use shared::config::RetrySchedule;
use uuid::Uuid;

use crate::ingest::DeliveryStatus;
use crate::usage::Usage;

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer.
    Succeeded { status: u16 },
    /// Any other answer, or none: tried again while the schedule lasts.
    Retry { status: Option<u16>, error: String },
    /// Not to be tried again (a refused destination, an unusable URL or workspace).
    Failed { error: String },
}

/// A delivery as its claim left it.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    pub delivery: Uuid,
    /// Attempts so far, this one included.
    pub attempts: i32,
    /// `attempts` when the current round of the schedule began (0, or when a retry was asked).
    pub round_start: i32,
}

/// What becomes of the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Succeeded,
    RetryAfter(Duration),
    Failed,
}

/// The next step after `outcome`: the n-th attempt of a round that did not succeed waits
/// the schedule's n-th entry, and the attempt after the last entry fails for good.
pub fn next(outcome: &Outcome, attempt: Attempt, schedule: &RetrySchedule) -> Next {
    match outcome {
        Outcome::Succeeded { .. } => Next::Succeeded,
        Outcome::Failed { .. } => Next::Failed,
        Outcome::Retry { .. } => {
            let in_round = usize::try_from(attempt.attempts - attempt.round_start).unwrap_or(0).max(1);
            schedule.0.get(in_round - 1).map_or(Next::Failed, |wait| Next::RetryAfter(*wait))
        }
    }
}

/// Records `outcome` of `attempt`; `false` when the delivery had moved on meanwhile.
pub async fn record(
    client: &tokio_postgres::Client,
    usage: &Usage,
    attempt: Attempt,
    outcome: &Outcome,
    schedule: &RetrySchedule,
) -> Result<bool, tokio_postgres::Error> {
    let (status, error) = match outcome {
        Outcome::Succeeded { status } => (Some(i32::from(*status)), None),
        Outcome::Retry { status, error } => (status.map(i32::from), Some(error.as_str())),
        Outcome::Failed { error } => (None, Some(error.as_str())),
    };
    match next(outcome, attempt, schedule) {
        Next::Succeeded => record_final_outcome(client, usage, attempt, DeliveryStatus::Succeeded, status, error).await,
        Next::Failed => record_final_outcome(client, usage, attempt, DeliveryStatus::Failed, status, error).await,
        Next::RetryAfter(wait) => {
            // Jitter of ±10% spreads the retries of deliveries that failed together.
            let updated = client
                .execute(
                    "UPDATE deliveries SET last_status_code = $3, last_error = $4, updated_at = now(), claimed_until = NULL, \
                     next_attempt_at = now() + make_interval(secs => $5 * (0.9 + random() * 0.2)) \
                     WHERE id = $1 AND attempts = $2 AND status = 'pending'",
                    &[&attempt.delivery, &attempt.attempts, &status, &error, &wait.as_secs_f64()],
                )
                .await?;
            Ok(updated == 1)
        }
    }
}

/// Where a delivery's final outcome is recorded: it succeeded, or failed for good; and
/// counted for the usage reports, once (only the update that ends the delivery counts).
async fn record_final_outcome(
    client: &tokio_postgres::Client,
    usage: &Usage,
    attempt: Attempt,
    final_status: DeliveryStatus,
    status_code: Option<i32>,
    error: Option<&str>,
) -> Result<bool, tokio_postgres::Error> {
    let ended = client
        .query_opt(
            "UPDATE deliveries d SET status = $3, last_status_code = $4, last_error = $5, updated_at = now(), \
             claimed_until = NULL FROM interactions i \
             WHERE d.id = $1 AND d.attempts = $2 AND d.status = 'pending' AND i.id = d.interaction_id \
             RETURNING d.workspace_id, i.interaction_key_id",
            &[&attempt.delivery, &attempt.attempts, &final_status, &status_code, &error],
        )
        .await?;
    let Some(row) = ended else { return Ok(false) };
    usage.delivery(row.try_get(0)?, row.try_get(1)?, final_status == DeliveryStatus::Succeeded);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(attempts: i32, round_start: i32) -> Attempt {
        Attempt { delivery: Uuid::nil(), attempts, round_start }
    }

    #[test]
    fn a_delivery_is_retried_once_per_schedule_entry_then_fails() {
        let schedule = shared::config::retry_schedule("5,300").unwrap();
        let retry = Outcome::Retry { status: Some(503), error: "HTTP 503".into() };
        assert_eq!(next(&retry, attempt(1, 0), &schedule), Next::RetryAfter(Duration::from_secs(5)));
        assert_eq!(next(&retry, attempt(2, 0), &schedule), Next::RetryAfter(Duration::from_secs(300)));
        assert_eq!(next(&retry, attempt(3, 0), &schedule), Next::Failed);
        // A retry asked for through the API starts a new round.
        assert_eq!(next(&retry, attempt(4, 3), &schedule), Next::RetryAfter(Duration::from_secs(5)));
        assert_eq!(next(&Outcome::Succeeded { status: 204 }, attempt(3, 0), &schedule), Next::Succeeded);
        assert_eq!(next(&Outcome::Failed { error: "refused".into() }, attempt(1, 0), &schedule), Next::Failed);
    }
}
