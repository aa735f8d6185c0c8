//! Webhook delivery: a sender on every instance (a separate instance and the instance
//! embedded in a single-node hub alike) drains the delivery outbox that
//! `POST /v1/interactions` fills (see [`crate::ingest`]).
//!
//! Each due delivery is claimed in the database before it is sent: the claim counts the
//! attempt and leases the row for longer than a request may take, so two senders never
//! send the same attempt, and a sender that dies mid-request leaves a row that is tried
//! again once its lease runs out. The outcome is recorded once the answer arrives (with
//! the other outcomes of the moment, see [`recorder`]):
//! any 2xx succeeds (and is never sent again), anything else is retried on
//! `WEBHOOK_RETRY_SCHEDULE` with jitter, then failed; a destination refused by the
//! private-address guard fails at once.
//!
//! - [`sender`]: the claim, send and record loop.
//! - [`outcome`]: what an attempt's result does to its delivery.
//! - [`recorder`]: the outcomes, recorded in batches.
//! - [`signature`]: Standard Webhooks signatures.
//! - [`guard`]: the private-address guard.

pub mod guard;
pub mod outcome;
pub mod recorder;
pub mod sender;
pub mod signature;

use std::sync::Arc;

use shared::config::Webhooks;
use shared::supervise::Tasks;

use crate::runtime::RuntimeState;

/// Connections of the sender's own pool: claims and outcomes, shared by up to
/// [`sender::MAX_IN_FLIGHT`] requests (none holds a connection while it waits for an answer).
pub const POOL_SIZE: usize = 8;

/// Starts the webhook sender on its own `pool`, supervised in `tasks` as `webhook sender`.
pub fn spawn(
    tasks: &Arc<Tasks>,
    runtime: Arc<RuntimeState>,
    pool: deadpool_postgres::Pool,
    config: Webhooks,
) -> anyhow::Result<()> {
    let sender = Arc::new(sender::Sender::new(runtime, pool, config)?);
    tasks.spawn("webhook sender", move || sender.clone().run());
    Ok(())
}
