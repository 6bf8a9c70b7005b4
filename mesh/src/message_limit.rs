//! The largest message a client may send (`MM_SVC_GRPC_MAX_MSG_SIZE`), enforced on the gRPC
//! frame headers of the request body before a byte of the message is buffered, and answered
//! with RESOURCE_EXHAUSTED, as grpc-go, grpc-java and upstream ModelMesh answer. tonic's own
//! limit answers OUT_OF_RANGE with a message that names no setting, so this runs first and
//! tonic's limit never triggers.
//!
//! gRPC frames are a 1-byte flag and a 4-byte big-endian length, then the message. The body is
//! read frame by frame as it arrives, so a header split across two HTTP/2 data frames is handled.

use bytes::{Buf, Bytes};
use http_body::{Body, Frame};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tonic::Status;

/// How many bytes REST bodies may hold per byte of `MM_SVC_GRPC_MAX_MSG_SIZE` (JSON is larger
/// than the binary tensor it carries).
pub const REST_BODY_FACTOR: usize = 4;

/// The largest REST body: [`REST_BODY_FACTOR`] times the gRPC limit, but no more than an
/// eighth of the sidecar's memory (when its container has a limit), and never less than the
/// gRPC limit itself. A few bodies being read at once must not be able to run the sidecar out
/// of memory.
pub fn rest_body_limit(max_message: usize, memory_limit: Option<u64>) -> usize {
    let wanted = max_message.saturating_mul(REST_BODY_FACTOR);
    match memory_limit.and_then(|m| usize::try_from(m / 8).ok()) {
        Some(cap) => wanted.min(cap).max(max_message),
        None => wanted,
    }
}

/// The status of a request over the limit: RESOURCE_EXHAUSTED, naming the size, the limit and
/// the setting that raises it.
pub fn too_large(what: &str, size: Option<u64>, limit: usize) -> Status {
    Status::resource_exhausted(too_large_text(what, size, limit))
}

/// The message of [`too_large`] (REST answers 413 with the same text).
pub fn too_large_text(what: &str, size: Option<u64>, limit: usize) -> String {
    let size = match size {
        Some(n) => format!("of {n} bytes "),
        None => String::new(),
    };
    format!(
        "{what} {size}is over this mesh's limit of {limit} bytes ({}); raise MM_SVC_GRPC_MAX_MSG_SIZE (modelmesh sidecar --max-message-size) to accept it",
        modelmesh_settings::size::format_binary(limit as u64)
    )
}

/// Where the reader is in the stream of gRPC frames.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Reading a frame header: `got` of its 5 bytes so far.
    Header { buf: [u8; 5], got: usize },
    /// Inside a message: this many bytes of it are still to come.
    Message(u64),
    /// Refused; the body ends.
    Done,
}

/// A request body that fails with RESOURCE_EXHAUSTED as soon as a frame header announces a
/// message over `limit` bytes.
#[derive(Debug)]
pub struct LimitedFrames<B> {
    inner: B,
    limit: usize,
    state: State,
}

impl<B> LimitedFrames<B> {
    /// Wraps `inner`, refusing messages over `limit` bytes.
    pub fn new(inner: B, limit: usize) -> Self {
        LimitedFrames {
            inner,
            limit,
            state: State::Header {
                buf: [0; 5],
                got: 0,
            },
        }
    }

    /// Advances over `data`; the length of a message over the limit, if one starts.
    fn scan(&mut self, mut data: &[u8]) -> Option<u64> {
        while !data.is_empty() {
            match &mut self.state {
                State::Header { buf, got } => {
                    let take = (5 - *got).min(data.len());
                    buf[*got..*got + take].copy_from_slice(&data[..take]);
                    *got += take;
                    data.advance(take);
                    if *got == 5 {
                        let len = u64::from(u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]));
                        if len > self.limit as u64 {
                            self.state = State::Done;
                            return Some(len);
                        }
                        self.state = if len == 0 {
                            State::Header {
                                buf: [0; 5],
                                got: 0,
                            }
                        } else {
                            State::Message(len)
                        };
                    }
                }
                State::Message(left) => {
                    let take = (*left).min(data.len() as u64);
                    *left -= take;
                    data.advance(take as usize);
                    if *left == 0 {
                        self.state = State::Header {
                            buf: [0; 5],
                            got: 0,
                        };
                    }
                }
                State::Done => return None,
            }
        }
        None
    }
}

