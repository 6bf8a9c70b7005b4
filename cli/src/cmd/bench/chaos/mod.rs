//! `modelmesh bench chaos`: a soak of a 3-pod mesh on a real etcd under steady load and model
//! churn while pods, runtimes and etcd are killed and restarted and every load is delayed. It
//! prints requests sent, succeeded and failed by code (only codes a client may retry are
//! allowed), registrations lost (must be 0), RSS growth per pod after warm-up (must stay under
//! 10 %), processes that died unbidden, and the longest a retrying client waited for a model;
//! it exits non-zero when a check fails. Not part of the test suite: it runs for minutes.

pub(super) mod cluster;
mod faults;
mod traffic;

use super::procs::example_request;
use anyhow::{Context, bail};
use cluster::{Etcd, Pod, PodSpec};
use faults::{Cluster, Samples};
use modelmesh_proto::mmesh::{self as mm, model_status_info::ModelStatus};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Flags of the soak.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Length of the soak, in seconds (the run: 600).
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// Pods in the mesh.
    #[arg(long, default_value_t = 3)]
    pods: usize,
    /// Models registered at the start (copies of the example; about half fit at once).
    #[arg(long, default_value_t = 120)]
    models: usize,
    /// Copies that fit in one pod.
    #[arg(long, default_value_t = 20)]
    fit: usize,
    /// Requests per second (open loop: sent on schedule whatever the answers).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Share of requests for any live model (most of which are not loaded: each is a load
    /// somewhere); the rest go to as many models as fit in half the cluster.
    #[arg(long, default_value_t = 0.01)]
    cold_share: f64,
    /// Mean seconds between faults.
    #[arg(long, default_value_t = 20)]
    fault_every: u64,
    /// Seconds between churn rounds (one model registered, one unregistered).
    #[arg(long, default_value_t = 5)]
    churn_every: u64,
    /// Delay of every load in the runtimes, in ms (`MIN-MAX`, drawn per load).
    #[arg(long, default_value = "50-1500")]
    load_delay: String,
    /// Seconds a process must have run before its RSS counts as warmed up.
    #[arg(long, default_value_t = 120)]
    warmup: u64,
    /// Example model every registered model is a copy of.
    #[arg(long, default_value = "tiny-regression")]
    model: String,
    /// Faults to inject, comma-separated: pod (SIGKILL a whole pod), runtime (SIGKILL a
    /// pod's runtime), etcd (SIGKILL etcd); each restarted after a few seconds.
    #[arg(long, default_value = "pod,runtime,etcd", value_delimiter = ',')]
    faults: Vec<faults::Kind>,
    /// Seed of the fault schedule (which fault, where, when); printed at the start, so a run
    /// that found something can be replayed with the same faults (default: random).
    #[arg(long)]
    seed: Option<u64>,
    /// Keep the work directory (every process's log) instead of deleting it.
    #[arg(long)]
    keep: bool,
    /// Log filter of the pods' processes (their logs are in the work directory).
    #[arg(long, default_value = "warn")]
    pod_log: String,
    /// Checkout root holding examples/.
    #[arg(long, default_value = ".")]
    root: PathBuf,
}

/// Bytes of one copy in the cache (the adapter's estimate: disk size × 1.25, in 8 KiB units).
fn copy_bytes(dir: &std::path::Path) -> u64 {
    fn walk(d: &std::path::Path) -> u64 {
        std::fs::read_dir(d)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| {
                let p = e.path();
                if p.is_dir() {
                    walk(&p)
                } else {
                    e.metadata().map(|m| m.len()).unwrap_or(0)
                }
            })
            .sum()
    }
    let disk = walk(dir) as f64 * 1.25;
    (disk.ceil() as u64).div_ceil(8192).max(1) * 8192
}

