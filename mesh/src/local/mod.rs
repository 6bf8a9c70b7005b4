//! The copies of models held by this pod's runtime: admission into the LRU (evicting idle
//! copies) and the priority load queue (`admit.rs`), registration before loading, load
//! timeouts and failure records (`load.rs`), unloads with retries and scale-down (`unload.rs`),
//! and de-duplication of loads and unloads of one id. Each copy is a generation: a `watch`
//! channel of its [`CopyStatus`]; a copy replaced by a newer one never touches its successor.

mod admit;
mod load;
mod state;
mod unload;

pub use state::{CopyStatus, Room};

use crate::cache::{Lru, units};
use crate::clock::now_ms;
use crate::load_queue::LoadQueue;
use crate::registry::records::ModelRecord;
use crate::registry::table::Table;
use crate::runtime::{Runtime, RuntimeInfo};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

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
pub(super) struct Inner {
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

/// This pod's model copies.
pub struct LocalModels {
    cfg: LocalConfig,
    runtime: Arc<dyn Runtime>,
    info: RuntimeInfo,
    registry: Arc<Table<ModelRecord>>,
    queue: LoadQueue,
    inner: Mutex<Inner>,
    space: Notify,
    evicted: tokio::sync::broadcast::Sender<String>,
}

impl LocalModels {
    /// A manager for a runtime that reported `info`.
    pub fn new(
        cfg: LocalConfig,
        runtime: Arc<dyn Runtime>,
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

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
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

    pub(super) fn publish_usage(inner: &Inner) {
        let u = crate::cache::UNIT_BYTES as f64;
        metrics::gauge!("modelmesh_instance_used_bytes").set(inner.lru.used() as f64 * u);
        metrics::gauge!("modelmesh_instance_models_total").set(inner.lru.len() as f64);
    }

    /// Whether `mine` is still the copy registered for `id` (a copy removed and re-admitted
    /// while this load ran is a different generation and must not be touched by it).
    pub(super) fn is_current(&self, id: &str, mine: &watch::Sender<CopyStatus>) -> bool {
        self.lock()
            .copies
            .get(id)
            .is_some_and(|c| c.same_channel(mine))
    }
}

#[cfg(test)]
mod tests;
