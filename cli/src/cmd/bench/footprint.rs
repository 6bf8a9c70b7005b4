//! The sidecar's own footprint: how long it takes to be ready once its runtime is, its memory
//! when idle, and its memory with many registered models (the registry is held in memory).

use super::pod::start_pod;
use super::procs::{bench_dirs, channel, wait_ready};
use super::procstat::{rss, tree_usage};
use modelmesh_proto::mmesh::{self as mm, model_mesh_client::ModelMeshClient};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Flags of `modelmesh bench footprint`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Models to register (not loaded) for the memory measurement.
    #[arg(long, default_value_t = 100_000)]
    models: usize,
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

/// Runs the scenario.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let (_, repo, work) = bench_dirs(&a.root, "footprint")?;
    let started = Instant::now();
    let mut pod = start_pod(&work, "pod", "memory", &repo, &["--internal-port", "0"])?;
    wait_ready(&mut pod.runtime, Duration::from_secs(30)).await?;
    let runtime_ready = started.elapsed();
    // Ready: the ModelMesh API answers (the sidecar has found its runtime through the adapter).
    let mut mgmt = ModelMeshClient::new(channel(pod.grpc)?);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let probe = mm::GetStatusRequest {
            model_id: "probe".into(),
        };
        if mgmt.get_model_status(probe).await.is_ok() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the sidecar was not ready in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sidecar_ready = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = pod.sidecar.child.id();
    let idle = rss(pid);
    eprintln!(
        "registering {} models ({} at a time)",
        a.models, a.concurrency
    );
    let t = Instant::now();
    let per = a.models.div_ceil(a.concurrency.max(1));
    let mut tasks = Vec::new();
    for w in 0..a.concurrency.max(1) {
        let mut c = mgmt.clone();
        let ids = (w * per)..((w + 1) * per).min(a.models);
        tasks.push(tokio::spawn(async move {
            for i in ids {
                let req = mm::RegisterModelRequest {
                    model_id: format!("model-{i:06}"),
                    model_info: Some(mm::ModelInfo {
                        r#type: "mt:onnx".into(),
                        path: format!("models/model-{i:06}"),
                        key: r#"{"model_type":{"name":"onnx"}}"#.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                c.register_model(req).await?;
            }
            Ok::<_, tonic::Status>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let registering = t.elapsed();
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
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
