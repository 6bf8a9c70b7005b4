//! `modelmesh runtime`: serve ONNX models from a Triton-layout repository.

use anyhow::Context;
use modelmesh_runtime::faults::{Delay, Faults};
use modelmesh_runtime::{BoundRuntime, RuntimeConfig};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// Flags of `modelmesh runtime`; each can also be set by the environment variable shown.
#[derive(Debug, clap::Args)]
#[command(
    about = "Triton-compatible multi-model server for ONNX models",
    long_about = "Serves ONNX models from a Triton-layout repository (<repo>/<name>/<version>/model.onnx, \
with an optional <repo>/<name>/config.pbtxt) over KServe v2 gRPC (inference.GRPCInferenceService, with the \
model-repository extension) and REST. Models load on RepositoryModelLoad (or --load-model at start) and run \
with tract, in pure Rust. The Triton adapter drives it exactly as it drives Triton."
)]
pub struct Args {
    /// Model repository directory (Triton layout).
    #[arg(long, env = "MODEL_REPOSITORY", value_name = "DIR")]
    model_repository: PathBuf,
    /// gRPC port (KServe v2 / Triton protocol).
    #[arg(long, env = "GRPC_PORT", default_value_t = 8001)]
    grpc_port: u16,
    /// HTTP port for KServe v2 REST; 0 picks a free port, omit to disable REST.
    #[arg(long, env = "HTTP_PORT")]
    http_port: Option<u16>,
    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDRESS", default_value = "0.0.0.0")]
    address: IpAddr,
    /// Models to load at start-up (repeatable).
    #[arg(long = "load-model", value_name = "NAME")]
    load_models: Vec<String>,
    /// Also serve gRPC on this Unix-domain socket (the sidecar in the same pod can use it
    /// instead of TCP: `INTERNAL_SERVING_GRPC_SOCKET_PATH`).
    #[arg(long, env = "GRPC_SOCKET", value_name = "PATH")]
    grpc_socket: Option<PathBuf>,
    /// Create the repository directory if it does not exist (in a pod, where the adapter
    /// fills an empty volume).
    #[arg(long, env = "CREATE_REPOSITORY", default_value_t = false)]
    create_repository: bool,
    /// Fault injection, for tests and chaos drills: wait this long before every model load,
    /// in milliseconds, fixed (`500`) or drawn per load from a range (`100-2000`).
    #[arg(long, env = "MODELMESH_FAULT_LOAD_DELAY_MS", value_name = "MS|MIN-MAX", value_parser = Delay::parse)]
    fault_load_delay: Option<Delay>,
    /// Fault injection: wait this long before answering every inference request (as
    /// `--fault-load-delay`), e.g. to see the mesh's concurrency limits answer RESOURCE_EXHAUSTED.
    #[arg(long, env = "MODELMESH_FAULT_INFER_DELAY_MS", value_name = "MS|MIN-MAX", value_parser = Delay::parse)]
    fault_infer_delay: Option<Delay>,
}

/// Runs the server until SIGTERM / Ctrl-C.
pub async fn run(a: Args) -> anyhow::Result<()> {
    if a.create_repository && !a.model_repository.exists() {
        std::fs::create_dir_all(&a.model_repository)
            .with_context(|| format!("creating {}", a.model_repository.display()))?;
    }
    if !a.model_repository.is_dir() {
        anyhow::bail!(
            "model repository {} is not a directory (pass --model-repository DIR)",
            a.model_repository.display()
        );
    }
    let cfg = RuntimeConfig {
        model_repository: a.model_repository,
        grpc_addr: SocketAddr::new(a.address, a.grpc_port),
        http_addr: a.http_port.map(|p| SocketAddr::new(a.address, p)),
        load_models: a.load_models,
        grpc_socket: a.grpc_socket,
        faults: Faults {
            load_delay: a.fault_load_delay.unwrap_or_default(),
            infer_delay: a.fault_infer_delay.unwrap_or_default(),
        },
    };
    if !cfg.faults.load_delay.is_zero() || !cfg.faults.infer_delay.is_zero() {
        tracing::warn!(faults = ?cfg.faults, "fault injection is on: loads and/or inference are delayed on purpose");
    }
    let bound = BoundRuntime::bind(cfg)
        .await
        .context("starting modelmesh runtime")?;
    // Tests and scripts read the bound ports from this line when they ask for port 0.
    if let Some(addr) = bound.grpc_addr() {
        eprintln!("modelmesh runtime: grpc listening on {addr}");
    }
    if let Some(addr) = bound.http_addr() {
        eprintln!("modelmesh runtime: http listening on {addr}");
    }
    bound.serve(super::signal::shutdown()).await?;
    Ok(())
}
