//! Copy-count decisions made outside the request path, as pure functions over the registry,
//! the instance table and a clock: which unloaded models the leader loads ahead of demand
//! (proactive loading), and which idle extra copies a pod drops when the cluster is near full
//! (scale-down). The callers do the I/O.

use crate::registry::records::{InstanceRecord, ModelRecord};
use std::collections::BTreeMap;

/// Share of capacity kept free by proactive loading (upstream: 12.5 %).
const RESERVE_DIV: i64 = 8;
/// Share of capacity a full cluster may replace per run with models newer than its LRU (5 %).
const REPLACE_PCT: i64 = 5;
/// Minimum lead over the cluster's LRU for a model to replace older ones when full.
const REPLACE_MIN_LEAD_MS: u64 = 20 * 60_000;
/// Load failures (recent) after which a model is not loaded proactively.
const PROACTIVE_MAX_FAILURES: usize = 2;
/// Cluster fill (percent) from which idle extra copies are dropped (upstream: 95 %).
const SCALE_DOWN_FULL_PCT: i64 = 95;
/// Idle time after which an extra copy always qualifies for removal (upstream: 10 h).
const SCALE_DOWN_MAX_AGE_MS: u64 = 10 * 3_600_000;
/// Share of this pod's capacity removed per scale-down run (at least one copy).
const SCALE_DOWN_PCT: i64 = 5;

/// Capacity, use and LRU over the pods that are up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Total capacity, units.
    pub capacity: i64,
    /// Total used, units.
    pub used: i64,
    /// Oldest last-used time of any copy (u64::MAX when nothing is loaded).
    pub lru: u64,
}

impl Space {
    /// The space of the pods in `instances` that are not shutting down.
    pub fn of(instances: &BTreeMap<String, InstanceRecord>) -> Space {
        Space::of_pods(instances.values())
    }

    /// The space of those of `pods` that are not shutting down.
    pub fn of_pods<'a>(pods: impl Iterator<Item = &'a InstanceRecord>) -> Space {
        let up = pods.filter(|i| !i.shutdown);
        let mut s = Space {
            capacity: 0,
            used: 0,
            lru: u64::MAX,
        };
        for i in up {
            s.capacity += i.capacity.max(0);
            s.used += i.used.clamp(0, i.capacity.max(0));
            s.lru = s.lru.min(i.lru_time);
        }
        s
    }

    /// Free units.
    pub fn free(&self) -> i64 {
        self.capacity - self.used
    }

    /// Whether the pods are at least `SCALE_DOWN_FULL_PCT` full.
    pub fn nearly_full(&self) -> bool {
        self.capacity > 0 && self.used * 100 >= self.capacity * SCALE_DOWN_FULL_PCT
    }
}

fn live_copies(rec: &ModelRecord, instances: &BTreeMap<String, InstanceRecord>) -> usize {
    rec.instance_ids
        .keys()
        .filter(|p| instances.get(*p).is_some_and(|i| !i.shutdown))
        .count()
}

/// Models the leader should load now, most recently used first: unloaded (no copy on a pod
/// that is up), fewer than two recent load failures, and fitting in half the free space above
/// a 12.5 % reserve. A cluster without that room still takes models used well after its
/// least recently used copy, up to 5 % of capacity (loading them evicts older copies).
///
/// Space, reserve and LRU are those of the pods that may hold the model's type (`may_hold`):
/// free room on pods of another runtime (ONNX pods beside LLM pods) is no room for it, and
/// counting it once made the leader evict an LLM in use to load one nobody asked for.
pub fn proactive_loads(
    records: &[(String, ModelRecord)],
    instances: &BTreeMap<String, InstanceRecord>,
    may_hold: impl Fn(&str, &InstanceRecord) -> bool,
    units: impl Fn(&str, &ModelRecord) -> i64,
    now_ms: u64,
    failure_expiry_ms: u64,
) -> Vec<String> {
    let mut by_type: BTreeMap<&str, Vec<&(String, ModelRecord)>> = BTreeMap::new();
    for entry in records.iter().filter(|(_, r)| {
        live_copies(r, instances) == 0
            && r.failed_in
                .values()
                .filter(|t| now_ms.saturating_sub(**t) < failure_expiry_ms)
                .count()
                < PROACTIVE_MAX_FAILURES
    }) {
        by_type.entry(&entry.1.model_type).or_default().push(entry);
    }
    let mut out = Vec::new();
    for (model_type, mut candidates) in by_type {
        let space = Space::of_pods(instances.values().filter(|i| may_hold(model_type, i)));
        candidates.sort_by(|a, b| b.1.last_used.cmp(&a.1.last_used).then(a.0.cmp(&b.0)));
        out.extend(fill(&candidates, space, &units, now_ms));
    }
    out
}

