//! `modelmesh up`: a whole mesh on a laptop, in one process: the embedded KV store, the mesh,
//! `modelmesh runtime` and the Triton adapter, serving the Predictors in a directory; with
//! llama.cpp's `llama-server` installed, an LLM instance too (llm.rs).

mod llm;
mod predictor;
mod watch;

use anyhow::{Context, bail};
use modelmesh_adapters::{AdapterConfig, ServerType};
use modelmesh_mesh::dataplane::DataplaneConfig;
use modelmesh_mesh::kv::config::KvConfig;
use modelmesh_mesh::sidecar::{Sidecar, SidecarConfig};
use modelmesh_proto::mmesh::model_runtime_server::ModelRuntimeServer;
use modelmesh_runtime::{BoundRuntime, RuntimeConfig};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Flags of `modelmesh up`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Run a whole mesh locally: serves every Predictor YAML in a directory",
    long_about = "Starts, in one process, the embedded KV store, a mesh, `modelmesh runtime` and the Triton adapter. \
Every Predictor YAML (serving.kserve.io/v1alpha1) in --predictors is registered as a vmodel named after the \
predictor; spec.storage.path is relative to --models. Files added, changed or removed are picked up within a \
second; an invalid file is reported (log and `modelmesh status`) and skipped. gRPC (--grpc-port) serves the \
mmesh.ModelMesh API and KServe v2 inference (model_name alone routes); REST (--rest-port) serves KServe v2 JSON \
and the OpenAI API (/v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models). When llama.cpp's \
llama-server is found (--llama-server, MODELMESH_LLAMA_SERVER or PATH), one more instance runs it in router mode \
and serves the Predictors with modelFormat gguf (an LLM each), loading and evicting them within --llm-memory."
)]
pub struct Args {
    /// Directory of Predictor YAML files.
    #[arg(long, default_value = "examples/predictors")]
    predictors: PathBuf,
    /// Directory the predictors' storage paths are relative to.
    #[arg(long, default_value = "examples/models")]
    models: PathBuf,
    /// gRPC port (ModelMesh API and inference).
    #[arg(long, default_value_t = 8033)]
    grpc_port: u16,
    /// KServe v2 REST port.
    #[arg(long, default_value_t = 8008)]
    rest_port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    address: IpAddr,
    /// Memory for models (the runtime's capacity): bytes or a size with a unit (512Mi, 2GiB, 4G).
    #[arg(long, default_value = "1Gi", value_parser = modelmesh_settings::size::parse)]
    memory: u64,
    /// Keep registrations in this file across restarts (default: in memory only).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Share state through the etcd at this URL (e.g. http://127.0.0.1:2379) instead of the
    /// embedded store, as pods of a cluster do.
    #[arg(long, value_name = "URL", conflicts_with_all = ["kv_store", "state"])]
    etcd: Option<String>,
    /// Use this KV store instead of the embedded one, in KV_STORE form
    /// (etcd:http://127.0.0.1:2379, or memory).
    #[arg(long, conflicts_with = "state")]
    kv_store: Option<String>,
    /// Number of mesh instances (each with its own runtime), forming one cluster.
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// Instance id this process publishes in the shared store (with --etcd or --kv-store):
    /// every process of one cluster needs its own. Default: the host name and the gRPC port
    /// (stable across restarts); with --instances N, `-i` is appended per instance.
    #[arg(long, value_name = "ID")]
    name: Option<String>,
    /// Host other instances reach this one's internal port at (with --etcd or --kv-store).
    /// Default: --address, or 127.0.0.1 when that is a wildcard address.
    #[arg(long, value_name = "HOST")]
    advertise: Option<String>,
    /// Prometheus port (0 = off).
    #[arg(long, default_value_t = 0)]
    metrics_port: u16,
    /// llama.cpp's llama-server binary, for GGUF Predictors (default: $MODELMESH_LLAMA_SERVER,
    /// else `llama-server` on PATH; none: no LLM instance).
    #[arg(long, value_name = "PATH")]
    llama_server: Option<PathBuf>,
    /// Memory for LLMs on the LLM instance: bytes or a size with a unit. Each takes its GGUF
    /// file, its KV cache for --llm-context tokens and about 64 MiB.
    #[arg(long, default_value = "2Gi", value_parser = modelmesh_settings::size::parse)]
    llm_memory: u64,
    /// Tokens of context each LLM is loaded with (llama-server's -c).
    #[arg(long, default_value_t = 2048)]
    llm_context: u64,
}

