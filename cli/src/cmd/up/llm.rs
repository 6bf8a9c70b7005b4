//! `modelmesh up`'s LLM instance: llama.cpp's `llama-server` in router mode as a child process,
//! the llamacpp adapter in front of it, and a mesh instance of its own labelled for `gguf`
//! models, so GGUF Predictors are placed there (and ONNX ones on the other instances) with
//! the same registry, LRU and routing.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The label of the instance that serves GGUF models, and the model type it requires.
pub const GGUF_TYPE: &str = "mt:gguf";
/// The label of the instances that serve everything else.
pub const DEFAULT_LABEL: &str = "rt:modelmesh-runtime";

/// How long llama-server may take to answer `/health` after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Type constraints for `up`: GGUF models on the LLM instance, the rest on the others.
pub fn constraints() -> modelmesh_mesh::constraints::TypeConstraints {
    let json = serde_json::json!({
        GGUF_TYPE: { "required": [GGUF_TYPE] },
        "_default": { "required": [DEFAULT_LABEL] },
    });
    // A constant document: it parses.
    modelmesh_mesh::constraints::TypeConstraints::parse(&json.to_string()).unwrap_or_default()
}

/// Where llama-server is: `--llama-server`, else `MODELMESH_LLAMA_SERVER`, else on PATH.
pub fn find(flag: Option<&Path>) -> anyhow::Result<Option<PathBuf>> {
    if let Some(p) = flag {
        if !p.is_file() {
            bail!("--llama-server {}: no such file", p.display());
        }
        return Ok(Some(p.to_path_buf()));
    }
    if let Some(p) = std::env::var_os("MODELMESH_LLAMA_SERVER").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("MODELMESH_LLAMA_SERVER={}: no such file", p.display());
        }
        return Ok(Some(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    Ok(std::env::split_paths(&path)
        .map(|d| d.join("llama-server"))
        .find(|p| p.is_file()))
}

/// A running llama-server router; stopped (with its model processes) when dropped.
pub struct LlamaServer {
    child: tokio::process::Child,
    /// Its HTTP port on 127.0.0.1.
    pub port: u16,
    /// Its log file.
    pub log: PathBuf,
}

impl LlamaServer {
    /// Starts `bin` serving the GGUF files the adapter links into `models_dir`, each model with
    /// `ctx` tokens of context, and waits until it answers.
    pub async fn start(
        bin: &Path,
        models_dir: &Path,
        ctx: u64,
        work: &Path,
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let log = work.join("llama-server.log");
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let cache = work.join("llama-cache");
        std::fs::create_dir_all(&cache)?;
        let mut cmd = tokio::process::Command::new(bin);
        cmd.arg("--models-dir")
            .arg(models_dir)
            // The mesh decides what stays loaded: no limit of the router's own, and no model
            // started behind the mesh's back by a request for one that is not loaded.
            .args(["--models-max", "0", "--no-models-autoload"])
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["-c", &ctx.to_string()])
            // Nothing is downloaded: models come from the mesh's storage.
            .env("LLAMA_CACHE", &cache)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut server = LlamaServer { child, port, log };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()?;
        let url = format!("http://127.0.0.1:{}/health", self.port);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "llama-server exited at start-up ({status}); its log, {}, says why",
                    self.log.display()
                );
            }
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "llama-server did not answer {url} within {} s; see {}",
                    START_TIMEOUT.as_secs(),
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        // SIGTERM first: the router stops its model processes on the way out (a SIGKILL,
        // which kill_on_drop sends, would leave them running).
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}
