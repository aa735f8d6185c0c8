//! What the result of an attempt does to its delivery: success ends it, a refusal fails it
//! at once, anything else is retried while `WEBHOOK_RETRY_SCHEDULE` lasts and then fails
//! (recorded by [`super::recorder`]).

use std::time::Duration;

use shared::config::RetrySchedule;
use uuid::Uuid;

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
