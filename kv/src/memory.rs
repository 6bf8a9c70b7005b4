//! An embedded, in-process KV store with etcd's semantics (revisions, conditional transactions,
//! ordered watches from a revision, leases), optionally durable (`durable.rs`: a snapshot and
//! a log, fsynced before a write is acknowledged) so a single-process mesh (`modelmesh up`)
//! keeps its registrations across restarts and crashes. Lease-bound keys are not persisted:
//! they belong to a process that is gone after a restart.

use super::durable::Durable;
use super::{
    Compare, Event, KeyValue, KvError, KvStore, LeaseId, Op, Revision, TxnOutcome, WatchStream,
};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Events kept for watches that start in the past; older starts get [`KvError::Compacted`].
const HISTORY: usize = 100_000;

struct Watcher {
    prefix: String,
    tx: mpsc::UnboundedSender<Result<Vec<Event>, KvError>>,
}

#[derive(Default)]
struct State {
    revision: Revision,
    keys: BTreeMap<String, KeyValue>,
    history: std::collections::VecDeque<Event>,
    watchers: Vec<Watcher>,
    leases: HashMap<LeaseId, (Duration, Instant)>,
    next_lease: LeaseId,
    /// The files of a durable store.
    durable: Option<Durable>,
}

/// The embedded store. Cheap to clone (shared state).
#[derive(Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

impl State {
    fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
        // Every mutation completes before the guard drops, so a poisoned lock holds a
        // consistent state.
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&mut self, events: Vec<Event>) {
        for e in &events {
            self.history.push_back(e.clone());
        }
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
        self.watchers.retain(|w| {
            let mine: Vec<Event> = events
                .iter()
                .filter(|e| e.key().starts_with(&w.prefix))
                .cloned()
                .collect();
            mine.is_empty() || w.tx.send(Ok(mine)).is_ok()
        });
    }

    fn expire_leases(&mut self, now: Instant) -> bool {
        let expired: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, (_, d))| *d <= now)
            .map(|(id, _)| *id)
            .collect();
        if expired.is_empty() {
            return false;
        }
        for id in &expired {
            self.leases.remove(id);
        }
        self.delete_lease_keys(&expired);
        true
    }

    fn delete_lease_keys(&mut self, leases: &[LeaseId]) {
        let doomed: Vec<String> = self
            .keys
            .values()
            .filter(|kv| kv.lease != 0 && leases.contains(&kv.lease))
            .map(|kv| kv.key.clone())
            .collect();
        if doomed.is_empty() {
            return;
        }
        self.revision += 1;
        let rev = self.revision;
        let mut events = Vec::new();
        for k in doomed {
            self.keys.remove(&k);
            events.push(Event::Delete {
                key: k,
                mod_revision: rev,
            });
        }
        self.publish(events);
    }
}

impl MemoryStore {
    /// An empty store, in memory only.
    pub fn new() -> Self {
        let s = MemoryStore {
            state: Arc::new(Mutex::new(State {
                next_lease: 1,
                ..Default::default()
            })),
        };
        s.start_reaper();
        s
    }

    /// A durable store at `path` (and `path.log`): loaded from there if it exists; every change
    /// to a persistent key is on disk before it is acknowledged.
    pub fn with_snapshot(path: impl Into<PathBuf>) -> Result<Self, KvError> {
        let (durable, loaded) = Durable::open(path)?;
        let st = State {
            next_lease: 1,
            revision: loaded.revision,
            keys: loaded.keys,
            durable: Some(durable),
            ..Default::default()
        };
        let s = MemoryStore {
            state: Arc::new(Mutex::new(st)),
        };
        s.start_reaper();
        Ok(s)
    }

    fn start_reaper(&self) {
        let weak: Weak<Mutex<State>> = Arc::downgrade(&self.state);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let Some(state) = weak.upgrade() else { return };
                    State::lock(&state).expire_leases(Instant::now());
                }
            });
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

