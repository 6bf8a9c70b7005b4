//! `modelmesh runtime` vs Triton on the same ONNX model, same client, same run. Triton has only
//! its python backend here (the PyPI build), so it runs the model with onnxruntime inside
//! `model.py`: the configuration a user without GPU images would have.

use super::load::{ThroughputFlags, concurrent, sequential};
use super::procs::{Server, channel, example_request as request, free_port, wait_ready};
use super::procstat::{Usage, tree_usage};
use super::stats::{Summary, us};
use anyhow::{Context, bail};
use modelmesh_proto::inference::{
    self as pb, grpc_inference_service_client::GrpcInferenceServiceClient as Client,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Flags of the scenario.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Example model to serve (a directory of examples/models/repository).
    #[arg(long, default_value = "mnist-classifier")]
    model: String,
    /// Sequential requests for the latency run.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    #[command(flatten)]
    load: ThroughputFlags,
    /// Checkout root holding examples/, .venv/ and target/peers/ (from scripts/setup-peers.sh).
    #[arg(long, default_value = ".")]
    root: PathBuf,
}

const TRITON_MODEL_PY: &str = r#"import os
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "input").as_numpy()
            y = self.sess.run(None, {"input": x})[0]
            out.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("output", y)]))
        return out
"#;

fn spawn_ours(repo: &Path, log: &Path) -> anyhow::Result<Server> {
    let port = free_port()?;
    let child = Command::new(std::env::current_exe()?)
        .args([
            "runtime",
            "--address",
            "127.0.0.1",
            "--log",
            "warn",
            "--model-repository",
        ])
        .arg(repo)
        .args(["--grpc-port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .context("starting modelmesh runtime")?;
    Ok(Server {
        name: "modelmesh runtime",
        child,
        port,
    })
}

fn spawn_triton(root: &Path, repo: &Path, log: &Path) -> anyhow::Result<Server> {
    let sp = root.join(".venv/lib/python3.11/site-packages");
    let bin = sp.join("pytriton/tritonserver/bin/tritonserver");
    let backends = root.join("target/peers/triton/backends");
    if !bin.exists() || !backends.exists() {
        bail!(
            "Triton is not installed under {}: run scripts/setup-peers.sh",
            root.display()
        );
    }
    let (port, http, metrics) = (free_port()?, free_port()?, free_port()?);
    let path = format!(
        "{}:{}",
        root.join(".venv/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let child = Command::new(bin)
        .env("LD_LIBRARY_PATH", sp.join("nvidia_pytriton.libs"))
        .env("PATH", path)
        .arg(format!("--model-repository={}", repo.display()))
        .arg("--model-control-mode=explicit")
        .arg(format!("--backend-directory={}", backends.display()))
        .arg(format!(
            "--cache-directory={}",
            sp.join("pytriton/tritonserver/caches").display()
        ))
        .args(["--grpc-address=127.0.0.1", &format!("--grpc-port={port}")])
        .args(["--http-address=127.0.0.1", &format!("--http-port={http}")])
        .args([
            "--metrics-address=127.0.0.1",
            &format!("--metrics-port={metrics}"),
        ])
        .args([
            "--allow-metrics=false",
            "--allow-gpu-metrics=false",
            "--log-verbose=0",
        ])
        .args([
            "--pinned-memory-pool-byte-size=0",
            "--cuda-memory-pool-byte-size=0:0",
        ])
        .arg(format!(
            "--backend-config=python,shm-region-prefix-name=mmbench{port}-"
        ))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .context("starting tritonserver")?;
    Ok(Server {
        name: "triton",
        child,
        port,
    })
}

struct Measured {
    seq: Summary,
    conc: Summary,
    cpu_per_req_us: f64,
    usage: Usage,
}

async fn measure(
    s: &Server,
    req: &pb::ModelInferRequest,
    a: &Args,
) -> anyhow::Result<(Measured, Vec<u8>)> {
    let ch = channel(s.port)?;
    let mut c = Client::new(ch.clone());
    let first = c
        .model_infer(req.clone())
        .await
        .with_context(|| format!("{}: first inference", s.name))?
        .into_inner();
    let out = first
        .raw_output_contents
        .first()
        .cloned()
        .unwrap_or_default();
    sequential(&ch, req, 200, &None).await; // warm-up
    let seq = sequential(&ch, req, a.requests, &None).await;
    let before = tree_usage(s.child.id());
    let conc = concurrent(&ch, req, a.load.concurrency, a.load.duration(), &None).await;
    let usage = tree_usage(s.child.id());
    let cpu = usage.cpu_secs - before.cpu_secs;
    let cpu_per_req_us = if conc.ok > 0 {
        cpu / conc.ok as f64 * 1e6
    } else {
        0.0
    };
    Ok((
        Measured {
            seq,
            conc,
            cpu_per_req_us,
            usage,
        },
        out,
    ))
}

fn row(name: &str, m: &Measured) {
    println!(
        "{name:<18} {:>9} {:>9} {:>9} {:>9} {:>9} | {:>9.0} req/s {:>6} err | {:>7.0} µs CPU/req | {:>6.1} MiB peak RSS",
        us(m.seq.quantile(0.5)),
        us(m.seq.quantile(0.9)),
        us(m.seq.quantile(0.99)),
        us(m.seq.quantile(0.999)),
        us(m.seq.quantile(1.0)),
        m.conc.throughput(),
        m.seq.errors + m.conc.errors,
        m.cpu_per_req_us,
        m.usage.peak_rss as f64 / (1 << 20) as f64
    );
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Runs the scenario and prints the table and ratios.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let root = a
        .root
        .canonicalize()
        .with_context(|| format!("--root {}", a.root.display()))?;
    let src = root
        .join("examples/models/repository")
        .join(&a.model)
        .join("1/model.onnx");
    if !src.is_file() {
        bail!(
            "{} not found (run from the checkout root or pass --root)",
            src.display()
        );
    }
    let work = tempdir()?;
    let ours_repo = work.join("ours");
    std::fs::create_dir_all(ours_repo.join(&a.model).join("1"))?;
    std::fs::copy(&src, ours_repo.join(&a.model).join("1/model.onnx"))?;
    let triton_repo = work.join("triton");
    let tm = triton_repo.join(&a.model);
    std::fs::create_dir_all(tm.join("1"))?;
    std::fs::copy(&src, tm.join("1/model.onnx"))?;
    std::fs::write(tm.join("1/model.py"), TRITON_MODEL_PY)?;
    let n_in = request(&root, &a.model)?.inputs[0]
        .shape
        .last()
        .copied()
        .unwrap_or(0);
    std::fs::write(
        tm.join("config.pbtxt"),
        format!(
            "backend: \"python\"\nmax_batch_size: 0\ninput [ {{ name: \"input\" data_type: TYPE_FP32 dims: [ -1, {n_in} ] }} ]\n\
             output [ {{ name: \"output\" data_type: TYPE_FP32 dims: [ -1, -1 ] }} ]\ninstance_group [ {{ kind: KIND_CPU count: 1 }} ]\n"
        ),
    )?;
    let req = request(&root, &a.model)?;

    eprintln!("starting modelmesh runtime and Triton (python backend + onnxruntime) ...");
    let mut ours = spawn_ours(&ours_repo, &work.join("ours.log"))?;
    let mut triton = spawn_triton(&root, &triton_repo, &work.join("triton.log"))?;
    wait_ready(&mut ours, Duration::from_secs(30)).await?;
    wait_ready(&mut triton, Duration::from_secs(90)).await?;
    for s in [&ours, &triton] {
        let t = Instant::now();
        Client::new(channel(s.port)?)
            .repository_model_load(pb::RepositoryModelLoadRequest {
                model_name: a.model.clone(),
                ..Default::default()
            })
            .await
            .with_context(|| format!("{}: loading {}", s.name, a.model))?;
        eprintln!("{}: loaded {} in {:?}", s.name, a.model, t.elapsed());
    }

    eprintln!(
        "measuring: {} sequential requests, then {} concurrent loops for {} s, against each server in turn",
        a.requests, a.load.concurrency, a.load.seconds
    );
    let (m_ours, out_ours) = measure(&ours, &req, &a).await?;
    let (m_triton, out_triton) = measure(&triton, &req, &a).await?;
    let (x, y) = (f32s(&out_ours), f32s(&out_triton));
    let max_diff = x
        .iter()
        .zip(&y)
        .map(|(p, q)| (p - q).abs())
        .fold(0f32, f32::max);
    if x.len() != y.len() || max_diff > 1e-4 {
        bail!("outputs differ between the servers (max abs diff {max_diff})");
    }

    println!(
        "\nModelInfer, model {} ({} inputs), Rust tonic client, 2-core machine shared by client and server",
        a.model, n_in
    );
    println!(
        "{:<18} {:>9} {:>9} {:>9} {:>9} {:>9} | throughput at concurrency {}",
        "server", "p50", "p90", "p99", "p99.9", "max", a.load.concurrency
    );
    row("modelmesh runtime", &m_ours);
    row("triton (python+ort)", &m_triton);
    let ratio = |o: Duration, t: Duration| o.as_secs_f64() / t.as_secs_f64().max(1e-12);
    println!("\nratios (modelmesh runtime / triton):");
    println!(
        "  p50 latency   {:.3}",
        ratio(m_ours.seq.quantile(0.5), m_triton.seq.quantile(0.5))
    );
    println!(
        "  p99 latency   {:.3}",
        ratio(m_ours.seq.quantile(0.99), m_triton.seq.quantile(0.99))
    );
    println!(
        "  throughput    {:.2}",
        m_ours.conc.throughput() / m_triton.conc.throughput().max(1e-9)
    );
    println!(
        "  CPU/request   {:.3}",
        m_ours.cpu_per_req_us / m_triton.cpu_per_req_us.max(1e-9)
    );
    println!(
        "  peak RSS      {:.3}",
        m_ours.usage.peak_rss as f64 / m_triton.usage.peak_rss.max(1) as f64
    );
    println!("outputs agree (max abs diff {max_diff:.2e})");
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let p = std::env::temp_dir().join(format!("modelmesh-bench-{}", std::process::id()));
    std::fs::create_dir_all(&p)?;
    Ok(p)
}