async fn local_listener() -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding a loopback port")
}

/// Runs until Ctrl-C.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let predictors = a
        .predictors
        .canonicalize()
        .with_context(|| format!("predictor directory {}", a.predictors.display()))?;
    let models = a
        .models
        .canonicalize()
        .with_context(|| format!("models directory {}", a.models.display()))?;
    if !predictors.is_dir() || !models.is_dir() {
        bail!("--predictors and --models must be directories");
    }
    let work = std::env::temp_dir().join(format!("modelmesh-up-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let cfgdir = work.join("storage-config");
    std::fs::create_dir_all(&cfgdir)?;
    std::fs::write(
        cfgdir.join("default"),
        serde_json::json!({"type": "local", "root": models}).to_string(),
    )?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let kv = match (&a.etcd, &a.kv_store) {
        (Some(url), _) => KvConfig::parse(&format!("etcd:{url}")).map_err(anyhow::Error::msg)?,
        (None, Some(v)) => KvConfig::parse(v).map_err(anyhow::Error::msg)?,
        (None, None) => KvConfig::Memory(a.state.clone()),
    };
    // A store other processes can share (etcd): every process must publish its own instance.
    let shared = !matches!(kv, KvConfig::Memory(_));
    let base_name = instance_base_name(&a, shared)?;
    // One store shared by every instance, as pods of one cluster share etcd.
    let store = modelmesh_mesh::sidecar::connect_kv(&kv).await?;
    let n = a.instances.max(1);
    let llama_bin = llm::find(a.llama_server.as_deref())?;
    // Every instance, the LLM one too: with more than one, they talk over the internal hop.
    let total = n + usize::from(llama_bin.is_some());
    let mut sidecars = Vec::new();
    for i in 0..n {
        let pod = Pod {
            index: i,
            count: total,
            id: if n > 1 {
                format!("{base_name}-{i}")
            } else {
                base_name.clone()
            },
            shared,
            work: &work,
            cfgdir: &cfgdir,
            kv: &kv,
        };
        sidecars.push(start_pod(&a, pod, store.clone(), stop_rx.clone(), None).await?);
    }
    // The LLM instance, with its llama-server (stopped when `up` returns).
    let mut _llama = None;
    match llama_bin {
        Some(bin) => {
            let root = work.join(format!("instance-{n}")).join("models");
            let dir = root.join(ServerType::Llamacpp.layout_subdir());
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            eprintln!("modelmesh up: starting {} for GGUF models", bin.display());
            let server = llm::LlamaServer::start(&bin, &dir, a.llm_context, &work).await?;
            eprintln!(
                "modelmesh up: llama-server on 127.0.0.1:{} (log: {})",
                server.port,
                server.log.display()
            );
            let pod = Pod {
                index: n,
                count: total,
                id: format!("{base_name}-llm"),
                shared,
                work: &work,
                cfgdir: &cfgdir,
                kv: &kv,
            };
            let port = server.port;
            _llama = Some(server);
            sidecars.push(start_pod(&a, pod, store.clone(), stop_rx.clone(), Some(port)).await?);
        }
        None => eprintln!(
            "modelmesh up: llama-server not found (--llama-server, MODELMESH_LLAMA_SERVER or PATH): Predictors with modelFormat gguf will not load"
        ),
    }
    let sidecar = sidecars.remove(0);
    for (i, other) in sidecars.into_iter().enumerate() {
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|v| *v).await;
            };
            if let Err(e) = other.serve(stop).await {
                tracing::error!(instance = i + 1, error = %e, "instance stopped");
            }
        });
    }
    let mesh = sidecar.mesh.clone();
    let state: watch::Shared = Arc::default();
    let mut last = Default::default();
    watch::sync(&predictors, &mesh, &state, &mut last).await;
    let status_state = state.clone();
    let status_mesh = mesh.clone();
    let extra = axum::Router::new().route(
        "/_modelmesh/status",
        axum::routing::get(move || {
            let (state, mesh) = (status_state.clone(), status_mesh.clone());
            async move { axum::Json(status_json(&state, &mesh).await) }
        }),
    );
    eprintln!(
        "modelmesh up: gRPC (ModelMesh API + KServe v2 inference) on {}",
        SocketAddr::new(a.address, a.grpc_port)
    );
    eprintln!(
        "modelmesh up: KServe v2 REST on http://{}",
        SocketAddr::new(a.address, a.rest_port)
    );
    eprintln!(
        "modelmesh up: serving predictors from {} (models under {})",
        predictors.display(),
        models.display()
    );
    if let Ok(s) = state.lock() {
        for (file, regs) in &s.applied {
            for (vid, mid) in regs {
                eprintln!("  {vid:<24} -> {mid}   ({file})");
            }
        }
        for (file, err) in &s.errors {
            eprintln!("  skipped {file}: {err}");
        }
    }
    eprintln!(
        "modelmesh up: try `modelmesh status` and `modelmesh infer <predictor> --input NAME=JSON`; Ctrl-C stops"
    );
    let loaded_mesh = mesh.clone();
    tokio::spawn(async move {
        // Report when the initial loads finish.
        for _ in 0..600 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let vms = loaded_mesh.vmodels.list();
            let loaded = |id: &str| {
                loaded_mesh
                    .registry
                    .get(id)
                    .is_some_and(|(r, _)| !r.instance_ids.is_empty() || !r.failed_in.is_empty())
            };
            let here = |id: &str| {
                loaded_mesh
                    .local
                    .status(id)
                    .is_some_and(|s| s != modelmesh_mesh::local::CopyStatus::Loading)
            };
            if vms
                .iter()
                .all(|(_, vm)| here(&vm.active) || loaded(&vm.active))
            {
                let copies: usize = loaded_mesh
                    .registry
                    .list()
                    .iter()
                    .map(|(_, r)| r.instance_ids.len())
                    .sum();
                let instances = loaded_mesh.instances.list().len().max(n);
                eprintln!("modelmesh up: {copies} model(s) loaded on {instances} instance(s)");
                return;
            }
        }
    });
    let mut watch_last = last;
    let (wmesh, wstate, wdir) = (mesh.clone(), state.clone(), predictors.clone());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            watch::sync(&wdir, &wmesh, &wstate, &mut watch_last).await;
        }
    });
    let shutdown = async move {
        super::signal::shutdown().await;
        let _ = stop_tx.send(true);
    };
    if n > 1 {
        eprintln!(
            "modelmesh up: {n} instances; instance i serves gRPC on port {}+i and REST on {}+i",
            a.grpc_port, a.rest_port
        );
    }
    sidecar.serve_with(Some(extra), shutdown).await?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// The instance id of this process (before `-i` for several instances): `--name`, else the
