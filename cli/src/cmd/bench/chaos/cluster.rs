//! The soak's cluster: a real etcd and pods of three processes each (`modelmesh runtime` with
//! delayed loads, the Triton adapter, `modelmesh sidecar`), every process restartable on the
//! same ports and directories, as Kubernetes restarts a container.

use super::super::pod::PodDirs;
use super::super::procs::free_port;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One restartable process.
pub struct Proc {
    /// Display name (`pod-1/sidecar`).
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    /// When the current incarnation started.
    pub started: Instant,
}

impl Proc {
    fn new(name: String, program: PathBuf, args: Vec<String>, log: PathBuf) -> Self {
        Proc {
            name,
            program,
            args,
            log,
            child: None,
            started: Instant::now(),
        }
    }

    /// Starts it (again), appending to its log.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.name))?;
        self.child = Some(child);
        self.started = Instant::now();
        Ok(())
    }

    /// SIGKILL, as a crashed container.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The current process id, if running.
    pub fn pid(&mut self) -> Option<u32> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(None) => Some(c.id()),
            _ => None,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real etcd on fixed ports and a data directory that outlive its restarts.
pub struct Etcd {
    /// The process.
    pub proc: Proc,
    /// Client URL.
    pub url: String,
}

impl Etcd {
    /// Starts etcd under `work`.
    pub async fn start(work: &Path) -> anyhow::Result<Etcd> {
        let bin = PathBuf::from("/usr/bin/etcd");
        if !bin.exists() {
            bail!("etcd is not installed: run scripts/setup-peers.sh");
        }
        let (client, peer) = (free_port()?, free_port()?);
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let args: Vec<String> = [
            "--name",
            "chaos",
            "--data-dir",
            &work.join("etcd-data").display().to_string(),
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
            "--initial-cluster",
            &format!("chaos={peer_url}"),
            "--logger=zap",
            "--log-level=error",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut proc = Proc::new("etcd".into(), bin, args, work.join("etcd.log"));
        proc.spawn()?;
        let e = Etcd { proc, url };
        e.wait_healthy(Duration::from_secs(30)).await?;
        Ok(e)
    }

    /// Polls `/health` until it answers or `timeout` passes.
    pub async fn wait_healthy(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()?;
        loop {
            let ok = client
                .get(format!("{}/health", self.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("etcd not healthy after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// How every pod is set up.
pub struct PodSpec<'a> {
    /// Where models are pulled from.
    pub repo: &'a Path,
    /// `KV_STORE` of the sidecars.
    pub kv: &'a str,
    /// `CONTAINER_MEM_REQ_BYTES` of the adapters (how many copies fit).
    pub memory: u64,
    /// `DEFAULT_MODELSIZE` of the adapters.
    pub default_size: u64,
    /// `--fault-load-delay` of the runtimes.
    pub load_delay: &'a str,
    /// Log filter of every process.
    pub log: &'a str,
}

/// One pod: runtime, adapter, sidecar.
pub struct Pod {
    /// Instance id.
    pub name: String,
    /// The processes, runtime first.
    pub runtime: Proc,
    /// The adapter.
    pub adapter: Proc,
    /// The sidecar.
    pub sidecar: Proc,
    /// The sidecar's external gRPC port.
    pub grpc: u16,
    probe: u16,
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

impl Pod {
    /// Prepares and starts pod `name` under `work`.
    pub fn start(work: &Path, name: &str, spec: &PodSpec<'_>) -> anyhow::Result<Pod> {
        let PodDirs {
            dir,
            models,
            triton,
            cfg,
        } = PodDirs::create(work, name, spec.repo)?;
        let exe = std::env::current_exe()?;
        let p = |x: &Path| x.display().to_string();
        let (rp, ap, mp, ip, probe) = (
            free_port()?,
            free_port()?,
            free_port()?,
            free_port()?,
            free_port()?,
        );
        let mut args = strings(&["runtime", "--address", "127.0.0.1", "--log", spec.log]);
        args.extend(["--model-repository".into(), p(&triton)]);
        args.extend(["--grpc-port".into(), rp.to_string()]);
        args.extend(["--fault-load-delay".into(), spec.load_delay.to_string()]);
        let runtime = Proc::new(
            format!("{name}/runtime"),
            exe.clone(),
            args,
            dir.join("runtime.log"),
        );
        let mut args = strings(&["adapter", "--server-type", "triton", "--log", spec.log]);
        args.extend(strings(&[
            "--runtime-host",
            "127.0.0.1",
            "--use-embedded-puller",
            "--allow-local-storage",
        ]));
        args.extend(["--container-mem-req-bytes".into(), spec.memory.to_string()]);
        args.extend(["--default-modelsize".into(), spec.default_size.to_string()]);
        args.extend(["--adapter-port".into(), ap.to_string()]);
        args.extend(["--runtime-port".into(), rp.to_string()]);
        args.extend(["--root-model-dir".into(), p(&models)]);
        args.extend(["--storage-config-dir".into(), p(&cfg)]);
        let adapter = Proc::new(
            format!("{name}/adapter"),
            exe.clone(),
            args,
            dir.join("adapter.log"),
        );
        let mut args = strings(&["sidecar", "--address", "127.0.0.1", "--log", spec.log]);
        args.extend(strings(&[
            "--runtime-host",
            "127.0.0.1",
            "--rest-port",
            "0",
        ]));
        args.extend(strings(&["--metrics-port", "0", "--prestop-port", "0"]));
        args.extend(["--probe-port".into(), probe.to_string()]);
        args.extend(["--kv-store".into(), spec.kv.to_string()]);
        args.extend(["--instance-id".into(), name.to_string()]);
        args.extend(["--grpc-port".into(), mp.to_string()]);
        args.extend(["--internal-port".into(), ip.to_string()]);
        args.extend(["--internal-grpc-port".into(), ap.to_string()]);
        args.extend(["--internal-serving-grpc-port".into(), rp.to_string()]);
        // Short leases and reaper times so dead pods are noticed within the soak.
        args.extend(strings(&["--instance-lease-ttl-secs", "5"]));
        args.extend(strings(&["--reaper-interval-ms", "15000"]));
        args.extend(strings(&["--assume-instance-gone-ms", "30000"]));
        let sidecar = Proc::new(
            format!("{name}/sidecar"),
            exe,
            args,
            dir.join("sidecar.log"),
        );
        let mut pod = Pod {
            name: name.to_string(),
            runtime,
            adapter,
            sidecar,
            grpc: mp,
            probe,
        };
        pod.start_all()?;
        Ok(pod)
    }

    /// Starts every process (after a crash: all three, as Kubernetes restarts a pod).
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        self.runtime.spawn()?;
        self.adapter.spawn()?;
        self.sidecar.spawn()
    }

    /// SIGKILLs every process, as a node losing the pod.
    pub fn kill_all(&mut self) {
        self.sidecar.kill();
        self.adapter.kill();
        self.runtime.kill();
    }

    /// Waits until the sidecar's `/ready` answers 200.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()?;
        let url = format!("http://127.0.0.1:{}/ready", self.probe);
        loop {
            // A sidecar that gave up (say, etcd was unreachable for its whole start-up) is
            // restarted, as the kubelet would.
            for p in [&mut self.runtime, &mut self.adapter, &mut self.sidecar] {
                if p.pid().is_none() {
                    p.spawn()?;
                }
            }
            if client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} not ready after {timeout:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
