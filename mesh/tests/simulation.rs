//! A simulated cluster in one process, no network: 50 pods, 10,000 models, random requests
//! entering random pods, pods dying and coming back, and models whose loads always fail; hot
//! models gain copies, pods drop idle extra copies while the cluster is full, the leader keeps
//! minimum copy counts and loads unloaded models into free space. The routing, scale-down and
//! proactive-loading decisions and the cache are the production code; only I/O is simulated.
//! Invariants: no pod over capacity, every request served or failed with a named reason, copies
//! within bounds (never above a maximum, scale-down never below a minimum or the last copy),
//! and the registry agrees with what pods hold.

use modelmesh_mesh::cache::Lru;
use modelmesh_mesh::registry::records::{InstanceRecord, ModelRecord};
use modelmesh_mesh::routing::{Decision, FAIL_FAST_FAILURES, View, decide};
use modelmesh_mesh::scaling::{LocalCopy, proactive_loads, scale_down};
use std::collections::{BTreeMap, HashMap};

const PODS: usize = 50;
const MODELS: usize = 10_000;
const CAPACITY: u64 = 1_000;
const REQUESTS: usize = 60_000;
const EXPIRY_MS: u64 = 5_000;

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

struct Pod {
    alive: bool,
    lru: Lru,
}

#[derive(Debug, PartialEq, Eq, Hash)]
enum Outcome {
    Served,
    LoadFailed,
    NoCandidate,
}

struct Cluster {
    pods: Vec<Pod>,
    registry: HashMap<String, ModelRecord>,
    weight: HashMap<String, u64>,
    bad: std::collections::HashSet<String>,
    now: u64,
}

fn pod_id(i: usize) -> String {
    format!("pod-{i}")
}

impl Cluster {
    fn instances(&self) -> BTreeMap<String, InstanceRecord> {
        self.pods
            .iter()
            .enumerate()
            .filter(|(_, p)| p.alive)
            .map(|(i, p)| {
                let rec = InstanceRecord {
                    capacity: p.lru.capacity() as i64,
                    used: (p.lru.used() + p.lru.unloading()) as i64,
                    count: p.lru.len() as i64,
                    lru_time: p.lru.lru_time(),
                    ..Default::default()
                };
                (pod_id(i), rec)
            })
            .collect()
    }

    /// Loads `model` on pod `p`: evicts (and unregisters) victims, registers the copy.
    fn load(&mut self, p: usize, model: &str) -> Result<(), ()> {
        let me = pod_id(p);
        if self.bad.contains(model) {
            let rec = self.registry.get_mut(model).expect("registered");
            rec.failed_in.insert(me, self.now);
            return Err(());
        }
        let w = self.weight[model];
        let victims = self.pods[p]
            .lru
            .insert(model, w, self.now)
            .map_err(|_| ())?;
        for v in victims {
            // The simulated runtime unloads at once.
            self.pods[p].lru.unloaded(&v);
            if let Some(r) = self.registry.get_mut(&v) {
                r.instance_ids.remove(&me);
            }
        }
        let lru = &mut self.pods[p].lru;
        if !lru.load_may_start() {
            return Err(());
        }
        lru.loaded(model, w).map_err(|_| ())?;
        self.registry
            .get_mut(model)
            .expect("registered")
            .instance_ids
            .insert(me, self.now);
        Ok(())
    }

    fn request(&mut self, entry: usize, model: &str, tie: u64) -> Outcome {
        let (mut tried_copies, mut tried_loads) = (Vec::new(), Vec::new());
        for _ in 0..8 {
            let me = pod_id(entry);
            let instances = self.instances();
            let rec = self.registry[model].clone();
            let view = View {
                me: &me,
                loaded_here: self.pods[entry].lru.get(model).is_some(),
                record: &rec,
                instances: &instances,
                units: self.weight[model] as i64,
                tried_copies: &tried_copies,
                tried_loads: &tried_loads,
                balanced: tie.is_multiple_of(3),
                tie,
                now_ms: self.now,
                failure_expiry_ms: EXPIRY_MS,
            };
            if view.recent_failures() >= FAIL_FAST_FAILURES {
                return Outcome::LoadFailed;
            }
            match decide(&view) {
                Decision::ServeHere => {
                    self.pods[entry].lru.touch(model, self.now);
                    return Outcome::Served;
                }
                Decision::ForwardHit(p) => {
                    let i: usize = p[4..].parse().expect("pod index");
                    if self.pods[i].alive && self.pods[i].lru.get(model).is_some() {
                        self.pods[i].lru.touch(model, self.now);
                        return Outcome::Served;
                    }
                    tried_copies.push(p);
                }
                Decision::LoadHere => {
                    if self.load(entry, model).is_ok() {
                        return Outcome::Served;
                    }
                    tried_loads.push(me);
                }
                Decision::ForwardLoad(p) => {
                    let i: usize = p[4..].parse().expect("pod index");
                    if self.pods[i].alive && self.load(i, model).is_ok() {
                        return Outcome::Served;
                    }
                    tried_loads.push(p);
                }
                Decision::NoCandidate => return Outcome::NoCandidate,
            }
        }
        Outcome::LoadFailed
    }

