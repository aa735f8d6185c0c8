//! Serving an axum router over TCP with the limits `axum::serve` lacks.
//!
//! Both binaries serve through [`serve`]: a connection whose request headers are not
//! complete within [`HEADER_READ_TIMEOUT`] is closed (a slow or stalled client cannot hold
//! a connection open by dribbling bytes), so is a connection whose responses make no
//! progress for [`WRITE_STALL_TIMEOUT`] (a client that pipelines requests and never reads
//! the answers cannot hold it either), at most `max_connections` connections are
//! served at once (the rest wait in the listen backlog until one closes), every request
//! carries the peer's [`ConnectInfo<SocketAddr>`] like `into_make_service_with_connect_info`,
//! and once `shutdown` resolves the listener closes and in-flight requests drain.
//!
//! Routers bound their requests' time with [`request_timeout`], which answers a problem
//! where tower-http's `TimeoutLayer` would answer an empty 503.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tower::ServiceExt;

/// How long a client has to send a request's headers, from the connection's start or the
/// end of its previous response.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a response may make no progress on its connection (the client reads nothing)
/// before the connection is closed.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections served at once unless configured otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// How long a request may take, its body included, unless its route keeps its own deadline.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Passes a request on, and answers a 503 problem (`unavailable`) instead once it took
/// [`REQUEST_TIMEOUT`] (the handler is dropped, like tower-http's `TimeoutLayer` does).
pub async fn request_timeout(request: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => timed_out(REQUEST_TIMEOUT),
    }
}

/// The answer to a request not answered within `limit`: clients may retry it.
pub fn timed_out(limit: Duration) -> Response {
    let detail = format!("the request was not answered within {} seconds; retry later", limit.as_secs());
    crate::problem::response(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &detail)
}

/// Serves `router` on `listener` until `shutdown` resolves, then waits for the open
/// connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    tokio::pin!(shutdown);
    loop {
        // The permit comes first: past the limit, connections wait unaccepted.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors or a connection reset before accept: back
                    // off briefly rather than spin.
                    tracing::debug!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(remote));
            router.clone().oneshot(request)
        });
        let connection = graceful
            .watch(builder.serve_connection(TokioIo::new(WriteDeadline::new(stream, WRITE_STALL_TIMEOUT)), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %remote, "connection closed with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// A stream whose writes fail with [`io::ErrorKind::TimedOut`] once they stayed pending
/// for `stall`; every write that makes progress starts the wait again.
struct WriteDeadline<S> {
    inner: S,
    stall: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteDeadline<S> {
    fn new(inner: S, stall: Duration) -> Self {
        Self { inner, stall, deadline: None }
    }

    /// Passes on a write's outcome; a pending one fails once its deadline passed.
    fn watch<T>(&mut self, cx: &mut Context<'_>, outcome: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if outcome.is_ready() {
            self.deadline = None;
            return outcome;
        }
        let stall = self.stall;
        let deadline = self.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        ready!(deadline.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client reads nothing")))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, outcome)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let outcome = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, outcome)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let outcome = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_write_that_makes_no_progress_fails_after_its_stall_time() {
        // A pipe that holds 16 bytes and that nobody reads.
        let (writer, _reader) = tokio::io::duplex(16);
        let mut stream = WriteDeadline::new(writer, Duration::from_millis(100));
        stream.write_all(&[0; 16]).await.unwrap();
        let error = stream.write_all(&[0; 1]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_write_that_progresses_is_not_cut_off() {
        let (writer, mut reader) = tokio::io::duplex(16);
        let mut stream = WriteDeadline::new(writer, Duration::from_secs(5));
        let slow_reader = tokio::spawn(async move {
            let mut buffer = [0u8; 16];
            let mut total = 0;
            while total < 160 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                total += tokio::io::AsyncReadExt::read(&mut reader, &mut buffer).await.unwrap();
            }
        });
        stream.write_all(&[0; 160]).await.expect("a reader that keeps reading keeps the connection");
        slow_reader.await.unwrap();
    }
}
