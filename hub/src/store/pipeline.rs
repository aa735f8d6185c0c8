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

/// Awaits every request; returns the first error in request order, if any. A request
/// that fails before the later ones were sent (e.g. a parameter the driver refuses
/// client-side) stops the rest from being sent: a `COMMIT` is never sent after a failure.
pub(super) async fn in_order(requests: Vec<Request<'_>>) -> Result<(), tokio_postgres::Error> {
    let mut pending: Vec<MaybeDone<Request<'_>>> = requests.into_iter().map(futures::future::maybe_done).collect();
    let mut started = 0;
    let mut failed = false;
    futures::future::poll_fn(|cx| {
        let mut all_done = true;
        for (i, request) in pending.iter_mut().enumerate() {
            if i >= started {
                if failed {
                    break;
                }
                started = i + 1;
            }
            // Each element is a boxed future, hence `Unpin`: `Pin::new` suffices.
            let mut request = Pin::new(request);
            if request.as_mut().poll(cx).is_pending() {
                all_done = false;
            } else if matches!(request.as_mut().output_mut(), Some(Err(_))) {
                failed = true;
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
