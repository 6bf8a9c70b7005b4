//! Admitting a copy: into the cache (evicting least recently used copies only when its load
//! starts), behind the priority load queue, refused when the queue is full or the model was
//! failing here recently.

use super::{CopyStatus, LocalModels, Room};
use crate::cache::units;
use crate::clock::now_ms;
use crate::error::MeshError;
use crate::load_queue::Priority;
use crate::registry::records::ModelRecord;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// What an admitted copy will take in the cache when its load starts.
#[derive(Debug, Clone, Copy)]
pub(super) struct Admission {
    pub(super) weight: u64,
    pub(super) room: Room,
}

/// Releases a queued copy's pending room when its load task ends before taking it (unless a
/// newer copy of the model has been admitted since).
pub(super) struct PendingGuard {
    pub(super) models: Arc<LocalModels>,
    pub(super) id: String,
    pub(super) mine: watch::Sender<CopyStatus>,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let mut inner = self.models.lock();
        let newer = inner
            .copies
            .get(&self.id)
            .is_some_and(|c| !c.same_channel(&self.mine));
        if !newer {
            inner.pending.remove(&self.id);
        }
    }
}

impl LocalModels {
    /// Makes sure a copy is loaded here, loading it if needed, and waits for it.
    pub async fn ensure(
        self: &Arc<Self>,
        id: &str,
        rec: &ModelRecord,
        priority: Priority,
    ) -> Result<(), MeshError> {
        self.ensure_in(id, rec, priority, Room::MayEvict).await
    }

    /// [`Self::ensure`], admitting the copy only as `room` allows.
    pub async fn ensure_in(
        self: &Arc<Self>,
        id: &str,
        rec: &ModelRecord,
        priority: Priority,
        room: Room,
    ) -> Result<(), MeshError> {
        let mut rx = match self.admit(id, rec, priority, room).await? {
            Some(rx) => rx,
            None => return Ok(()),
        };
        let started = Instant::now();
        let wait = self.info.load_timeout + self.cfg.space_wait + Duration::from_secs(10);
        let status = tokio::time::timeout(wait, rx.wait_for(|s| *s != CopyStatus::Loading))
            .await
            .map_err(|_| {
                MeshError::Unavailable(format!("model {id} still loading after {wait:?}"))
            })?
            .map(|s| s.clone())
            .unwrap_or(CopyStatus::Failed(
                "the copy was removed while loading".into(),
            ));
        if priority == Priority::Urgent {
            metrics::histogram!("modelmesh_cache_miss_milliseconds")
                .record(started.elapsed().as_secs_f64() * 1e3);
        }
        match status {
            CopyStatus::Loaded => Ok(()),
            CopyStatus::Interrupted(message) => Err(MeshError::Unavailable(message)),
            CopyStatus::Failed(message) => Err(MeshError::LoadFailed {
                id: id.to_string(),
                message,
            }),
            CopyStatus::Loading => Err(MeshError::Unavailable(format!("model {id} still loading"))),
        }
    }

    /// Starts loading a copy without waiting (ensureLoaded with sync=false).
    pub async fn start(
        self: &Arc<Self>,
        id: &str,
        rec: &ModelRecord,
        room: Room,
    ) -> Result<(), MeshError> {
        self.admit(id, rec, Priority::Background, room)
            .await
            .map(|_| ())
    }

