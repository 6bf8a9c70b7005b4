//! What every server of the sidecar allows one client: HTTP/2 streams per connection,
//! keepalive pings that find dead peers, caps on the resets h2 accepts (the "rapid reset" and
//! "made you reset" floods), header sizes, and for REST a header-read timeout (which is also the
//! idle timeout between keep-alive requests) and a cap on open connections. Defaults of the
//! libraries left streams and resets unlimited and REST without any timeout.

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Concurrent HTTP/2 streams on one gRPC connection (clients multiplex many calls on one).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 1024;
/// Concurrent HTTP/2 streams on one REST connection (REST clients rarely multiplex).
pub const MAX_REST_STREAMS_PER_CONNECTION: u32 = 100;
/// HTTP/2 keepalive ping interval and how long to wait for its answer.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// See [`KEEPALIVE_INTERVAL`].
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Streams a client may open and reset before we accepted them.
pub const MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams we may reset because of the client's errors before the connection is closed.
pub const MAX_LOCAL_ERROR_RESETS: usize = 1024;
/// Largest request header block, in bytes.
pub const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;
/// How long a REST client has to send a request's headers, and to start the next request on a
/// keep-alive connection.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Open REST connections; further ones wait in the listen backlog.
pub const MAX_REST_CONNECTIONS: usize = 4096;
/// How long in-flight REST requests get at shutdown.
const REST_DRAIN: Duration = Duration::from_secs(10);

/// A tonic server builder with the limits above.
pub fn harden(b: tonic::transport::Server) -> tonic::transport::Server {
    b.max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESETS))
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
}

/// Serves `app` over HTTP/1.1 and HTTP/2 on `listener` (plain TCP or TLS) with the limits
/// above, until `shutdown` resolves; then in-flight requests get [`REST_DRAIN`].
pub async fn serve_http<L>(
    mut listener: L,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_headers(100);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_REST_STREAMS_PER_CONNECTION)
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESETS)
        .max_header_list_size(MAX_HEADER_LIST_BYTES);
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_REST_CONNECTIONS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (io, _) = tokio::select! {
            c = listener.accept() => c,
            () = &mut shutdown => break,
        };
        let svc = TowerToHyperService::new(app.clone());
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(io), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "REST connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(REST_DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("REST requests still running after the drain period; closing");
    }
    Ok(())
}
