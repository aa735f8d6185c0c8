//! Serving an axum router over TCP with the limits `axum::serve` lacks.
//!
//! Both binaries serve through [`serve`]: a connection whose request headers are not
//! complete within [`HEADER_READ_TIMEOUT`] is closed (a slow or stalled client cannot hold
//! a connection open by dribbling bytes), at most `max_connections` connections are
//! served at once (the rest wait in the listen backlog until one closes), every request
//! carries the peer's [`ConnectInfo<SocketAddr>`] like `into_make_service_with_connect_info`,
//! and once `shutdown` resolves the listener closes and in-flight requests drain.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// How long a client has to send a request's headers, from the connection's start or the
/// end of its previous response.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once unless configured otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Reads a connection limit from the environment variable `name` (a positive integer),
/// [`DEFAULT_MAX_CONNECTIONS`] when unset.
pub fn max_connections_from(name: &str, value: Option<String>) -> Result<usize, String> {
    match value {
        None => Ok(DEFAULT_MAX_CONNECTIONS),
        Some(text) => {
            text.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| format!("{name} must be a positive integer"))
        }
    }
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
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_limit_defaults_and_refuses_nonsense() {
        assert_eq!(max_connections_from("X", None), Ok(DEFAULT_MAX_CONNECTIONS));
        assert_eq!(max_connections_from("X", Some("7".into())), Ok(7));
        assert!(max_connections_from("X", Some("0".into())).is_err());
        assert!(max_connections_from("X", Some("many".into())).is_err());
    }
}
