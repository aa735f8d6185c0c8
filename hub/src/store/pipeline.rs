//! Runs database requests pipelined on one connection, strictly in the given order.
//!
//! tokio-postgres sends a request when its future is first polled, and the server answers
//! in the order it received them. Polling every future once, in order, before waiting
//! sends them all in one go; this join guarantees that order (a `COMMIT` must follow the
//! statements of its transaction) for any number of futures.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use futures::future::MaybeDone;

pub(super) type Request<'a> = Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'a>>;

/// What became of one request: `None` if it was never sent.
pub(super) type Outcome = Option<Result<u64, tokio_postgres::Error>>;

/// Awaits every request; returns what became of each, in request order. A request that
/// fails before the later ones were sent (e.g. a parameter the driver refuses
/// client-side) stops the rest from being sent: a `COMMIT` is never sent after a failure.
/// A request the server refuses does not: the server answers every later request, those
/// in the same failed transaction with `25P02` (`in_failed_sql_transaction`).
///
/// Once sent, requests are awaited in order, and a wake-up polls only from the first
/// unfinished request up to the first one still waiting: the server answers in order, so
/// a later request cannot finish first, and a commit of thousands of statements costs
/// linear, not quadratic, polling.
pub(super) async fn in_order(requests: Vec<Request<'_>>) -> Vec<Outcome> {
    let mut pending: Vec<MaybeDone<Request<'_>>> = requests.into_iter().map(futures::future::maybe_done).collect();
    let mut started = 0;
    let mut finished = 0;
    let mut failed = false;
    futures::future::poll_fn(|cx| {
        // Send: poll each request once, in order, until one fails.
        while started < pending.len() && !failed {
            // Each element is a boxed future, hence `Unpin`: `Pin::new` suffices.
            let mut request = Pin::new(&mut pending[started]);
            started += 1;
            if request.as_mut().poll(cx).is_ready() && matches!(request.as_mut().output_mut(), Some(Err(_))) {
                failed = true;
            }
        }
        // Receive: in order; a request still waiting has registered the wake-up.
        while finished < started {
            let mut request = Pin::new(&mut pending[finished]);
            if request.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            finished += 1;
        }
        Poll::Ready(())
    })
    .await;
    pending.iter_mut().map(|request| Pin::new(request).take_output()).collect()
}
