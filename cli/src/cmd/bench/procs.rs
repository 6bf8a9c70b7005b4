//! Starting and stopping the processes a benchmark measures.

use anyhow::{Context, bail};
use modelmesh_proto::inference::{
    self as pb, InferTensorContents,
    grpc_inference_service_client::GrpcInferenceServiceClient as Client,
    model_infer_request::InferInputTensor,
};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// A server process, killed on drop.
pub struct Server {
    /// Display name.
    pub name: &'static str,
    /// The process.
    pub child: Child,
    /// Its gRPC port.
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port.
/// Ports come from below Linux's ephemeral range, so no client connection can take a port
/// between choosing it and the server binding it; successive calls never repeat.
pub fn free_port() -> anyhow::Result<u16> {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 800) as u16 * 15,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..2_000 {
        let mut p = NEXT.fetch_add(1, Ordering::SeqCst);
        if p >= 32_000 {
            NEXT.store(20_000, Ordering::SeqCst);
            p = 20_000;
        }
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return Ok(p);
        }
    }
    anyhow::bail!("no free port in 20000..32000")
}

/// A lazy channel to a loopback port.
pub fn channel(port: u16) -> anyhow::Result<Channel> {
    Ok(tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?.connect_lazy())
}

/// Waits for KServe v2 ServerReady.
pub async fn wait_ready(s: &mut Server, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut c = Client::new(channel(s.port)?);
    loop {
        if let Some(status) = s.child.try_wait()? {
            bail!("{} exited during start-up ({status})", s.name);
        }
        if c.server_ready(pb::ServerReadyRequest {})
            .await
            .map(|r| r.into_inner().ready)
            .unwrap_or(false)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} not ready after {timeout:?}", s.name);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A request with the example's input.
pub fn example_request(root: &Path, model: &str) -> anyhow::Result<pb::ModelInferRequest> {
    let text = std::fs::read_to_string(root.join("examples/models/expected.json"))
        .context("reading expected.json")?;
    let ex: serde_json::Value = serde_json::from_str(&text)?;
    let input = &ex[model]["inputs"][0];
    if input["datatype"] != "FP32" {
        bail!("model {model}: the benchmark sends FP32 inputs only");
    }
    let data: Vec<f32> = input["data"]
        .as_array()
        .context("data")?
        .iter()
        .filter_map(|v| v.as_f64())
        .map(|v| v as f32)
        .collect();
    let shape: Vec<i64> = input["shape"]
        .as_array()
        .context("shape")?
        .iter()
        .filter_map(|v| v.as_i64())
        .collect();
    Ok(pb::ModelInferRequest {
        model_name: model.into(),
        inputs: vec![InferInputTensor {
            name: input["name"].as_str().unwrap_or("input").into(),
            datatype: "FP32".into(),
            shape,
            contents: Some(InferTensorContents {
                fp32_contents: data,
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// Elements of the large-payload tensor: 262,144 FP32 values, 1 MiB.
pub const LARGE_ELEMENTS: usize = 1 << 18;

/// A 1 MiB request for the `vector-sum` example ([1, 262144] FP32, sent as raw bytes as
/// tritonclient does); the answer is one float.
pub fn large_request() -> pb::ModelInferRequest {
    let raw: Vec<u8> = (0..LARGE_ELEMENTS)
        .flat_map(|i| ((i % 97) as f32 / 97.0).to_le_bytes())
        .collect();
    pb::ModelInferRequest {
        model_name: "vector-sum".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, LARGE_ELEMENTS as i64],
            ..Default::default()
        }],
        raw_input_contents: vec![raw],
        ..Default::default()
    }
}

/// The checkout root (`--root`), its example model repository, and a fresh work directory
/// for `scenario` under the system temp dir.
pub fn bench_dirs(
    root: &Path,
    scenario: &str,
) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)> {
    let root = root
        .canonicalize()
        .with_context(|| format!("--root {}", root.display()))?;
    let repo = root.join("examples/models/repository");
    let work =
        std::env::temp_dir().join(format!("modelmesh-bench-{scenario}-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    Ok((root, repo, work))
}