/// The proactive picks among `candidates` (most recent first) for pods with `space`.
fn fill(
    candidates: &[&(String, ModelRecord)],
    space: Space,
    units: impl Fn(&str, &ModelRecord) -> i64,
    now_ms: u64,
) -> Vec<String> {
    if space.capacity <= 0 {
        return Vec::new();
    }
    let mut fill = ((space.free() - space.capacity / RESERVE_DIV) / 2).max(0);
    let mut replace = space.capacity * REPLACE_PCT / 100;
    let lead = (now_ms.saturating_sub(space.lru) / 3).max(REPLACE_MIN_LEAD_MS);
    let newer_than_lru =
        |r: &ModelRecord| space.lru != u64::MAX && r.last_used > space.lru.saturating_add(lead);
    let mut out = Vec::new();
    for (id, r) in candidates.iter().map(|c| (&c.0, &c.1)) {
        let need = units(id, r).max(1);
        if need <= fill {
            fill -= need;
            out.push(id.clone());
        } else if newer_than_lru(r) && need <= replace {
            replace -= need;
            out.push(id.clone());
        } else if fill < 1 && (replace < 1 || !newer_than_lru(r)) {
            break; // sorted by recency: nothing later qualifies either
        }
    }
    out
}

/// How many copies a busy model gets at once: one per multiple of the threshold its rate per
/// copy reaches, at most the pods without a copy and the model's maximum (0 = none), and when
/// that is more than two, at most a third of the pods (upstream's chained loads).
pub fn copies_to_add(
    rpm_per_copy: u64,
    threshold: u64,
    copies: usize,
    pods: usize,
    max_copies: u32,
) -> usize {
    if rpm_per_copy <= threshold {
        return 0;
    }
    let mut n = (rpm_per_copy / threshold.max(1)) as usize;
    n = n.min(pods.saturating_sub(copies));
    if max_copies > 0 {
        n = n.min((max_copies as usize).saturating_sub(copies));
    }
    if n > 2 {
        n = n.min((pods / 3).max(2));
    }
    n
}

/// Requests seen for one model in the current window, and when a scale-up of it last started.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RateWindow {
    /// Start of the window, ms since the epoch.
    pub start_ms: u64,
    /// Requests in the window.
    pub count: u64,
    /// When copies were last added, ms since the epoch.
    pub last_scaleup_ms: u64,
}

/// Length of the request-rate window.
pub const RATE_WINDOW_MS: u64 = 10_000;

/// Counts one request at `now_ms`; returns how many copies to add now: none unless the model
/// is busy enough per copy (over `threshold` requests per minute) and no scale-up of it
/// started in the last window.
pub fn note_request(
    w: &mut RateWindow,
    now_ms: u64,
    threshold: u64,
    copies: usize,
    pods: usize,
    max_copies: u32,
) -> usize {
    if now_ms.saturating_sub(w.start_ms) > RATE_WINDOW_MS {
        w.start_ms = now_ms;
        w.count = 0;
    }
    w.count += 1;
    if copies == 0 || now_ms.saturating_sub(w.last_scaleup_ms) <= RATE_WINDOW_MS {
        return 0;
    }
    let elapsed = now_ms.saturating_sub(w.start_ms).max(1_000);
    let per_copy = w.count * 60_000 / elapsed / copies as u64;
    let n = copies_to_add(per_copy, threshold, copies, pods, max_copies);
    if n > 0 {
        w.last_scaleup_ms = now_ms;
    }
    n
}

/// One of this pod's copies as scale-down sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCopy {
    /// Model id.
    pub id: String,
    /// Last use here, ms.
    pub last_used: u64,
    /// Size, units.
    pub units: i64,
}

