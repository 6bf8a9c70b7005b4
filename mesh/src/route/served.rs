//! What a served call hands back: a unary answer, or a stream of answers that keeps what the
//! call holds (the pod's and the copy's permits, the attempt's gate) until it ends, and records
//! the call's metrics when it ends however it ends.

use bytes::Bytes;
use futures::Stream;
use futures::stream::BoxStream;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::Code;
use tonic::metadata::MetadataMap;
use tonic::{Status, metadata::MetadataMap as Md};

/// A successful answer.
pub enum Served {
    /// A unary call's response headers and message.
    Unary(MetadataMap, Bytes),
    /// A stream's response headers and messages.
    Stream(Md, Held),
}

/// Called once when a stream ends: with its status code (OK for a clean end, CANCELLED when
/// the client went away first).
pub type OnEnd = Box<dyn FnOnce(Code) + Send>;

/// A response stream with what it holds until it ends.
pub struct Held {
    inner: BoxStream<'static, Result<Bytes, Status>>,
    holds: Vec<Box<dyn Send>>,
    on_end: Vec<OnEnd>,
    /// Remove this metadata key from error statuses (a peer's outcome marker, before a client
    /// sees it).
    strip: Option<&'static str>,
}

impl Held {
    /// Wraps `inner`.
    pub fn new(inner: BoxStream<'static, Result<Bytes, Status>>) -> Self {
        Held {
            inner,
            holds: Vec::new(),
            on_end: Vec::new(),
            strip: None,
        }
    }

    /// Keeps `x` alive until the stream is dropped.
    pub fn hold(mut self, x: impl Send + 'static) -> Self {
        self.holds.push(Box::new(x));
        self
    }

    /// Runs `f` once when the stream ends.
    pub fn on_end(mut self, f: impl FnOnce(Code) + Send + 'static) -> Self {
        self.on_end.push(Box::new(f));
        self
    }

    /// Removes metadata `key` from any error the stream ends with.
    pub fn strip(mut self, key: &'static str) -> Self {
        self.strip = Some(key);
        self
    }

    fn end(&mut self, code: Code) {
        for f in self.on_end.drain(..) {
            f(code);
        }
    }
}

impl Stream for Held {
    type Item = Result<Bytes, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = std::task::ready!(self.inner.as_mut().poll_next(cx));
        match &item {
            None => self.end(Code::Ok),
            Some(Err(s)) => {
                let code = s.code();
                self.end(code);
            }
            Some(Ok(_)) => {}
        }
        Poll::Ready(match (item, self.strip) {
            (Some(Err(mut s)), Some(key)) => {
                s.metadata_mut().remove(key);
                Some(Err(s))
            }
            (item, _) => item,
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.end(Code::Cancelled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn records_the_end_once_and_releases_what_it_holds() {
        let ends = Arc::new(Mutex::new(Vec::new()));
        let held = Arc::new(());
        let e = ends.clone();
        let items: Vec<Result<Bytes, Status>> =
            vec![Ok(Bytes::from_static(b"a")), Err(Status::internal("boom"))];
        let mut s = Held::new(futures::stream::iter(items).boxed())
            .hold(held.clone())
            .on_end(move |c| e.lock().unwrap().push(c));
        assert!(s.next().await.unwrap().is_ok());
        assert_eq!(s.next().await.unwrap().unwrap_err().code(), Code::Internal);
        assert_eq!(Arc::strong_count(&held), 2);
        drop(s);
        assert_eq!(Arc::strong_count(&held), 1, "released with the stream");
        assert_eq!(*ends.lock().unwrap(), vec![Code::Internal], "once");
    }

    #[tokio::test]
    async fn a_dropped_stream_counts_as_cancelled() {
        let ends = Arc::new(Mutex::new(Vec::new()));
        let e = ends.clone();
        let s = Held::new(futures::stream::pending().boxed())
            .on_end(move |c| e.lock().unwrap().push(c));
        drop(s);
        assert_eq!(*ends.lock().unwrap(), vec![Code::Cancelled]);
    }

    #[tokio::test]
    async fn strips_the_marker_from_errors() {
        let mut st = Status::unavailable("x");
        st.metadata_mut()
            .insert("mm-outcome", "not-here".parse().unwrap());
        let mut s = Held::new(futures::stream::iter(vec![Err(st)]).boxed()).strip("mm-outcome");
        let err = s.next().await.unwrap().unwrap_err();
        assert!(err.metadata().get("mm-outcome").is_none());
    }
}