#[tonic::async_trait]
impl KvStore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError> {
        Ok(State::lock(&self.state).keys.get(key).cloned())
    }

    async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), KvError> {
        let st = State::lock(&self.state);
        let kvs = st
            .keys
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect();
        Ok((kvs, st.revision))
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<TxnOutcome, KvError> {
        let mut guard = State::lock(&self.state);
        let st: &mut State = &mut guard;
        let holds = compares.iter().all(|c| match c {
            Compare::ModRevision(k, rev) => {
                st.keys.get(k).map(|kv| kv.mod_revision).unwrap_or(0) == *rev
            }
        });
        if !holds {
            let current = compares
                .iter()
                .map(|c| match c {
                    Compare::ModRevision(k, _) => st.keys.get(k).cloned(),
                })
                .collect();
            return Ok(TxnOutcome {
                succeeded: false,
                revision: st.revision,
                current,
            });
        }
        for op in &ops {
            if let Op::Put { lease, .. } = op
                && *lease != 0
                && !st.leases.contains_key(lease)
            {
                return Err(KvError::LeaseNotFound(*lease));
            }
        }
        let writes = ops.iter().any(|op| match op {
            Op::Put { .. } => true,
            Op::Delete(k) => st.keys.contains_key(k),
        });
        let rev = if writes { st.revision + 1 } else { st.revision };
        // Each key's final value, in the order the ops first name it, computed before anything
        // changes: a durable store writes them to disk first, and a write that fails there
        // fails the transaction untouched.
        let mut effects: Vec<(String, Option<KeyValue>)> = Vec::new();
        for op in ops {
            let (key, value) = match op {
                Op::Put { key, value, lease } => {
                    let create_revision = st
                        .keys
                        .get(&key)
                        .map(|kv| kv.create_revision)
                        .unwrap_or(rev);
                    let kv = KeyValue {
                        key: key.clone(),
                        value,
                        create_revision,
                        mod_revision: rev,
                        lease,
                    };
                    (key, Some(kv))
                }
                Op::Delete(key) => (key, None),
            };
            match effects.iter_mut().find(|(k, _)| *k == key) {
                Some(e) => e.1 = value,
                None => effects.push((key, value)),
            }
        }
        if let Some(d) = st.durable.as_mut() {
            let keys = &st.keys;
            let was_persistent = |k: &str| keys.get(k).is_some_and(|kv| kv.lease == 0);
            let puts: Vec<&KeyValue> = effects
                .iter()
                .filter_map(|(_, v)| v.as_ref())
                .filter(|kv| kv.lease == 0)
                .collect();
            // A persistent key deleted, or replaced by a lease-bound one, is gone from disk.
            let gone: Vec<&str> = effects
                .iter()
                .filter(|(k, v)| v.as_ref().is_none_or(|kv| kv.lease != 0) && was_persistent(k))
                .map(|(k, _)| k.as_str())
                .collect();
            if !puts.is_empty() || !gone.is_empty() {
                d.append(rev, puts, gone)?;
            }
        }
        st.revision = rev;
        let mut events = Vec::new();
        for (key, value) in effects {
            match value {
                Some(kv) => {
                    st.keys.insert(key, kv.clone());
                    events.push(Event::Put(kv));
                }
                None => {
                    if st.keys.remove(&key).is_some() {
                        events.push(Event::Delete {
                            key,
                            mod_revision: rev,
                        });
                    }
                }
            }
        }
        if !events.is_empty() {
            st.publish(events);
        }
        if let Some(d) = st.durable.as_mut()
            && d.wants_compaction()
            && let Err(e) = d.compact(st.revision, st.keys.values())
        {
            // The log still holds every change; it only grows until this works again.
            tracing::error!(error = %e, "cannot fold the KV log into a new snapshot");
        }
        Ok(TxnOutcome {
            succeeded: true,
            revision: rev,
            current: Vec::new(),
        })
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, KvError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut st = State::lock(&self.state);
        if from > 0 {
            let oldest = st
                .history
                .front()
                .map(|e| e.revision())
                .unwrap_or(st.revision + 1);
            if from < oldest && from <= st.revision {
                return Err(KvError::Compacted(from));
            }
            let past: Vec<Event> = st
                .history
                .iter()
                .filter(|e| e.revision() >= from && e.key().starts_with(prefix))
                .cloned()
                .collect();
            if !past.is_empty() {
                let _ = tx.send(Ok(past));
            }
        }
        st.watchers.push(Watcher {
            prefix: prefix.to_string(),
            tx,
        });
        Ok(Box::pin(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
        ))
    }

    async fn grant_lease(&self, ttl_secs: i64) -> Result<LeaseId, KvError> {
        let mut st = State::lock(&self.state);
        let id = st.next_lease;
        st.next_lease += 1;
        let ttl = Duration::from_secs(ttl_secs.max(1) as u64);
        st.leases.insert(id, (ttl, Instant::now() + ttl));
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), KvError> {
        let mut st = State::lock(&self.state);
        st.expire_leases(Instant::now());
        match st.leases.get_mut(&lease) {
            Some((ttl, deadline)) => {
                *deadline = Instant::now() + *ttl;
                Ok(())
            }
            None => Err(KvError::LeaseNotFound(lease)),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), KvError> {
        let mut st = State::lock(&self.state);
        if st.leases.remove(&lease).is_none() {
            return Err(KvError::LeaseNotFound(lease));
        }
        st.delete_lease_keys(&[lease]);
        Ok(())
    }
}
