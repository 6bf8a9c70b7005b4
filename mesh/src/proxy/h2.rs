//! Unary gRPC calls with raw message bytes over one pooled HTTP/2 connection (the runtime's
//! data port). No tonic channel, whose buffer task costs a wake-up per request, and no codec,
//! which buffers and re-encodes each message: the request's bytes go out as they came in and
//! the answer's message is sliced out of the response body.

use super::frame::{Frames, GRPC, sanitized};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 windows (as on our servers): a 1 MiB tensor never waits for a window update.
const WINDOW: u32 = 4 << 20;

#[derive(Debug, Clone)]
enum Endpoint {
    Tcp(String),
    Unix(PathBuf),
}

/// A lazily connected, self-healing HTTP/2 connection for unary gRPC calls.
pub struct H2Client {
    endpoint: Endpoint,
    authority: String,
    conn: Mutex<Option<SendRequest<Frames>>>,
    connecting: tokio::sync::Mutex<()>,
}

impl H2Client {
    /// A client for `addr`: `host:port`, `http://host:port` or `unix:/path`.
    pub fn new(addr: &str) -> Result<Self, String> {
        let (endpoint, authority) = if let Some(path) = addr.strip_prefix("unix:") {
            (Endpoint::Unix(PathBuf::from(path)), "localhost".to_string())
        } else {
            let hostport = addr
                .strip_prefix("http://")
                .unwrap_or(addr)
                .trim_end_matches('/');
            if hostport.is_empty() || hostport.contains('/') || addr.starts_with("https://") {
                return Err(format!(
                    "runtime address {addr} must be host:port, http://host:port or unix:/path"
                ));
            }
            (Endpoint::Tcp(hostport.to_string()), hostport.to_string())
        };
        http::uri::Authority::try_from(authority.as_str())
            .map_err(|e| format!("runtime address {addr}: {e}"))?;
        Ok(H2Client {
            endpoint,
            authority,
            conn: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        })
    }

    fn cached(&self) -> Option<SendRequest<Frames>> {
        let g = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        g.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    /// The shared connection, opened if there is none or it closed (one opener at a time).
    async fn sender(&self) -> Result<SendRequest<Frames>, Status> {
        if let Some(s) = self.cached() {
            return Ok(s);
        }
        let _one = self.connecting.lock().await;
        if let Some(s) = self.cached() {
            return Ok(s);
        }
        let s = tokio::time::timeout(CONNECT_TIMEOUT, self.connect())
            .await
            .map_err(|_| {
                Status::unavailable(format!(
                    "runtime connection to {} timed out after {CONNECT_TIMEOUT:?}",
                    self.authority
                ))
            })??;
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(s.clone());
        Ok(s)
    }

    async fn connect(&self) -> Result<SendRequest<Frames>, Status> {
        let refused = |e: std::io::Error| {
            Status::unavailable(format!(
                "runtime connection to {:?} failed: {e}",
                self.endpoint
            ))
        };
        match &self.endpoint {
            Endpoint::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a).await.map_err(refused)?;
                s.set_nodelay(true).map_err(refused)?;
                handshake(s).await
            }
            Endpoint::Unix(p) => {
                handshake(tokio::net::UnixStream::connect(p).await.map_err(refused)?).await
            }
        }
    }

    /// Calls `path` (`/package.Service/Method`) with `metadata`, the message `msg` and an
    /// optional deadline; returns the answer's metadata and message. A broken connection is an
    /// UNAVAILABLE status; the runtime's own errors come back as it sent them.
    pub async fn unary(
        &self,
        path: &str,
        metadata: HeaderMap,
        msg: Bytes,
        timeout: Option<Duration>,
    ) -> Result<(MetadataMap, Bytes), Status> {
        let mut sender = self.sender().await?;
        if let Err(e) = sender.ready().await {
            return Err(Status::unavailable(format!("runtime connection lost: {e}")));
        }
        let uri = http::Uri::builder()
            .scheme("http")
            .authority(self.authority.as_str())
            .path_and_query(path)
            .build()
            .map_err(|e| Status::invalid_argument(format!("invalid method path {path}: {e}")))?;
        let mut req = http::Request::new(Frames::message(msg, None)?);
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri;
        let h = req.headers_mut();
        *h = sanitized(metadata);
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(GRPC));
        h.insert(http::header::TE, HeaderValue::from_static("trailers"));
        if let Some(t) = timeout {
            h.insert("grpc-timeout", grpc_timeout(t));
        }
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| Status::unavailable(format!("runtime connection lost: {e}")))?;
        let (parts, body) = resp.into_parts();
        if parts.status != StatusCode::OK {
            return Err(http_status(parts.status));
        }
        // Trailers-only: an error before any message.
        if let Some(s) = status_of(&parts.headers) {
            return Err(if s.code() == Code::Ok {
                Status::internal("the runtime answered OK without a message")
            } else {
                s
            });
        }
        let body = body
            .collect()
            .await
            .map_err(|e| Status::unavailable(format!("runtime connection lost mid-answer: {e}")))?;
        match body.trailers().and_then(status_of) {
            Some(s) if s.code() == Code::Ok => {}
            Some(s) => return Err(s),
            None => {
                return Err(Status::internal(
                    "the runtime's answer ended without a grpc-status",
                ));
            }
        }
        let msg = super::frame::unframe(body.to_bytes(), usize::MAX)?;
        Ok((MetadataMap::from_headers(sanitized(parts.headers)), msg))
    }
}