    /// Live copies of `model` (on pods that are up).
    fn live_copies(&self, model: &str) -> usize {
        self.registry[model]
            .instance_ids
            .keys()
            .filter(|p| self.pods[p[4..].parse::<usize>().expect("pod index")].alive)
            .count()
    }

    /// One more copy on a pod without one, as `Placement::add_copy` decides it.
    fn add_copy(&mut self, model: &str, tie: u64) -> bool {
        let instances = self.instances();
        let rec = self.registry[model].clone();
        let holders: Vec<String> = rec.instance_ids.keys().cloned().collect();
        let mut fresh = rec.clone();
        fresh.instance_ids.clear();
        let view = View {
            me: "leader",
            loaded_here: false,
            record: &fresh,
            instances: &instances,
            units: self.weight[model] as i64,
            tried_copies: &[],
            tried_loads: &holders,
            balanced: false,
            tie,
            now_ms: self.now,
            failure_expiry_ms: EXPIRY_MS,
        };
        match decide(&view) {
            Decision::ForwardLoad(p) => {
                let i: usize = p[4..].parse().expect("pod index");
                self.load(i, model).is_ok()
            }
            _ => false,
        }
    }

    /// Every pod that is up runs scale-down on its own; checks no model loses its last copy
    /// or drops below its minimum.
    fn scale_down_all(&mut self) -> usize {
        let instances = self.instances();
        let before: HashMap<String, usize> = self
            .registry
            .keys()
            .map(|id| (id.clone(), self.live_copies(id)))
            .collect();
        let records: BTreeMap<String, ModelRecord> = self
            .registry
            .iter()
            .filter(|(_, r)| r.instance_ids.len() > 1)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut drops = Vec::new();
        for (i, pod) in self.pods.iter().enumerate() {
            if !pod.alive {
                continue;
            }
            let copies: Vec<LocalCopy> = pod
                .lru
                .ids_by_age()
                .into_iter()
                .filter(|id| records.contains_key(id))
                .filter_map(|id| {
                    let e = pod.lru.get(&id)?;
                    Some(LocalCopy {
                        id,
                        last_used: e.last_used,
                        units: e.weight as i64,
                    })
                })
                .collect();
            for id in scale_down(&pod_id(i), &copies, &records, &instances, self.now) {
                drops.push((i, id));
            }
        }
        for (i, id) in &drops {
            self.pods[*i].lru.remove(id);
            self.pods[*i].lru.unloaded(id);
            if let Some(r) = self.registry.get_mut(id) {
                r.instance_ids.remove(&pod_id(*i));
            }
        }
        for (id, n) in before {
            let min = self.registry[&id].min_copies as usize;
            let after = self.live_copies(&id);
            assert!(
                n == 0 || after >= 1,
                "scale-down dropped every copy of {id}"
            );
            assert!(
                after >= min.min(n),
                "scale-down took {id} from {n} to {after} copies, below its minimum {min}"
            );
        }
        drops.len()
    }

    fn check(&self) {
        for (i, p) in self.pods.iter().enumerate() {
            assert!(p.lru.used() <= p.lru.capacity(), "pod {i} over capacity");
            if !p.alive {
                continue;
            }
            for id in p.lru.ids_by_age() {
                assert!(
                    self.registry[&id].instance_ids.contains_key(&pod_id(i)),
                    "pod {i} holds {id} but the registry does not say so"
                );
            }
        }
        for (id, r) in &self.registry {
            assert!(
                r.instance_ids.len() <= PODS,
                "{id} has {} copies",
                r.instance_ids.len()
            );
            assert!(
                r.max_copies == 0 || r.instance_ids.len() <= r.max_copies as usize,
                "{id} has {} copies, above its maximum {}",
                r.instance_ids.len(),
                r.max_copies
            );
        }
    }
}

