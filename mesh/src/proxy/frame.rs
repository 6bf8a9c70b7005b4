//! gRPC message framing on raw HTTP/2 bodies, for the pass-through data path: a request body is
//! one length-prefixed message that is sliced out without copying, and an answer is sent as
//! the 5-byte prefix and the message bytes as two chunks, so the payload is never copied into
//! a new buffer. (tonic's codec layer buffers and re-encodes every message, which cost the
//! sidecar twice nginx's CPU on 1 MiB requests; see docs/benchmarks.md.)

use bytes::Bytes;
use http::HeaderMap;
use http_body::Frame;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::Status;

/// The gRPC content type.
pub const GRPC: &str = "application/grpc";

/// The one message of a unary gRPC body (prefix checked: uncompressed, complete, one message,
/// at most `max` bytes).
pub fn unframe(body: Bytes, max: usize) -> Result<Bytes, Status> {
    if body.len() < 5 {
        return Err(Status::internal(format!(
            "gRPC message truncated: {} bytes, not even a 5-byte prefix",
            body.len()
        )));
    }
    if body[0] != 0 {
        return Err(Status::unimplemented(
            "compressed gRPC messages are not supported; send them uncompressed",
        ));
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if len > max {
        return Err(too_large(Some(len), max));
    }
    match (body.len() - 5).cmp(&len) {
        std::cmp::Ordering::Less => Err(Status::internal(format!(
            "gRPC message truncated: the prefix says {len} bytes, {} arrived",
            body.len() - 5
        ))),
        std::cmp::Ordering::Greater => Err(Status::unimplemented(
            "more than one message in a unary call",
        )),
        std::cmp::Ordering::Equal => Ok(body.slice(5..)),
    }
}

/// RESOURCE_EXHAUSTED for a request message over `max` bytes (`len` when known).
pub fn too_large(len: Option<usize>, max: usize) -> Status {
    let size = len.map_or("more than the limit".to_string(), |n| format!("{n} bytes"));
    Status::resource_exhausted(format!(
        "request message too large: {size}; the limit is {max} bytes (MM_SVC_GRPC_MAX_MSG_SIZE)"
    ))
}

/// The 5-byte prefix of an uncompressed message of `len` bytes.
fn prefix(len: usize) -> Result<Bytes, Status> {
    let n = u32::try_from(len).map_err(|_| {
        Status::resource_exhausted(format!("message of {len} bytes is too large for gRPC"))
    })?;
    let mut p = [0u8; 5];
    p[1..].copy_from_slice(&n.to_be_bytes());
    Ok(Bytes::copy_from_slice(&p))
}

/// An HTTP body made of prepared frames (data chunks, then optional trailers).
#[derive(Debug, Default)]
pub struct Frames(VecDeque<Frame<Bytes>>);

impl Frames {
    /// One gRPC message (prefix and bytes as two chunks), then `trailers` if given.
    pub fn message(msg: Bytes, trailers: Option<HeaderMap>) -> Result<Self, Status> {
        let mut f = VecDeque::with_capacity(3);
        f.push_back(Frame::data(prefix(msg.len())?));
        if !msg.is_empty() {
            f.push_back(Frame::data(msg));
        }
        if let Some(t) = trailers {
            f.push_back(Frame::trailers(t));
        }
        Ok(Frames(f))
    }
}

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// Headers gRPC reserves for itself, dropped from metadata copied between calls.
const RESERVED: [&str; 5] = [
    "te",
    "content-type",
    "grpc-message",
    "grpc-message-type",
    "grpc-status",
];

/// `headers` without the ones gRPC reserves.
pub fn sanitized(mut headers: HeaderMap) -> HeaderMap {
    for h in RESERVED {
        headers.remove(h);
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn framed(msg: &[u8]) -> Bytes {
        let mut v = vec![0u8];
        v.extend((msg.len() as u32).to_be_bytes());
        v.extend(msg);
        Bytes::from(v)
    }

    #[test]
    fn unframes_exactly_one_uncompressed_message() {
        assert_eq!(&unframe(framed(b"hello"), 100).unwrap()[..], b"hello");
        assert_eq!(unframe(framed(b""), 100).unwrap().len(), 0);
        let too_big = unframe(framed(b"hello"), 4).unwrap_err();
        assert_eq!(too_big.code(), tonic::Code::ResourceExhausted);
        let mut compressed = framed(b"x").to_vec();
        compressed[0] = 1;
        assert_eq!(
            unframe(compressed.into(), 100).unwrap_err().code(),
            tonic::Code::Unimplemented
        );
        let full = framed(b"hello");
        assert_eq!(
            unframe(full.slice(..7), 100).unwrap_err().code(),
            tonic::Code::Internal
        );
        assert_eq!(
            unframe(full.slice(..3), 100).unwrap_err().code(),
            tonic::Code::Internal
        );
        let mut two = framed(b"a").to_vec();
        two.extend(framed(b"b").to_vec());
        assert_eq!(
            unframe(two.into(), 100).unwrap_err().code(),
            tonic::Code::Unimplemented
        );
    }

    #[tokio::test]
    async fn frames_round_trip_with_trailers() {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", "0".parse().unwrap());
        let body = Frames::message(Bytes::from_static(b"payload"), Some(t))
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(body.trailers().unwrap()["grpc-status"], "0");
        assert_eq!(&unframe(body.to_bytes(), 100).unwrap()[..], b"payload");
    }

    #[test]
    fn reserved_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/grpc".parse().unwrap());
        h.insert("x-user", "1".parse().unwrap());
        let h = sanitized(h);
        assert!(h.get("content-type").is_none() && h.get("x-user").is_some());
    }
}
