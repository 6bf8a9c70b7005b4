//! Scale: the time of the mesh's decisions in a simulated cluster of 1,000 pods and 1,000,000
//! models, against the same decisions in a 50-pod, 10,000-model cluster (the simulation
//! test's size), in one run. The decisions are the production functions (`routing::decide`,
//! `scaling::proactive_loads`, `scaling::scale_down`); the instance snapshot a forwarded
//! request takes (the eligible pods, as the proxy builds it) is timed too.

use super::stats::Summary;
use modelmesh_mesh::constraints::TypeConstraints;
use modelmesh_mesh::eligible::{self, EligibleCache};
use modelmesh_mesh::registry::records::{InstanceRecord, ModelRecord};
use modelmesh_mesh::routing::{Decision, View, decide};
use modelmesh_mesh::scaling::{LocalCopy, proactive_loads, scale_down};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Flags of the scenario.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Pods in the large cluster.
    #[arg(long, default_value_t = 1_000)]
    pods: usize,
    /// Registered models in the large cluster.
    #[arg(long, default_value_t = 1_000_000)]
    models: usize,
    /// Routing decisions timed per kind.
    #[arg(long, default_value_t = 20_000)]
    decisions: usize,
}

/// xorshift: deterministic, so runs compare.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

const NOW: u64 = 1_800_000_000_000;
const CAPACITY: i64 = 100_000;

struct Cluster {
    instances: BTreeMap<String, InstanceRecord>,
    /// Every model; a tenth hold one or two copies.
    records: Vec<(String, ModelRecord)>,
    /// Indexes of loaded and unloaded models.
    loaded: Vec<usize>,
    unloaded: Vec<usize>,
}

fn pod(i: usize) -> String {
    format!("pod-{i:04}")
}

fn build(pods: usize, models: usize) -> Cluster {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut instances = BTreeMap::new();
    for i in 0..pods {
        let used = (CAPACITY * 9 / 10) + rng.below(CAPACITY as usize / 10) as i64;
        instances.insert(
            pod(i),
            InstanceRecord {
                capacity: CAPACITY,
                used,
                count: (used / 8).max(1),
                lru_time: NOW - 3_600_000 - rng.below(3_600_000) as u64,
                labels: vec!["mt:onnx".into(), "rt:modelmesh-onnx".into()],
                internal_address: format!("10.0.{}.{}:8080", i / 250, i % 250),
                ..Default::default()
            },
        );
    }
    let (mut records, mut loaded, mut unloaded) = (Vec::with_capacity(models), vec![], vec![]);
    for m in 0..models {
        let mut r = ModelRecord {
            model_type: "mt:onnx".into(),
            path: format!("models/m-{m:07}"),
            key: "{}".into(),
            last_used: NOW - rng.below(86_400_000) as u64,
            ..Default::default()
        };
        if m % 10 == 0 {
            for _ in 0..1 + rng.below(2) {
                r.instance_ids.insert(pod(rng.below(pods)), NOW - 60_000);
            }
            loaded.push(m);
        } else {
            unloaded.push(m);
        }
        records.push((format!("m-{m:07}"), r));
    }
    Cluster {
        instances,
        records,
        loaded,
        unloaded,
    }
}

/// What was timed in one cluster.
struct Timings {
    snapshot: Summary,
    shared: Summary,
    forward: Summary,
    place: Summary,
    proactive: Duration,
    proactive_picked: usize,
    scale_down: Duration,
    registry_copy: Duration,
}

fn time_each(n: usize, mut f: impl FnMut(usize)) -> Summary {
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        f(i);
        lat.push(t.elapsed());
    }
    Summary::new(lat, 0, start.elapsed())
}

