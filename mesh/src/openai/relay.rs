//! The runtime's answer on its way to the client: bytes passed on as they arrive (each
//! server-sent event as soon as it is here), the LLM metrics taken on the way (time to first
//! token, tokens, tokens per second, streams in flight, per model), and a stream that fails
//! after it started ended with an error event rather than a silent close. Dropping it (the
//! client went away) drops the routed call, which cancels the runtime's request.

use crate::route::Held;
use bytes::Bytes;
use futures::Stream;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

/// One answer being relayed.
pub struct Relay {
    inner: Held,
    sse: bool,
    model: String,
    started: Instant,
    first: Option<Instant>,
    events: u64,
    done: bool,
}

impl Relay {
    /// Relays `inner`, an answer for `model` to a call that started at `started`; `sse`: the
    /// answer is server-sent events.
    pub fn new(inner: Held, sse: bool, model: String, started: Instant) -> Self {
        if sse {
            metrics::gauge!("modelmesh_llm_streams_in_flight", "model" => model.clone())
                .increment(1.0);
        }
        Relay {
            inner,
            sse,
            model,
            started,
            first: None,
            events: 0,
            done: false,
        }
    }

    fn saw(&mut self, chunk: &[u8]) {
        if !self.sse {
            return;
        }
        let now = Instant::now();
        let events = count_token_events(chunk);
        if self.first.is_none() && events > 0 {
            self.first = Some(now);
            metrics::histogram!("modelmesh_llm_time_to_first_token_milliseconds", "model" => self.model.clone())
                .record(now.duration_since(self.started).as_secs_f64() * 1e3);
        }
        self.events += events;
    }

    fn finish(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        if !self.sse {
            return;
        }
        metrics::gauge!("modelmesh_llm_streams_in_flight", "model" => self.model.clone())
            .decrement(1.0);
        metrics::counter!("modelmesh_llm_tokens", "model" => self.model.clone())
            .increment(self.events);
        if let Some(first) = self.first {
            let secs = first.elapsed().as_secs_f64();
            if self.events > 1 && secs > 0.0 {
                metrics::histogram!("modelmesh_llm_tokens_per_second", "model" => self.model.clone())
                    .record((self.events - 1) as f64 / secs);
            }
        }
    }
}

/// Server-sent events in `chunk` that carry a token: every `data:` event but the final
/// `[DONE]` (llama.cpp sends one token per event).
pub fn count_token_events(chunk: &[u8]) -> u64 {
    let mut n = 0;
    let mut rest = chunk;
    while let Some(i) = find(rest, b"data: ") {
        let after = &rest[i + 6..];
        if !after.starts_with(b"[DONE]") {
            n += 1;
        }
        rest = after;
    }
    n
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The event ending a stream that failed after it started.
pub fn error_event(s: &tonic::Status) -> Bytes {
    Bytes::from(format!("data: {}\n\n", super::error::body(s, None)))
}

impl Stream for Relay {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let item = std::task::ready!(Pin::new(&mut self.inner).poll_next(cx));
        Poll::Ready(match item {
            Some(Ok(chunk)) => {
                self.saw(&chunk);
                Some(Ok(chunk))
            }
            None => {
                self.finish();
                None
            }
            Some(Err(s)) => {
                tracing::warn!(model = %self.model, error = %s.message(), "an LLM answer broke off after it started");
                self.finish();
                if self.sse {
                    Some(Ok(error_event(&s)))
                } else {
                    // A JSON body cannot carry an error once it started: abort the connection
                    // so the client sees a broken answer, not a short one.
                    Some(Err(std::io::Error::other(s.message().to_string())))
                }
            }
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn counts_token_events_not_done() {
        let c = b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n";
        assert_eq!(count_token_events(c), 2);
        assert_eq!(count_token_events(b""), 0);
    }

    #[tokio::test]
    async fn a_failure_after_the_start_is_an_error_event() {
        let items: Vec<Result<Bytes, tonic::Status>> = vec![
            Ok(Bytes::from_static(b"data: {\"x\":1}\n\n")),
            Err(tonic::Status::unavailable("runtime died")),
        ];
        let held = Held::new(futures::stream::iter(items).boxed());
        let out: Vec<_> = Relay::new(held, true, "m".into(), Instant::now())
            .collect()
            .await;
        assert_eq!(out.len(), 2);
        let last = String::from_utf8(out[1].as_ref().unwrap().to_vec()).unwrap();
        assert!(last.starts_with("data: {\"error\""), "{last}");
        assert!(last.contains("runtime died"));
    }
}
