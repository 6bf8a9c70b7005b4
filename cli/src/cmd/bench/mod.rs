//! `modelmesh bench`: benchmarks that start everything they measure, compare against a baseline
//! measured in the same run, and print ratios.

mod cache_miss;
mod chaos;
mod churn;
mod cpus;
mod footprint;
mod forward;
mod instant_runtime;
mod llm;
mod load;
mod mesh_vs_direct;
mod mgmt;
mod nginx;
mod pod;
mod procs;
mod procstat;
mod runtime_vs_triton;
mod scale;
mod scale_etcd;
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
    /// The sidecar's footprint: time to ready after its runtime, RSS idle, with many
    /// registered models (default 100,000) and with many loaded copies (default 10,000, on a
    /// runtime whose loads are instant).
    Footprint(footprint::Args),
    /// Time to the first answer for a model not loaded anywhere, minus the runtime's own time
    /// to load the same files and answer (same run).
    CacheMiss(cache_miss::Args),
    /// Requests spread over ten times more models than fit (the LRU evicting all the time) vs
    /// spread over models that are all loaded: throughput and p99.
    Churn(churn::Args),
    /// Routing, placement, proactive-loading and scale-down decision times in a simulated
    /// cluster of 1,000 pods and 1,000,000 models vs 50 pods and 10,000 models (in process).
    Scale(scale::Args),
    /// 100,000 models on a real etcd with three sidecars: registration rate, sidecar RSS,
    /// restart-to-ready time, watch lag, etcd writes at idle.
    ScaleEtcd(scale_etcd::Args),
    /// Chaos soak (minutes; not a test): a 3-pod mesh on a real etcd under steady load and
    /// model churn while pods, runtimes and etcd are SIGKILLed and restarted and loads are
    /// delayed; checks that only retryable codes fail, no registration is lost and RSS stays
    /// flat, and prints the longest unavailability of any model.
    Chaos(chaos::Args),
    /// Token streaming through the mesh (one internal hop) vs straight to llama.cpp's router:
    /// time to first token, inter-token gap, concurrent tokens per second, and a cache miss vs
    /// the router's own load (needs scripts/setup-peers.sh's llama-server and tiny models).
    Llm(llm::Args),
}

/// Runs the chosen scenario.
pub async fn run(a: Args) -> anyhow::Result<()> {
    match a.scenario {
        Scenario::RuntimeVsTriton(a) => runtime_vs_triton::run(a).await,
        Scenario::MeshVsDirect(a) => mesh_vs_direct::run(a).await,
        Scenario::Footprint(a) => footprint::run(a).await,
        Scenario::Forward(a) => forward::run(a).await,
        Scenario::CacheMiss(a) => cache_miss::run(a).await,
        Scenario::Churn(a) => churn::run(a).await,
        Scenario::Scale(a) => scale::run(a).await,
        Scenario::ScaleEtcd(a) => scale_etcd::run(a).await,
        Scenario::Chaos(a) => chaos::run(a).await,
        Scenario::Llm(a) => llm::run(a).await,
    }
}
