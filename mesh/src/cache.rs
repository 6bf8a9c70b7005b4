//! The local model cache's bookkeeping: a byte-weighted LRU in 8 KiB units, ordered by last-used
//! time. The bytes live in the runtime; this decides what fits and what to evict.
//!
//! Admission counts only cached copies (`used <= capacity` always holds). Evicted copies move to
//! an unload buffer until the runtime confirms the unload; a new copy may be *admitted* at once
//! but its runtime load must wait until [`Lru::load_may_start`] (used + unloading fits), so the
//! runtime never holds more than the capacity. Pure: no I/O, no clock (times are passed in ms).

use std::collections::{BTreeSet, HashMap};

/// Accounting unit: 8 KiB, as upstream.
pub const UNIT_BYTES: u64 = 8 * 1024;

/// Bytes to whole units (rounded up, at least one).
pub fn units(bytes: u64) -> u64 {
    bytes.div_ceil(UNIT_BYTES).max(1)
}

/// State of a cached copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyState {
    /// Being loaded; never evicted.
    Loading,
    /// Loaded and serving.
    Loaded,
}

/// One cached copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Weight in units.
    pub weight: u64,
    /// Last use, ms.
    pub last_used: u64,
    /// Loading or loaded.
    pub state: CopyState,
}

/// Why an insert could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// The model alone is larger than the whole capacity.
    #[error("model needs {need} units but the capacity is {capacity} units")]
    TooLarge {
        /// Units needed.
        need: u64,
        /// Capacity.
        capacity: u64,
    },
    /// Everything that could be evicted is loading or already being unloaded.
    #[error("no room: {need} units needed, {free} free after evicting every idle copy")]
    Full {
        /// Units needed.
        need: u64,
        /// Free units.
        free: u64,
    },
}

/// The weighted LRU.
#[derive(Debug, Clone, Default)]
pub struct Lru {
    capacity: u64,
    used: u64,
    unloading: HashMap<String, u64>,
    entries: HashMap<String, Entry>,
    order: BTreeSet<(u64, String)>,
}

impl Lru {
    /// An empty cache of `capacity` units.
    pub fn new(capacity: u64) -> Self {
        Lru {
            capacity,
            ..Default::default()
        }
    }

    /// Capacity in units.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Units held by cached copies.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Units held by copies being unloaded.
    pub fn unloading(&self) -> u64 {
        self.unloading.values().sum()
    }

    /// Truly free units (capacity − used − unloading).
    pub fn free(&self) -> u64 {
        self.capacity.saturating_sub(self.used + self.unloading())
    }

    /// Whether runtime memory is free for every admitted copy (nothing waits on unloads).
    pub fn load_may_start(&self) -> bool {
        self.used + self.unloading() <= self.capacity
    }

