//! Slow and numerous clients: hub and instance close a connection whose request headers
//! do not arrive in time or whose responses are not read, and serve at most a configured
//! number of connections at once.

use std::net::SocketAddr;
use std::time::Duration;

use e2e::{HubProcess, NatsServer, OPERATOR_KEY, PgServer, TestDatabase};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n";

/// What the server sends before it closes the connection, or `None` if it keeps it open
/// for `wait`.
async fn read_until_closed(stream: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(wait, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    });
    read.await.ok().map(|()| received)
}

/// The head of the next response on a keep-alive connection, within `wait`.
async fn response_head(stream: &mut TcpStream, wait: Duration) -> Option<String> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(wait, async {
        let mut buffer = [0u8; 4096];
        while !received.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    });
    read.await.ok()?;
    (!received.is_empty()).then(|| String::from_utf8_lossy(&received).into_owned())
}

/// A client that sends half a request and stalls is cut off (about 10 s), unanswered.
async fn assert_stalled_request_is_closed(addr: SocketAddr) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: te").await.unwrap();
    let received = read_until_closed(&mut stream, Duration::from_secs(15))
        .await
        .expect("the server still held the half-sent request's connection open after 15 s");
    let text = String::from_utf8_lossy(&received);
    assert!(!text.contains(" 200 "), "a half-sent request was answered: {text}");
}

/// With `limit` connections open, one more waits unserved until one of them closes.
async fn assert_connection_limit(addr: SocketAddr, limit: usize) {
    let mut open = Vec::new();
    for _ in 0..limit {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(HEALTHZ).await.unwrap();
        let head = response_head(&mut stream, Duration::from_secs(5)).await.expect("a connection under the limit");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        open.push(stream);
    }
    let mut excess = TcpStream::connect(addr).await.unwrap();
    excess.write_all(HEALTHZ).await.unwrap();
    assert_eq!(
        response_head(&mut excess, Duration::from_secs(1)).await,
        None,
        "a connection past the limit was served while {limit} were open"
    );
    drop(open.pop());
    let head = response_head(&mut excess, Duration::from_secs(5)).await.expect("served once a connection closed");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn the_hub_closes_a_connection_whose_request_headers_stall() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    assert_stalled_request_is_closed(hub.addr).await;
}

/// Fills the `limit` connections with clients that pipeline requests for `path` and never
/// read the answers; they are closed in bounded time and a fresh request is served.
async fn assert_unread_responses_do_not_hold_connections(addr: SocketAddr, limit: usize, path: &str) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").repeat(400);
    let mut writers = Vec::new();
    for _ in 0..limit {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(1024).unwrap();
        let mut stream = socket.connect(addr).await.unwrap();
        let request = request.clone();
        // The writer keeps the stream (never reading) until the server gives up on it.
        writers.push(tokio::spawn(async move {
            let _ = stream.write_all(request.as_bytes()).await;
            std::future::pending::<()>().await;
            drop(stream);
        }));
    }
    let client = reqwest::Client::builder().timeout(Duration::from_secs(90)).build().unwrap();
    let fresh = client.get(format!("http://{addr}/healthz")).send().await;
    let fresh = fresh.expect("a fresh request was still unanswered after 90 s while clients left responses unread");
    assert_eq!(fresh.status(), 200);
    for writer in writers {
        writer.abort();
    }
}

#[tokio::test]
async fn the_hub_closes_connections_whose_responses_are_never_read() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[("HUB_MAX_CONNECTIONS", "3")]).await;
    assert_unread_responses_do_not_hold_connections(hub.addr, 3, "/openapi.json").await;
}

#[tokio::test]
async fn the_hub_holds_connections_past_its_limit_until_one_closes() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[("HUB_MAX_CONNECTIONS", "3")]).await;
    assert_connection_limit(hub.addr, 3).await;
}

#[tokio::test]
async fn the_hub_answers_a_request_whose_body_stalls_within_its_request_timeout() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[]).await;
    let mut stream = TcpStream::connect(hub.addr).await.unwrap();
    let head = format!(
        "POST /v1/organizations HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {OPERATOR_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let head = response_head(&mut stream, Duration::from_secs(45))
        .await
        .expect("a request whose body stalled was still unanswered after 45 s");
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.to_ascii_lowercase().contains("application/problem+json"), "{head}");
}

/// A request refused before its body is read (a bad key) still gets its answer whole, and
/// the connection then serves the next request: the server reads the rest of the body
/// instead of resetting a connection the client is still sending on.
async fn assert_refused_body_leaves_connection_usable(addr: SocketAddr, path: &str, size: usize) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let body = format!("{{\"type\":\"x.y\",\"name\":\"{}\"}}", "n".repeat(size));
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer not-a-key\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (mut read, mut write) = stream.split();
    let (sent, answer) = tokio::join!(write.write_all(request.as_bytes()), async {
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        // The whole answer: its head and its problem body, which ends the JSON object.
        while !(received.windows(4).any(|w| w == b"\r\n\r\n") && received.ends_with(b"}")) {
            match tokio::time::timeout(Duration::from_secs(20), read.read(&mut buffer)).await {
                Ok(Ok(n)) if n > 0 => received.extend_from_slice(&buffer[..n]),
                other => panic!("{path}, {size} bytes: the answer was cut off ({other:?}) after {received:?}"),
            }
        }
        String::from_utf8_lossy(&received).into_owned()
    });
    sent.unwrap_or_else(|e| panic!("{path}, {size} bytes: the connection was reset while sending the body: {e}"));
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(!answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    stream.write_all(HEALTHZ).await.unwrap();
    let head = response_head(&mut stream, Duration::from_secs(10)).await.expect("the next request on the connection");
    assert!(head.starts_with("HTTP/1.1 200"), "{path}, {size} bytes: {head}");
}

#[tokio::test]
async fn a_request_refused_before_its_body_is_read_is_answered_and_its_connection_reused() {
    let db = TestDatabase::new().await;
    let hub = HubProcess::spawn(&db.url, &["--single-node"], &[("HUB_AUTH_FAILURES_PER_MINUTE", "100000")]).await;
    for (path, size) in [("/v1/workspaces", 600_000), ("/v1/interactions", 200_000)] {
        assert_refused_body_leaves_connection_usable(hub.addr, path, size).await;
    }
}

async fn instance(nats: &NatsServer, db: &TestDatabase, env: &[(&str, &str)]) -> (HubProcess, HubProcess) {
    let hub = HubProcess::spawn(&db.url, &[], &[("NATS_URL", &nats.url())]).await;
    let instance_db = PgServer::shared().empty_database().await;
    let instance = HubProcess::instance_with_env("alpha", &instance_db.url, &nats.url(), &hub.url(""), env).await;
    (hub, instance)
}

#[tokio::test]
async fn an_instance_closes_a_connection_whose_request_headers_stall() {
    let (nats, db) = (NatsServer::start().unwrap(), TestDatabase::new().await);
    let (_hub, instance) = instance(&nats, &db, &[]).await;
    assert_stalled_request_is_closed(instance.addr).await;
}

#[tokio::test]
async fn an_instance_holds_connections_past_its_limit_until_one_closes() {
    let (nats, db) = (NatsServer::start().unwrap(), TestDatabase::new().await);
    let (_hub, instance) = instance(&nats, &db, &[("INSTANCE_MAX_CONNECTIONS", "2")]).await;
    assert_connection_limit(instance.addr, 2).await;
}
