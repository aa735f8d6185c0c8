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
//! A request whose target is longer than [`MAX_URI_BYTES`] is answered with a 414 problem
//! (`uri_too_long`), one with more than [`MAX_HEADERS`] header fields or more than
//! [`MAX_HEADER_BYTES`] of them with a 431 problem (`headers_too_large`), before any
//! router sees it. hyper keeps its own limits past these and answers them itself, with no
//! body and no hook to change that: a target over 65,534 bytes (fixed in hyper), a head
//! over its read buffer (about 400 KiB) or more than [`HYPER_MAX_HEADERS`] fields.
//!
//! An answer given before the request's body was read (a refused key, a throttled client)
//! is sent once the rest of the body has arrived, up to [`DRAIN_BYTES`] more within
//! [`DRAIN_TIME`]: the client gets the answer rather than a connection reset while it is
//! still sending, and the connection serves its next request. Past those bounds the
//! answer says `Connection: close`.
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

/// The longest request target (path and query) served.
pub const MAX_URI_BYTES: usize = 16 * 1024;

/// The most header fields a request may carry.
pub const MAX_HEADERS: usize = 100;

/// The most bytes a request's header fields may take together (names, values and 4 bytes
/// of separators each).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The most header fields hyper parses: above [`MAX_HEADERS`], so that a request past
/// ours still reaches [`serve`] and gets a problem.
pub const HYPER_MAX_HEADERS: usize = 2 * MAX_HEADERS;

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

/// The answer to a request not answered within `limit`. A change it asked for may still
/// be applied (a write already handed to the database commits whether or not its caller
/// waits), so the answer says how to retry safely.
pub fn timed_out(limit: Duration) -> Response {
    let detail = format!(
        "the request was not answered within {} seconds; a change it asked for may still be applied: \
         read the resource, or retry with the same Idempotency-Key",
        limit.as_secs()
    );
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
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).max_headers(HYPER_MAX_HEADERS);
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
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let router = router.clone();
            async move {
                let (mut parts, body) = request.into_parts();
                let (body, mut unread) = Tracked::new(body);
                // hyper honours `Expect: 100-continue` on HTTP/1.1 only.
                let continues = parts.version == axum::http::Version::HTTP_11
                    && parts
                        .headers
                        .get(axum::http::header::EXPECT)
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
                let mut response = match oversized_head(&parts) {
                    Some(refusal) => {
                        drop(body);
                        refusal
                    }
                    None => {
                        parts.extensions.insert(ConnectInfo(remote));
                        router.oneshot(hyper::Request::from_parts(parts, body)).await?
                    }
                };
                // The body, when the answer came before the whole of it was read. One still
                // held (by a task the handler started) is not waited for.
                match unread.try_recv() {
                    Ok(rest) => finish_reading(rest, continues, &mut response).await,
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty) => close(&mut response),
                    Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {}
                }
                Ok::<_, std::convert::Infallible>(response)
            }
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

/// The most of a request body left unread by its answer that is still read, so that the
/// answer reaches the client (the largest body a route of either binary accepts), counted
/// from where the handler stopped reading.
pub const DRAIN_BYTES: usize = 1024 * 1024;

/// The most pieces (chunks, reads) that rest may come in: a body sent a byte per chunk is
/// not worth reading.
pub const DRAIN_FRAMES: usize = 4096;

/// How long the client has to send the rest of such a body.
pub const DRAIN_TIME: Duration = Duration::from_secs(5);

/// How long such a body may pause: one that stalled (its request timed out) is not waited for.
pub const DRAIN_PAUSE: Duration = Duration::from_secs(1);

/// A request body that hands back, when dropped before its end, what is left of it and
/// whether anything of it was asked for.
struct Tracked {
    inner: Option<Incoming>,
    polled: bool,
    unread: Option<tokio::sync::oneshot::Sender<(Incoming, bool)>>,
}

impl Tracked {
    fn new(inner: Incoming) -> (Self, tokio::sync::oneshot::Receiver<(Incoming, bool)>) {
        let (unread, rest) = tokio::sync::oneshot::channel();
        (Self { inner: Some(inner), polled: false, unread: Some(unread) }, rest)
    }
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        self.polled = true;
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(hyper::body::Body::is_end_stream)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.as_ref().map_or_else(|| hyper::body::SizeHint::with_exact(0), hyper::body::Body::size_hint)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let (Some(inner), Some(unread)) = (self.inner.take(), self.unread.take())
            && !hyper::body::Body::is_end_stream(&inner)
        {
            let _ = unread.send((inner, self.polled));
        }
    }
}

