//! Closed-loop load against a KServe v2 ModelInfer endpoint: one request at a time for latency,
//! and N concurrent loops for throughput.

use super::stats::Summary;
use modelmesh_proto::inference::{
    ModelInferRequest, grpc_inference_service_client::GrpcInferenceServiceClient,
};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Flags of the throughput run, shared by every scenario.
#[derive(Debug, clap::Args)]
pub struct ThroughputFlags {
    /// Concurrent request loops for the throughput run.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Seconds of the throughput run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
}

impl ThroughputFlags {
    /// How long the throughput run lasts.
    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.seconds)
    }
}

/// Extra request metadata (e.g. `mm-model-id`).
pub type Header = Option<(&'static str, tonic::metadata::AsciiMetadataValue)>;

fn request(req: &ModelInferRequest, header: &Header) -> tonic::Request<ModelInferRequest> {
    let mut r = tonic::Request::new(req.clone());
    if let Some((k, v)) = header {
        r.metadata_mut().insert(*k, v.clone());
    }
    r
}

/// Sends `n` requests one after another and records each latency.
pub async fn sequential(
    ch: &Channel,
    req: &ModelInferRequest,
    n: usize,
    header: &Header,
) -> Summary {
    let mut c = GrpcInferenceServiceClient::new(ch.clone());
    let mut lat = Vec::with_capacity(n);
    let mut errors = 0;
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        match c.model_infer(request(req, header)).await {
            Ok(_) => lat.push(t.elapsed()),
            Err(_) => errors += 1,
        }
    }
    Summary::new(lat, errors, start.elapsed())
}

/// Runs `concurrency` loops for `duration`, each sending its next request when the last answers.
pub async fn concurrent(
    ch: &Channel,
    req: &ModelInferRequest,
    concurrency: usize,
    duration: Duration,
    header: &Header,
) -> Summary {
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let mut c = GrpcInferenceServiceClient::new(ch.clone());
        let req = req.clone();
        let header = header.clone();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0usize);
            while Instant::now() < deadline {
                let t = Instant::now();
                match c.model_infer(request(&req, &header)).await {
                    Ok(_) => lat.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        if let Ok((l, e)) = t.await {
            all.extend(l);
            errors += e;
        }
    }
    Summary::new(all, errors, start.elapsed())
}
