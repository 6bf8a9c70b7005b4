//! Cache miss: the time to the first answer for a registered model that no pod has loaded,
//! against the runtime's own time to load the same files and answer, in one run. The
//! difference is what the mesh and the adapter add to a load (registry records, the load
//! queue, the pull, size checks, and the request waiting on the load).

use super::mgmt::{register, wait_mesh};
use super::pod::start_pod;
use super::procs::{channel, example_request, wait_ready};
use super::stats::{Summary, us};
use anyhow::{Context, bail};
use modelmesh_proto::inference::{
    self as pb, grpc_inference_service_client::GrpcInferenceServiceClient,
};
use modelmesh_proto::mmesh::model_status_info::ModelStatus;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Flags of the scenario.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Example model (a directory of examples/models/repository).
    #[arg(long, default_value = "tiny-regression")]
    model: String,
    /// Cold models measured each way (each a fresh id or directory, never loaded before).
    #[arg(long, default_value_t = 30)]
    models: usize,
    /// Checkout root holding examples/.
    #[arg(long, default_value = ".")]
    root: PathBuf,
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), dest)?;
        }
    }
    Ok(())
}

/// Runs the scenario.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let (root, repo, work) = super::procs::bench_dirs(&a.root, "cache-miss")?;
    let req = example_request(&root, &a.model)?;
    let mut pod = start_pod(&work, "pod", "memory", &repo, &["--internal-port", "0"])?;
    wait_ready(&mut pod.runtime, Duration::from_secs(30)).await?;
    let mut mgmt = wait_mesh(pod.grpc, Duration::from_secs(60)).await?;
    let mut direct = GrpcInferenceServiceClient::new(channel(pod.runtime_port)?);
    let mut mesh = GrpcInferenceServiceClient::new(channel(pod.grpc)?);
    // The runtime's repository (the adapter writes its models there too).
    let triton = work.join("pod/models/_triton_models");
    let source = repo.join(&a.model);
    // Warm both paths (connections, first-use allocations) with one model each way.
    let (mut load_only, mut direct_first, mut mesh_first) = (vec![], vec![], vec![]);
    eprintln!(
        "loading {} cold copies of {} straight into the runtime and {} through the mesh",
        a.models + 1,
        a.model,
        a.models + 1
    );
    for k in 0..=a.models {
        // Straight to the runtime: its own load, then the first inference.
        let name = format!("direct-{k}");
        copy_dir(&source, &triton.join(&name)).context("copying the model for the runtime")?;
        let t = Instant::now();
        direct
            .repository_model_load(pb::RepositoryModelLoadRequest {
                model_name: name.clone(),
                ..Default::default()
            })
            .await
            .context("runtime load")?;
        let loaded = t.elapsed();
        let mut r = req.clone();
        r.model_name = name;
        direct.model_infer(r).await.context("runtime inference")?;
        let first = t.elapsed();
        // Through the mesh: registered, not loaded; the request loads it.
        let id = format!("miss-{k}");
        if register(&mut mgmt, &id, &a.model, "{}", false).await? != ModelStatus::NotLoaded {
            bail!("{id} should be registered and not loaded");
        }
        let mut r = tonic::Request::new(req.clone());
        r.metadata_mut().insert("mm-model-id", id.parse()?);
        let t = Instant::now();
        mesh.model_infer(r)
            .await
            .context("first request through the mesh")?;
        let miss = t.elapsed();
        if k > 0 {
            load_only.push(loaded);
            direct_first.push(first);
            mesh_first.push(miss);
        }
    }
    let n = a.models;
    let (load_only, direct_first, mesh_first) = (
        Summary::new(load_only, 0, Duration::ZERO),
        Summary::new(direct_first, 0, Duration::ZERO),
        Summary::new(mesh_first, 0, Duration::ZERO),
    );
    println!(
        "\nCache miss: first answer for a model not loaded anywhere, {} ({} cold models each way)",
        a.model, n
    );
    println!(
        "{:<42} {:>9} {:>9} {:>9} {:>9}",
        "", "p50", "p90", "max", "mean"
    );
    let mean = |s: &Summary| s.latencies.iter().sum::<Duration>() / s.ok.max(1) as u32;
    for (name, s) in [
        ("runtime: repository load", &load_only),
        ("runtime: load + first inference", &direct_first),
        ("mesh: first request (registered, unloaded)", &mesh_first),
    ] {
        println!(
            "{name:<42} {:>9} {:>9} {:>9} {:>9}",
            us(s.quantile(0.5)),
            us(s.quantile(0.9)),
            us(s.max()),
            us(mean(s))
        );
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "\ncache-miss overhead (mesh first answer - runtime load + first inference): p50 {:.2} ms, mean {:.2} ms",
        ms(mesh_first.quantile(0.5)) - ms(direct_first.quantile(0.5)),
        ms(mean(&mesh_first)) - ms(mean(&direct_first))
    );
    drop(pod);
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
