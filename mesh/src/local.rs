//! The copies of models held by this pod's runtime: admission into the LRU (evicting idle
//! copies), the priority load queue, registration before loading, load timeouts, failure
//! records, unloads with retries, and de-duplication of loads and unloads of one id.

use crate::cache::{Lru, units};
use crate::error::MeshError;
use crate::load_queue::{LoadQueue, Priority};
use crate::registry::records::{FailureMessage, ModelRecord};
use crate::registry::table::{Table, Update};
use crate::runtime_client::{RuntimeClient, RuntimeInfo};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};

/// State of this pod's copy of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyStatus {
    /// Queued or loading.
    Loading,
    /// Loaded and serving.
    Loaded,
    /// The load failed (message).
    Failed(String),
    /// The load could not run for a reason outside the model (the KV store or the runtime
    /// was unavailable): waiters get UNAVAILABLE, and nothing is held against the model.
    Interrupted(String),
}

/// Tunables.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// This pod's instance id.
    pub instance_id: String,
    /// How long a load failure is remembered (`MM_LOAD_FAILURE_EXPIRY_TIME_MS`).
    pub failure_expiry: Duration,
    /// Delay between unload retries.
    pub unload_retry_delay: Duration,
    /// Unload attempts before the capacity is considered lost.
    pub unload_retries: u32,
    /// Longest wait for unloads to free memory before a load.
    pub space_wait: Duration,
    /// Loads that may wait for a load slot; a new load beyond it is refused (0 = unlimited).
    pub max_queued_loads: usize,
}

impl LocalConfig {
    /// Upstream's defaults for an instance id.
    pub fn new(instance_id: impl Into<String>) -> Self {
        LocalConfig {
            instance_id: instance_id.into(),
            failure_expiry: Duration::from_secs(600),
            unload_retry_delay: Duration::from_secs(10),
            unload_retries: 90,
            space_wait: Duration::from_secs(180),
            max_queued_loads: crate::limits::DEFAULT_MAX_QUEUED_LOADS,
        }
    }
}

#[derive(Default)]
struct Inner {
    lru: Lru,
    copies: HashMap<String, watch::Sender<CopyStatus>>,
    failures: HashMap<String, (Instant, String)>,
    unloading: HashSet<String>,
    /// Real sizes (bytes) of models loaded here before, or told by the pod that had them.
    sizes: HashMap<String, u64>,
    /// Units of admitted copies still waiting for a load slot: they take their room in the
    /// cache only when their load starts.
    pending: HashMap<String, u64>,
}

impl Inner {
    fn pending_units(&self) -> u64 {
        self.pending.values().sum()
    }
}

/// How a new copy may find room in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// Evict least recently used copies if needed (a request or a scale-up wants it here).
    MayEvict,
    /// Only into free room: a copy moved away from an evicting pod must not evict here in
    /// turn, or two full pods hand their copies back and forth until every one is evicted.
    FreeOnly,
}

/// What an admitted copy will take in the cache when its load starts.
#[derive(Debug, Clone, Copy)]
struct Admission {
    weight: u64,
    room: Room,
}

