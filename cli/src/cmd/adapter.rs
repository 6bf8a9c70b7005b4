//! `modelmesh adapter`: the mmesh.ModelRuntime SPI in front of Triton, `modelmesh runtime` or
//! MLServer. Every setting has the upstream adapter's environment variable and a flag.

use anyhow::Context;
use modelmesh_adapters::{AdapterConfig, ServerType};
use modelmesh_proto::mmesh::model_runtime_server::ModelRuntimeServer;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// Model server kinds.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    /// Triton, or `modelmesh runtime` (same protocol).
    Triton,
    /// Seldon MLServer.
    Mlserver,
    /// llama.cpp's `llama-server` in router mode (`--models-dir ROOT_MODEL_DIR/_llamacpp_models
    /// --models-max 0 --no-models-autoload`), for GGUF LLMs; RUNTIME_PORT is its HTTP port.
    Llamacpp,
}

/// Flags of `modelmesh adapter`.
#[derive(Debug, clap::Args)]
#[command(
    about = "mmesh.ModelRuntime adapter in front of Triton, MLServer or llama.cpp's llama-server router",
    long_about = "Serves the mmesh.ModelRuntime SPI that the mesh sidecar calls. loadModel pulls the model \
(with --use-embedded-puller) from the storage named in its modelKey into ROOT_MODEL_DIR/<modelId>, links it \
into the layout the server needs (ROOT_MODEL_DIR/_triton_models, _mlserver_models or _llamacpp_models) and asks \
the server to load it; unloadModel unloads it and deletes its files; runtimeStatus waits for the server, unloads \
everything, wipes ROOT_MODEL_DIR and reports capacity = CONTAINER_MEM_REQ_BYTES - MEM_BUFFER_BYTES. With \
--server-type llamacpp a GGUF file's header is checked before loading and its size is the file plus the KV cache \
of LLM_CONTEXT_TOKENS tokens (corrected to the context the router reports once loaded)."
)]
pub struct Args {
    /// Which model server to drive.
    #[arg(long, env = "SERVER_TYPE", value_enum)]
    server_type: Kind,
    /// Port of the ModelRuntime gRPC service.
    #[arg(long, env = "ADAPTER_PORT", default_value_t = 8085)]
    adapter_port: u16,
    /// Address to listen on (the mesh is in the same pod).
    #[arg(long, env = "ADAPTER_ADDRESS", default_value = "127.0.0.1")]
    address: IpAddr,
    /// Model server gRPC port.
    #[arg(long, env = "RUNTIME_PORT", default_value_t = 8001)]
    runtime_port: u16,
    /// Model server host.
    #[arg(long, env = "RUNTIME_HOST", default_value = "localhost")]
    runtime_host: String,
    /// Memory request of the model server container (required): bytes or a size with a unit
    /// (1Gi, 512MiB, 2G).
    #[arg(long, env = "CONTAINER_MEM_REQ_BYTES", value_parser = modelmesh_settings::size::parse_i64)]
    container_mem_req_bytes: Option<i64>,
    /// Memory kept free of models: bytes or a size with a unit.
    #[arg(long, env = "MEM_BUFFER_BYTES", default_value = "256Mi", value_parser = modelmesh_settings::size::parse_i64)]
    mem_buffer_bytes: i64,
    /// Model loads the server can run at once.
    #[arg(long, env = "LOADING_CONCURRENCY", default_value_t = 1)]
    loading_concurrency: u32,
    /// Load timeout reported to the mesh, in milliseconds.
    #[arg(long, env = "LOADTIME_TIMEOUT", default_value_t = 30_000)]
    loadtime_timeout: u32,
    /// Size assumed for a model whose size is unknown: bytes or a size with a unit.
    #[arg(long, env = "DEFAULT_MODELSIZE", default_value = "1000000", value_parser = modelmesh_settings::size::parse)]
    default_modelsize: u64,
    /// Memory per byte of model on disk.
    #[arg(long, env = "MODELSIZE_MULTIPLIER", default_value_t = 1.25)]
    modelsize_multiplier: f64,
    /// Version reported when the server does not report one.
    #[arg(long, env = "RUNTIME_VERSION", default_value = "v1")]
    runtime_version: String,
    /// Maximum concurrent requests per model (0 = unlimited).
    #[arg(long, env = "LIMIT_PER_MODEL_CONCURRENCY", default_value_t = 0)]
    limit_per_model_concurrency: u32,
    /// Tokens of context each LLM gets (give llama-server the same `-c`): sizes its KV cache.
    #[arg(long, env = "LLM_CONTEXT_TOKENS", default_value_t = 4096)]
    llm_context_tokens: u64,
    /// Local model directory (wiped at start-up).
    #[arg(long, env = "ROOT_MODEL_DIR", default_value = "/models")]
    root_model_dir: PathBuf,
    /// Pull models from storage before loading them.
    #[arg(long, env = "USE_EMBEDDED_PULLER", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    use_embedded_puller: bool,
    /// Directory of the mounted storage-config secret (one file per storage key).
    #[arg(long, env = "STORAGE_CONFIG_DIR", default_value = "/storage-config")]
    storage_config_dir: PathBuf,
    /// Root under which PVCs are mounted (`pvc` storage reads <dir>/<name>/<path>).
    #[arg(long, env = "PVC_MOUNTS_DIR", default_value = "/pvc_mounts")]
    pvc_mounts_dir: PathBuf,
    /// Allow `type: local` storage entries (a directory on this machine). Off in clusters:
    /// only `modelmesh up` and tests need it.
    #[arg(long, env = "MODELMESH_ALLOW_LOCAL_STORAGE", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    allow_local_storage: bool,
    /// Allow `http` storage on loopback and link-local addresses (refused by default: they
    /// reach this pod's own ports and the cloud metadata service).
    #[arg(long, env = "MODELMESH_STORAGE_ALLOW_LOOPBACK", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    storage_allow_loopback: bool,
}

