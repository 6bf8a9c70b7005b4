//! A request entering a pod without a copy (one forward through the internal hop) vs entering
//! the pod that holds the copy, same client, same run. Two pods (each runtime + adapter +
//! sidecar) share a real etcd that this scenario starts.

use super::load::{Header, ThroughputFlags, concurrent, sequential};
use super::pod::start_pod;
use super::procs::{Server, channel, example_request, free_port};
use super::stats::us;
use anyhow::{Context, bail};
use modelmesh_proto::mmesh::{self as mm, model_mesh_client::ModelMeshClient};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Flags of the scenario.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Example model (a directory of examples/models/repository).
    #[arg(long, default_value = "tiny-regression")]
    model: String,
    /// Sequential requests for the latency run.
    #[arg(long, default_value_t = 3000)]
    requests: usize,
    #[command(flatten)]
    load: ThroughputFlags,
    /// Checkout root holding examples/.
    #[arg(long, default_value = ".")]
    root: PathBuf,
}

/// Runs the scenario.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let (root, repo, work) = super::procs::bench_dirs(&a.root, "forward")?;
    let mut req = example_request(&root, &a.model)?;
    let (client, peer) = (free_port()?, free_port()?);
    let url = format!("http://127.0.0.1:{client}");
    if !Path::new("/usr/bin/etcd").exists() {
        bail!("etcd is not installed: run scripts/setup-peers.sh");
    }
    let etcd = Command::new("/usr/bin/etcd")
        .args(["--name", "b", "--data-dir"])
        .arg(work.join("etcd"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args([
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
        ])
        .args([
            "--initial-cluster",
            &format!("b=http://127.0.0.1:{peer}"),
            "--logger=zap",
            "--log-level=error",
        ])
        .args(["--heartbeat-interval=10", "--election-timeout=100"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting etcd")?;
    let _etcd = Server {
        name: "etcd",
        child: etcd,
        port: client,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reqwest::get(format!("{url}/health"))
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        if Instant::now() > deadline {
            bail!("etcd did not become healthy");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kv = format!("etcd:{url}");
    // Keep exactly one copy: copy scaling would otherwise add one on pod-b.
    let extra = ["--scaleup-rpm-threshold", "4000000000"];
    let (ia, ib) = (free_port()?.to_string(), free_port()?.to_string());
    let a_pod = start_pod(
        &work,
        "pod-a",
        &kv,
        &repo,
        &[&extra[..], &["--internal-port", &ia]].concat(),
    )?;
    let b_pod = start_pod(
        &work,
        "pod-b",
        &kv,
        &repo,
        &[&extra[..], &["--internal-port", &ib]].concat(),
    )?;
    // Register and load on pod-a (balanced: pod-a places the copy on itself).
    let id = "bench-model";
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = ModelMeshClient::new(channel(a_pod.grpc)?)
            .register_model(mm::RegisterModelRequest {
                model_id: id.into(),
                model_info: Some(mm::ModelInfo {
                    r#type: "onnx".into(),
                    path: a.model.clone(),
                    key: "{}".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await;
        match r {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => bail!("mesh not ready: {e}"),
        }
    }
    req.model_name.clear();
    let header = |balanced: bool| -> anyhow::Result<Header> {
        let _ = balanced;
        Ok(Some(("mm-model-id", id.parse()?)))
    };
    // The first request through pod-a with mm-balanced loads the copy there.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut first = tonic::Request::new(req.clone());
    first.metadata_mut().insert("mm-model-id", id.parse()?);
    first.metadata_mut().insert("mm-balanced", "true".parse()?);
    modelmesh_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient::new(
        channel(a_pod.grpc)?,
    )
    .model_infer(first)
    .await
    .context("first request")?;
    let mut results = Vec::new();
    for (name, port) in [
        ("enters the pod with the copy", a_pod.grpc),
        ("enters the other pod (1 forward)", b_pod.grpc),
    ] {
        let ch = channel(port)?;
        let h = header(false)?;
        sequential(&ch, &req, 300, &h).await;
        let seq = sequential(&ch, &req, a.requests, &h).await;
        let conc = concurrent(&ch, &req, a.load.concurrency, a.load.duration(), &h).await;
        if seq.errors + conc.errors > 0 {
            bail!("{name}: {} requests failed", seq.errors + conc.errors);
        }
        results.push((name, seq, conc));
    }
    println!(
        "\nModelInfer {} in a 2-pod mesh (real etcd), Rust tonic client, 2 cores shared by 7 processes",
        a.model
    );
    println!(
        "{:<34} {:>9} {:>9} {:>9} | {:>10}",
        "request", "p50", "p90", "p99", "req/s (c)"
    );
    for (name, seq, conc) in &results {
        println!(
            "{name:<34} {:>9} {:>9} {:>9} | {:>10.0}",
            us(seq.quantile(0.5)),
            us(seq.quantile(0.9)),
            us(seq.quantile(0.99)),
            conc.throughput()
        );
    }
    let (_, s0, c0) = &results[0];
    let (_, s1, c1) = &results[1];
    let d = |q: f64| s1.quantile(q).as_secs_f64() * 1e6 - s0.quantile(q).as_secs_f64() * 1e6;
    println!(
        "\none forward adds: p50 {:.0} µs, p99 {:.0} µs; throughput ratio {:.2}",
        d(0.5),
        d(0.99),
        c1.throughput() / c0.throughput().max(1e-9)
    );
    drop((a_pod, b_pod));
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