impl<B> Body for LimitedFrames<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if matches!(self.state, State::Done) {
            return Poll::Ready(None);
        }
        let frame = match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
            Some(Ok(f)) => f,
            // A client that resets its stream (HTTP/2 CANCEL) would read as a clean end to
            // tonic, which ends a request stream quietly on CANCELLED: the runtime would take
            // a broken stream for a finished one. ABORTED, with no HTTP/2 cause, is an error
            // everywhere downstream.
            Some(Err(e)) => {
                let e: Box<dyn std::error::Error + Send + Sync> = e.into();
                let status = Status::aborted(format!("the client's stream broke: {e}"));
                return Poll::Ready(Some(Err(Box::new(status))));
            }
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref()
            && let Some(len) = self.scan(data)
        {
            let status = too_large("gRPC message", Some(len), self.limit);
            return Poll::Ready(Some(Err(Box::new(status))));
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done) || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn frame(len: u32) -> Vec<u8> {
        let mut v = vec![0u8];
        v.extend_from_slice(&len.to_be_bytes());
        v.extend(std::iter::repeat_n(7u8, len as usize));
        v
    }

    /// Feeds `chunks` through the limit; the error's status if it refused.
    async fn run(chunks: Vec<Vec<u8>>, limit: usize) -> Result<usize, Status> {
        let stream = futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(c)))),
        );
        let mut body = LimitedFrames::new(http_body_util::StreamBody::new(stream), limit);
        let mut n = 0;
        while let Some(f) = body.frame().await {
            match f {
                Ok(f) => n += f.data_ref().map_or(0, |d| d.len()),
                Err(e) => match e.downcast::<Status>() {
                    Ok(s) => return Err(*s),
                    Err(e) => panic!("not a status: {e}"),
                },
            }
        }
        Ok(n)
    }

    #[test]
    fn rest_bodies_fit_the_sidecars_memory() {
        assert_eq!(rest_body_limit(16 << 20, None), 64 << 20);
        // 448 MiB, the chart's default limit: 56 MiB.
        assert_eq!(rest_body_limit(16 << 20, Some(448 << 20)), 56 << 20);
        assert_eq!(rest_body_limit(16 << 20, Some(64 << 20)), 16 << 20);
        assert_eq!(rest_body_limit(1 << 20, Some(1 << 40)), 4 << 20);
    }

    #[tokio::test]
    async fn messages_up_to_the_limit_pass_through() {
        let mut all = frame(10);
        all.extend(frame(0));
        all.extend(frame(10));
        assert_eq!(run(vec![all.clone()], 10).await.ok(), Some(all.len()));
    }

    #[tokio::test]
    async fn a_message_over_the_limit_is_resource_exhausted_naming_the_setting() {
        let Err(s) = run(vec![frame(11)], 10).await else {
            panic!("an 11-byte message passed a 10-byte limit");
        };
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        let msg = s.message();
        assert!(
            msg.contains("11 bytes") && msg.contains("limit of 10 bytes"),
            "{msg}"
        );
        assert!(msg.contains("MM_SVC_GRPC_MAX_MSG_SIZE"), "{msg}");
    }

    #[tokio::test]
    async fn headers_split_across_chunks_are_read() {
        // A good message, then an oversized one whose header arrives one byte at a time.
        let mut chunks = vec![frame(3)];
        for b in frame(100)[..5].iter() {
            chunks.push(vec![*b]);
        }
        let e = run(chunks, 50).await.err().map(|s| s.code());
        assert_eq!(e, Some(tonic::Code::ResourceExhausted));
        // A message split in the middle of its body, then a second header.
        let mut m = frame(40);
        m.extend(frame(40));
        let (a, b) = m.split_at(23);
        assert_eq!(run(vec![a.to_vec(), b.to_vec()], 40).await.ok(), Some(90));
    }

    #[tokio::test]
    async fn a_reset_client_stream_is_an_error_not_an_end() {
        let chunks: Vec<Result<Frame<Bytes>, h2::Error>> = vec![
            Ok(Frame::data(Bytes::from(frame(3)))),
            Err(h2::Error::from(h2::Reason::CANCEL)),
        ];
        let mut body = LimitedFrames::new(
            http_body_util::StreamBody::new(futures::stream::iter(chunks)),
            1024,
        );
        assert!(body.frame().await.unwrap().is_ok());
        let err = body.frame().await.unwrap().expect_err("an error");
        let status = err.downcast::<Status>().expect("a status");
        assert_eq!(status.code(), tonic::Code::Aborted);
        assert!(std::error::Error::source(&*status).is_none());
    }
}
