//! The sidecar's own footprint: how long it takes to be ready once its runtime is, its memory
//! when idle, and its memory with many registered models (the registry is held in memory).

use super::mgmt::wait_mesh;
use super::pod::spawn_sidecar;
use super::pod::start_pod;
use super::procs::free_port;
use super::procs::{bench_dirs, wait_ready};
use super::procstat::{rss, tree_usage};
use modelmesh_proto::mmesh::{
    self as mm, model_mesh_client::ModelMeshClient, model_status_info::ModelStatus,
};
use std::path::Path;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Flags of `modelmesh bench footprint`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Models to register (not loaded) for the memory measurement.
    #[arg(long, default_value_t = 100_000)]
    models: usize,
    /// Copies to load, on a second sidecar whose runtime loads instantly, for the memory held
    /// per loaded copy (0: skip).
    #[arg(long, default_value_t = 10_000)]
    loaded: usize,
    /// Concurrent registration calls.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Checkout root holding examples/.
    #[arg(long, default_value = ".")]
    root: PathBuf,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Registers `n` models `<prefix>-NNNNNN` from `concurrency` tasks, loading each (and
/// waiting) with `load`; returns the time it took.
async fn register_many(
    mgmt: &ModelMeshClient<Channel>,
    prefix: &str,
    n: usize,
    concurrency: usize,
    load: bool,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let per = n.div_ceil(concurrency.max(1));
    let mut tasks = Vec::new();
    for w in 0..concurrency.max(1) {
        let mut c = mgmt.clone();
        let ids = (w * per)..((w + 1) * per).min(n);
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            for i in ids {
                let req = mm::RegisterModelRequest {
                    model_id: format!("{prefix}-{i:06}"),
                    model_info: Some(mm::ModelInfo {
                        r#type: "mt:onnx".into(),
                        path: format!("models/{prefix}-{i:06}"),
                        key: r#"{"model_type":{"name":"onnx"}}"#.into(),
                        ..Default::default()
                    }),
                    load_now: load,
                    sync: load,
                    ..Default::default()
                };
                let status = c.register_model(req).await?.into_inner().status;
                if load && status != ModelStatus::Loaded as i32 {
                    anyhow::bail!("{prefix}-{i:06} did not load (status {status})");
                }
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(t.elapsed())
}

/// Runs the scenario.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let (_, repo, work) = bench_dirs(&a.root, "footprint")?;
    let started = Instant::now();
    let mut pod = start_pod(&work, "pod", "memory", &repo, &["--internal-port", "0"])?;
    wait_ready(&mut pod.runtime, Duration::from_secs(30)).await?;
    let runtime_ready = started.elapsed();
    // Ready: the ModelMesh API answers (the sidecar has found its runtime through the adapter).
    let mgmt = wait_mesh(pod.grpc, Duration::from_secs(60)).await?;
    let sidecar_ready = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = pod.sidecar.child.id();
    let idle = rss(pid);
    eprintln!(
        "registering {} models ({} at a time)",
        a.models, a.concurrency
    );
    let registering = register_many(&mgmt, "model", a.models, a.concurrency, false).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let loaded = rss(pid);
    let peak = tree_usage(pid).peak_rss;
    println!(
        "\nSidecar footprint (embedded KV store; the runtime and adapter are separate processes)"
    );
    println!(
        "ready after its runtime: {:.0} ms (runtime ready {:.0} ms after start, sidecar {:.0} ms)",
        (sidecar_ready.saturating_sub(runtime_ready)).as_secs_f64() * 1e3,
        runtime_ready.as_secs_f64() * 1e3,
        sidecar_ready.as_secs_f64() * 1e3
    );
    println!("RSS idle: {:.1} MiB", mib(idle));
    println!(
        "RSS with {} registered models: {:.1} MiB (peak {:.1} MiB); registered in {:.1} s ({:.0}/s)",
        a.models,
        mib(loaded),
        mib(peak),
        registering.as_secs_f64(),
        a.models as f64 / registering.as_secs_f64().max(1e-9)
    );
    drop(pod);
    if a.loaded > 0 {
        loaded_copies(&work, a.loaded, a.concurrency).await?;
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// A second sidecar in front of a runtime whose loads finish at once: RSS idle and with
/// `n` loaded copies (room for twice as many, so nothing is evicted).
async fn loaded_copies(work: &Path, n: usize, concurrency: usize) -> anyhow::Result<()> {
    let dir = work.join("loaded");
    std::fs::create_dir_all(&dir)?;
    let (rt, mp) = (free_port()?, free_port()?);
    let runtime = super::instant_runtime::serve(rt, 2 * n as u64);
    let extra = ["--internal-port", "0"];
    let sidecar = spawn_sidecar(&dir, "loaded", "memory", mp, rt, rt, &extra)?;
    let mgmt = wait_mesh(mp, Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = sidecar.child.id();
    let idle = rss(pid);
    eprintln!("loading {n} copies on a runtime whose loads are instant");
    let took = register_many(&mgmt, "loaded", n, concurrency, true).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let full = rss(pid);
    println!(
        "RSS with {n} loaded copies (instant runtime): {:.1} MiB (idle {:.1} MiB, {:.1} KiB per copy); loaded in {:.1} s ({:.0}/s)",
        mib(full),
        mib(idle),
        full.saturating_sub(idle) as f64 / 1024.0 / n.max(1) as f64,
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64().max(1e-9)
    );
    drop(sidecar);
    runtime.abort();
    Ok(())
}
