//! Where a request is served: pure decisions over a snapshot of the registry record, this pod's
//! copy, and the live instances. The caller does the I/O (serve, forward, load).

use crate::registry::records::{InstanceRecord, ModelRecord};
use std::collections::BTreeMap;

/// What to do with a request for one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Serve it here (a copy is loaded here).
    ServeHere,
    /// Forward to a pod that holds a copy; it serves only if it still has it.
    ForwardHit(String),
    /// Load a copy here, then serve.
    LoadHere,
    /// Ask another pod to load a copy and serve.
    ForwardLoad(String),
    /// Nowhere to go.
    NoCandidate,
}

/// The inputs of one decision.
#[derive(Debug, Clone)]
pub struct View<'a> {
    /// This pod's id.
    pub me: &'a str,
    /// Whether this pod has the model loaded.
    pub loaded_here: bool,
    /// The model's record.
    pub record: &'a ModelRecord,
    /// Live instances (lease-bound records) by id, this pod included.
    pub instances: &'a BTreeMap<String, InstanceRecord>,
    /// Size of the model in 8 KiB units (predicted or known).
    pub units: i64,
    /// Copies already tried for this request.
    pub tried_copies: &'a [String],
    /// Pods already asked to load for this request.
    pub tried_loads: &'a [String],
    /// The client balances its requests itself (`mm-balanced: true`).
    pub balanced: bool,
    /// A number used to break ties (e.g. request counter), so equal pods share load.
    pub tie: u64,
    /// Now, in ms since the epoch.
    pub now_ms: u64,
    /// How long a load failure keeps a pod out of placement, in ms.
    pub failure_expiry_ms: u64,
}

impl View<'_> {
    /// Whether `id` failed to load this model recently.
    pub fn failed_recently(&self, id: &str) -> bool {
        self.record
            .failed_in
            .get(id)
            .is_some_and(|t| self.now_ms.saturating_sub(*t) < self.failure_expiry_ms)
    }

    /// Number of pods where the model failed to load recently.
    pub fn recent_failures(&self) -> usize {
        self.record
            .failed_in
            .keys()
            .filter(|id| self.failed_recently(id))
            .count()
    }
}

/// Recent load failures on distinct pods after which requests fail fast (upstream's rule).
pub const FAIL_FAST_FAILURES: usize = 3;

fn free(i: &InstanceRecord) -> i64 {
    i.capacity - i.used
}

