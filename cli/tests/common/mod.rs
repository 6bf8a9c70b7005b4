//! Test support: free ports, child processes that die with the test, readiness polling with a
//! deadline, and the locations of the real third-party peers installed by
//! `scripts/setup-peers.sh`.
#![allow(dead_code)]

pub mod cluster;
pub mod kserve;
pub mod pki;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The checkout root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A path under the checkout root that must exist; the panic says how to create it.
pub fn peer(rel: &str) -> PathBuf {
    let p = root().join(rel);
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup-peers.sh first (the README's test command does)",
        p.display()
    );
    p
}

/// A free loopback port.
/// A port for a test server. Ports come from below Linux's ephemeral range (32768+), so no
/// client connection can take one between choosing it and the server binding it; and each port
/// is reserved with a marker file created atomically, because nextest runs tests in separate,
/// concurrent processes that must never pick the same port. Markers older than ten minutes are
/// stale (a whole test run takes about a minute) and reclaimed.
pub fn free_port() -> u16 {
    let dir = std::env::temp_dir().join("modelmesh-test-ports");
    let _ = std::fs::create_dir_all(&dir);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ u64::from(std::process::id()).rotate_left(32);
    let mut x = seed | 1;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let p = 20_000 + (x % 12_000) as u16;
        let marker = dir.join(p.to_string());
        let stale = std::fs::metadata(&marker)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(600));
        if stale {
            let _ = std::fs::remove_file(&marker);
        }
        if std::fs::File::create_new(&marker).is_ok() && TcpListener::bind(("127.0.0.1", p)).is_ok()
        {
            return p;
        }
    }
    panic!("no free port in 20000..32000")
}

/// The `modelmesh` binary under test. Its adapters may read `type: local` storage and http
/// storage on loopback (the tests' model stores); the refusal of both without these settings
/// is tested on its own (puller_storage.rs).
pub fn modelmesh() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_modelmesh"));
    c.env("MODELMESH_ALLOW_LOCAL_STORAGE", "true")
        .env("MODELMESH_STORAGE_ALLOW_LOOPBACK", "true");
    c
}