/// host name and gRPC port with a shared store (so processes on one etcd stay apart), else
/// `local`.
fn instance_base_name(a: &Args, shared: bool) -> anyhow::Result<String> {
    if let Some(name) = &a.name {
        let ok = !name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            bail!(
                "--name {name:?}: use 1 to 128 letters, digits, '-' or '_' (it is a key in the shared store)"
            );
        }
        return Ok(name.clone());
    }
    if !shared {
        return Ok("local".into());
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    let host = if host.is_empty() {
        "local".into()
    } else {
        host
    };
    Ok(format!("{host}-{}", a.grpc_port))
}

/// Where one instance of `up` lives.
struct Pod<'a> {
    index: usize,
    count: usize,
    /// Its instance id in the store.
    id: String,
    /// Whether the store is shared with other processes (then the internal port is open).
    shared: bool,
    work: &'a std::path::Path,
    cfgdir: &'a std::path::Path,
    kv: &'a KvConfig,
}

/// Starts one instance: its runtime (`modelmesh runtime`, or the llama-server on `llm_port`),
/// its adapter and its mesh sidecar.
async fn start_pod(
    a: &Args,
    pod: Pod<'_>,
    store: Arc<dyn modelmesh_mesh::kv::KvStore>,
    stop_rx: tokio::sync::watch::Receiver<bool>,
    llm_port: Option<u16>,
) -> anyhow::Result<Sidecar> {
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let root = pod
        .work
        .join(format!("instance-{}", pod.index))
        .join("models");
    let (server_type, runtime_port, memory) = match llm_port {
        Some(port) => (ServerType::Llamacpp, port, a.llm_memory),
        None => {
            std::fs::create_dir_all(root.join("_triton_models"))
                .with_context(|| format!("creating {}", root.display()))?;
            let runtime = BoundRuntime::bind(RuntimeConfig {
                model_repository: root.join("_triton_models"),
                grpc_addr: "127.0.0.1:0".parse()?,
                http_addr: None,
                load_models: vec![],
                grpc_socket: None,
                faults: Default::default(),
            })
            .await?;
            let runtime_port = runtime
                .grpc_addr()
                .map(|a| a.port())
                .context("runtime port")?;
            let rt_stop = stopped(stop_rx.clone());
            tokio::spawn(async move {
                if let Err(e) = runtime.serve(rt_stop).await {
                    tracing::error!(error = %e, "runtime stopped");
                }
            });
            (ServerType::Triton, runtime_port, a.memory)
        }
    };
    let adapter = modelmesh_adapters::build(AdapterConfig {
        server_type,
        runtime_host: "127.0.0.1".into(),
        runtime_port,
        container_mem_req_bytes: i64::try_from(memory).unwrap_or(i64::MAX),
        llm_context_tokens: a.llm_context,
        // An LLM's first load (a new model process) takes longer than an ONNX model's.
        loadtime_timeout_ms: if llm_port.is_some() { 120_000 } else { 30_000 },
        mem_buffer_bytes: 0,
        root_model_dir: root.clone(),
        use_embedded_puller: true,
        storage_config_dir: pod.cfgdir.to_path_buf(),
        // Models come from a directory on this machine.
        storage_policy: modelmesh_adapters::puller::StoragePolicy {
            allow_local: true,
            allow_loopback: true,
        },
        ..Default::default()
    })
    .map_err(|e| anyhow::anyhow!("adapter: {e}"))?;
    let adapter_listener = local_listener().await?;
    let adapter_port = adapter_listener.local_addr()?.port();
    let ad_stop = stopped(stop_rx.clone());
    tokio::spawn(async move {
        let incoming =
            tonic::transport::server::TcpIncoming::from(adapter_listener).with_nodelay(Some(true));
        let _ = tonic::transport::Server::builder()
            .add_service(ModelRuntimeServer::new(adapter))
            .serve_with_incoming_shutdown(incoming, ad_stop)
            .await;
    });
    let port = |base: u16| base.saturating_add(pod.index as u16);
    // Other processes on the shared store reach this one's internal port at `location`.
    let internal_ip = if a.address.is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        a.address
    };
    let location = a
        .advertise
        .clone()
        .unwrap_or_else(|| internal_ip.to_string());
    let cfg = SidecarConfig {
        service_name: "modelmesh-up".into(),
        kv: pod.kv.clone(),
        kv_prefix: "mm".into(),
        instance_id: pod.id.clone(),
        grpc_addr: SocketAddr::new(a.address, port(a.grpc_port)),
        management_addr: None,
        management_on_grpc_port: true,
        runtime_mgmt: format!("127.0.0.1:{adapter_port}"),
        // An LLM runtime serves inference over HTTP only (runtime_http).
        runtime_data: llm_port
            .is_none()
            .then(|| format!("127.0.0.1:{runtime_port}")),
        runtime_http: llm_port.map(|p| format!("127.0.0.1:{p}")),
        default_vmodel_owner: String::new(),
        load_failure_expiry: Duration::from_secs(30),
        dataplane: DataplaneConfig::kserve_v2(),
        max_message: modelmesh_mesh::server::DEFAULT_MAX_MESSAGE,
        memory_limit: None,
        limits: Default::default(),
        tls: None,
        rest_addr: Some(SocketAddr::new(a.address, port(a.rest_port))),
        internal_addr: (pod.count > 1 || pod.shared).then(|| SocketAddr::new(internal_ip, 0)),
        location,
        scaleup_rpm: modelmesh_mesh::route::DEFAULT_SCALEUP_RPM,
        streaming_methods: Vec::new(),
        instance_lease_ttl_secs: modelmesh_mesh::instance::LEASE_TTL_SECS,
        reaper_every: Duration::from_secs(60),
        gone_after: Duration::from_secs(120),
        proactive_every: Some(Duration::from_secs(60)),
        janitor_every: Duration::from_secs(60),
        shutdown_timeout: Duration::from_secs(30),
        labels: vec![
            (if llm_port.is_some() {
                llm::GGUF_TYPE
            } else {
                llm::DEFAULT_LABEL
            })
            .to_string(),
        ],
        constraints: llm::constraints(),
        probe_addr: None,
        prestop_addr: None,
        metrics_addr: (a.metrics_port != 0 && pod.index == 0)
            .then(|| SocketAddr::new(a.address, a.metrics_port)),
        runtime_poll: (Duration::from_millis(100), Duration::from_secs(30)),
    };
    Ok(Sidecar::start(cfg, Some(store)).await?)
}

