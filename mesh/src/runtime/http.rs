//! One HTTP/1.1 exchange with the runtime's HTTP API (llama.cpp's router): a connection per
//! request, whose I/O is driven by whoever reads the answer.
//!
//! Why not reqwest's pooled client: llama.cpp's router answers every proxied request with
//! `Connection: close`, so a pool never reuses a connection, and the pooled client runs each
//! connection as a task of its own that hands every chunk to the reader through a channel: a
//! task switch per token and several layers (URL parsing, redirects, retries, the pool) per
//! request on the pod that runs the model. Here the answer's stream polls the connection
//! itself, so a token goes from the runtime's socket to the next hop in one task.

use bytes::Bytes;
use futures::Stream;
use http_body::Body as _;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// How long connecting to the runtime may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// No connection, or the connection broke before the answer's head.
    #[error("the runtime's HTTP API is not reachable at {addr}: {reason}")]
    Unreachable {
        /// The runtime's address.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The deadline passed before the answer's head.
    #[error("the deadline expired before the runtime answered")]
    Deadline,
    /// The request could not be built (a bad address or path).
    #[error("bad request to the runtime: {0}")]
    Request(String),
}

/// How an answer's body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The connection broke or the body was malformed.
    #[error("the runtime's answer broke off: {0}")]
    Broken(String),
    /// The deadline passed while the answer was streaming.
    #[error("the deadline expired while the runtime was answering")]
    Deadline,
}

/// The runtime's HTTP API at one address.
#[derive(Debug, Clone)]
pub struct HttpApi {
    addr: String,
}

impl HttpApi {
    /// The API at `addr` (`host:port`).
    pub fn new(addr: &str) -> Result<Self, String> {
        if addr.is_empty() || addr.contains('/') || !addr.contains(':') {
            return Err(format!(
                "the runtime's HTTP address must be host:port, not {addr:?}"
            ));
        }
        Ok(HttpApi {
            addr: addr.to_string(),
        })
    }

    /// Posts `body` (JSON) to `path`; the answer's head once it is here, its body as a stream
    /// that drives the connection. `deadline` bounds the whole exchange, body included.
    pub async fn post_json(
        &self,
        path: &str,
        body: Vec<u8>,
        deadline: Option<Instant>,
    ) -> Result<Answer, ExchangeError> {
        if deadline.is_some_and(|d| d <= Instant::now()) {
            return Err(ExchangeError::Deadline);
        }
        let unreachable = |reason: String| ExchangeError::Unreachable {
            addr: self.addr.clone(),
            reason,
        };
        let connect_within = deadline.map_or(CONNECT_TIMEOUT, |d| {
            d.saturating_duration_since(Instant::now())
                .min(CONNECT_TIMEOUT)
        });
        let stream =
            match tokio::time::timeout(connect_within, TcpStream::connect(&self.addr)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(unreachable(e.to_string())),
                Err(_) if deadline.is_some_and(|d| Instant::now() >= d) => {
                    return Err(ExchangeError::Deadline);
                }
                Err(_) => return Err(unreachable("connecting timed out".into())),
            };
        // Each event must leave as soon as it is written.
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let request = http::Request::post(path)
            .header(http::header::HOST, &self.addr)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ExchangeError::Request(e.to_string()))?;
        let mut drive = Drive {
            conn: Some(Box::pin(conn)),
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d.into()))),
        };
        let sent = sender.send_request(request);
        tokio::pin!(sent);
        // The connection is polled beside the request until the head is here.
        let head = std::future::poll_fn(|cx| {
            drive.poll_conn(cx);
            if let Poll::Ready(r) = sent.as_mut().poll(cx) {
                return Poll::Ready(Ok(r));
            }
            if drive.expired(cx) {
                return Poll::Ready(Err(ExchangeError::Deadline));
            }
            Poll::Pending
        })
        .await?;
        let response = head.map_err(|e| unreachable(e.to_string()))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Answer {
            status,
            content_type,
            body: AnswerBody {
                body: response.into_body(),
                drive,
                done: false,
            },
        })
    }
}

type Conn = http1::Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// The connection and the deadline, polled by whoever waits on the exchange.
struct Drive {
    /// `None` once the connection is finished (its outcome then shows in the body).
    conn: Option<Pin<Box<Conn>>>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Drive {
    /// Lets the connection read and write what it can.
    fn poll_conn(&mut self, cx: &mut Context<'_>) {
        if let Some(c) = self.conn.as_mut()
            && c.as_mut().poll(cx).is_ready()
        {
            self.conn = None;
        }
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline
            .as_mut()
            .is_some_and(|d| d.as_mut().poll(cx).is_ready())
    }
}

/// The runtime's answer: its status, content type and body.
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The `Content-Type` header, when it is text.
    pub content_type: Option<String>,
    /// The body, read as it arrives. Dropping it closes the connection, which makes the
    /// runtime cancel the request.
    pub body: AnswerBody,
}

