//! `modelmesh`: one binary for every component of the mesh. Each subcommand is one container's
//! job in Kubernetes, and together they run a whole mesh on a laptop.

mod cmd;

use clap::{Parser, Subcommand};

/// modelmesh: serve thousands of models on a few pods.
#[derive(Debug, Parser)]
#[command(name = "modelmesh", version, about, long_about = None)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `modelmesh_runtime=debug`.
    #[arg(long, env = "MODELMESH_LOG", default_value = "info", global = true)]
    log: String,

    /// Async worker threads (default: 1 for `sidecar`, where one thread avoids cross-core
    /// wake-ups that cost more than they give when the sidecar shares a few cores with its
    /// runtime; the number of cores otherwise).
    #[arg(long, env = "MODELMESH_WORKER_THREADS", global = true)]
    worker_threads: Option<usize>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Triton-compatible multi-model server for ONNX models (KServe v2 gRPC + REST).
    Runtime(cmd::runtime::Args),
    /// mmesh.ModelRuntime adapter in front of Triton, MLServer or llama.cpp's llama-server.
    Adapter(cmd::adapter::Args),
    /// Run a whole mesh locally, serving a directory of Predictor YAML files.
    Up(cmd::up::Args),
    /// Send a KServe v2 inference request and print the outputs.
    Infer(cmd::infer::Args),
    /// Chat with an LLM through the mesh's OpenAI API, tokens streamed as they arrive.
    Chat(cmd::chat::Args),
    /// Show what a running `modelmesh up` serves.
    Status(cmd::status::Args),
    /// The mesh sidecar: registry, model cache, vmodels, inference routing.
    Sidecar(Box<cmd::sidecar::Args>),
    /// The Kubernetes controller (Predictor, ServingRuntime, InferenceService) and its tools.
    Controller(cmd::controller::Args),
    /// Call a mmesh.ModelRuntime (adapter) directly, as the mesh would.
    Spi(cmd::spi::Args),
    /// Benchmarks that start what they measure and compare against a baseline in the same run.
    Bench(cmd::bench::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let threads = cli.worker_threads.or(match cli.command {
        Command::Sidecar(_) => Some(1),
        _ => None,
    });
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        builder.worker_threads(n.max(1));
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Runtime(a) => cmd::runtime::run(a).await,
            Command::Adapter(a) => cmd::adapter::run(a).await,
            Command::Spi(a) => cmd::spi::run(a).await,
            Command::Sidecar(a) => cmd::sidecar::run(*a).await,
            Command::Up(a) => cmd::up::run(a).await,
            Command::Infer(a) => cmd::infer::run(a).await,
            Command::Chat(a) => cmd::chat::run(a).await,
            Command::Status(a) => cmd::status::run(a).await,
            Command::Bench(a) => cmd::bench::run(a).await,
            Command::Controller(a) => cmd::controller::run(a).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