/// Chooses how to serve a request.
pub fn decide(v: &View) -> Decision {
    if v.loaded_here {
        return Decision::ServeHere;
    }
    let live = |id: &str| v.instances.get(id).is_some_and(|i| !i.shutdown);
    // Copies elsewhere: forward to one (fewest copies held there first, then the tie-break).
    let mut holders: Vec<&String> = v
        .record
        .instance_ids
        .keys()
        .filter(|id| id.as_str() != v.me && live(id) && !v.tried_copies.contains(id))
        .collect();
    if !holders.is_empty() {
        holders.sort_by_key(|id| v.instances.get(*id).map(|i| i.count).unwrap_or(i64::MAX));
        let best = v
            .instances
            .get(holders[0])
            .map(|i| i.count)
            .unwrap_or(i64::MAX);
        let equal: Vec<&String> = holders
            .iter()
            .copied()
            .filter(|id| v.instances.get(*id).map(|i| i.count) == Some(best))
            .collect();
        return Decision::ForwardHit(equal[(v.tie as usize) % equal.len()].clone());
    }
    // No copy: place one. A balanced client already spread its requests: prefer here if it fits.
    if v.recent_failures() >= FAIL_FAST_FAILURES {
        return Decision::NoCandidate;
    }
    let me_ok = !v.tried_loads.iter().any(|t| t == v.me) && !v.failed_recently(v.me);
    if v.balanced
        && me_ok
        && v.instances
            .get(v.me)
            .is_some_and(|i| !i.shutdown && free(i) >= v.units)
    {
        return Decision::LoadHere;
    }
    let mut candidates: Vec<(&String, &InstanceRecord)> = v
        .instances
        .iter()
        .filter(|(id, i)| !i.shutdown && !v.tried_loads.contains(id) && !v.failed_recently(id))
        .collect();
    if candidates.is_empty() {
        return Decision::NoCandidate;
    }
    // Upstream's order, simplified: pods with room first, then most free space, then fewest copies.
    candidates.sort_by(|(_, a), (_, b)| {
        let fits = |i: &InstanceRecord| free(i) >= v.units;
        fits(b)
            .cmp(&fits(a))
            .then(free(b).cmp(&free(a)))
            .then(a.count.cmp(&b.count))
    });
    let (top_id, top) = candidates[0];
    let near: Vec<&String> = candidates
        .iter()
        .filter(|(_, i)| {
            (free(i) >= v.units) == (free(top) >= v.units) && free(top) - free(i) <= v.units.max(1)
        })
        .map(|(id, _)| *id)
        .collect();
    let chosen = if near.is_empty() {
        top_id
    } else {
        near[(v.tie as usize) % near.len()]
    };
    if chosen == v.me {
        Decision::LoadHere
    } else {
        Decision::ForwardLoad(chosen.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn inst(cap: i64, used: i64, count: i64) -> InstanceRecord {
        InstanceRecord {
            capacity: cap,
            used,
            count,
            ..Default::default()
        }
    }

    fn view<'a>(
        me: &'a str,
        rec: &'a ModelRecord,
        insts: &'a BTreeMap<String, InstanceRecord>,
    ) -> View<'a> {
        View {
            me,
            loaded_here: false,
            record: rec,
            instances: insts,
            units: 10,
            tried_copies: &[],
            tried_loads: &[],
            balanced: false,
            tie: 0,
            now_ms: 100,
            failure_expiry_ms: 1000,
        }
    }

    #[test]
    fn serve_forward_or_place() {
        let mut insts = BTreeMap::new();
        insts.insert("a".to_string(), inst(100, 90, 3));
        insts.insert("b".to_string(), inst(100, 10, 1));
        insts.insert("c".to_string(), inst(100, 50, 2));
        let mut rec = ModelRecord::default();
        // No copy anywhere: the pod with the most free space.
        assert_eq!(
            decide(&view("a", &rec, &insts)),
            Decision::ForwardLoad("b".into())
        );
        // Balanced client and room here: load here.
        let mut v = view("c", &rec, &insts);
        v.balanced = true;
        assert_eq!(decide(&v), Decision::LoadHere);
        // A copy on c: forward there.
        rec.instance_ids.insert("c".into(), 1);
        assert_eq!(
            decide(&view("a", &rec, &insts)),
            Decision::ForwardHit("c".into())
        );
        // Already tried c: place a new copy.
        let tried = ["c".to_string()];
        let mut v = view("a", &rec, &insts);
        v.tried_copies = &tried;
        assert_eq!(decide(&v), Decision::ForwardLoad("b".into()));
        // Loaded here wins.
        let mut v = view("a", &rec, &insts);
        v.loaded_here = true;
        assert_eq!(decide(&v), Decision::ServeHere);
        // Failed on b, shutting down c: nothing but a.
        rec.instance_ids.clear();
        rec.failed_in.insert("b".into(), 1);
        insts.get_mut("c").unwrap().shutdown = true;
        assert_eq!(decide(&view("a", &rec, &insts)), Decision::LoadHere);
        let tried = ["a".to_string()];
        let mut v = view("a", &rec, &insts);
        v.tried_loads = &tried;
        assert_eq!(decide(&v), Decision::NoCandidate);
    }

    proptest! {
        #[test]
        fn never_picks_a_dead_tried_or_failed_pod(
            pods in proptest::collection::btree_map("[a-f]", (1i64..100, 0i64..100, 0i64..5, proptest::bool::ANY), 1..6),
            copies in proptest::collection::vec("[a-h]", 0..3),
            failed in proptest::collection::vec("[a-f]", 0..2),
            tried in proptest::collection::vec("[a-f]", 0..2),
            tie in 0u64..10,
        ) {
            let insts: BTreeMap<String, InstanceRecord> = pods.iter().map(|(k, (c, u, n, s))| {
                (k.clone(), InstanceRecord { capacity: *c, used: *u, count: *n, shutdown: *s, ..Default::default() })
            }).collect();
            let mut rec = ModelRecord::default();
            for c in &copies { rec.instance_ids.insert(c.clone(), 1); }
            for f in &failed { rec.failed_in.insert(f.clone(), 1); }
            let me = insts.keys().next().cloned().unwrap_or_default();
            let v = View { me: &me, loaded_here: false, record: &rec, instances: &insts, units: 5,
                           tried_copies: &tried, tried_loads: &tried, balanced: false, tie,
                           now_ms: 10, failure_expiry_ms: 100 };
            match decide(&v) {
                Decision::ForwardHit(p) => {
                    prop_assert!(rec.instance_ids.contains_key(&p) && !tried.contains(&p) && p != me);
                    prop_assert!(!insts[&p].shutdown);
                }
                Decision::ForwardLoad(p) => {
                    prop_assert!(!insts[&p].shutdown && !tried.contains(&p) && !rec.failed_in.contains_key(&p));
                }
                Decision::LoadHere => prop_assert!(!insts[&me].shutdown && !tried.contains(&me)),
                Decision::ServeHere => prop_assert!(false, "not loaded here"),
                Decision::NoCandidate => {}
            }
        }
    }
}
