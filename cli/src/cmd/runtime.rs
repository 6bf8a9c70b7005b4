//! `modelmesh runtime`: serve ONNX models from a Triton-layout repository.

use anyhow::Context;
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
    };
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