#[test]
fn fifty_pods_ten_thousand_models_with_faults() {
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let mut c = Cluster {
        pods: (0..PODS)
            .map(|_| Pod {
                alive: true,
                lru: Lru::new(CAPACITY),
            })
            .collect(),
        registry: HashMap::new(),
        weight: HashMap::new(),
        bad: Default::default(),
        now: 1_000_000,
    };
    for m in 0..MODELS {
        let id = format!("model-{m}");
        c.registry.insert(id.clone(), ModelRecord::default());
        c.weight.insert(id.clone(), 1 + rng.below(20) as u64);
        if m.is_multiple_of(500) {
            c.bad.insert(id);
        }
    }
    // Hot models with copy bounds: model-1 keeps at least 3 copies, model-2 at most 2.
    c.registry.get_mut("model-1").expect("model").min_copies = 3;
    c.registry.get_mut("model-2").expect("model").max_copies = 2;
    let (mut scaled_up, mut scaled_down, mut proactive) = (0, 0, 0);
    let mut outcomes: HashMap<Outcome, usize> = HashMap::new();
    let mut bad_served = 0;
    for n in 0..REQUESTS {
        c.now += 1;
        // Faults: every 2,000 requests a pod dies (its copies are gone) or a dead one returns empty.
        if n % 2_000 == 1_999 {
            let p = rng.below(PODS);
            let pod = &mut c.pods[p];
            if pod.alive {
                pod.alive = false;
                for id in pod.lru.ids_by_age() {
                    pod.lru.remove(&id);
                    pod.lru.unloaded(&id);
                    // What the leader's reaper does for a pod gone for good.
                    if let Some(r) = c.registry.get_mut(&id) {
                        r.instance_ids.remove(&pod_id(p));
                    }
                }
            } else {
                pod.alive = true;
            }
        }
        // Skewed popularity: a few hot models, a long tail.
        let m = if rng.below(4) == 0 {
            rng.below(MODELS)
        } else {
            rng.below(200)
        };
        let id = format!("model-{m}");
        let entry = loop {
            let e = rng.below(PODS);
            if c.pods[e].alive {
                break e;
            }
        };
        let o = c.request(entry, &id, rng.next());
        if c.bad.contains(&id) && o == Outcome::Served {
            bad_served += 1;
        }
        if !c.bad.contains(&id) {
            assert_eq!(
                o,
                Outcome::Served,
                "request {n} for good model {id} was not served"
            );
        }
        *outcomes.entry(o).or_default() += 1;
        // Copy scaling: the hottest models gain a copy now and then (never past a maximum),
        // the leader restores minimum copies.
        if n % 500 == 250 {
            for hot in ["model-1", "model-2", "model-3"] {
                let r = &c.registry[hot];
                let below_max = r.max_copies == 0 || c.live_copies(hot) < r.max_copies as usize;
                if below_max && c.add_copy(hot, rng.next()) {
                    scaled_up += 1;
                }
            }
            while c.live_copies("model-1") < 3 && c.add_copy("model-1", rng.next()) {}
        }
        if n % 1_000 == 500 {
            scaled_down += c.scale_down_all();
        }
        // Proactive loading by the leader, with production's choice of models.
        if n % 5_000 == 4_000 {
            let records: Vec<(String, ModelRecord)> = c
                .registry
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let ids = proactive_loads(
                &records,
                &c.instances(),
                |_, _| true,
                |id, _| c.weight[id] as i64,
                c.now,
                EXPIRY_MS,
            );
            for id in ids {
                if c.add_copy(&id, rng.next()) {
                    proactive += 1;
                }
            }
        }
        if n.is_multiple_of(1_000) {
            c.check();
        }
    }
    c.check();
    assert_eq!(bad_served, 0, "a model whose loads always fail was served");
    let copies: usize = c.registry.values().map(|r| r.instance_ids.len()).sum();
    assert!(copies > 0);
    assert!(
        scaled_up > 0 && scaled_down > 0,
        "scaling never ran: up {scaled_up}, down {scaled_down}"
    );
    // A pod may have died since the leader's last pass: one more pass restores the minimum.
    while c.live_copies("model-1") < 3 && c.add_copy("model-1", rng.next()) {}
    assert!(c.live_copies("model-1") >= 3, "model-1 below its minimum");
    eprintln!(
        "outcomes over {REQUESTS} requests: {outcomes:?}; {copies} copies held; \
         {scaled_up} copies added for load, {scaled_down} dropped by scale-down, \
         {proactive} loaded proactively"
    );
}
