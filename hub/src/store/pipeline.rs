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

/// Awaits every request; returns the first error in request order, if any.
pub(super) async fn in_order(requests: Vec<Request<'_>>) -> Result<(), tokio_postgres::Error> {
    let mut pending: Vec<MaybeDone<Request<'_>>> = requests.into_iter().map(futures::future::maybe_done).collect();
    futures::future::poll_fn(|cx| {
        let mut all_done = true;
        for request in &mut pending {
            // Each element is a boxed future, hence `Unpin`: `Pin::new` suffices.
            if Pin::new(request).poll(cx).is_pending() {
                all_done = false;
            }
        }
        if all_done { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    for request in &mut pending {
        if let Some(Err(error)) = Pin::new(request).take_output() {
            return Err(error);
        }
    }
    Ok(())
}