    /// Number of cached copies.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A copy's entry.
    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.get(id)
    }

    /// Ids, least recently used first.
    pub fn ids_by_age(&self) -> Vec<String> {
        self.order.iter().map(|(_, id)| id.clone()).collect()
    }

    /// The least recent last-used time (u64::MAX when empty), as published to peers.
    pub fn lru_time(&self) -> u64 {
        self.order
            .iter()
            .next()
            .map(|(t, _)| *t)
            .unwrap_or(u64::MAX)
    }

    /// Marks a copy used at `now` (never moves time backwards).
    pub fn touch(&mut self, id: &str, now: u64) {
        if let Some(e) = self.entries.get_mut(id)
            && now > e.last_used
        {
            self.order.remove(&(e.last_used, id.to_string()));
            e.last_used = now;
            self.order.insert((now, id.to_string()));
        }
    }

    /// The idle copies to evict, oldest first, so that `need` more units can be admitted.
    fn victims(&self, need: u64, skip: &str) -> Result<Vec<String>, CacheError> {
        let mut free = self.capacity.saturating_sub(self.used);
        let mut out = Vec::new();
        for (_, id) in &self.order {
            if free >= need {
                break;
            }
            if id == skip {
                continue;
            }
            if let Some(e) = self.entries.get(id)
                && e.state == CopyState::Loaded
            {
                free += e.weight;
                out.push(id.clone());
            }
        }
        if free >= need {
            Ok(out)
        } else {
            Err(CacheError::Full { need, free })
        }
    }

    fn evict(&mut self, ids: &[String]) {
        for id in ids {
            if let Some(e) = self.entries.remove(id) {
                self.order.remove(&(e.last_used, id.clone()));
                self.used -= e.weight;
                *self.unloading.entry(id.clone()).or_default() += e.weight;
            }
        }
    }

    /// Adds a copy in the Loading state, evicting least recently used idle copies to make room.
    /// Returns the evicted ids (now in the unload buffer until [`Lru::unloaded`]).
    pub fn insert(&mut self, id: &str, weight: u64, now: u64) -> Result<Vec<String>, CacheError> {
        if weight > self.capacity {
            return Err(CacheError::TooLarge {
                need: weight,
                capacity: self.capacity,
            });
        }
        if self.entries.contains_key(id) {
            self.touch(id, now);
            return Ok(Vec::new());
        }
        let victims = self.victims(weight, id)?;
        self.evict(&victims);
        self.entries.insert(
            id.to_string(),
            Entry {
                weight,
                last_used: now,
                state: CopyState::Loading,
            },
        );
        self.order.insert((now, id.to_string()));
        self.used += weight;
        Ok(victims)
    }

    /// Marks a copy loaded and sets its real weight (known after loading); evicts if it grew.
    pub fn loaded(&mut self, id: &str, weight: u64) -> Result<Vec<String>, CacheError> {
        let Some(old) = self.entries.get(id).map(|e| e.weight) else {
            return Ok(Vec::new());
        };
        let mut victims = Vec::new();
        if weight > old {
            victims = self.victims(weight - old, id)?;
            self.evict(&victims);
        }
        if let Some(e) = self.entries.get_mut(id) {
            e.state = CopyState::Loaded;
            e.weight = weight;
        }
        self.used = self.used - old + weight;
        Ok(victims)
    }

    /// Removes a copy (failed load or explicit unload) and puts its weight in the unload buffer.
    pub fn remove(&mut self, id: &str) -> bool {
        let present = self.entries.contains_key(id);
        self.evict(&[id.to_string()]);
        present
    }

    /// The runtime confirmed an unload: frees the buffered weight.
    pub fn unloaded(&mut self, id: &str) {
        self.unloading.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn evicts_least_recently_used_idle_copies() {
        let mut c = Lru::new(10);
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            assert!(c.insert(id, 3, i as u64).unwrap().is_empty());
            c.loaded(id, 3).unwrap();
        }
        c.touch("a", 10);
        let ev = c.insert("d", 3, 11).unwrap();
        assert_eq!(ev, vec!["b".to_string()]);
        assert_eq!(c.unloading(), 3);
        assert!(!c.load_may_start(), "d must wait for b's unload");
        c.unloaded("b");
        assert!(c.load_may_start());
        assert_eq!(c.free(), 1);
        assert_eq!(c.ids_by_age(), vec!["c", "a", "d"]);
    }

    #[test]
    fn loading_copies_are_never_evicted() {
        let mut c = Lru::new(6);
        c.insert("a", 3, 1).unwrap();
        c.insert("b", 3, 2).unwrap();
        assert!(matches!(c.insert("c", 3, 3), Err(CacheError::Full { .. })));
        assert!(matches!(
            c.insert("big", 7, 3),
            Err(CacheError::TooLarge { .. })
        ));
        assert_eq!(units(1), 1);
        assert_eq!(units(8192), 1);
        assert_eq!(units(8193), 2);
    }

    #[derive(Debug, Clone)]
    enum Step {
        Insert(u8, u64),
        Loaded(u8, u64),
        Touch(u8),
        Remove(u8),
        Unloaded(u8),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u8..8, 1u64..6).prop_map(|(i, w)| Step::Insert(i, w)),
            (0u8..8, 1u64..6).prop_map(|(i, w)| Step::Loaded(i, w)),
            (0u8..8).prop_map(Step::Touch),
            (0u8..8).prop_map(Step::Remove),
            (0u8..8).prop_map(Step::Unloaded),
        ]
    }

    proptest! {
        #[test]
        fn never_holds_more_than_capacity(steps in proptest::collection::vec(step(), 1..80)) {
            let mut c = Lru::new(12);
            for (now, s) in steps.into_iter().enumerate() {
                let now = now as u64;
                let before = c.ids_by_age();
                match s {
                    Step::Insert(i, w) => {
                        if let Ok(ev) = c.insert(&i.to_string(), w, now) {
                            // Victims are the oldest idle copies, in age order.
                            let pos: Vec<usize> = ev.iter().filter_map(|v| before.iter().position(|b| b == v)).collect();
                            prop_assert!(pos.windows(2).all(|p| p[0] < p[1]));
                        }
                    }
                    Step::Loaded(i, w) => { let _ = c.loaded(&i.to_string(), w); }
                    Step::Touch(i) => c.touch(&i.to_string(), now),
                    Step::Remove(i) => { c.remove(&i.to_string()); }
                    Step::Unloaded(i) => c.unloaded(&i.to_string()),
                }
                prop_assert!(c.used() <= c.capacity(), "used {} > capacity {}", c.used(), c.capacity());
                let sum: u64 = c.ids_by_age().iter().filter_map(|id| c.get(id)).map(|e| e.weight).sum();
                prop_assert_eq!(sum, c.used());
            }
        }
    }
}