/// Which of this pod's copies to drop: only while the pods are nearly full, only copies idle
/// longer than a tenth of the cluster's cache age (at most 10 h), and only where this pod is
/// not among the most desirable holders the model keeps (its minimum, at least one). At most
/// 5 % of this pod's capacity per run, oldest first.
pub fn scale_down(
    me: &str,
    copies: &[LocalCopy],
    records: &BTreeMap<String, ModelRecord>,
    instances: &BTreeMap<String, InstanceRecord>,
    now_ms: u64,
) -> Vec<String> {
    let space = Space::of(instances);
    let Some(mine) = instances.get(me) else {
        return Vec::new();
    };
    if mine.shutdown || !space.nearly_full() || space.lru == u64::MAX {
        return Vec::new();
    }
    let idle_after = (now_ms.saturating_sub(space.lru) / 10).min(SCALE_DOWN_MAX_AGE_MS);
    let mut budget = (mine.capacity * SCALE_DOWN_PCT / 100).max(1);
    let free = |i: &InstanceRecord| i.capacity - i.used;
    let mut by_age: Vec<&LocalCopy> = copies.iter().collect();
    by_age.sort_by_key(|c| c.last_used);
    let mut out = Vec::new();
    for c in by_age {
        if budget <= 0 {
            break;
        }
        let Some(rec) = records.get(&c.id) else {
            continue;
        };
        if now_ms.saturating_sub(c.last_used) < idle_after {
            continue;
        }
        // Pods that are up and hold it, most desirable (most free space, then smallest id)
        // first; the first `keep` keep their copies. Every pod ranks the same way, so pods
        // deciding at once never drop every copy.
        let mut holders: Vec<(&str, &InstanceRecord)> = rec
            .instance_ids
            .keys()
            .filter_map(|p| instances.get_key_value(p))
            .filter(|(_, i)| !i.shutdown)
            .map(|(k, i)| (k.as_str(), i))
            .collect();
        if !holders.iter().any(|(p, _)| *p == me) {
            holders.push((me, mine));
        }
        holders.sort_by(|a, b| free(b.1).cmp(&free(a.1)).then(a.0.cmp(b.0)));
        let keep = (rec.min_copies as usize).max(1);
        if holders.iter().position(|(p, _)| *p == me).unwrap_or(0) < keep {
            continue;
        }
        budget -= c.units.max(1);
        out.push(c.id.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pod(cap: i64, used: i64, lru: u64) -> InstanceRecord {
        InstanceRecord {
            capacity: cap,
            used,
            lru_time: lru,
            ..Default::default()
        }
    }

    fn rec(last_used: u64, on: &[&str]) -> ModelRecord {
        let mut r = ModelRecord {
            last_used,
            ..Default::default()
        };
        for p in on {
            r.instance_ids.insert(p.to_string(), 1);
        }
        r
    }

    #[test]
    fn proactive_fills_half_the_free_space_most_recent_first() {
        let mut pods = BTreeMap::new();
        pods.insert("a".to_string(), pod(100, 0, u64::MAX));
        pods.insert("b".to_string(), pod(100, 20, 1_000));
        // free 180, reserve 25: budget (180-25)/2 = 77 -> seven models of 10.
        let records: Vec<(String, ModelRecord)> = (0..20)
            .map(|i| (format!("m{i:02}"), rec(i, &[])))
            .chain([("loaded".to_string(), rec(99, &["b"]))])
            .collect();
        let got = proactive_loads(&records, &pods, |_, _| true, |_, _| 10, 2_000, 1_000);
        let want: Vec<String> = (13..20).rev().map(|i| format!("m{i:02}")).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn room_on_pods_of_another_runtime_is_no_room() {
        // An empty ONNX pod beside a full LLM pod (the LLM in use): an unloaded LLM is not
        // loaded, since loading it would evict the one in use; an unloaded ONNX model is.
        let mut pods = BTreeMap::new();
        pods.insert("onnx".to_string(), pod(1_000, 0, u64::MAX));
        pods.insert("llm".to_string(), pod(100, 95, 5_000));
        let typed = |t: &str, last_used| ModelRecord {
            model_type: t.to_string(),
            ..rec(last_used, &[])
        };
        let records = vec![
            ("cold-llm".to_string(), typed("mt:gguf", 1_000)),
            ("onnx-model".to_string(), typed("mt:onnx", 900)),
        ];
        let may_hold = |t: &str, i: &InstanceRecord| (t == "mt:gguf") == (i.capacity == 100);
        let got = proactive_loads(&records, &pods, may_hold, |_, _| 50, 6_000, 1_000);
        assert_eq!(got, vec!["onnx-model".to_string()]);
    }

    #[test]
    fn a_full_cluster_only_takes_models_newer_than_its_lru() {
        let mut pods = BTreeMap::new();
        pods.insert("a".to_string(), pod(100, 100, 1_000));
        let now = 10 * 3_600_000;
        let records = vec![
            ("old".to_string(), rec(2_000, &[])),
            ("new".to_string(), rec(now - 1_000, &[])),
        ];
        assert_eq!(
            proactive_loads(&records, &pods, |_, _| true, |_, _| 5, now, 1_000),
            vec!["new".to_string()]
        );
        // Recent failures on two pods: left alone.
        let mut failing = rec(now - 1_000, &[]);
        failing.failed_in.insert("a".into(), now - 10);
        failing.failed_in.insert("b".into(), now - 10);
        let records = vec![("new".to_string(), failing)];
        assert!(proactive_loads(&records, &pods, |_, _| true, |_, _| 5, now, 1_000).is_empty());
    }

    #[test]
    fn scale_down_only_when_nearly_full_and_only_the_worse_of_two() {
        let now = 1_000_000;
        let mut pods = BTreeMap::new();
        pods.insert("a".to_string(), pod(100, 98, 0));
        pods.insert("b".to_string(), pod(100, 96, 0));
        let mut records = BTreeMap::new();
        records.insert("m".to_string(), rec(0, &["a", "b"]));
        let copy = |id: &str| LocalCopy {
            id: id.into(),
            last_used: 0,
            units: 1,
        };
        // a has less free space: a's copy goes, b's stays.
        assert_eq!(
            scale_down("a", &[copy("m")], &records, &pods, now),
            vec!["m".to_string()]
        );
        assert!(scale_down("b", &[copy("m")], &records, &pods, now).is_empty());
        // Not nearly full: nothing goes.
        pods.get_mut("a").unwrap().used = 50;
        assert!(scale_down("a", &[copy("m")], &records, &pods, now).is_empty());
        // The minimum copy count holds.
        pods.get_mut("a").unwrap().used = 98;
        records.get_mut("m").unwrap().min_copies = 2;
        assert!(scale_down("a", &[copy("m")], &records, &pods, now).is_empty());
    }

    #[test]
    fn busier_models_get_more_copies_at_once_within_bounds() {
        assert_eq!(copies_to_add(100, 100, 1, 10, 0), 0);
        assert_eq!(copies_to_add(150, 100, 1, 10, 0), 1);
        assert_eq!(copies_to_add(250, 100, 1, 10, 0), 2);
        // Three or more at once: at most a third of the pods.
        assert_eq!(copies_to_add(1_000, 100, 1, 12, 0), 4);
        assert_eq!(copies_to_add(1_000, 100, 1, 3, 0), 2);
        // The maximum and the pods without a copy bound it.
        assert_eq!(copies_to_add(1_000, 100, 2, 12, 3), 1);
        assert_eq!(copies_to_add(1_000, 100, 3, 3, 0), 0);
    }

    proptest! {
        #[test]
        fn copies_to_add_stays_within_bounds(
            rpm in 0u64..100_000, threshold in 1u64..5_000, copies in 0usize..20,
            pods in 0usize..40, max in 0u32..10,
        ) {
            let n = copies_to_add(rpm, threshold, copies, pods, max);
            prop_assert!(copies + n <= pods.max(copies));
            prop_assert!(max == 0 || n == 0 || copies + n <= max as usize);
            prop_assert!(rpm > threshold || n == 0);
        }

        #[test]
        fn proactive_stays_within_budget_and_skips_loaded(
            pods in proptest::collection::btree_map("[a-e]", (1i64..200, 0i64..200, 0u64..1000, proptest::bool::ANY), 1..5),
            models in proptest::collection::vec((0u64..2000, proptest::collection::vec("[a-g]", 0..2), 1i64..30), 0..40),
        ) {
            let insts: BTreeMap<String, InstanceRecord> = pods.iter().map(|(k, (c, u, l, s))| {
                (k.clone(), InstanceRecord { capacity: *c, used: (*u).min(*c), lru_time: *l, shutdown: *s, ..Default::default() })
            }).collect();
            let records: Vec<(String, ModelRecord)> = models.iter().enumerate().map(|(i, (lu, on, _))| {
                let on: Vec<&str> = on.iter().map(String::as_str).collect();
                (format!("m{i}"), rec(*lu, &on))
            }).collect();
            let size: BTreeMap<String, i64> = models.iter().enumerate().map(|(i, m)| (format!("m{i}"), m.2)).collect();
            let by_id: BTreeMap<&String, &ModelRecord> = records.iter().map(|(k, v)| (k, v)).collect();
            let got = proactive_loads(&records, &insts, |_, _| true, |id, _| size[id], 3000, 100);
            let space = Space::of(&insts);
            let total: i64 = got.iter().map(|id| size[id]).sum();
            prop_assert!(total <= ((space.free() - space.capacity / 8) / 2).max(0) + space.capacity * 5 / 100);
            for id in &got {
                prop_assert_eq!(live_copies(by_id[id], &insts), 0);
            }
        }

        #[test]
        fn scale_down_never_drops_a_last_copy(
            pods in proptest::collection::btree_map("[a-d]", (1i64..100, 0i64..100, proptest::bool::ANY), 1..4),
            models in proptest::collection::vec((proptest::collection::vec("[a-d]", 0..3), 0u32..3), 1..10),
        ) {
            let insts: BTreeMap<String, InstanceRecord> = pods.iter().map(|(k, (c, u, s))| {
                (k.clone(), InstanceRecord { capacity: *c, used: (*u).min(*c), lru_time: 0, shutdown: *s, ..Default::default() })
            }).collect();
            let mut records = BTreeMap::new();
            for (i, (on, min)) in models.iter().enumerate() {
                let on: Vec<&str> = on.iter().map(String::as_str).collect();
                let mut r = rec(0, &on);
                r.min_copies = *min;
                records.insert(format!("m{i}"), r);
            }
            // Every pod decides on its own; together they must leave a copy of everything.
            let mut dropped: Vec<(String, String)> = Vec::new();
            for me in insts.keys() {
                let copies: Vec<LocalCopy> = records.iter()
                    .filter(|(_, r)| r.instance_ids.contains_key(me))
                    .map(|(id, _)| LocalCopy { id: id.clone(), last_used: 0, units: 1 })
                    .collect();
                for id in scale_down(me, &copies, &records, &insts, 1_000_000) {
                    dropped.push((me.clone(), id));
                }
            }
            for (id, r) in &records {
                let live_before = live_copies(r, &insts);
                let gone = dropped.iter().filter(|(p, m)| m == id && insts.get(p).is_some_and(|i| !i.shutdown)).count();
                if live_before > 0 {
                    prop_assert!(live_before > gone, "model {}: {} live copies, {} dropped", id, live_before, gone);
                    let keep = (r.min_copies as usize).max(1).min(live_before);
                    prop_assert!(live_before - gone >= keep);
                }
            }
        }
    }

    #[test]
    fn the_rate_window_adds_copies_once_per_window() {
        let mut w = RateWindow::default();
        let t0 = 1_000_000;
        // 400 requests in one second on one copy: 24,000 a minute, over a 2,000 threshold.
        let mut added = 0;
        for i in 0..400 {
            added += note_request(&mut w, t0 + i * 2, 2_000, 1, 4, 0);
        }
        assert!(added > 0, "a busy model gets copies");
        let again: usize = (0..400)
            .map(|i| note_request(&mut w, t0 + 1_000 + i, 2_000, 1, 4, 0))
            .sum();
        assert_eq!(again, 0, "no second scale-up within the window");
        // A quiet model gets none; no copy anywhere means nothing to scale.
        let mut quiet = RateWindow::default();
        assert_eq!(note_request(&mut quiet, t0, 2_000, 1, 4, 0), 0);
        let mut none = RateWindow::default();
        assert_eq!(
            (0..400)
                .map(|i| note_request(&mut none, t0 + i, 2_000, 0, 4, 0))
                .sum::<usize>(),
            0
        );
    }
}
