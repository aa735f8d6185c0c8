//! A webhook receiver on a loopback port: records every request it gets (the Standard
//! Webhooks headers, the body, when it arrived) and answers the status it is told to,
//! optionally a 503 for one request in `n`, optionally after a delay, optionally with a
//! body that never ends. A 3xx answer points `Location` at `/followed` on the same
//! receiver, so a client that follows it shows.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// One request as the receiver got it, and what it answered.
#[derive(Debug, Clone)]
pub struct Received {
    /// The request's path.
    pub path: String,
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
    pub answered: u16,
    pub at: Instant,
}

#[derive(Default)]
struct Shared {
    status: AtomicU16,
    /// When above zero: every `unavailable_every`-th request gets 503 whatever `status` says.
    unavailable_every: AtomicU64,
    seen: AtomicU64,
    /// Milliseconds each answer waits.
    delay_ms: AtomicU64,
    /// Requests being answered now.
    in_flight: AtomicU64,
    /// The most requests ever answered at once.
    max_in_flight: AtomicU64,
    requests: Mutex<Vec<Received>>,
    /// Whether answers carry a body that never ends.
    endless: AtomicBool,
    /// Bytes of endless bodies written to the sockets so far.
    streamed: AtomicU64,
    /// Endless bodies still being written (their clients have not gone away).
    streaming: AtomicU64,
}

/// A running receiver; stops with the test's runtime.
#[derive(Clone)]
pub struct Receiver {
    shared: Arc<Shared>,
    pub addr: SocketAddr,
}

impl Receiver {
    /// Starts a receiver answering `status` on `127.0.0.1`.
    pub async fn start(status: u16) -> Receiver {
        let shared = Arc::new(Shared::default());
        shared.status.store(status, Ordering::SeqCst);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the receiver");
        let addr = listener.local_addr().expect("the receiver's address");
        let router = axum::Router::new().fallback(receive).with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Receiver { shared, addr }
    }

    /// The URL of a path on this receiver, by address (`http://127.0.0.1:<port><path>`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers `status` from now on.
    pub fn answer(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// Answers 503 to every `n`-th request (0: never), whatever [`Receiver::answer`] says.
    pub fn unavailable_every(&self, n: u64) {
        self.shared.unavailable_every.store(n, Ordering::SeqCst);
    }

    /// Holds each answer back for `delay` (a slow receiver keeps requests in flight).
    pub fn delay(&self, delay: std::time::Duration) {
        self.shared.delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Answers with a body that never ends (chunks of 64 KiB for as long as the client
    /// reads), or with an empty one again.
    pub fn endless_body(&self, endless: bool) {
        self.shared.endless.store(endless, Ordering::SeqCst);
    }

    /// Bytes of endless bodies written so far, and how many such bodies are still being
    /// written.
    pub fn streamed(&self) -> (u64, u64) {
        (self.shared.streamed.load(Ordering::SeqCst), self.shared.streaming.load(Ordering::SeqCst))
    }

    /// How many requests are being answered now (held back by [`Receiver::delay`]).
    pub fn in_flight(&self) -> u64 {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// Every request so far, in arrival order.
    /// The most requests it has answered at the same time.
    pub fn max_in_flight(&self) -> u64 {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Received> {
        self.shared.requests.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The requests carrying `webhook-id: id`.
    pub fn requests_for(&self, id: &str) -> Vec<Received> {
        self.requests().into_iter().filter(|r| r.id == id).collect()
    }
}

async fn receive(State(shared): State<Arc<Shared>>, uri: axum::http::Uri, headers: HeaderMap, body: Bytes) -> Response {
    /// Counts a request in flight until it is answered or its client goes away.
    struct InFlight(Arc<Shared>);
    impl Drop for InFlight {
        fn drop(&mut self) {
            self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let _in_flight = InFlight(shared.clone());
    let delay = shared.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let n = shared.seen.fetch_add(1, Ordering::SeqCst) + 1;
    let every = shared.unavailable_every.load(Ordering::SeqCst);
    let answered = if every > 0 && n % every == 0 { 503 } else { shared.status.load(Ordering::SeqCst) };
    shared.requests.lock().unwrap_or_else(|p| p.into_inner()).push(Received {
        path: uri.path().to_owned(),
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: String::from_utf8_lossy(&body).into_owned(),
        answered,
        at: Instant::now(),
    });
    let status = StatusCode::from_u16(answered).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut answer = HeaderMap::new();
    if status.is_redirection() {
        answer.insert(axum::http::header::LOCATION, axum::http::HeaderValue::from_static("/followed"));
    }
    if !shared.endless.load(Ordering::SeqCst) {
        return (status, answer).into_response();
    }
    /// Counts the body as being written until the client drops it.
    struct Streaming(Arc<Shared>);
    impl Drop for Streaming {
        fn drop(&mut self) {
            self.0.streaming.fetch_sub(1, Ordering::SeqCst);
        }
    }
    shared.streaming.fetch_add(1, Ordering::SeqCst);
    let chunks = futures::stream::unfold(Streaming(shared), |streaming| async move {
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        streaming.0.streamed.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        Some((Ok::<_, std::io::Error>(chunk), streaming))
    });
    (status, answer, Body::from_stream(chunks)).into_response()
}