/// Releases a queued copy's pending room when its load task ends before taking it (unless a
/// newer copy of the model has been admitted since).
struct PendingGuard {
    models: Arc<LocalModels>,
    id: String,
    mine: watch::Sender<CopyStatus>,
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

/// This pod's model copies.
pub struct LocalModels {
    cfg: LocalConfig,
    runtime: RuntimeClient,
    info: RuntimeInfo,
    registry: Arc<Table<ModelRecord>>,
    queue: LoadQueue,
    inner: Mutex<Inner>,
    space: Notify,
    evicted: tokio::sync::broadcast::Sender<String>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl LocalModels {
    /// A manager for a runtime that reported `info`.
    pub fn new(
        cfg: LocalConfig,
        runtime: RuntimeClient,
        info: RuntimeInfo,
        registry: Arc<Table<ModelRecord>>,
    ) -> Arc<Self> {
        let lru = Lru::new(info.capacity_bytes / crate::cache::UNIT_BYTES);
        metrics::gauge!("modelmesh_instance_capacity_bytes").set(info.capacity_bytes as f64);
        Arc::new(LocalModels {
            queue: LoadQueue::new(info.max_loading_concurrency as usize),
            cfg,
            runtime,
            info,
            registry,
            inner: Mutex::new(Inner {
                lru,
                ..Default::default()
            }),
            space: Notify::new(),
            evicted: tokio::sync::broadcast::channel(256).0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The runtime's start-up report.
    pub fn runtime_info(&self) -> &RuntimeInfo {
        &self.info
    }

    /// This pod's instance id.
    pub fn instance_id(&self) -> &str {
        &self.cfg.instance_id
    }

    /// State of the local copy, if any; a remembered recent failure counts.
    pub fn status(&self, id: &str) -> Option<CopyStatus> {
        let inner = self.lock();
        if let Some(tx) = inner.copies.get(id) {
            return Some(tx.borrow().clone());
        }
        inner
            .failures
            .get(id)
            .filter(|(t, _)| t.elapsed() < self.cfg.failure_expiry)
            .map(|(_, m)| CopyStatus::Failed(m.clone()))
    }

    /// (capacity, used (with copies queued for a load), unloading) in bytes, and the number of
    /// copies.
    pub fn usage(&self) -> (u64, u64, u64, usize) {
        let i = self.lock();
        let u = crate::cache::UNIT_BYTES;
        // Copies queued for a load count as used: peers place loads by this, and a pod with a
        // long queue has no room to offer.
        let used = (i.lru.used() + i.pending_units()).min(i.lru.capacity());
        (
            i.lru.capacity() * u,
            used * u,
            i.lru.unloading() * u,
            i.lru.len() + i.pending.len(),
        )
    }

    /// Ids of local copies, least recently used first.
    pub fn ids_by_age(&self) -> Vec<String> {
        self.lock().lru.ids_by_age()
    }

    /// Loaded copies with their last use (ms) and size (units).
    pub fn loaded_copies(&self) -> Vec<(String, u64, u64)> {
        let inner = self.lock();
        inner
            .lru
            .ids_by_age()
            .into_iter()
            .filter(|id| {
                inner
                    .copies
                    .get(id)
                    .is_some_and(|tx| *tx.borrow() == CopyStatus::Loaded)
            })
            .filter_map(|id| {
                let e = inner.lru.get(&id)?;
                Some((id.clone(), e.last_used, e.weight))
            })
            .collect()
    }

    /// The real size (bytes) of a model loaded here before, or hinted by a peer.
    pub fn known_size(&self, id: &str) -> Option<u64> {
        self.lock().sizes.get(id).copied()
    }

    /// Records a size a peer reported for a model it held (used instead of a prediction).
    pub fn hint_size(&self, id: &str, bytes: u64) {
        if bytes > 0 {
            self.lock().sizes.insert(id.to_string(), bytes);
        }
    }

    /// Ids of copies evicted from now on (to move them where there is room).
    pub fn evictions(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.evicted.subscribe()
    }

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

    /// Fast path for requests: if a copy is loaded here, marks it used and returns true.
    pub fn try_hit(&self, id: &str) -> bool {
        let mut inner = self.lock();
        let loaded = inner
            .copies
            .get(id)
            .is_some_and(|tx| *tx.borrow() == CopyStatus::Loaded);
        if loaded {
            inner.lru.touch(id, now_ms());
        }
        loaded
    }

    /// Removes this pod from the registrations of all its copies (at shutdown, so peers stop
    /// forwarding here before the instance lease expires).
    pub async fn deregister_all(&self) {
        for id in self.ids_by_age() {
            self.deregister(&id).await;
        }
    }

    /// How long load failures are remembered, in ms.
    pub fn failure_expiry_ms(&self) -> u64 {
        self.cfg.failure_expiry.as_millis() as u64
    }

    /// Size in units to assume for a model before it is loaded anywhere.
    pub fn predicted_units(&self, _rec: &ModelRecord) -> i64 {
        units(self.info.default_model_size) as i64
    }

    /// Last-used time of the least recently used copy (u64::MAX when empty).
    pub fn lru_time(&self) -> u64 {
        self.lock().lru.lru_time()
    }

    /// Marks a copy used now.
    pub fn touch(&self, id: &str) {
        self.lock().lru.touch(id, now_ms());
    }

    fn publish_usage(inner: &Inner) {
        let u = crate::cache::UNIT_BYTES as f64;
        metrics::gauge!("modelmesh_instance_used_bytes").set(inner.lru.used() as f64 * u);
        metrics::gauge!("modelmesh_instance_models_total").set(inner.lru.len() as f64);
    }

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
    fn take_room(
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

    /// Whether `mine` is still the copy registered for `id` (a copy removed and re-admitted
    /// while this load ran is a different generation and must not be touched by it).
    fn is_current(&self, id: &str, mine: &watch::Sender<CopyStatus>) -> bool {
        self.lock()
            .copies
            .get(id)
            .is_some_and(|c| c.same_channel(mine))
    }

    async fn run_load(
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
    async fn fail(self: &Arc<Self>, id: &str, message: String, mine: &watch::Sender<CopyStatus>) {
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
    async fn interrupt(
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

    fn spawn_unload(self: &Arc<Self>, id: String, reason: &'static str) {
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
    async fn deregister_unless_reloading(&self, id: &str) {
        if !self.lock().copies.contains_key(id) {
            self.deregister(id).await;
        }
    }

    /// Removes this pod from the model's registration (if it is listed).
    async fn deregister(&self, id: &str) {
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