    /// Admits a copy into the cache and starts its load. `None`: already loaded (touched).
    async fn admit(
        self: &Arc<Self>,
        id: &str,
        rec: &ModelRecord,
        priority: Priority,
        room: Room,
    ) -> Result<Option<watch::Receiver<CopyStatus>>, MeshError> {
        {
            let mut inner = self.lock();
            if let Some(tx) = inner.copies.get(id) {
                if *tx.borrow() == CopyStatus::Loaded {
                    inner.lru.touch(id, now_ms());
                    return Ok(None);
                }
                return Ok(Some(tx.subscribe()));
            }
            if let Some((t, msg)) = inner.failures.get(id)
                && t.elapsed() < self.cfg.failure_expiry
            {
                return Err(MeshError::LoadFailed {
                    id: id.to_string(),
                    message: msg.clone(),
                });
            }
        }
        let waiting = self.queue.waiting();
        if !crate::limits::admits(waiting, self.cfg.max_queued_loads) {
            metrics::counter!("modelmesh_requests_refused", "limit" => "load_queue").increment(1);
            return Err(MeshError::ResourceExhausted(format!(
                "cannot load model {id} now: {waiting} loads are already waiting on this pod (MM_MAX_QUEUED_LOADS); retry later"
            )));
        }
        // A size known from an earlier load (here, or on the pod that asked) beats a prediction.
        let known = self.known_size(id);
        let predicted = match known {
            Some(bytes) => Some(bytes),
            None => {
                self.runtime
                    .predict_size(id, &rec.model_type, &rec.path, &rec.key)
                    .await
            }
        };
        let weight = units(predicted.unwrap_or(self.info.default_model_size));
        let mut inner = self.lock();
        if let Some(tx) = inner.copies.get(id) {
            return Ok(Some(tx.subscribe()));
        }
        if weight > inner.lru.capacity() {
            return Err(MeshError::Unavailable(format!(
                "no room to load model {id} in this runtime: it needs {weight} units and the capacity is {} units",
                inner.lru.capacity()
            )));
        }
        let free = inner.lru.free().saturating_sub(inner.pending_units());
        if room == Room::FreeOnly && free < weight {
            return Err(MeshError::ResourceExhausted(format!(
                "no free room for model {id} on instance {} ({free} units free, {weight} needed) and a moved copy never evicts",
                self.instance_id(),
            )));
        }
        if let Some(bytes) = known {
            tracing::info!(model = id, bytes, "admitting the model at its known size");
        }
        // No room is taken (and nothing evicted) until the load starts: a copy queued behind
        // other loads must not push out copies that serve requests meanwhile.
        let (tx, rx) = watch::channel(CopyStatus::Loading);
        inner.copies.insert(id.to_string(), tx.clone());
        inner.pending.insert(id.to_string(), weight);
        drop(inner);
        let this = self.clone();
        let (id, rec) = (id.to_string(), rec.clone());
        tokio::spawn(async move {
            this.run_load(id, rec, priority, tx, Admission { weight, room })
                .await
        });
        Ok(Some(rx))
    }

    /// Takes the room of a copy whose load is starting, evicting least recently used copies
    /// if needed; the error says why there is no room.
    pub(super) fn take_room(
        self: &Arc<Self>,
        id: &str,
        adm: Admission,
        mine: &watch::Sender<CopyStatus>,
    ) -> Result<(), String> {
        let victims = {
            let mut inner = self.lock();
            if !inner.copies.get(id).is_some_and(|c| c.same_channel(mine)) {
                return Err(format!("the copy of model {id} was removed while queued"));
            }
            inner.pending.remove(id);
            if adm.room == Room::FreeOnly && inner.lru.free() < adm.weight {
                return Err(format!(
                    "no free room left for moved model {id} on instance {}; retry",
                    self.instance_id()
                ));
            }
            let victims = inner
                .lru
                .insert(id, adm.weight, now_ms())
                .map_err(|e| format!("no room to load model {id} in this runtime: {e}; retry"))?;
            for v in &victims {
                inner.copies.remove(v);
            }
            Self::publish_usage(&inner);
            victims
        };
        for v in victims {
            tracing::info!(model = %v, for_model = id, "evicting least recently used model to make room");
            metrics::counter!("modelmesh_model_evicted").increment(1);
            let _ = self.evicted.send(v.clone());
            self.spawn_unload(v, "evicted");
        }
        Ok(())
    }
}