/// Runs the soak.
pub async fn run(a: Args) -> anyhow::Result<()> {
    if a.pods < 2 || a.fit < 10 || !(0.0..=1.0).contains(&a.cold_share) || a.rate <= 0.0 {
        bail!(
            "--pods must be at least 2, --fit at least 10, --cold-share within 0..1 and --rate above 0"
        );
    }
    let (root, repo, work) = super::procs::bench_dirs(&a.root, "chaos")?;
    let mut body = example_request(&root, &a.model)?;
    body.model_name.clear();
    let etcd = Etcd::start(&work).await?;
    let kv = format!("etcd:{}", etcd.url);
    let unit = copy_bytes(&repo.join(&a.model));
    let spec = PodSpec {
        repo: &repo,
        kv: &kv,
        // The adapter holds 256 MiB back; the rest fits `fit` copies.
        memory: (256 << 20) + a.fit as u64 * unit,
        default_size: unit,
        load_delay: &a.load_delay,
        log: &a.pod_log,
    };
    let mut pods = Vec::new();
    for i in 0..a.pods {
        pods.push(Pod::start(&work, &format!("pod-{i}"), &spec)?);
    }
    for p in &mut pods {
        p.wait_ready(Duration::from_secs(90)).await?;
    }
    let ports: Vec<u16> = pods.iter().map(|p| p.grpc).collect();
    let ids: Vec<String> = (0..a.models).map(|i| format!("soak-{i:04}")).collect();
    let shared = traffic::Shared::new(ports, ids.clone());
    let mut mgmt = shared.mgmt().context("no pod up")?;
    // The hot set is loaded before the traffic starts, as in a mesh that has been serving.
    let hot = a.fit * a.pods / 2;
    for (i, id) in ids.iter().enumerate() {
        super::mgmt::register(&mut mgmt, id, &a.model, "{}", i < hot).await?;
    }
    eprintln!(
        "[chaos] {} pods on etcd {}, {} models ({} fit per pod), {} req/s ({} % to any model), a fault every ~{} s, loads delayed {} ms, {} s",
        a.pods,
        etcd.url,
        a.models,
        a.fit,
        a.rate,
        a.cold_share * 100.0,
        a.fault_every,
        a.load_delay,
        a.seconds
    );
    let cluster = Arc::new(tokio::sync::Mutex::new(Cluster {
        etcd,
        down: vec![false; pods.len()],
        pods,
        etcd_down: false,
    }));
    // SIGTERM or Ctrl-C mid-soak stops every process of the cluster, not just this one.
    {
        let (cluster, work, keep) = (cluster.clone(), work.clone(), a.keep);
        tokio::spawn(async move {
            crate::cmd::signal::shutdown().await;
            faults::note("interrupted: stopping every process of the cluster");
            let mut c = cluster.lock().await;
            for p in &mut c.pods {
                p.kill_all();
            }
            c.etcd.proc.kill();
            if keep {
                eprintln!("logs kept in {}", work.display());
            } else {
                let _ = std::fs::remove_dir_all(&work);
            }
            std::process::exit(130);
        });
    }
    let seed = a.seed.unwrap_or_else(|| fastrand::u64(..));
    eprintln!("[chaos] fault schedule seed {seed} (replay with --seed {seed})");
    let started = Instant::now();
    let end = started + Duration::from_secs(a.seconds);
    // Most requests go to as many models as fit in half the cluster, the rest anywhere, so
    // the LRU keeps loading and evicting while most requests hit loaded copies.
    let load = traffic::dispatch(shared.clone(), body.clone(), a.rate, hot, a.cold_share);
    let churn = traffic::churn_loop(
        shared.clone(),
        a.model.clone(),
        Duration::from_secs(a.churn_every.max(1)),
    );
    let sampler = tokio::spawn(faults::sample(
        cluster.clone(),
        shared.clone(),
        Duration::from_secs(5),
    ));
    let progress = {
        let shared = shared.clone();
        tokio::spawn(async move {
            while !shared.stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(30)).await;
                let mut s = shared.stats.lock().unwrap_or_else(|p| p.into_inner());
                let slow = match std::mem::take(&mut s.slow) {
                    (0, ..) => String::new(),
                    (n, worst, id) => {
                        format!(
                            "; {n} requests over 10 s, slowest {:.1} s ({id})",
                            worst.as_secs_f64()
                        )
                    }
                };
                faults::note(&format!(
                    "{:>4.0} s: {} sent, {} ok, failed {:?}{slow}",
                    started.elapsed().as_secs_f64(),
                    s.sent,
                    s.ok,
                    s.failed
                ));
            }
        })
    };
    let faults = faults::drive(
        cluster.clone(),
        shared.clone(),
        Duration::from_secs(a.fault_every.max(1)),
        end,
        &a.faults,
        seed,
    )
    .await;
    tokio::time::sleep_until(end.into()).await;
    shared.stop.store(true, Ordering::Relaxed);
    let _ = load.await;
    let churn = churn.await.unwrap_or_default();
    let samples = sampler.await.unwrap_or_default();
    progress.abort();

    // Every registration that was acknowledged must still be there.
    let registered: Vec<String> = shared
        .registered
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .cloned()
        .collect();
    let mut lost = Vec::new();
    for id in &registered {
        let mut status = None;
        for _ in 0..20 {
            let Some(mut m) = shared.mgmt() else { break };
            match m
                .get_model_status(mm::GetStatusRequest {
                    model_id: id.clone(),
                })
                .await
            {
                Ok(s) => {
                    status = Some(s.into_inner().status);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
        if status == Some(ModelStatus::NotFound as i32) || status.is_none() {
            lost.push(id.clone());
        }
    }
    let stats = std::mem::take(&mut *shared.stats.lock().unwrap_or_else(|p| p.into_inner()));
    let uncertain = shared
        .uncertain
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .len();
    drop(cluster);
    let ok = report(
        &a,
        &stats,
        &faults,
        &samples,
        churn,
        registered.len(),
        &lost,
        uncertain,
    );
    if a.keep {
        println!("logs kept in {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    if !ok {
        bail!("the soak found a problem (see above)");
    }
    Ok(())
}

/// (warmed-up RSS, last RSS) of the longest-lived incarnation of each process, by pod.
fn growth(samples: &Samples, warmup: f64) -> Vec<(String, u64, u64)> {
    let mut best: std::collections::BTreeMap<String, (f64, u64, u64)> = Default::default();
    for ((name, _), series) in &samples.series {
        let Some(warm) = series.iter().find(|s| s.age >= warmup) else {
            continue;
        };
        let Some(last) = series.last() else { continue };
        let span = last.age - warm.age;
        let e = best.entry(name.clone()).or_insert((-1.0, 0, 0));
        if span > e.0 {
            *e = (span, warm.rss, last.rss);
        }
    }
    best.into_iter().map(|(n, (_, w, l))| (n, w, l)).collect()
}

#[allow(clippy::too_many_arguments)]
fn report(
    a: &Args,
    stats: &traffic::Stats,
    faults: &faults::Faults,
    samples: &Samples,
    churn: traffic::Churn,
    registered: usize,
    lost: &[String],
    uncertain: usize,
) -> bool {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut ok = true;
    let mut check = |good: bool| {
        ok &= good;
        if good { "ok" } else { "FAILED" }
    };
    println!(
        "\nChaos soak: {} pods, real etcd, {} s, {} req/s, {} models + churn, loads delayed {} ms",
        a.pods, a.seconds, a.rate, a.models, a.load_delay
    );
    println!(
        "faults: {} pod kills, {} runtime kills, {} etcd restarts (one at a time, every ~{} s)",
        faults.pod_kills, faults.runtime_kills, faults.etcd_restarts, a.fault_every
    );
    let failed: u64 = stats.failed.values().sum();
    println!(
        "requests: {} ({} gave up, {} not sent: the client had {} in flight); attempts: {} sent, {} succeeded ({:.3} %), {} failed",
        stats.requests,
        stats.gave_up,
        stats.skipped,
        512,
        stats.sent,
        stats.ok,
        100.0 * stats.ok as f64 / stats.sent.max(1) as f64,
        failed
    );
    let mut lat = stats.latencies_us.clone();
    lat.sort_unstable();
    let q = |f: f64| {
        let i = ((lat.len() as f64 * f).ceil() as usize).clamp(1, lat.len().max(1)) - 1;
        lat.get(i).map(|us| *us as f64 / 1000.0).unwrap_or(0.0)
    };
    println!(
        "latency of a request (retries included): p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms",
        q(0.5),
        q(0.99),
        q(0.999),
        q(1.0)
    );
    for (code, n) in &stats.failed {
        let kind = if traffic::retryable(code) {
            "retryable"
        } else {
            "NOT retryable"
        };
        println!("  {code:<18} {n:>8}  ({kind})");
        let mut kinds: Vec<(&String, &u64)> =
            stats.messages.get(code).into_iter().flatten().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1));
        for (m, k) in kinds.iter().take(4) {
            println!("      {k:>8} x {m}");
        }
    }
    let bad: u64 = stats
        .failed
        .iter()
        .filter(|(c, _)| !traffic::retryable(c))
        .map(|(_, n)| n)
        .sum();
    println!("non-retryable failures: {bad}  [{}]", check(bad == 0));
    println!(
        "requests that never succeeded (60 s of retries): {}  [{}]",
        stats.gave_up,
        check(stats.gave_up == 0)
    );
    for e in &stats.non_retryable {
        println!("    {e}");
    }
    println!(
        "registrations: {registered} acknowledged and kept ({} registered and {} unregistered by the churn, {} calls failed and retried, {uncertain} of unknown outcome); lost: {}  [{}]",
        churn.registered,
        churn.unregistered,
        churn.failed,
        lost.len(),
        check(lost.is_empty())
    );
    if !lost.is_empty() {
        println!("    lost: {lost:?}");
    }
    println!(
        "longest unavailability of a model (a retrying client's first attempt to its success): {:.1} s ({}); {} models saw a failed attempt",
        stats.longest_outage.0.as_secs_f64(),
        if stats.longest_outage.1.is_empty() {
            "-"
        } else {
            &stats.longest_outage.1
        },
        stats.models_with_failures.len()
    );
    println!(
        "processes that died unbidden: {}  [{}]",
        samples.unexpected_exits.len(),
        check(samples.unexpected_exits.is_empty())
    );
    for e in &samples.unexpected_exits {
        println!("    {e}");
    }
    println!(
        "recoveries that took too long: {}  [{}]",
        faults.slow_recoveries.len(),
        check(faults.slow_recoveries.is_empty())
    );
    for e in &faults.slow_recoveries {
        println!("    {e}");
    }
    println!(
        "RSS after {} s warm-up -> end, longest-lived incarnation of each process:",
        a.warmup
    );
    let rows = growth(samples, a.warmup as f64);
    let mut pods: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for (name, warm, last) in &rows {
        println!(
            "  {name:<16} {:>7.1} -> {:>7.1} MiB ({:+.1} %)",
            mib(*warm),
            mib(*last),
            100.0 * (*last as f64 - *warm as f64) / (*warm).max(1) as f64
        );
        let pod = name.split('/').next().unwrap_or(name).to_string();
        let e = pods.entry(pod).or_default();
        e.0 += warm;
        e.1 += last;
    }
    for (pod, (warm, last)) in &pods {
        let g = 100.0 * (*last as f64 - *warm as f64) / (*warm).max(1) as f64;
        println!(
            "  {pod:<16} {:>7.1} -> {:>7.1} MiB ({g:+.1} %)  [{}]",
            mib(*warm),
            mib(*last),
            check(g < 10.0)
        );
    }
    if rows.is_empty() {
        println!("  (no process lived past the warm-up: run longer or lower --warmup)");
    }
    println!("result: {}", if ok { "PASSED" } else { "FAILED" });
    ok
}