async fn handshake<T>(io: T) -> Result<SendRequest<Frames>, Status>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| Status::unavailable(format!("runtime HTTP/2 handshake failed: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "runtime connection closed");
        }
    });
    Ok(send)
}

/// The gRPC status in `h` (headers of a trailers-only answer, or trailers), if any. Parsed by
/// hand: tonic's parser panics on a malformed `grpc-status-details-bin`, which a peer controls;
/// that header stays in the metadata and so reaches the client unchanged.
fn status_of(h: &HeaderMap) -> Option<Status> {
    let code = Code::from_bytes(h.get("grpc-status")?.as_bytes());
    let msg = h
        .get("grpc-message")
        .map(|v| {
            percent_encoding::percent_decode(v.as_bytes())
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    let mut md = sanitized(h.clone());
    md.remove(http::header::CONTENT_LENGTH);
    Some(Status::with_metadata(
        code,
        msg,
        MetadataMap::from_headers(md),
    ))
}

/// The gRPC status for a non-200 HTTP answer (the gRPC-over-HTTP/2 spec's mapping).
fn http_status(s: StatusCode) -> Status {
    let code = match s.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    };
    Status::new(code, format!("the runtime answered HTTP {s}"))
}

/// A `grpc-timeout` value: at most 8 digits, in the finest unit that fits.
fn grpc_timeout(t: Duration) -> HeaderValue {
    let us = t.as_micros();
    let v = if us < 100_000_000 {
        format!("{us}u")
    } else if us / 1_000 < 100_000_000 {
        format!("{}m", us / 1_000)
    } else {
        format!("{}S", (us / 1_000_000).min(99_999_999))
    };
    HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("99999999S"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_fit_in_eight_digits() {
        assert_eq!(grpc_timeout(Duration::from_millis(1500)), "1500000u");
        assert_eq!(grpc_timeout(Duration::from_secs(1000)), "1000000m");
        assert_eq!(grpc_timeout(Duration::from_secs(10_000_000)), "10000000S");
        assert_eq!(grpc_timeout(Duration::MAX), "99999999S");
    }

    #[test]
    fn statuses_are_read_without_trusting_the_peer() {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", "5".parse().unwrap());
        h.insert("grpc-message", "no model %27x%27".parse().unwrap());
        h.insert("grpc-status-details-bin", "!!not base64!!".parse().unwrap());
        h.insert("content-type", "application/grpc".parse().unwrap());
        let s = status_of(&h).unwrap();
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(s.message(), "no model 'x'");
        assert!(s.metadata().get("content-type").is_none());
        assert!(status_of(&HeaderMap::new()).is_none());
        assert_eq!(
            http_status(StatusCode::SERVICE_UNAVAILABLE).code(),
            Code::Unavailable
        );
    }

    #[test]
    fn addresses() {
        assert!(H2Client::new("127.0.0.1:8001").is_ok());
        assert!(H2Client::new("http://127.0.0.1:8001").is_ok());
        assert!(H2Client::new("unix:/tmp/x.sock").is_ok());
        assert!(H2Client::new("https://x:1").is_err());
        assert!(H2Client::new("").is_err());
    }
}