/// A child process killed (and reaped) when dropped, so a failing test never leaks servers.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout/stderr going to a log file in `logdir`.
    pub fn spawn(name: &str, mut cmd: Command, logdir: &Path) -> Proc {
        let log = logdir.join(format!("{name}.log"));
        let f = std::fs::File::create(&log).expect("log file");
        let f2 = f.try_clone().expect("log file");
        cmd.stdout(Stdio::from(f))
            .stderr(Stdio::from(f2))
            .stdin(Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// The log so far (for assertion messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the log if the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited early ({status}); log:\n{}",
                self.name,
                self.log_text()
            );
        }
    }

    /// Sends SIGTERM and waits up to `grace` before SIGKILL.
    pub fn stop(&mut self, grace: Duration) {
        #[cfg(unix)]
        unsafe {
            libc_kill(self.child.id() as i32, 15);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(unix)]
unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Tests that check graceful shutdown call stop(); cleanup after a test (or a failed
        // assertion) just needs the process gone.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes; the process must stay up.
pub async fn wait_until<F, Fut>(what: &str, proc_: &mut Proc, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        proc_.assert_running();
        if check().await {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{what} not ready after {timeout:?}; {} log:\n{}",
                proc_.name,
                proc_.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A lazily connecting gRPC channel to a loopback port.
pub fn channel(port: u16) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy()
}

/// Waits until a KServe v2 gRPC server on `port` answers ServerReady = true.
pub async fn wait_grpc_ready(proc_: &mut Proc, port: u16, timeout: Duration) {
    use modelmesh_proto::inference::{
        ServerReadyRequest, grpc_inference_service_client::GrpcInferenceServiceClient,
    };
    let ch = channel(port);
    wait_until("gRPC ServerReady", proc_, timeout, || {
        let mut c = GrpcInferenceServiceClient::new(ch.clone());
        async move {
            c.server_ready(ServerReadyRequest {})
                .await
                .map(|r| r.into_inner().ready)
                .unwrap_or(false)
        }
    })
    .await;
}

/// Waits until a mesh sidecar on `port` answers the ModelMesh API (getModelStatus).
pub async fn wait_mesh_ready(sidecar: &mut Proc, port: u16) {
    let ch = channel(port);
    wait_until("mesh gRPC", sidecar, Duration::from_secs(60), || {
        use modelmesh_proto::mmesh::{GetStatusRequest, model_mesh_client::ModelMeshClient};
        let mut c = ModelMeshClient::new(ch.clone());
        async move {
            c.get_model_status(GetStatusRequest {
                model_id: "probe".into(),
            })
            .await
            .is_ok()
        }
    })
    .await;
}

/// Waits until `GET path` on `port` answers 200.
pub async fn wait_http_ok(proc_: &mut Proc, port: u16, path: &str) {
    let url = format!("http://127.0.0.1:{port}{path}");
    wait_until(
        &format!("200 from {url}"),
        proc_,
        Duration::from_secs(60),
        || {
            let url = url.clone();
            async move {
                reqwest::get(&url)
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        },
    )
    .await;
}

/// Copies a directory tree (files only, following nothing special).
pub fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for e in std::fs::read_dir(src).expect("read_dir") {
        let e = e.expect("entry");
        let to = dst.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).expect("copy");
        }
    }
}

/// Starts `modelmesh runtime` on a repository; returns the process and its gRPC and HTTP ports.
/// It also serves gRPC on the Unix socket `<logdir>/runtime.sock`.
pub async fn start_runtime(repo: &Path, logdir: &Path) -> (Proc, u16, u16) {
    start_runtime_with(repo, logdir, &[]).await
}

/// [`start_runtime`] with extra flags (e.g. `--fault-infer-delay`).
pub async fn start_runtime_with(repo: &Path, logdir: &Path, extra: &[&str]) -> (Proc, u16, u16) {
    let (grpc, http) = (free_port(), free_port());
    let mut cmd = modelmesh();
    cmd.args(["runtime", "--address", "127.0.0.1", "--model-repository"])
        .arg(repo)
        .arg("--grpc-socket")
        .arg(logdir.join("runtime.sock"))
        .args([
            "--grpc-port",
            &grpc.to_string(),
            "--http-port",
            &http.to_string(),
        ])
        .args(extra);
    let mut p = Proc::spawn("modelmesh-runtime", cmd, logdir);
    wait_grpc_ready(&mut p, grpc, Duration::from_secs(30)).await;
    (p, grpc, http)
}

/// Expected example outputs (examples/models/expected.json).
pub fn expected() -> serde_json::Value {
    let text = std::fs::read_to_string(root().join("examples/models/expected.json"))
        .expect("expected.json");
    serde_json::from_str(&text).expect("expected.json parses")
}

/// Starts the real Triton (from `nvidia-pytriton`, python backend only) on a repository in
/// explicit model-control mode. Returns the process and its gRPC port.
pub async fn start_triton(repo: &Path, logdir: &Path) -> (Proc, u16) {
    let sp = peer(".venv/lib/python3.11/site-packages");
    let backends = peer("target/peers/triton/backends");
    let (grpc, http, metrics) = (free_port(), free_port(), free_port());
    let mut cmd = Command::new(sp.join("pytriton/tritonserver/bin/tritonserver"));
    let venv_bin = root().join(".venv/bin");
    let path = format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    cmd.env("LD_LIBRARY_PATH", sp.join("nvidia_pytriton.libs"))
        .env("PATH", path)
        .arg(format!("--model-repository={}", repo.display()))
        .arg("--model-control-mode=explicit")
        .arg(format!("--backend-directory={}", backends.display()))
        .arg(format!(
            "--cache-directory={}",
            sp.join("pytriton/tritonserver/caches").display()
        ))
        .args(["--grpc-address=127.0.0.1", &format!("--grpc-port={grpc}")])
        .args(["--http-address=127.0.0.1", &format!("--http-port={http}")])
        .args([
            "--metrics-address=127.0.0.1",
            &format!("--metrics-port={metrics}"),
        ])
        .args(["--allow-metrics=false", "--allow-gpu-metrics=false"])
        .args([
            "--pinned-memory-pool-byte-size=0",
            "--cuda-memory-pool-byte-size=0:0",
            "--log-verbose=0",
        ])
        .arg(format!(
            "--backend-config=python,shm-region-prefix-name=mmtest{grpc}-"
        ));
    let mut p = Proc::spawn("tritonserver", cmd, logdir);
    wait_grpc_ready(&mut p, grpc, Duration::from_secs(60)).await;
    (p, grpc)
}

/// Starts `modelmesh adapter` in front of a model server; returns it and its port.
pub fn start_adapter(
    server_type: &str,
    runtime_port: u16,
    root_model_dir: &Path,
    extra: &[&str],
    logdir: &Path,
) -> (Proc, u16) {
    let port = free_port();
    let mut cmd = modelmesh();
    cmd.args(["adapter", "--server-type", server_type])
        .args([
            "--adapter-port",
            &port.to_string(),
            "--runtime-port",
            &runtime_port.to_string(),
        ])
        .args([
            "--runtime-host",
            "127.0.0.1",
            "--container-mem-req-bytes",
            "1073741824",
        ])
        .arg("--root-model-dir")
        .arg(root_model_dir)
        .args(extra);
    (
        Proc::spawn(&format!("adapter-{server_type}"), cmd, logdir),
        port,
    )
}

/// Polls runtimeStatus until READY and returns it.
pub async fn wait_runtime_status_ready(
    proc_: &mut Proc,
    port: u16,
    timeout: Duration,
) -> modelmesh_proto::mmesh::RuntimeStatusResponse {
    use modelmesh_proto::mmesh::{
        RuntimeStatusRequest, model_runtime_client::ModelRuntimeClient,
        runtime_status_response::Status,
    };
    let ch = channel(port);
    let deadline = Instant::now() + timeout;
    loop {
        proc_.assert_running();
        let mut c = ModelRuntimeClient::new(ch.clone());
        if let Ok(r) = c.runtime_status(RuntimeStatusRequest {}).await {
            let r = r.into_inner();
            if r.status == Status::Ready as i32 {
                return r;
            }
            assert_ne!(
                r.status,
                Status::Failing as i32,
                "runtime FAILING; log:\n{}",
                proc_.log_text()
            );
        }
        if Instant::now() > deadline {
            panic!(
                "runtimeStatus not READY after {timeout:?}; log:\n{}",
                proc_.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts the real MLServer (from `.venv-mlserver`) on a model repository, in its own working
/// directory, with per-request logging quieted. Returns the process and its gRPC port.
pub async fn start_mlserver(repo: &Path, workdir: &Path) -> (Proc, u16) {
    let bin = peer(".venv-mlserver/bin/mlserver");
    let (grpc, http, metrics) = (free_port(), free_port(), free_port());
    let logging = workdir.join("mlserver-logging.json");
    std::fs::write(
        &logging,
        r#"{"version": 1, "disable_existing_loggers": false,
            "loggers": {"mlserver.grpc": {"level": "WARNING"}, "uvicorn.access": {"level": "WARNING"}}}"#,
    )
    .expect("write logging config");
    let mut cmd = Command::new(bin);
    cmd.current_dir(workdir)
        .env("MLSERVER_HOST", "127.0.0.1")
        .env("MLSERVER_GRPC_PORT", grpc.to_string())
        .env("MLSERVER_HTTP_PORT", http.to_string())
        .env("MLSERVER_METRICS_PORT", metrics.to_string())
        .env("MLSERVER_PARALLEL_WORKERS", "0")
        .env("MLSERVER_LOAD_MODELS_AT_STARTUP", "false")
        .env("MLSERVER_LOGGING_SETTINGS", &logging)
        .arg("start")
        .arg(repo);
    let mut p = Proc::spawn("mlserver", cmd, workdir);
    wait_grpc_ready(&mut p, grpc, Duration::from_secs(90)).await;
    (p, grpc)
}

/// Waits until an HTTP server on `port` answers anything at `path`.
pub async fn wait_http(proc_: &mut Proc, port: u16, path: &str, timeout: Duration) {
    let url = format!("http://127.0.0.1:{port}{path}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    wait_until(&format!("HTTP {url}"), proc_, timeout, || {
        let req = client.get(&url);
        async move { req.send().await.is_ok() }
    })
    .await;
}

/// A whole one-pod mesh: `modelmesh runtime`, the triton adapter (pulling from a local copy of
/// the examples) and `modelmesh sidecar`, each a real process.
pub struct MeshPod {
    pub dir: tempfile::TempDir,
    pub runtime: Proc,
    pub adapter: Proc,
    pub sidecar: Proc,
    /// The sidecar's command line, to start it again.
    pub sidecar_args: Vec<std::ffi::OsString>,
    pub runtime_port: u16,
    pub mesh_port: u16,
    pub rest_port: u16,
    pub probe_port: u16,
    pub metrics_port: u16,
    /// The internal port peers forward to.
    pub internal_port: u16,
    /// The adapter's ModelRuntime port.
    pub adapter_port: u16,
}

impl MeshPod {
    /// Stops the sidecar (SIGTERM, then SIGKILL after 10 s) and starts it again on the same
    /// ports, next to the same runtime and adapter; returns once it answers.
    pub async fn restart_sidecar(&mut self) {
        self.sidecar.stop(Duration::from_secs(10));
        let mut cmd = modelmesh();
        cmd.args(&self.sidecar_args);
        self.sidecar = Proc::spawn("sidecar-restarted", cmd, self.dir.path());
        wait_mesh_ready(&mut self.sidecar, self.mesh_port).await;
    }
}

/// Starts a pod. `mem_bytes` is the adapter's CONTAINER_MEM_REQ_BYTES (buffer 0), `extra` goes
/// to the sidecar (`{pod_dir}` in it becomes the pod's directory, where the runtime's socket
/// `runtime.sock` is).
pub async fn start_mesh_pod(mem_bytes: u64, default_size: u64, extra: &[&str]) -> MeshPod {
    start_named_pod("pod-1", mem_bytes, default_size, extra).await
}

/// [`start_mesh_pod`] with a given instance id (pods of one cluster share a KV store).
pub async fn start_named_pod(
    instance_id: &str,
    mem_bytes: u64,
    default_size: u64,
    extra: &[&str],
) -> MeshPod {
    start_pod_with(instance_id, mem_bytes, default_size, extra, &[]).await
}

/// [`start_named_pod`] with extra flags for `modelmesh runtime` as well.
pub async fn start_pod_with(
    instance_id: &str,
    mem_bytes: u64,
    default_size: u64,
    extra: &[&str],
    runtime_extra: &[&str],
) -> MeshPod {
    let dir = tempfile::tempdir().expect("tempdir");
    let models = dir.path().join("models");
    std::fs::create_dir_all(models.join("_triton_models")).expect("mkdir");
    let store = dir.path().join("store");
    copy_tree(&root().join("examples/models/repository"), &store);
    let cfg = dir.path().join("storage-config");
    std::fs::create_dir_all(&cfg).expect("mkdir");
    let entry = serde_json::json!({"type": "local", "root": store});
    std::fs::write(cfg.join("default"), entry.to_string()).expect("write");
    let (runtime, rport, _) =
        start_runtime_with(&models.join("_triton_models"), dir.path(), runtime_extra).await;
    let (mem, size) = (mem_bytes.to_string(), default_size.to_string());
    let aport = free_port();
    let mut cmd = modelmesh();
    cmd.args([
        "adapter",
        "--server-type",
        "triton",
        "--runtime-host",
        "127.0.0.1",
    ])
    .args([
        "--adapter-port",
        &aport.to_string(),
        "--runtime-port",
        &rport.to_string(),
    ])
    .args(["--container-mem-req-bytes", &mem, "--mem-buffer-bytes", "0"])
    .args([
        "--default-modelsize",
        &size,
        "--use-embedded-puller",
        "--storage-config-dir",
    ])
    .arg(&cfg)
    .arg("--root-model-dir")
    .arg(&models);
    let adapter = Proc::spawn("adapter", cmd, dir.path());
    let (mport, rest, probe, metrics) = (free_port(), free_port(), free_port(), free_port());
    let internal = free_port();
    let mut cmd = modelmesh();
    cmd.args([
        "sidecar",
        "--address",
        "127.0.0.1",
        "--instance-id",
        instance_id,
    ])
    .args([
        "--grpc-port",
        &mport.to_string(),
        "--internal-grpc-port",
        &aport.to_string(),
    ])
    .args([
        "--internal-serving-grpc-port",
        &rport.to_string(),
        "--runtime-host",
        "127.0.0.1",
    ])
    .args([
        "--rest-port",
        &rest.to_string(),
        "--probe-port",
        &probe.to_string(),
    ])
    .args([
        "--metrics-port",
        &metrics.to_string(),
        "--internal-port",
        &internal.to_string(),
    ])
    .args(
        extra
            .iter()
            .map(|a| a.replace("{pod_dir}", &dir.path().to_string_lossy())),
    );
    cmd.args(["--prestop-port", "0"]);
    if !extra.contains(&"--kv-store") {
        cmd.args(["--kv-store", "memory"]);
    }
    let sidecar_args: Vec<std::ffi::OsString> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut sidecar = Proc::spawn("sidecar", cmd, dir.path());
    if extra.contains(&"--tls-key-cert-path") {
        // Its gRPC port speaks TLS; the probe port stays plain HTTP, as for the kubelet.
        wait_http_ok(&mut sidecar, probe, "/ready").await;
    } else {
        wait_mesh_ready(&mut sidecar, mport).await;
    }
    MeshPod {
        dir,
        runtime,
        adapter,
        sidecar,
        sidecar_args,
        runtime_port: rport,
        mesh_port: mport,
        rest_port: rest,
        probe_port: probe,
        metrics_port: metrics,
        internal_port: internal,
        adapter_port: aport,
    }
}

/// Waits until `pod` sees `n` pods in its mesh (its `modelmesh_instances_total` gauge).
pub async fn wait_pod_sees(pod: &mut MeshPod, n: usize) {
    wait_metric(pod, &format!("modelmesh_instances_total {n}")).await;
}

/// Waits until the sidecar's `/metrics` has the line `want` (30 s deadline).
pub async fn wait_metric(pod: &mut MeshPod, want: &str) {
    let url = format!("http://127.0.0.1:{}/metrics", pod.metrics_port);
    let what = format!("{url} reporting '{want}'");
    wait_until(&what, &mut pod.sidecar, Duration::from_secs(30), || {
        let (url, want) = (url.clone(), want.to_string());
        async move {
            match reqwest::get(&url).await {
                Ok(r) => r.text().await.is_ok_and(|t| t.lines().any(|l| l == want)),
                Err(_) => false,
            }
        }
    })
    .await;
}

/// Waits until every pod sees all of `pods`.
pub async fn wait_pods_see_each_other(pods: &mut [MeshPod]) {
    let n = pods.len();
    for pod in pods {
        wait_pod_sees(pod, n).await;
    }
}

/// A real etcd (Debian etcd-server) on free loopback ports, killed on drop.
pub async fn start_etcd(logdir: &Path) -> (Proc, String) {
    start_etcd_with(logdir, None).await
}

/// [`start_etcd`], serving clients over TLS with the test PKI's server certificate and
/// requiring client certificates from its CA (`--client-cert-auth`) when `tls` is given.
pub async fn start_etcd_with(logdir: &Path, tls: Option<&pki::Pki>) -> (Proc, String) {
    start_etcd_at(logdir, tls, free_port(), free_port()).await
}

/// [`start_etcd_with`] on given client and peer ports (to restart an etcd where it was, on
/// the same data directory).
pub async fn start_etcd_at(
    logdir: &Path,
    tls: Option<&pki::Pki>,
    client: u16,
    peer: u16,
) -> (Proc, String) {
    let bin = Path::new("/usr/bin/etcd");
    assert!(
        bin.exists(),
        "etcd is missing: run scripts/setup-peers.sh (installs Debian etcd-server)"
    );
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://127.0.0.1:{client}");
    let mut cmd = Command::new(bin);
    cmd.args(["--name", "t1", "--data-dir"])
        .arg(logdir.join("etcd-data"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
        ])
        .args(["--initial-cluster", &format!("t1=http://127.0.0.1:{peer}")])
        .args([
            "--logger=zap",
            "--log-level=error",
            "--heartbeat-interval=10",
            "--election-timeout=100",
        ]);
    if let Some(t) = tls {
        cmd.arg("--cert-file")
            .arg(&t.server_cert)
            .arg("--key-file")
            .arg(&t.server_key)
            .arg("--trusted-ca-file")
            .arg(&t.ca)
            .arg("--client-cert-auth");
    }
    let mut p = Proc::spawn("etcd", cmd, logdir);
    let health = format!("{url}/health");
    let client = match tls {
        Some(t) => t.http(true),
        None => reqwest::Client::new(),
    };
    wait_until("etcd", &mut p, Duration::from_secs(30), || {
        let req = client.get(&health);
        async move { matches!(req.send().await, Ok(r) if r.status().is_success()) }
    })
    .await;
    (p, url)
}

/// setVModel of vmodel `reg` (owner `ksp`) to `target`: the tiny-regression example, loaded now,
/// auto-deleted when replaced, waiting for the transition (`sync`).
pub fn set_reg_vmodel(target: &str) -> modelmesh_proto::mmesh::SetVModelRequest {
    modelmesh_proto::mmesh::SetVModelRequest {
        v_model_id: "reg".into(),
        target_model_id: target.into(),
        model_info: Some(modelmesh_proto::mmesh::ModelInfo {
            r#type: "onnx".into(),
            path: "tiny-regression".into(),
            key: "{}".into(),
            ..Default::default()
        }),
        auto_delete_target_model: true,
        load_now: true,
        sync: true,
        owner: "ksp".into(),
        ..Default::default()
    }
}