/// An answer's body as a stream of chunks as they arrive.
pub struct AnswerBody {
    body: Incoming,
    drive: Drive,
    done: bool,
}

impl AnswerBody {
    /// Reads up to `max` bytes of the body (the rest is dropped with the connection).
    pub async fn read_up_to(mut self, max: usize) -> Vec<u8> {
        use futures::StreamExt;
        let mut out = Vec::new();
        while let Some(Ok(c)) = self.next().await {
            out.extend_from_slice(&c[..c.len().min(max - out.len())]);
            if out.len() >= max {
                break;
            }
        }
        out
    }
}

impl Stream for AnswerBody {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        // Body first; when it has nothing, let the connection read, then look again (what the
        // connection read is handed to the body in the same call, not after a wake-up).
        for _ in 0..2 {
            loop {
                match Pin::new(&mut this.body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) if !data.is_empty() => return Poll::Ready(Some(Ok(data))),
                        _ => continue, // an empty chunk or trailers: nothing to pass on
                    },
                    Poll::Ready(Some(Err(e))) => {
                        this.done = true;
                        return Poll::Ready(Some(Err(BodyError::Broken(e.to_string()))));
                    }
                    Poll::Ready(None) => {
                        this.done = true;
                        return Poll::Ready(None);
                    }
                    Poll::Pending => break,
                }
            }
            if this.drive.conn.is_none() {
                break;
            }
            this.drive.poll_conn(cx);
        }
        if this.drive.expired(cx) {
            this.done = true;
            return Poll::Ready(Some(Err(BodyError::Deadline)));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server that reads one request and answers with `parts`, each written on its own after
    /// the previous one was read by nobody in particular (a short pause keeps them apart).
    async fn serve_once(parts: Vec<&'static [u8]>) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let h = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                req.extend_from_slice(&buf[..n]);
            }
            for p in parts {
                s.write_all(p).await.unwrap();
                s.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            req
        });
        (addr, h)
    }

    #[tokio::test]
    async fn streams_chunks_as_they_come_and_ends() {
        let (addr, server) = serve_once(vec![
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            b"7\r\ndata: a\r\n",
            b"7\r\ndata: b\r\n0\r\n\r\n",
        ])
        .await;
        let api = HttpApi::new(&addr).unwrap();
        let answer = api
            .post_json("/v1/chat/completions", b"{}".to_vec(), None)
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.content_type.as_deref(), Some("text/event-stream"));
        let chunks: Vec<Bytes> = answer.body.map(|c| c.unwrap()).collect().await;
        assert_eq!(chunks.concat(), b"data: adata: b");
        let req = String::from_utf8(server.await.unwrap()).unwrap();
        assert!(
            req.starts_with("POST /v1/chat/completions HTTP/1.1\r\n"),
            "{req}"
        );
        assert!(req.contains("content-type: application/json"), "{req}");
    }

    #[tokio::test]
    async fn a_connection_cut_mid_body_is_a_broken_answer() {
        let (addr, _server) = serve_once(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
            b"only part",
        ])
        .await;
        let answer = HttpApi::new(&addr)
            .unwrap()
            .post_json("/x", Vec::new(), None)
            .await
            .unwrap();
        let items: Vec<_> = answer.body.collect().await;
        assert!(
            matches!(items.last(), Some(Err(BodyError::Broken(_)))),
            "{items:?}"
        );
    }

    #[tokio::test]
    async fn nobody_listening_is_unreachable_and_the_deadline_holds() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let e = HttpApi::new(&addr)
            .unwrap()
            .post_json("/x", Vec::new(), None)
            .await
            .err()
            .unwrap();
        assert!(matches!(e, ExchangeError::Unreachable { .. }), "{e}");
        // A server that accepts and never answers: the deadline ends the wait.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let _keep = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(s);
        });
        let deadline = Instant::now() + Duration::from_millis(100);
        let e = HttpApi::new(&addr)
            .unwrap()
            .post_json("/x", Vec::new(), Some(deadline))
            .await
            .err()
            .unwrap();
        assert!(matches!(e, ExchangeError::Deadline), "{e}");
    }

    #[test]
    fn addresses_are_host_and_port() {
        assert!(HttpApi::new("127.0.0.1:8002").is_ok());
        assert!(HttpApi::new("localhost:8002").is_ok());
        assert!(HttpApi::new("http://x:1").is_err());
        assert!(HttpApi::new("").is_err());
        assert!(HttpApi::new("x").is_err());
    }
}
