//! A copy leaving: removed (unregistered, evicted, scaled down), forgotten (the runtime lost
//! it), deregistered first so peers stop counting it, and unloaded with retries; a copy that
//! cannot be unloaded keeps its memory reserved.

use super::{CopyStatus, LocalModels};
use crate::clock::now_ms;
use crate::registry::table::Update;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

impl LocalModels {
    /// Drops a copy that other pods also hold: deregisters it first (only while enough other
    /// holders remain in the record: the model's minimum, at least one, so the last copy never
    /// goes), then unloads it. Returns whether it was dropped.
    pub async fn scale_down(self: &Arc<Self>, id: &str, live: &HashSet<String>) -> bool {
        let me = self.cfg.instance_id.clone();
        let mut dropped = false;
        let written = self
            .registry
            .update(id, |cur| match cur {
                Some(r)
                    if r.instance_ids.contains_key(&me)
                        && r.instance_ids
                            .keys()
                            .filter(|p| **p != me && live.contains(*p))
                            .count()
                            >= (r.min_copies as usize).max(1) =>
                {
                    dropped = true;
                    let mut r = r.clone();
                    r.instance_ids.remove(&me);
                    r.last_unload = now_ms();
                    Update::Put(r)
                }
                _ => {
                    dropped = false;
                    Update::Keep
                }
            })
            .await;
        if written.is_ok() && dropped {
            tracing::info!(
                model = id,
                "idle extra copy removed to make room (scale-down)"
            );
            metrics::counter!("modelmesh_model_scaled_down").increment(1);
            self.remove(id, "scaled down");
            return true;
        }
        false
    }

    /// Removes this pod from the registrations of all its copies (at shutdown, so peers stop
    /// forwarding here before the instance lease expires).
    pub async fn deregister_all(&self) {
        for id in self.ids_by_age() {
            self.deregister(&id).await;
        }
    }

    /// Drops a copy and unloads it (model unregistered, or evicted on purpose).
    pub fn remove(self: &Arc<Self>, id: &str, reason: &'static str) {
        let present = {
            let mut inner = self.lock();
            inner.failures.remove(id);
            if reason == "unregistered" {
                inner.sizes.remove(id);
            }
            let present = inner.lru.remove(id);
            if let Some(tx) = inner.copies.remove(id) {
                tx.send_replace(CopyStatus::Failed(format!("model {id} removed ({reason})")));
            }
            present
        };
        if present {
            self.spawn_unload(id.to_string(), reason);
        }
    }

    /// The runtime no longer has this model (it answered NOT_FOUND): forget the copy without
    /// an unload so the next request loads it again.
    pub async fn forget(self: &Arc<Self>, id: &str) {
        // Only a loaded copy can have been lost; a copy loading again (another request
        // already noticed) must be left alone.
        if !self
            .lock()
            .copies
            .get(id)
            .is_some_and(|c| *c.borrow() == CopyStatus::Loaded)
        {
            return;
        }
        {
            let mut inner = self.lock();
            inner.lru.remove(id);
            inner.lru.unloaded(id);
            inner.copies.remove(id);
            Self::publish_usage(&inner);
        }
        self.space.notify_waiters();
        tracing::warn!(model = id, "runtime lost the model; it will be reloaded");
        self.deregister(id).await;
    }

    pub(super) fn spawn_unload(self: &Arc<Self>, id: String, reason: &'static str) {
        self.lock().unloading.insert(id.clone());
        let this = self.clone();
        tokio::spawn(async move {
            // Deregister first: peers must not count a copy that is going away (scale-down
            // decisions elsewhere rely on the record), and an unload may take long.
            this.deregister_unless_reloading(&id).await;
            this.unload(id, reason).await
        });
    }

    /// Removes this pod from the model's registration unless a new copy is loading here.
    pub(super) async fn deregister_unless_reloading(&self, id: &str) {
        if !self.lock().copies.contains_key(id) {
            self.deregister(id).await;
        }
    }

    /// Removes this pod from the model's registration (if it is listed).
    pub(super) async fn deregister(&self, id: &str) {
        let me = self.cfg.instance_id.clone();
        let _ = self
            .registry
            .update(id, |cur| match cur {
                Some(r) if r.instance_ids.contains_key(&me) => {
                    let mut r = r.clone();
                    r.instance_ids.remove(&me);
                    Update::Put(r)
                }
                _ => Update::Keep,
            })
            .await;
    }

    async fn unload(self: Arc<Self>, id: String, reason: &'static str) {
        let t = Instant::now();
        let mut ok = false;
        for attempt in 0..self.cfg.unload_retries.max(1) {
            match self.runtime.unload(&id).await {
                Ok(()) => {
                    ok = true;
                    break;
                }
                Err(e) => {
                    metrics::counter!("modelmesh_unloadmodel_attempt_failure").increment(1);
                    tracing::warn!(model = %id, attempt, error = %e, "unload failed; will retry");
                    // A restarting runtime is back within seconds (and forgets every model), so
                    // retry soon at first: the unloaded weight holds up every new load here.
                    let backoff = Duration::from_millis(250)
                        .saturating_mul(1 << attempt.min(6))
                        .min(self.cfg.unload_retry_delay);
                    tokio::time::sleep(backoff).await;
                }
            }
        }
        {
            let mut inner = self.lock();
            inner.unloading.remove(&id);
            if ok {
                inner.lru.unloaded(&id);
            }
            Self::publish_usage(&inner);
        }
        self.space.notify_waiters();
        if ok {
            metrics::histogram!("modelmesh_unloadmodel_milliseconds")
                .record(t.elapsed().as_secs_f64() * 1e3);
            tracing::info!(model = %id, reason, "model unloaded");
        } else {
            metrics::counter!("modelmesh_unloadmodel_failure").increment(1);
            tracing::error!(model = %id, "unload failed permanently; its memory stays reserved");
        }
        let me = self.cfg.instance_id.clone();
        let now = now_ms();
        let reloading = self.lock().copies.contains_key(&id);
        if !reloading {
            let _ = self
                .registry
                .update(&id, |cur| match cur {
                    Some(r) if r.instance_ids.contains_key(&me) => {
                        let mut r = r.clone();
                        r.instance_ids.remove(&me);
                        r.last_unload = now;
                        Update::Put(r)
                    }
                    _ => Update::Keep,
                })
                .await;
        }
    }
}