async fn status_json(
    state: &watch::Shared,
    mesh: &Arc<modelmesh_mesh::mesh::Mesh>,
) -> serde_json::Value {
    let (capacity, used, unloading, copies) = mesh.local.usage();
    let mut vmodels = Vec::new();
    for (vid, _) in mesh.vmodels.list() {
        if let Ok(s) = mesh.vmodel_status(&vid, "").await {
            vmodels.push(serde_json::json!({
                "vmodel": vid,
                "status": format!("{:?}", s.status()),
                "active": s.active_model_id,
                "target": s.target_model_id,
                "active_status": s.active_model_status.map(|m| format!("{:?}", m.status())),
            }));
        }
    }
    let models: Vec<serde_json::Value> = mesh
        .registry
        .list()
        .into_iter()
        .map(|(id, r)| {
            let st = mesh.status_of(&id, Some(&r));
            serde_json::json!({ "model": id, "type": r.model_type, "path": r.path, "status": format!("{:?}", st.status()),
                "copies": r.instance_ids.len(), "errors": st.errors })
        })
        .collect();
    let errors = state.lock().map(|s| s.errors.clone()).unwrap_or_default();
    let this = mesh.local.instance_id().to_string();
    let instances: Vec<serde_json::Value> = mesh
        .instances
        .list()
        .into_iter()
        .map(|(id, r)| {
            serde_json::json!({ "instance": id, "this": id == this, "copies": r.count,
                "capacity_bytes": r.capacity.saturating_mul(modelmesh_mesh::cache::UNIT_BYTES as i64),
                "used_bytes": r.used.saturating_mul(modelmesh_mesh::cache::UNIT_BYTES as i64),
                "internal_address": r.internal_address, "shutting_down": r.shutdown })
        })
        .collect();
    serde_json::json!({
        "instance": this,
        "instances": instances,
        "vmodels": vmodels,
        "models": models,
        "cache": { "capacity_bytes": capacity, "used_bytes": used, "unloading_bytes": unloading, "copies": copies },
        "invalid_files": errors,
    })
}