fn measure(c: &Cluster, decisions: usize) -> Timings {
    let constraints = TypeConstraints::default();
    let me = pod(0);
    let mut rng = Rng(7);
    // The proxy's per-request snapshot of eligible pods (a copy of the instance table).
    let snapshot = time_each(decisions.min(2_000), |_| {
        let s: BTreeMap<String, InstanceRecord> = c
            .instances
            .iter()
            .filter(|(_, i)| constraints.eligible("mt:onnx", &i.labels))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        black_box(s);
    });
    // What the request path does now: a shared snapshot (rebuilt every 100 ms or on join/leave).
    let cache = EligibleCache::new(eligible::MAX_AGE);
    let build = || {
        c.instances
            .iter()
            .filter(|(_, i)| constraints.eligible("mt:onnx", &i.labels))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    cache.get("mt:onnx", Instant::now(), c.instances.len(), build);
    let shared = time_each(decisions, |_| {
        black_box(cache.get("mt:onnx", Instant::now(), c.instances.len(), build));
    });
    let mut decide_on = |pick: &[usize], expect_forward: bool| {
        time_each(decisions, |i| {
            let (_, rec) = &c.records[pick[rng.below(pick.len())]];
            let view = View {
                me: &me,
                loaded_here: false,
                record: rec,
                instances: &c.instances,
                units: 2,
                tried_copies: &[],
                tried_loads: &[],
                balanced: false,
                tie: i as u64,
                now_ms: NOW,
                failure_expiry_ms: 300_000,
            };
            let d = decide(&view);
            debug_assert!(expect_forward == matches!(d, Decision::ForwardHit(_)));
            black_box(d);
        })
    };
    let forward = decide_on(&c.loaded, true);
    let place = decide_on(&c.unloaded, false);
    // What the leader's periodic tasks paid before they scanned the registry in place.
    let t = Instant::now();
    black_box(c.records.clone());
    let registry_copy = t.elapsed();
    let t = Instant::now();
    let picked = proactive_loads(
        &c.records,
        &c.instances,
        |_, _| true,
        |_, _| 2,
        NOW,
        300_000,
    )
    .len();
    let proactive = t.elapsed();
    // Scale-down for one pod: its copies against the whole registry (as a map, as the janitor
    // reads it).
    let map: BTreeMap<String, ModelRecord> = c.records.iter().cloned().collect();
    let copies: Vec<LocalCopy> = c
        .records
        .iter()
        .filter(|(_, r)| r.instance_ids.contains_key(&me))
        .map(|(id, r)| LocalCopy {
            id: id.clone(),
            last_used: r.last_used,
            units: 2,
        })
        .collect();
    let t = Instant::now();
    black_box(scale_down(&me, &copies, &map, &c.instances, NOW));
    let scale_down = t.elapsed();
    Timings {
        snapshot,
        shared,
        forward,
        place,
        proactive,
        proactive_picked: picked,
        scale_down,
        registry_copy,
    }
}

/// Runs the scenario.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let sizes = [(50, 10_000), (a.pods, a.models)];
    let mut results = Vec::new();
    for (pods, models) in sizes {
        eprintln!("building a cluster of {pods} pods and {models} models");
        let t = Instant::now();
        let c = build(pods, models);
        eprintln!(
            "built in {:.1} s; timing decisions",
            t.elapsed().as_secs_f64()
        );
        results.push(((pods, models), measure(&c, a.decisions)));
    }
    println!("\nDecision time (one core, production decision functions, no I/O)");
    println!(
        "{:<52} {:>22} {:>22}",
        "decision",
        format!("{} pods/{} models", sizes[0].0, sizes[0].1),
        format!("{} pods/{} models", sizes[1].0, sizes[1].1)
    );
    let fine = |d: Duration| format!("{:.2} µs", d.as_secs_f64() * 1e6);
    let q = |s: &Summary| format!("{} / {}", fine(s.quantile(0.5)), fine(s.quantile(0.99)));
    let (s, l) = (&results[0].1, &results[1].1);
    let rows = [
        (
            "request: copy of the eligible pods (p50 / p99)",
            q(&s.snapshot),
            q(&l.snapshot),
        ),
        (
            "request: shared eligible-pod snapshot (p50 / p99)",
            q(&s.shared),
            q(&l.shared),
        ),
        (
            "request: route to a copy elsewhere (p50 / p99)",
            q(&s.forward),
            q(&l.forward),
        ),
        (
            "request: place a load, no copy (p50 / p99)",
            q(&s.place),
            q(&l.place),
        ),
        (
            "leader: proactive loads over all models",
            format!("{:.1} ms ({} picked)", ms(s.proactive), s.proactive_picked),
            format!("{:.1} ms ({} picked)", ms(l.proactive), l.proactive_picked),
        ),
        (
            "leader: a copy of the whole registry",
            format!("{:.1} ms", ms(s.registry_copy)),
            format!("{:.1} ms", ms(l.registry_copy)),
        ),
        (
            "pod: scale-down over its copies",
            format!("{:.2} ms", ms(s.scale_down)),
            format!("{:.2} ms", ms(l.scale_down)),
        ),
    ];
    for (name, a, b) in rows {
        println!("{name:<52} {a:>22} {b:>22}");
    }
    // Per forwarded request: the snapshot (shared, plus one rebuild per 100 ms spread over the
    // requests of that window) and the decision.
    let per = |t: &Timings, rate: f64| {
        let rebuild = t.snapshot.quantile(0.5).as_secs_f64()
            / (rate * eligible::MAX_AGE.as_secs_f64()).max(1.0);
        (t.shared.quantile(0.5).as_secs_f64() + rebuild + t.forward.quantile(0.5).as_secs_f64())
            * 1e6
    };
    let old =
        |t: &Timings| (t.snapshot.quantile(0.5) + t.forward.quantile(0.5)).as_secs_f64() * 1e6;
    for (size, t) in [(sizes[0], s), (sizes[1], l)] {
        println!(
            "per forwarded request at {} pods (p50): {:.1} µs with a copy per request; shared snapshot: {:.1} µs at 100 req/s, {:.1} µs at 10,000 req/s",
            size.0,
            old(t),
            per(t, 100.0),
            per(t, 10_000.0)
        );
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
