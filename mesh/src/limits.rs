//! Admission limits on the request path: requests in flight on this pod and on each local
//! model copy. A request over a limit is refused at once with RESOURCE_EXHAUSTED (which
//! clients may retry, and which the router answers by trying another copy) instead of queueing
//! without bound behind a slow runtime.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tonic::Status;

/// Default `MM_MAX_INFLIGHT_REQUESTS`: requests in flight on one pod.
pub const DEFAULT_MAX_INFLIGHT_REQUESTS: usize = 2048;
/// Default `MM_MAX_QUEUED_LOADS`: loads waiting for a load slot on one pod.
pub const DEFAULT_MAX_QUEUED_LOADS: usize = 256;

/// The configured limits (0 = unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitConfig {
    /// Requests in flight on this pod (`MM_MAX_INFLIGHT_REQUESTS`).
    pub pod_requests: usize,
    /// Requests in flight on one local copy of a model (`MM_MAX_INFLIGHT_PER_MODEL_COPY`).
    pub copy_requests: usize,
    /// Loads waiting for a slot (`MM_MAX_QUEUED_LOADS`); a new load beyond it is refused.
    pub queued_loads: usize,
}

impl Default for LimitConfig {
    fn default() -> Self {
        LimitConfig {
            pod_requests: DEFAULT_MAX_INFLIGHT_REQUESTS,
            copy_requests: 0,
            queued_loads: DEFAULT_MAX_QUEUED_LOADS,
        }
    }
}

/// Whether one more request fits under `limit` with `in_flight` already running (0 = no limit).
pub fn admits(in_flight: usize, limit: usize) -> bool {
    limit == 0 || in_flight < limit
}

/// Live counters for one pod.
#[derive(Debug)]
pub struct Limits {
    cfg: LimitConfig,
    pod: AtomicUsize,
    copies: Mutex<HashMap<String, usize>>,
    /// `modelmesh_requests_in_flight` (a handle, so the request path does no registry lookup).
    in_flight: metrics::Gauge,
}

/// One admitted request on the pod; released on drop (owned, so a stream can hold it).
#[derive(Debug)]
pub struct PodPermit(Arc<Limits>);

impl Drop for PodPermit {
    fn drop(&mut self) {
        self.0.pod.fetch_sub(1, Ordering::AcqRel);
        self.0.in_flight.decrement(1.0);
    }
}

/// One admitted request on a local copy; released on drop (owned, so a stream can hold it for
/// its whole life).
#[derive(Debug)]
pub struct CopyPermit {
    limits: Arc<Limits>,
    /// `None` when copies are unlimited (nothing was counted).
    id: Option<String>,
}

impl Drop for CopyPermit {
    fn drop(&mut self) {
        let Some(id) = &self.id else { return };
        let mut m = self.limits.lock();
        if let Some(n) = m.get_mut(id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(id);
            }
        }
    }
}

impl Limits {
    /// Counters enforcing `cfg`.
    pub fn new(cfg: LimitConfig) -> Self {
        Limits {
            cfg,
            pod: AtomicUsize::new(0),
            copies: Mutex::default(),
            in_flight: metrics::gauge!("modelmesh_requests_in_flight"),
        }
    }

    /// The configured limits.
    pub fn config(&self) -> LimitConfig {
        self.cfg
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.copies.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests in flight on this pod now.
    pub fn pod_in_flight(&self) -> usize {
        self.pod.load(Ordering::Acquire)
    }

    /// Admits one request on the pod, or says why not.
    pub fn enter_pod(self: &Arc<Self>) -> Result<PodPermit, Status> {
        let limit = self.cfg.pod_requests;
        let before = self.pod.fetch_add(1, Ordering::AcqRel);
        if !admits(before, limit) {
            self.pod.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("modelmesh_requests_refused", "limit" => "pod").increment(1);
            return Err(Status::resource_exhausted(format!(
                "this pod already has {limit} requests in flight (MM_MAX_INFLIGHT_REQUESTS); retry later or add pods"
            )));
        }
        self.in_flight.increment(1.0);
        Ok(PodPermit(self.clone()))
    }

    /// Admits one request on this pod's copy of `id`, or says why not.
    pub fn enter_copy(self: &Arc<Self>, id: &str) -> Result<CopyPermit, Status> {
        let limit = self.cfg.copy_requests;
        if limit == 0 {
            return Ok(CopyPermit {
                limits: self.clone(),
                id: None,
            });
        }
        {
            let mut m = self.lock();
            let n = m.entry(id.to_string()).or_insert(0);
            if !admits(*n, limit) {
                drop(m);
                metrics::counter!("modelmesh_requests_refused", "limit" => "copy").increment(1);
                return Err(Status::resource_exhausted(format!(
                    "model {id} already has {limit} requests in flight on this copy (MM_MAX_INFLIGHT_PER_MODEL_COPY); retry later"
                )));
            }
            *n += 1;
        }
        Ok(CopyPermit {
            limits: self.clone(),
            id: Some(id.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits(pod: usize, copy: usize) -> Arc<Limits> {
        Arc::new(Limits::new(LimitConfig {
            pod_requests: pod,
            copy_requests: copy,
            queued_loads: 0,
        }))
    }

    #[test]
    fn refuses_over_the_limit_and_frees_on_drop() {
        let l = limits(2, 1);
        let a = l.enter_pod().expect("first");
        let _b = l.enter_pod().expect("second");
        let s = l.enter_pod().expect_err("third");
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert!(s.message().contains("MM_MAX_INFLIGHT_REQUESTS"), "{s:?}");
        drop(a);
        assert!(l.enter_pod().is_ok());

        let c = l.enter_copy("m").expect("copy");
        let s = l.enter_copy("m").expect_err("copy full");
        assert!(
            s.message().contains("MM_MAX_INFLIGHT_PER_MODEL_COPY"),
            "{s:?}"
        );
        assert!(l.enter_copy("other").is_ok(), "limits are per copy");
        drop(c);
        assert!(l.enter_copy("m").is_ok());
        assert!(l.lock().is_empty(), "released copies leave no entry");
    }

    #[test]
    fn zero_means_unlimited() {
        let l = limits(0, 0);
        let permits: Vec<_> = (0..10_000).map(|_| l.enter_pod().expect("pod")).collect();
        let copies: Vec<_> = (0..1_000)
            .map(|_| l.enter_copy("m").expect("copy"))
            .collect();
        assert_eq!(l.pod_in_flight(), permits.len());
        drop(copies);
        drop(permits);
        assert_eq!(l.pod_in_flight(), 0);
    }

    proptest! {
        /// Whatever the order of entries and releases, in-flight counts never exceed the
        /// limits and return to zero.
        #[test]
        fn never_exceeds_the_limits(limit in 1usize..6, ops in proptest::collection::vec(any::<bool>(), 0..200)) {
            let l = limits(limit, limit);
            let mut held = Vec::new();
            for enter in ops {
                if enter {
                    if let (Ok(p), Ok(c)) = (l.enter_pod(), l.enter_copy("m")) {
                        held.push((p, c));
                    }
                } else {
                    held.pop();
                }
                prop_assert!(l.pod_in_flight() <= limit);
                prop_assert!(l.lock().get("m").copied().unwrap_or(0) <= limit);
            }
            held.clear();
            prop_assert_eq!(l.pod_in_flight(), 0);
            prop_assert!(l.lock().is_empty());
        }
    }
}
