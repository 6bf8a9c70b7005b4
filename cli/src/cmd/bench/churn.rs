//! Churn: requests spread over ten times more models than fit in the pod, so the LRU evicts
//! and loads all the time, against the same load spread over models that all fit (loaded),
//! in one run.

use super::load::{Header, ThroughputFlags, concurrent_spread};
use super::mgmt::{register, wait_mesh};
use super::pod::start_pod_with_memory;
use super::procs::{channel, example_request, wait_ready};
use super::procstat::tree_usage;
use super::stats::{Summary, us};
use anyhow::{Context, bail};
use modelmesh_proto::mmesh::{self as mm, model_status_info::ModelStatus};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Flags of the scenario.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Example model every registered model is a copy of.
    #[arg(long, default_value = "tiny-regression")]
    model: String,
    /// Copies that fit in the pod (its capacity is set to exactly this many).
    #[arg(long, default_value_t = 20)]
    fit: usize,
    /// How many times more models than fit the churn run spreads its requests over.
    #[arg(long, default_value_t = 10)]
    spread: usize,
    #[command(flatten)]
    load: ThroughputFlags,
    /// Checkout root holding examples/.
    #[arg(long, default_value = ".")]
    root: PathBuf,
}

/// Bytes of the files under `dir`.
fn disk_size(dir: &Path) -> u64 {
    walk(dir).unwrap_or(0)
}

fn walk(dir: &Path) -> std::io::Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        n += if e.file_type()?.is_dir() {
            walk(&e.path())?
        } else {
            e.metadata()?.len()
        };
    }
    Ok(n)
}

/// The adapter's defaults: memory = disk size × 1.25, and 256 MiB held back from capacity.
const SIZE_MULTIPLIER: f64 = 1.25;
const ADAPTER_BUFFER: u64 = 256 << 20;
const UNIT: u64 = 8 * 1024;

/// Runs the scenario.
pub async fn run(a: Args) -> anyhow::Result<()> {
    if a.fit < 10 || a.spread < 2 {
        bail!("--fit must be at least 10 (the sidecar's smallest cache) and --spread at least 2");
    }
    let (root, repo, work) = super::procs::bench_dirs(&a.root, "churn")?;
    let req = example_request(&root, &a.model)?;
    let disk = disk_size(&repo.join(&a.model));
    let units = ((disk as f64 * SIZE_MULTIPLIER).ceil() as u64)
        .div_ceil(UNIT)
        .max(1);
    let memory = ADAPTER_BUFFER + a.fit as u64 * units * UNIT;
    let mut pod = start_pod_with_memory(
        &work,
        "pod",
        "memory",
        &repo,
        &["--internal-port", "0"],
        memory,
        // The sidecar refuses a capacity below ten default-sized models: make the default
        // one copy, so a small cache is allowed.
        Some(units * UNIT),
    )?;
    wait_ready(&mut pod.runtime, Duration::from_secs(30)).await?;
    let mut mgmt = wait_mesh(pod.grpc, Duration::from_secs(60)).await?;
    // The key carries the size on disk, so the mesh predicts each copy's size before loading.
    let key = serde_json::json!({ "disk_size_bytes": disk }).to_string();
    let total = a.fit * a.spread;
    eprintln!(
        "registering {total} copies of {} ({} KiB each in the cache); {} fit",
        a.model,
        units * UNIT / 1024,
        a.fit
    );
    let mut headers: Vec<Header> = Vec::with_capacity(total);
    for i in 0..total {
        let id = format!("churn-{i:05}");
        register(&mut mgmt, &id, &a.model, &key, false).await?;
        headers.push(Some(("mm-model-id", id.parse()?)));
    }
    let ch = channel(pod.grpc)?;
    // All loaded: the first `fit` models, each loaded by a first request before measuring.
    let resident = &headers[..a.fit];
    let mut client =
        modelmesh_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient::new(
            ch.clone(),
        );
    for h in resident {
        let mut r = tonic::Request::new(req.clone());
        if let Some((k, v)) = h {
            r.metadata_mut().insert(*k, v.clone());
        }
        client
            .model_infer(r)
            .await
            .context("loading a resident model")?;
    }
    let sidecar = pod.sidecar.child.id();
    eprintln!(
        "{} loops for {} s over {} loaded models, then over all {total}",
        a.load.concurrency, a.load.seconds, a.fit
    );
    let before = tree_usage(sidecar);
    let loaded =
        concurrent_spread(&ch, &req, a.load.concurrency, a.load.duration(), resident).await;
    let mid = tree_usage(sidecar);
    let churn = concurrent_spread(&ch, &req, a.load.concurrency, a.load.duration(), &headers).await;
    let after = tree_usage(sidecar);
    let mut held = 0;
    for i in 0..total {
        let s = mgmt
            .get_model_status(mm::GetStatusRequest {
                model_id: format!("churn-{i:05}"),
            })
            .await?
            .into_inner();
        held += usize::from(s.status == ModelStatus::Loaded as i32);
    }
    println!(
        "\nChurn: {} loops over {total} models of which {} fit, vs over {} loaded models ({})",
        a.load.concurrency, a.fit, a.fit, a.model
    );
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>9} | {:>8} {:>7} | {:>16}",
        "run", "p50", "p90", "p99", "max", "req/s", "errors", "sidecar CPU/req"
    );
    let cpu = |b: &super::procstat::Usage, e: &super::procstat::Usage, s: &Summary| {
        (e.cpu_secs - b.cpu_secs) / (s.ok + s.errors).max(1) as f64 * 1e6
    };
    let churn_name = format!("churn ({}x what fits)", a.spread);
    for (name, s, c) in [
        ("all loaded", &loaded, cpu(&before, &mid, &loaded)),
        (churn_name.as_str(), &churn, cpu(&mid, &after, &churn)),
    ] {
        println!(
            "{name:<22} {:>9} {:>9} {:>9} {:>9} | {:>8.0} {:>7} | {:>13.0} µs",
            us(s.quantile(0.5)),
            us(s.quantile(0.9)),
            us(s.quantile(0.99)),
            us(s.max()),
            s.throughput(),
            s.errors,
            c
        );
    }
    println!(
        "\nchurn / all loaded: throughput {:.2}, p99 {:.1}x; copies loaded at the end: {held} of {total} registered (capacity {})",
        churn.throughput() / loaded.throughput().max(1e-9),
        churn.quantile(0.99).as_secs_f64() / loaded.quantile(0.99).as_secs_f64().max(1e-9),
        a.fit
    );
    drop(pod);
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