/// Reads what the client still sends of a body its answer left unread (a refused key, a
/// throttled client, a body too large), so that the answer reaches the client instead of
/// a connection reset and the connection can carry the next request. A rest of more than
/// [`DRAIN_BYTES`], in more than [`DRAIN_FRAMES`] pieces, not sent within [`DRAIN_TIME`],
/// or pausing for [`DRAIN_PAUSE`] is not waited for: the answer then says
/// `Connection: close`. So does one to a client waiting for `100 Continue` that was never
/// asked to send its body (it sends nothing more).
async fn finish_reading((mut rest, polled): (Incoming, bool), continues: bool, response: &mut Response) {
    use hyper::body::Body;
    // Without `100 Continue`, which hyper sends once the body is asked for, it never comes.
    let waiting = continues && !polled;
    let too_large = rest.size_hint().lower() > DRAIN_BYTES as u64;
    let read = !waiting
        && !too_large
        && tokio::time::timeout(DRAIN_TIME, async {
            let (mut bytes, mut frames) = (0, 0);
            let pause = tokio::time::sleep(DRAIN_PAUSE);
            tokio::pin!(pause);
            loop {
                let frame = std::future::poll_fn(|cx| Pin::new(&mut rest).poll_frame(cx));
                tokio::select! {
                    frame = frame => match frame {
                        // The whole body arrived.
                        None => return true,
                        Some(Ok(frame)) => bytes += frame.data_ref().map_or(0, bytes::Bytes::len),
                        Some(Err(_)) => return false,
                    },
                    // Paused.
                    () = &mut pause => return false,
                }
                frames += 1;
                if bytes > DRAIN_BYTES || frames > DRAIN_FRAMES {
                    return false;
                }
                pause.as_mut().reset(tokio::time::Instant::now() + DRAIN_PAUSE);
            }
        })
        .await
        .unwrap_or(false);
    if !read {
        close(response);
    }
}

/// Tells the client that the connection closes after `response`.
fn close(response: &mut Response) {
    response.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
}

