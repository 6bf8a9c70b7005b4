//! The fault driver: one fault at a time, at random intervals: SIGKILL of a whole pod
//! (restarted after a few seconds), SIGKILL of a pod's runtime (restarted), or etcd killed and
//! restarted on its data. A sampler records each process's RSS and restarts any process that
//! died without being killed (counted: there should be none).

use super::cluster::{Etcd, Pod};
use super::traffic::Shared;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// The cluster the driver and the sampler share.
pub struct Cluster {
    /// etcd.
    pub etcd: Etcd,
    /// The pods.
    pub pods: Vec<Pod>,
    /// Pods the driver took down on purpose (not restarted by the sampler).
    pub down: Vec<bool>,
    /// etcd is down on purpose.
    pub etcd_down: bool,
}

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// SIGKILL all three processes of a pod, restart them.
    Pod,
    /// SIGKILL a pod's runtime, restart it.
    Runtime,
    /// SIGKILL etcd, restart it on its data.
    Etcd,
}

/// What the driver did.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// Pods SIGKILLed (all three processes).
    pub pod_kills: u32,
    /// Runtimes SIGKILLed.
    pub runtime_kills: u32,
    /// etcd kills and restarts.
    pub etcd_restarts: u32,
    /// Recoveries that did not finish in time (each is a failure of the soak).
    pub slow_recoveries: Vec<String>,
}

/// One RSS reading.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Seconds since this process incarnation started.
    pub age: f64,
    /// Resident set size, bytes.
    pub rss: u64,
}

/// RSS series per (pod, process, pid), and processes that died on their own.
#[derive(Debug, Default)]
pub struct Samples {
    /// Readings of each process incarnation.
    pub series: BTreeMap<(String, u32), Vec<Sample>>,
    /// Processes found dead without a fault, restarted.
    pub unexpected_exits: Vec<String>,
}

/// Prints a driver event with its UTC time of day, to line it up with the pods' logs.
pub fn note(what: &str) {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let day = ms % 86_400_000;
    eprintln!(
        "[chaos {:02}:{:02}:{:02}.{:03}] {what}",
        day / 3_600_000,
        day / 60_000 % 60,
        day / 1000 % 60,
        day % 1000
    );
}

fn between(rng: &mut fastrand::Rng, lo: Duration, hi: Duration) -> Duration {
    let span = (hi - lo).as_millis() as u64;
    lo + Duration::from_millis(rng.u64(0..=span))
}

/// Waits for pod `i`'s `/ready`, holding the cluster lock only for each poll.
async fn wait_pod(cluster: &Mutex<Cluster>, i: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let ready = {
            let mut c = cluster.lock().await;
            c.pods[i]
                .wait_ready(Duration::from_millis(200))
                .await
                .is_ok()
        };
        if ready {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Injects faults every `every` on average until `end`.
pub async fn drive(
    cluster: Arc<Mutex<Cluster>>,
    shared: Arc<Shared>,
    every: Duration,
    end: Instant,
    kinds: &[Kind],
    seed: u64,
) -> Faults {
    // Its own generator, so a seed replays the same faults at the same times.
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut f = Faults::default();
    let n = shared.ports.len();
    loop {
        let wait = between(&mut rng, every / 2, every * 3 / 2);
        if Instant::now() + wait + Duration::from_secs(20) > end {
            break;
        }
        tokio::time::sleep(wait).await;
        if kinds.is_empty() {
            continue;
        }
        match kinds[rng.usize(..kinds.len())] {
            // A whole pod dies; the Service stops sending to it; it comes back.
            Kind::Pod => {
                let i = rng.usize(..n);
                shared.up[i].store(false, Ordering::Relaxed);
                {
                    let mut c = cluster.lock().await;
                    c.down[i] = true;
                    c.pods[i].kill_all();
                }
                f.pod_kills += 1;
                note(&format!("SIGKILL pod-{i}"));
                tokio::time::sleep(between(
                    &mut rng,
                    Duration::from_secs(2),
                    Duration::from_secs(8),
                ))
                .await;
                let started = cluster.lock().await.pods[i].start_all();
                if let Err(e) = started {
                    f.slow_recoveries.push(format!("pod-{i}: {e}"));
                }
                if !wait_pod(&cluster, i, Duration::from_secs(90)).await {
                    f.slow_recoveries
                        .push(format!("pod-{i} not ready 90 s after restart"));
                }
                cluster.lock().await.down[i] = false;
                shared.up[i].store(true, Ordering::Relaxed);
                note(&format!("pod-{i} back"));
            }
            // A runtime crashes inside a pod that stays in the Service.
            Kind::Runtime => {
                let i = rng.usize(..n);
                {
                    let mut c = cluster.lock().await;
                    c.down[i] = true;
                    c.pods[i].runtime.kill();
                }
                f.runtime_kills += 1;
                note(&format!("SIGKILL runtime of pod-{i}"));
                tokio::time::sleep(between(
                    &mut rng,
                    Duration::from_secs(1),
                    Duration::from_secs(3),
                ))
                .await;
                let mut c = cluster.lock().await;
                if let Err(e) = c.pods[i].runtime.spawn() {
                    f.slow_recoveries.push(format!("pod-{i} runtime: {e}"));
                }
                c.down[i] = false;
            }
            // etcd dies and comes back on its data.
            Kind::Etcd => {
                {
                    let mut c = cluster.lock().await;
                    c.etcd_down = true;
                    c.etcd.proc.kill();
                }
                f.etcd_restarts += 1;
                note("SIGKILL etcd");
                tokio::time::sleep(between(
                    &mut rng,
                    Duration::from_secs(2),
                    Duration::from_secs(10),
                ))
                .await;
                let mut c = cluster.lock().await;
                if let Err(e) = c.etcd.proc.spawn() {
                    f.slow_recoveries.push(format!("etcd: {e}"));
                }
                if let Err(e) = c.etcd.wait_healthy(Duration::from_secs(60)).await {
                    f.slow_recoveries.push(format!("etcd: {e}"));
                }
                c.etcd_down = false;
                note("etcd back");
            }
        }
    }
    f
}

/// Every `every`, reads each process's RSS and restarts processes that died unbidden.
pub async fn sample(cluster: Arc<Mutex<Cluster>>, shared: Arc<Shared>, every: Duration) -> Samples {
    let mut s = Samples::default();
    while !shared.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(every).await;
        let mut c = cluster.lock().await;
        let down = c.down.clone();
        for (i, pod) in c.pods.iter_mut().enumerate() {
            for p in [&mut pod.runtime, &mut pod.adapter, &mut pod.sidecar] {
                match p.pid() {
                    Some(pid) => {
                        let rss = super::super::procstat::rss(pid);
                        s.series
                            .entry((p.name.clone(), pid))
                            .or_default()
                            .push(Sample {
                                age: p.started.elapsed().as_secs_f64(),
                                rss,
                            });
                    }
                    None if !down[i] => {
                        s.unexpected_exits.push(p.name.clone());
                        note(&format!("{} exited on its own; restarting it", p.name));
                        let _ = p.spawn();
                    }
                    None => {}
                }
            }
        }
        if !c.etcd_down && c.etcd.proc.pid().is_none() {
            s.unexpected_exits.push("etcd".into());
            let _ = c.etcd.proc.spawn();
        }
    }
    s
}
