//! A client's stream of request messages, shared by the attempts to serve it. Each attempt
//! sends the first message again; later messages wait until the target has answered (its first
//! response, or [`HOLD`] after it accepted the call), so an attempt that fails at once (a copy
//! gone, a pod down, a load failed) can be retried on another copy. Once a later message has
//! gone out the call can no longer be replayed. An error on the client's stream reaches the
//! target as an error (its stream is reset), never as a clean end.

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::{Code, Status};

/// How long messages after the first wait once the target accepted the call without answering
/// yet: a target that answers only after more messages (a decoupled model) still gets them,
/// and one that fails at once is caught before they go.
pub const HOLD: Duration = Duration::from_millis(500);

/// Rewrites each outgoing message (splicing the concrete model id into it).
pub type Splice = Arc<dyn Fn(Bytes) -> Bytes + Send + Sync>;

/// The client's stream, replayable until a message after the first has been sent anywhere.
pub struct Inbound {
    first: Bytes,
    shared: Arc<Mutex<Shared>>,
}

struct Shared {
    /// The client's messages after the first; `None` once they ended or failed.
    rest: Option<BoxStream<'static, Result<Bytes, Status>>>,
    /// A message after the first went to an attempt (or the client's stream failed).
    pulled: bool,
    /// Only the newest attempt reads; older ones end.
    generation: u64,
    /// The task of the attempt waiting for the client, woken when a newer attempt starts.
    waiting: Option<Waker>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GateState {
    Closed,
    Accepted(Instant),
    Open,
}

/// Held by whoever drives an attempt: says when its later messages may go. Dropping it before
/// it opened ends the attempt's outgoing stream.
#[derive(Debug)]
pub struct Gate(watch::Sender<GateState>);

impl Gate {
    /// The target accepted the call (its response headers came): later messages go after
    /// [`HOLD`] if it has not answered by then.
    pub fn accepted(&self) {
        self.0.send_if_modified(|s| {
            let closed = *s == GateState::Closed;
            if closed {
                *s = GateState::Accepted(Instant::now());
            }
            closed
        });
    }

    /// The target answered: later messages go now.
    pub fn open(&self) {
        self.0.send_replace(GateState::Open);
    }
}

impl Inbound {
    /// The client's stream after its `first` message.
    pub fn new(
        first: Bytes,
        rest: impl Stream<Item = Result<Bytes, Status>> + Send + 'static,
    ) -> Self {
        Inbound {
            first,
            shared: Arc::new(Mutex::new(Shared {
                rest: Some(rest.boxed()),
                pulled: false,
                generation: 0,
                waiting: None,
            })),
        }
    }

    /// The first message (what names the model).
    pub fn first(&self) -> &Bytes {
        &self.first
    }

    /// Whether another attempt would send the target everything the client sent.
    pub fn replayable(&self) -> bool {
        !lock(&self.shared).pulled
    }

    /// A new attempt's outgoing stream (every message through `splice`) and its gate. Older
    /// attempts' streams end.
    pub fn attempt(&self, splice: Splice) -> (Gate, BoxStream<'static, Result<Bytes, Status>>) {
        let generation = {
            let mut g = lock(&self.shared);
            g.generation += 1;
            if let Some(w) = g.waiting.take() {
                w.wake();
            }
            g.generation
        };
        let (tx, rx) = watch::channel(GateState::Closed);
        let first = splice(self.first.clone());
        let reader = Reader {
            shared: self.shared.clone(),
            generation,
            gate: rx,
            splice,
        };
        let rest = futures::stream::unfold(Some(reader), |reader| async move {
            let mut reader = reader?;
            if !reader.wait_for_gate().await {
                return None;
            }
            match reader.next_message().await? {
                Ok(m) => {
                    let m = (reader.splice)(m);
                    Some((Ok(m), Some(reader)))
                }
                Err(s) => Some((Err(broken(&s)), None)),
            }
        });
        let out = futures::stream::once(async move { Ok(first) }).chain(rest);
        (Gate(tx), out.boxed())
    }
}

/// The status an attempt's stream fails with when the client's broke: a new status with no
/// HTTP/2 cause, so the target's stream is reset with INTERNAL_ERROR. (A CANCEL reset would
/// read as a clean end to a tonic server.)
fn broken(s: &Status) -> Status {
    Status::new(
        Code::Aborted,
        format!("the client's request stream failed: {}", s.message()),
    )
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

struct Reader {
    shared: Arc<Mutex<Shared>>,
    generation: u64,
    gate: watch::Receiver<GateState>,
    splice: Splice,
}

impl Reader {
    /// Waits until later messages may go; false when the attempt was abandoned first.
    async fn wait_for_gate(&mut self) -> bool {
        loop {
            let state = *self.gate.borrow_and_update();
            match state {
                GateState::Open => return true,
                GateState::Accepted(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at + HOLD) => return true,
                        changed = self.gate.changed() => if changed.is_err() {
                            return false;
                        },
                    }
                }
                GateState::Closed => {
                    if self.gate.changed().await.is_err() {
                        return false;
                    }
                }
            }
        }
    }

