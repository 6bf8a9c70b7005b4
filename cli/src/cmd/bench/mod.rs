//! `modelmesh bench`: benchmarks that start everything they measure, compare against a baseline
//! measured in the same run, and print ratios.

mod footprint;
mod forward;
mod load;
mod mesh_vs_direct;
mod nginx;
mod pod;
mod procs;
mod procstat;
mod runtime_vs_triton;
mod stats;

/// Flags of `modelmesh bench`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Benchmarks (each starts and stops what it measures and prints ratios to a baseline)"
)]
pub struct Args {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, clap::Subcommand)]
enum Scenario {
    /// ModelInfer latency and throughput of `modelmesh runtime` vs the real Triton serving the
    /// same ONNX model (python backend + onnxruntime), with the same Rust gRPC client.
    RuntimeVsTriton(runtime_vs_triton::Args),
    /// ModelInfer straight to `modelmesh runtime` vs through the mesh sidecar (model loaded) vs
    /// through nginx `grpc_pass` (when nginx is installed): added latency and throughput
    /// ratios, same client, same run.
    MeshVsDirect(mesh_vs_direct::Args),
    /// A request entering a pod without a copy (one forward) vs the pod with the copy, in a
    /// two-pod mesh on a real etcd, same run.
    Forward(forward::Args),
    /// The sidecar's footprint: time to ready after its runtime, RSS idle and with many
    /// registered models (default 100,000).
    Footprint(footprint::Args),
}

/// Runs the chosen scenario.
pub async fn run(a: Args) -> anyhow::Result<()> {
    match a.scenario {
        Scenario::RuntimeVsTriton(a) => runtime_vs_triton::run(a).await,
        Scenario::MeshVsDirect(a) => mesh_vs_direct::run(a).await,
        Scenario::Footprint(a) => footprint::run(a).await,
        Scenario::Forward(a) => forward::run(a).await,
    }
}
