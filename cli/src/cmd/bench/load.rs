//! Load against a KServe v2 ModelInfer endpoint: one request at a time for latency, N
//! concurrent closed loops for throughput, or an open loop at a fixed rate, where each latency
//! counts from the moment the request was due (so a slow server cannot hide queueing delay by
//! slowing the client down: no coordinated omission).

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
    concurrent_spread(ch, req, concurrency, duration, std::slice::from_ref(header)).await
}

/// As [`concurrent`], each request carrying one of `headers` picked at random (uniformly, from
/// a fixed seed per loop): requests spread over many models.
pub async fn concurrent_spread(
    ch: &Channel,
    req: &ModelInferRequest,
    concurrency: usize,
    duration: Duration,
    headers: &[Header],
) -> Summary {
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let headers: std::sync::Arc<[Header]> = headers.into();
    let mut tasks = Vec::with_capacity(concurrency);
    for n in 0..concurrency {
        let mut c = GrpcInferenceServiceClient::new(ch.clone());
        let req = req.clone();
        let headers = headers.clone();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0usize);
            // xorshift: cheap, and the same sequence every run.
            let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (n as u64 + 1);
            while Instant::now() < deadline {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let header = &headers[(rng % headers.len().max(1) as u64) as usize];
                let t = Instant::now();
                match c.model_infer(request(&req, header)).await {
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

/// Requests in flight beyond which an open loop counts new ones as failed instead of sending
/// them (the server cannot keep up; memory must stay bounded).
const MAX_IN_FLIGHT: usize = 10_000;

/// An open-loop run: latencies from each request's due time, and how late the client itself
/// sent them (its timer's precision, part of every latency).
pub struct OpenLoop {
    /// Latencies from due time.
    pub summary: Summary,
    /// How late each request left the client.
    pub lateness: Summary,
}

/// Sends requests at `rate` per second for `duration` whatever the answers, each latency
/// measured from the time the request was due. A dedicated thread paces the sends (tokio's
/// timer ticks in milliseconds, too coarse for sub-millisecond gaps).
pub async fn open_loop(
    ch: &Channel,
    req: &ModelInferRequest,
    rate: u64,
    duration: Duration,
    header: &Header,
) -> OpenLoop {
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let handle = tokio::runtime::Handle::current();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let in_flight = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (ch, req, header) = (ch.clone(), req.clone(), header.clone());
    let pacer = {
        let in_flight = in_flight.clone();
        std::thread::spawn(move || {
            use std::sync::atomic::Ordering;
            let start = Instant::now();
            let (mut late, mut dropped) = (Vec::new(), 0usize);
            let mut due = start;
            while due < start + duration {
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                late.push(due.elapsed());
                if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
                    dropped += 1;
                } else {
                    in_flight.fetch_add(1, Ordering::Relaxed);
                    let mut c = GrpcInferenceServiceClient::new(ch.clone());
                    let r = request(&req, &header);
                    let (tx, in_flight) = (tx.clone(), in_flight.clone());
                    handle.spawn(async move {
                        let out = c.model_infer(r).await.ok().map(|_| due.elapsed());
                        in_flight.fetch_sub(1, Ordering::Relaxed);
                        let _ = tx.send(out);
                    });
                }
                due += interval;
            }
            (late, dropped, start)
        })
    };
    let (late, dropped, start) = tokio::task::spawn_blocking(move || pacer.join())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_else(|| (Vec::new(), 0, Instant::now()));
    let (mut lat, mut errors) = (Vec::new(), dropped);
    // Every spawned request reports once; the sender side closes when they all have.
    while let Some(out) = rx.recv().await {
        match out {
            Some(d) => lat.push(d),
            None => errors += 1,
        }
    }
    OpenLoop {
        summary: Summary::new(lat, errors, start.elapsed()),
        lateness: Summary::new(late, 0, start.elapsed()),
    }
}