    /// The client's next message; `None` at its end or once a newer attempt took over.
    async fn next_message(&self) -> Option<Result<Bytes, Status>> {
        futures::future::poll_fn(|cx| {
            let mut g = lock(&self.shared);
            if g.generation != self.generation {
                return Poll::Ready(None);
            }
            let Some(rest) = g.rest.as_mut() else {
                return Poll::Ready(None);
            };
            match rest.poll_next_unpin(cx) {
                Poll::Pending => {
                    g.waiting = Some(cx.waker().clone());
                    Poll::Pending
                }
                Poll::Ready(None) => {
                    g.rest = None;
                    Poll::Ready(None)
                }
                Poll::Ready(Some(Ok(m))) => {
                    g.pulled = true;
                    Poll::Ready(Some(Ok(m)))
                }
                Poll::Ready(Some(Err(s))) => {
                    g.pulled = true;
                    g.rest = None;
                    Poll::Ready(Some(Err(s)))
                }
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Splice {
        Arc::new(|b: Bytes| b)
    }

    fn inbound(rest: Vec<Result<&'static str, Status>>) -> Inbound {
        let rest = futures::stream::iter(
            rest.into_iter()
                .map(|r| r.map(|s| Bytes::from_static(s.as_bytes()))),
        );
        Inbound::new(Bytes::from_static(b"first"), rest)
    }

    #[tokio::test(start_paused = true)]
    async fn later_messages_wait_for_the_gate() {
        let ib = inbound(vec![Ok("second")]);
        let (gate, mut out) = ib.attempt(id());
        assert_eq!(out.next().await.unwrap().unwrap(), "first");
        let next = tokio::time::timeout(Duration::from_secs(60), out.next()).await;
        assert!(next.is_err(), "nothing before the target answers");
        assert!(ib.replayable());
        gate.open();
        assert_eq!(out.next().await.unwrap().unwrap(), "second");
        assert!(!ib.replayable(), "the second message went out");
        assert!(out.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn an_accepted_call_gets_them_after_the_hold() {
        let ib = inbound(vec![Ok("second")]);
        let (gate, mut out) = ib.attempt(id());
        out.next().await;
        gate.accepted();
        let started = Instant::now();
        assert_eq!(out.next().await.unwrap().unwrap(), "second");
        assert!(started.elapsed() >= HOLD);
        drop(gate);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_attempt_is_replayed_from_the_first_message() {
        let ib = inbound(vec![Ok("second")]);
        let (gate, mut out) = ib.attempt(Arc::new(|_: Bytes| Bytes::from_static(b"spliced")));
        assert_eq!(out.next().await.unwrap().unwrap(), "spliced");
        drop(gate);
        assert!(
            out.next().await.is_none(),
            "an abandoned attempt sends no more"
        );
        assert!(ib.replayable());
        let (gate, mut again) = ib.attempt(id());
        gate.open();
        assert_eq!(again.next().await.unwrap().unwrap(), "first");
        assert_eq!(again.next().await.unwrap().unwrap(), "second");
        assert!(again.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_newer_attempt_ends_an_older_one_waiting_for_the_client() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Bytes, Status>>();
        let ib = Inbound::new(Bytes::from_static(b"first"), rx);
        let (old_gate, mut old) = ib.attempt(id());
        old_gate.open();
        old.next().await;
        let waiting = tokio::spawn(async move { old.next().await.is_none() });
        tokio::task::yield_now().await;
        let (gate, mut new) = ib.attempt(id());
        assert!(waiting.await.unwrap(), "the old attempt ended");
        gate.open();
        new.next().await;
        tx.unbounded_send(Ok(Bytes::from_static(b"second")))
            .unwrap();
        assert_eq!(new.next().await.unwrap().unwrap(), "second");
    }

    #[tokio::test(start_paused = true)]
    async fn a_broken_client_stream_is_an_error_not_an_end() {
        let ib = inbound(vec![Ok("second"), Err(Status::cancelled("client reset"))]);
        let (gate, mut out) = ib.attempt(id());
        gate.open();
        out.next().await;
        out.next().await;
        let err = out.next().await.unwrap().expect_err("an error");
        assert_eq!(err.code(), Code::Aborted);
        assert!(err.message().contains("client reset"), "{err:?}");
        assert!(
            std::error::Error::source(&err).is_none(),
            "no HTTP/2 cause, so the reset is not CANCEL"
        );
        assert!(out.next().await.is_none());
        assert!(!ib.replayable());
    }
}
