//! A copy's load: registered before it queues (peers send requests for it here to wait instead
//! of loading duplicates), run with the runtime's load timeout, and ended as loaded, failed
//! (remembered, registered, waiters told) or interrupted (the store or the runtime was down:
//! nothing held against the model).

use super::admit::{Admission, PendingGuard};
use super::{CopyStatus, LocalModels};
use crate::cache::units;
use crate::clock::now_ms;
use crate::error::MeshError;
use crate::load_queue::Priority;
use crate::registry::records::{FailureMessage, ModelRecord};
use crate::registry::table::Update;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

impl LocalModels {
    pub(super) async fn run_load(
        self: Arc<Self>,
        id: String,
        rec: ModelRecord,
        priority: Priority,
        mine: watch::Sender<CopyStatus>,
        adm: Admission,
    ) {
        // Whatever ends this before the load starts, the queued copy's room is released.
        let _pending = PendingGuard {
            models: self.clone(),
            id: id.clone(),
            mine: mine.clone(),
        };
        let queued = Instant::now();
        let deadline = Instant::now() + self.cfg.space_wait;
        // A load of an id whose unload is still running waits for it (never load twice).
        while self.lock().unloading.contains(&id) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Register first, before waiting for a load slot: peers (and status calls) see the copy
        // as loading and send requests for the model here to wait for it, instead of loading
        // duplicates elsewhere while this one queues.
        let me = self.cfg.instance_id.clone();
        let start = now_ms();
        let reg = self
            .registry
            .update(&id, |cur| match cur {
                None => Update::Keep,
                Some(r) => {
                    let mut r = r.clone();
                    r.instance_ids.insert(me.clone(), start);
                    r.failed_in.remove(&me);
                    r.fails.remove(&me);
                    Update::Put(r)
                }
            })
            .await;
        match reg {
            Ok(Some(_)) => {}
            Ok(None) => {
                return self
                    .fail(&id, format!("model {id} was unregistered"), &mine)
                    .await;
            }
            // The store is down: not the model's failure; nothing was registered or loaded.
            Err(e) => {
                let msg = format!(
                    "cannot register the copy of model {id} (KV store unavailable; retry): {e}"
                );
                return self.interrupt(&id, msg, &mine, false).await;
            }
        }
        if !self.is_current(&id, &mine) {
            // Evicted or removed meanwhile: make sure the registration just written goes too.
            return self.deregister_unless_reloading(&id).await;
        }
        let _permit = self.queue.acquire(priority).await;
        metrics::histogram!("modelmesh_loading_queue_delay_milliseconds")
            .record(queued.elapsed().as_secs_f64() * 1e3);
        if !self.is_current(&id, &mine) {
            return self.deregister_unless_reloading(&id).await;
        }
        if let Err(msg) = self.take_room(&id, adm, &mine) {
            return self.interrupt(&id, msg, &mine, true).await;
        }
        // Wait until evicted copies are really unloaded, so the runtime never exceeds capacity.
        loop {
            let notified = self.space.notified();
            if self.lock().lru.load_may_start() {
                break;
            }
            if Instant::now() >= deadline {
                // The runtime is slow to unload: not this model's failure.
                let msg = format!(
                    "model {id} not loaded: timed out waiting for evicted models to unload; retry later"
                );
                return self.interrupt(&id, msg, &mine, true).await;
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
        tracing::info!(model = %id, "loading model");
        let t = Instant::now();
        let result = tokio::time::timeout(
            self.info.load_timeout,
            self.runtime.load(&id, &rec.model_type, &rec.path, &rec.key),
        )
        .await;
        match result {
            Ok(Ok(size)) => {
                let ms = t.elapsed().as_secs_f64() * 1e3;
                metrics::histogram!("modelmesh_loadmodel_milliseconds").record(ms);
                metrics::histogram!("modelmesh_loaded_model_size_bytes").record(size as f64);
                let size = if size == 0 {
                    self.info.default_model_size
                } else {
                    size
                };
                // Decide under the lock, act (including any await) after releasing it.
                enum Next {
                    Superseded,
                    Removed,
                    TooBig(String),
                    Loaded(Vec<String>),
                }
                let next = {
                    let mut inner = self.lock();
                    inner.sizes.insert(id.clone(), size);
                    match inner.copies.get(&id) {
                        Some(c) if !c.same_channel(&mine) => Next::Superseded,
                        None => Next::Removed,
                        Some(_) => match inner.lru.loaded(&id, units(size)) {
                            Err(e) => Next::TooBig(e.to_string()),
                            Ok(victims) => {
                                for v in &victims {
                                    inner.copies.remove(v);
                                }
                                Self::publish_usage(&inner);
                                Next::Loaded(victims)
                            }
                        },
                    }
                };
                let victims = match next {
                    // A newer copy of this id took over; its own load finishes it.
                    Next::Superseded => return,
                    // Removed while loading (unregistered or evicted): do not leak it.
                    Next::Removed => return self.spawn_unload(id, "removed while loading"),
                    Next::TooBig(e) => {
                        let msg =
                            format!("model {id} is {size} bytes once loaded and does not fit: {e}");
                        return self.fail(&id, msg, &mine).await;
                    }
                    Next::Loaded(v) => v,
                };
                let tx = mine.clone();
                tx.send_replace(CopyStatus::Loaded);
                tracing::info!(model = %id, bytes = size, millis = format!("{ms:.1}"), "model loaded");
                for v in victims {
                    tracing::info!(model = %v, for_model = %id, "evicting: the loaded model is larger than predicted");
                    let _ = self.evicted.send(v.clone());
                    self.spawn_unload(v, "evicted");
                }
            }
            // The runtime is down (crashed, restarting): try again later or elsewhere.
            Ok(Err(MeshError::Unavailable(msg))) => self.interrupt(&id, msg, &mine, true).await,
            Ok(Err(e)) => self.fail(&id, e.to_string(), &mine).await,
            Err(_) => {
                let msg = format!(
                    "Load of model {id} timed out after {:?}",
                    self.info.load_timeout
                );
                self.fail(&id, msg, &mine).await
            }
        }
    }

    /// Records a failed load: the copy is dropped, the failure remembered and registered, and the
    /// runtime is told to unload whatever it may hold.
    pub(super) async fn fail(
        self: &Arc<Self>,
        id: &str,
        message: String,
        mine: &watch::Sender<CopyStatus>,
    ) {
        if !self.is_current(id, mine) {
            // Removed (or replaced) while loading: not this copy's failure to record.
            if !self.lock().copies.contains_key(id) {
                self.spawn_unload(id.to_string(), "removed while loading");
            }
            return;
        }
        tracing::warn!(model = id, error = %message, "model load failed");
        metrics::counter!("modelmesh_loadmodel_failure").increment(1);
        // Record the failure in the registry before telling waiters, so a status read right
        // after the failed request already shows it.
        let me = self.cfg.instance_id.clone();
        let now = now_ms();
        let _ = self
            .registry
            .update(id, |cur| match cur {
                None => Update::Keep,
                Some(r) => {
                    let mut r = r.clone();
                    r.instance_ids.remove(&me);
                    r.failed_in.insert(me.clone(), now);
                    r.fails.insert(
                        me.clone(),
                        FailureMessage {
                            msg: message.clone(),
                        },
                    );
                    Update::Put(r)
                }
            })
            .await;
        {
            let mut inner = self.lock();
            if !inner.copies.get(id).is_some_and(|c| c.same_channel(mine)) {
                return;
            }
            inner.lru.remove(id);
            if let Some(tx) = inner.copies.remove(id) {
                tx.send_replace(CopyStatus::Failed(message.clone()));
            }
            inner
                .failures
                .insert(id.to_string(), (Instant::now(), message.clone()));
            Self::publish_usage(&inner);
        }
        self.spawn_unload(id.to_string(), "load failed");
    }

    /// Drops a copy whose load could not run for a reason outside the model (store or runtime
    /// unavailable): its registration is withdrawn (`registered`), nothing is remembered as a
    /// failure, and waiters get UNAVAILABLE so they retry, here or on another pod.
    pub(super) async fn interrupt(
        self: &Arc<Self>,
        id: &str,
        message: String,
        mine: &watch::Sender<CopyStatus>,
        registered: bool,
    ) {
        if !self.is_current(id, mine) {
            if !self.lock().copies.contains_key(id) {
                self.spawn_unload(id.to_string(), "removed while loading");
            }
            return;
        }
        tracing::warn!(model = id, reason = %message, "model load interrupted; it will be retried when needed");
        metrics::counter!("modelmesh_loadmodel_interrupted").increment(1);
        if registered {
            self.deregister(id).await;
        }
        {
            let mut inner = self.lock();
            if !inner.copies.get(id).is_some_and(|c| c.same_channel(mine)) {
                return;
            }
            if inner.lru.remove(id) && !registered {
                // Nothing reached the runtime: no unload will free the weight, so free it now.
                inner.lru.unloaded(id);
            }
            if let Some(tx) = inner.copies.remove(id) {
                tx.send_replace(CopyStatus::Interrupted(message));
            }
            Self::publish_usage(&inner);
        }
        self.space.notify_waiters();
        if registered {
            // The runtime may hold part of it when it comes back (an unknown model unloads fine).
            self.spawn_unload(id.to_string(), "load interrupted");
        }
    }
}