/// Runs the adapter until SIGTERM / Ctrl-C.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let cfg = AdapterConfig {
        server_type: match a.server_type {
            Kind::Triton => ServerType::Triton,
            Kind::Mlserver => ServerType::Mlserver,
            Kind::Llamacpp => ServerType::Llamacpp,
        },
        runtime_host: a.runtime_host,
        runtime_port: a.runtime_port,
        // Unset is upstream's -1, which the adapter refuses with its own message.
        container_mem_req_bytes: a.container_mem_req_bytes.unwrap_or(-1),
        mem_buffer_bytes: a.mem_buffer_bytes,
        loading_concurrency: a.loading_concurrency,
        loadtime_timeout_ms: a.loadtime_timeout,
        default_model_size: a.default_modelsize,
        model_size_multiplier: a.modelsize_multiplier,
        runtime_version: a.runtime_version,
        limit_per_model_concurrency: a.limit_per_model_concurrency,
        llm_context_tokens: a.llm_context_tokens,
        root_model_dir: a.root_model_dir,
        use_embedded_puller: a.use_embedded_puller,
        storage_config_dir: a.storage_config_dir,
        pvc_mounts_dir: a.pvc_mounts_dir,
        storage_policy: modelmesh_adapters::puller::StoragePolicy {
            allow_local: a.allow_local_storage,
            allow_loopback: a.storage_allow_loopback,
        },
    };
    let adapter = modelmesh_adapters::build(cfg.clone())
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let addr = SocketAddr::new(a.address, a.adapter_port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    eprintln!("modelmesh adapter: grpc listening on {bound}");
    tracing::info!(%bound, server = ?cfg.server_type, runtime = %format!("{}:{}", cfg.runtime_host, cfg.runtime_port),
        root = %cfg.root_model_dir.display(), puller = cfg.use_embedded_puller, "modelmesh adapter serving");
    tonic::transport::Server::builder()
        .add_service(ModelRuntimeServer::new(adapter))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            super::signal::shutdown(),
        )
        .await
        .context("adapter gRPC server failed")?;
    Ok(())
}