/// The problem that answers a request whose target or header fields are past the limits.
fn oversized_head(request: &axum::http::request::Parts) -> Option<Response> {
    let uri = &request.uri;
    // The target as the client sent it: an absolute-form one counts its scheme and `://`.
    let target = uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len());
    let headers = &request.headers;
    let (status, code, detail) = if target > MAX_URI_BYTES {
        (StatusCode::URI_TOO_LONG, "uri_too_long", format!("the request target exceeds {MAX_URI_BYTES} bytes"))
    } else if headers.len() > MAX_HEADERS {
        (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("more than {MAX_HEADERS} header fields"),
        )
    } else if headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum::<usize>()
        > MAX_HEADER_BYTES
    {
        let detail = format!("the header fields exceed {MAX_HEADER_BYTES} bytes");
        (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large", detail)
    } else {
        return None;
    };
    // The request id a router would have echoed or made.
    let id = headers
        .get(crate::metadata::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| crate::metadata::is_request_id(id))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    Some(crate::problem::response_with_id(status, code, &detail, &id))
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

    fn request(target: &str, headers: usize, value_bytes: usize) -> hyper::Request<()> {
        let mut builder = hyper::Request::get(target);
        for n in 0..headers {
            builder = builder.header(format!("x-h-{n}"), "v".repeat(value_bytes));
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn a_head_past_the_limits_is_refused_with_its_status_and_one_within_them_is_not() {
        let long = format!("/v1/x?q={}", "q".repeat(MAX_URI_BYTES));
        let refused = |r: &hyper::Request<()>| {
            let (parts, ()) = r.clone().into_parts();
            oversized_head(&parts).map(|response| response.status())
        };
        assert_eq!(refused(&request(&long, 0, 0)), Some(StatusCode::URI_TOO_LONG));
        assert_eq!(refused(&request("/v1/x", MAX_HEADERS + 1, 1)), Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
        assert_eq!(
            refused(&request("/v1/x", 2, MAX_HEADER_BYTES / 2)),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        let fits = format!("/v1/x?q={}", "q".repeat(MAX_URI_BYTES - 16));
        assert_eq!(refused(&request(&fits, MAX_HEADERS, 500)), None);
    }

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

    /// Serves `router` on a free port of 127.0.0.1 until the test ends; its address.
    async fn served(router: Router) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, router, 16, std::future::pending()));
        addr
    }

    /// Reads one response (head and a `content-length` body) from `stream`: its head.
    async fn response(stream: &mut tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>) -> io::Result<String> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt};
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let length = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>()))
            .unwrap_or(Ok(0))
            .unwrap();
        stream.read_exact(&mut vec![0; length]).await?;
        Ok(head)
    }

    fn refusing_router() -> Router {
        // Answers without reading the body, as a refused key or a throttled client is.
        Router::new()
            .route("/refuse", axum::routing::post(|| async { StatusCode::UNAUTHORIZED }))
            .route("/ok", axum::routing::get(|| async { "ok" }))
            .route("/read", axum::routing::post(|body: String| async move { body.len().to_string() }))
    }

    #[tokio::test]
    async fn requests_whose_bodies_were_read_keep_their_connection_open() {
        let addr = served(refusing_router()).await;
        let (read, mut write) = tokio::net::TcpStream::connect(addr).await.unwrap().into_split();
        let mut read = tokio::io::BufReader::new(read);
        for size in [0, 10, 300_000] {
            let body = "b".repeat(size);
            let request = format!("POST /read HTTP/1.1\r\nhost: x\r\ncontent-length: {size}\r\n\r\n{body}");
            write.write_all(request.as_bytes()).await.unwrap();
            let head = response(&mut read).await.unwrap();
            assert!(head.starts_with("HTTP/1.1 200"), "{size} bytes: {head}");
            assert!(!head.to_ascii_lowercase().contains("connection: close"), "{size} bytes: {head}");
            let chunked = format!(
                "POST /read HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{size:x}\r\n{body}\r\n0\r\n\r\n"
            );
            let chunked = if size == 0 {
                "POST /read HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n".to_owned()
            } else {
                chunked
            };
            write.write_all(chunked.as_bytes()).await.unwrap();
            let head = response(&mut read).await.unwrap();
            assert!(head.starts_with("HTTP/1.1 200"), "{size} bytes, chunked: {head}");
            assert!(!head.to_ascii_lowercase().contains("connection: close"), "{size} bytes, chunked: {head}");
            write.write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
            let head = response(&mut read).await.unwrap();
            assert!(head.starts_with("HTTP/1.1 200"), "{size} bytes, then a GET: {head}");
            assert!(!head.to_ascii_lowercase().contains("connection: close"), "{size} bytes, then a GET: {head}");
        }
    }

    #[tokio::test]
    async fn a_request_refused_for_its_head_is_answered_with_or_without_a_body() {
        let addr = served(refusing_router()).await;
        let target = format!("/ok?q={}", "q".repeat(MAX_URI_BYTES));
        for (method, body) in [("GET", ""), ("POST", "some body")] {
            let (read, mut write) = tokio::net::TcpStream::connect(addr).await.unwrap().into_split();
            let mut read = tokio::io::BufReader::new(read);
            let request =
                format!("{method} {target} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{body}", body.len());
            write.write_all(request.as_bytes()).await.unwrap();
            let head = tokio::time::timeout(Duration::from_secs(10), response(&mut read))
                .await
                .unwrap_or_else(|_| panic!("{method}: no answer within 10 s"))
                .unwrap();
            assert!(head.starts_with("HTTP/1.1 414"), "{method}: {head}");
        }
    }

    #[tokio::test]
    async fn an_early_answer_to_a_body_that_will_not_be_read_says_the_connection_closes() {
        let addr = served(refusing_router()).await;
        // Too large to wait for, a client waiting for `100 Continue` before sending it, one
        // that stalls after a few bytes, and one sending a byte per chunk.
        let bytewise = format!("{}0\r\n\r\n", "1\r\nb\r\n".repeat(DRAIN_FRAMES + 10));
        for (extra, sent) in [
            (format!("content-length: {}\r\n", DRAIN_BYTES + 1), ""),
            ("expect: 100-continue\r\ncontent-length: 10\r\n".to_owned(), ""),
            ("content-length: 1000\r\n".to_owned(), "only a few bytes"),
            ("transfer-encoding: chunked\r\n".to_owned(), bytewise.as_str()),
        ] {
            let (read, mut write) = tokio::net::TcpStream::connect(addr).await.unwrap().into_split();
            let mut read = tokio::io::BufReader::new(read);
            let head = format!("POST /refuse HTTP/1.1\r\nhost: x\r\n{extra}\r\n{sent}");
            write.write_all(head.as_bytes()).await.unwrap();
            let head = tokio::time::timeout(Duration::from_secs(10), response(&mut read)).await.unwrap().unwrap();
            assert!(head.starts_with("HTTP/1.1 401"), "{extra:?}: {head}");
            assert!(head.to_ascii_lowercase().contains("connection: close"), "{extra:?}: {head}");
        }
    }

    #[tokio::test]
    async fn an_answer_given_before_the_body_was_read_reaches_the_client_and_the_connection_stays_usable() {
        let addr = served(refusing_router()).await;
        for size in [10, 100_000, 900_000] {
            let (read, mut write) = tokio::net::TcpStream::connect(addr).await.unwrap().into_split();
            let mut read = tokio::io::BufReader::new(read);
            let body = "b".repeat(size);
            let request = format!("POST /refuse HTTP/1.1\r\nhost: x\r\ncontent-length: {size}\r\n\r\n{body}");
            let sending = tokio::spawn(async move {
                write.write_all(request.as_bytes()).await?;
                Ok::<_, io::Error>(write)
            });
            let head = response(&mut read).await.unwrap_or_else(|e| panic!("{size} bytes: the answer was lost: {e}"));
            assert!(head.starts_with("HTTP/1.1 401"), "{size} bytes: {head}");
            let mut write = sending.await.unwrap().unwrap_or_else(|e| panic!("{size} bytes: sending failed: {e}"));
            write.write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
            let head =
                response(&mut read).await.unwrap_or_else(|e| panic!("{size} bytes: the next request failed: {e}"));
            assert!(head.starts_with("HTTP/1.1 200"), "{size} bytes: {head}");
        }
    }
}
