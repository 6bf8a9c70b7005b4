//! One serving pod as separate processes (`modelmesh runtime`, the Triton adapter pulling from
//! the examples, and `modelmesh sidecar`), for benchmarks.

use super::procs::{Server, free_port};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A running pod.
pub struct Pod {
    /// The runtime process.
    pub runtime: Server,
    /// The adapter process.
    pub adapter: Server,
    /// The sidecar process.
    pub sidecar: Server,
    /// The runtime's gRPC port (for direct requests).
    pub runtime_port: u16,
    /// The mesh's external gRPC port.
    pub grpc: u16,
}

/// The runtime's Unix socket, inside the pod's directory.
pub const RUNTIME_SOCKET: &str = "runtime.sock";

/// Starts a process of this binary with `args`, logging to `log`.
fn spawn(name: &'static str, args: &[String], port: u16, log: PathBuf) -> anyhow::Result<Server> {
    let child = Command::new(std::env::current_exe()?)
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(Server { name, child, port })
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// Memory request given to a pod's adapter unless a scenario sets it (1 GiB: 768 MiB of models
/// after the adapter's 256 MiB buffer).
pub const POD_MEMORY: u64 = 1 << 30;

/// Starts a pod named `name` under `work`, serving models from `repo`, with the sidecar using
/// the KV store `kv` (e.g. `memory`, `etcd:http://...`) and `sidecar_extra` flags.
pub fn start_pod(
    work: &Path,
    name: &str,
    kv: &str,
    repo: &Path,
    sidecar_extra: &[&str],
) -> anyhow::Result<Pod> {
    start_pod_with_memory(work, name, kv, repo, sidecar_extra, POD_MEMORY, None)
}

/// A bench pod's directories: its own, the adapter's model root (with the runtime's
/// repository inside) and a storage config whose `default` entry is `repo` on local disk.
pub struct PodDirs {
    /// The pod's directory (logs, sockets).
    pub dir: PathBuf,
    /// The adapter's `--root-model-dir`.
    pub models: PathBuf,
    /// The runtime's `--model-repository`.
    pub triton: PathBuf,
    /// The adapter's `--storage-config-dir`.
    pub cfg: PathBuf,
}

impl PodDirs {
    /// Creates them under `work/name`.
    pub fn create(work: &Path, name: &str, repo: &Path) -> anyhow::Result<PodDirs> {
        let dir = work.join(name);
        let models = dir.join("models");
        let triton = models.join("_triton_models");
        std::fs::create_dir_all(&triton)?;
        let cfg = dir.join("storage-config");
        std::fs::create_dir_all(&cfg)?;
        std::fs::write(
            cfg.join("default"),
            serde_json::json!({"type": "local", "root": repo}).to_string(),
        )?;
        Ok(PodDirs {
            dir,
            models,
            triton,
            cfg,
        })
    }
}

/// As [`start_pod`], with the adapter's container memory request (`CONTAINER_MEM_REQ_BYTES`),
/// which sets how many models fit, and optionally the size it assumes for a model it knows
/// nothing about (`DEFAULT_MODELSIZE`; the sidecar wants room for at least ten of those).
pub fn start_pod_with_memory(
    work: &Path,
    name: &str,
    kv: &str,
    repo: &Path,
    sidecar_extra: &[&str],
    memory: u64,
    default_model_size: Option<u64>,
) -> anyhow::Result<Pod> {
    let PodDirs {
        dir,
        models,
        triton,
        cfg,
    } = PodDirs::create(work, name, repo)?;
    let (rp, ap, mp) = (free_port()?, free_port()?, free_port()?);
    let path = |x: &Path| x.display().to_string();
    let mut args = strings(&[
        "runtime",
        "--address",
        "127.0.0.1",
        "--log",
        "warn",
        "--model-repository",
    ]);
    args.extend([path(&triton), "--grpc-port".into(), rp.to_string()]);
    // Also on a Unix socket, for sidecars started with --internal-serving-grpc-socket.
    args.extend(["--grpc-socket".into(), path(&dir.join(RUNTIME_SOCKET))]);
    let runtime = spawn("runtime", &args, rp, dir.join("runtime.log"))?;
    let mut args = strings(&[
        "adapter",
        "--server-type",
        "triton",
        "--log",
        "warn",
        "--runtime-host",
        "127.0.0.1",
    ]);
    args.extend([
        "--container-mem-req-bytes".into(),
        memory.to_string(),
        "--use-embedded-puller".into(),
        // The benchmark's model store is a local directory.
        "--allow-local-storage".into(),
    ]);
    if let Some(size) = default_model_size {
        args.extend(["--default-modelsize".into(), size.to_string()]);
    }
    args.extend([
        "--adapter-port".into(),
        ap.to_string(),
        "--runtime-port".into(),
        rp.to_string(),
    ]);
    args.extend([
        "--root-model-dir".into(),
        path(&models),
        "--storage-config-dir".into(),
        path(&cfg),
    ]);
    let adapter = spawn("adapter", &args, ap, dir.join("adapter.log"))?;
    let sidecar = spawn_sidecar(&dir, name, kv, mp, ap, rp, sidecar_extra)?;
    Ok(Pod {
        runtime,
        adapter,
        sidecar,
        runtime_port: rp,
        grpc: mp,
    })
}

/// Starts a sidecar named `name` (logging to `dir`) on gRPC port `port`, in front of the
/// adapter (ModelRuntime) on `adapter` and the runtime's inference port `runtime`.
pub fn spawn_sidecar(
    dir: &Path,
    name: &str,
    kv: &str,
    port: u16,
    adapter: u16,
    runtime: u16,
    extra: &[&str],
) -> anyhow::Result<Server> {
    let mut args = strings(&[
        "sidecar",
        "--address",
        "127.0.0.1",
        "--log",
        "warn",
        "--runtime-host",
        "127.0.0.1",
    ]);
    args.extend(strings(&[
        "--rest-port",
        "0",
        "--probe-port",
        "0",
        "--metrics-port",
        "0",
        "--prestop-port",
        "0",
    ]));
    args.extend([
        "--kv-store".into(),
        kv.to_string(),
        "--instance-id".into(),
        name.to_string(),
    ]);
    args.extend([
        "--grpc-port".into(),
        port.to_string(),
        "--internal-grpc-port".into(),
        adapter.to_string(),
    ]);
    args.extend(["--internal-serving-grpc-port".into(), runtime.to_string()]);
    args.extend(strings(extra));
    spawn("sidecar", &args, port, dir.join("sidecar.log"))
}
