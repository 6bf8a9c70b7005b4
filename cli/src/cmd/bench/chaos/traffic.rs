//! The soak's traffic: request loops at a steady rate over the live models, entering through
//! any pod that is up, and model churn (registering new models, unregistering old ones); with
//! the outcome of every request classified.

use super::super::procs::channel;
use modelmesh_proto::inference::{
    ModelInferRequest, grpc_inference_service_client::GrpcInferenceServiceClient as Infer,
};
use modelmesh_proto::mmesh::{self as mm, model_mesh_client::ModelMeshClient};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tonic::Code;

/// State shared by the traffic, the fault driver and the report.
pub struct Shared {
    /// Models requests may target.
    pub live: RwLock<Vec<String>>,
    /// Models registered and not unregistered (must all exist at the end).
    pub registered: Mutex<HashSet<String>>,
    /// Models whose (un)registration answer was lost to a fault: their fate is unknown.
    pub uncertain: Mutex<HashSet<String>>,
    /// Entry pods taking requests (a Service's ready endpoints).
    pub up: Vec<AtomicBool>,
    /// Entry pods' gRPC ports.
    pub ports: Vec<u16>,
    in_flight: Mutex<HashMap<String, usize>>,
    /// Request outcomes.
    pub stats: Mutex<Stats>,
    /// Set when the soak ends.
    pub stop: AtomicBool,
}

/// Outcomes of every request. A request whose attempt fails with a retryable code is retried
/// (as a client would, through any ready pod) until it succeeds or 60 s pass; its
/// unavailability is the time from its first attempt to its success.
#[derive(Default)]
pub struct Stats {
    /// Requests (each retried until it succeeds).
    pub requests: u64,
    /// Attempts sent.
    pub sent: u64,
    /// Attempts answered OK.
    pub ok: u64,
    /// Failed attempts by gRPC code (or "connection lost").
    pub failed: BTreeMap<String, u64>,
    /// Examples of failures a client may not retry.
    pub non_retryable: Vec<String>,
    /// Requests that never succeeded (a non-retryable failure, or 60 s of retryable ones).
    pub gave_up: u64,
    /// Longest time from a request's first attempt to its success, and its model.
    pub longest_outage: (Duration, String),
    /// Models with at least one failed attempt.
    pub models_with_failures: HashSet<String>,
    /// Time of every successful request (first attempt to success), in microseconds.
    pub latencies_us: Vec<u64>,
    /// Requests not sent because the client already had its maximum in flight.
    pub skipped: u64,
    /// Requests over 10 s (retries included) since the last progress line, and the slowest.
    pub slow: (u64, Duration, String),
    /// Failure messages (model ids and addresses blanked) by code, with counts.
    pub messages: BTreeMap<String, BTreeMap<String, u64>>,
}

/// A message with model ids and numbers blanked, so failures of one kind count together.
fn shape(msg: &str) -> String {
    let mut out = String::new();
    let mut last_digit = false;
    for w in msg.split_inclusive([' ', '\'', '"', ':']) {
        let w = if w.starts_with("soak-") || w.starts_with("churn-") {
            "<model>".to_string() + &w[w.len() - 1..].replace(char::is_alphanumeric, "")
        } else {
            w.to_string()
        };
        for c in w.chars() {
            if c.is_ascii_digit() {
                if !last_digit {
                    out.push('#');
                }
                last_digit = true;
            } else {
                out.push(c);
                last_digit = false;
            }
        }
    }
    out.chars().take(160).collect()
}

/// The codes a client may retry (and a connection dropped by a killed entry pod).
pub fn retryable(code: &str) -> bool {
    matches!(
        code,
        "Unavailable" | "ResourceExhausted" | "DeadlineExceeded" | "Aborted" | "connection lost"
    )
}

impl Stats {
    /// Records one attempt; returns whether a failure may be retried.
    fn attempt(&mut self, id: &str, r: &Result<(), tonic::Status>) -> bool {
        self.sent += 1;
        match r {
            Ok(()) => {
                self.ok += 1;
                true
            }
            Err(s) => {
                let code = classify(s);
                let again = retryable(&code);
                if !again && self.non_retryable.len() < 20 {
                    self.non_retryable
                        .push(format!("{id}: {code} {}", s.message()));
                }
                *self
                    .messages
                    .entry(code.clone())
                    .or_default()
                    .entry(shape(s.message()))
                    .or_default() += 1;
                *self.failed.entry(code).or_default() += 1;
                self.models_with_failures.insert(id.to_string());
                again
            }
        }
    }

    /// Records a finished request.
    fn done(&mut self, id: &str, succeeded: bool, took: Duration, retried: bool) {
        self.requests += 1;
        if took > Duration::from_secs(10) {
            self.slow.0 += 1;
            if took > self.slow.1 {
                (self.slow.1, self.slow.2) = (took, id.to_string());
            }
        }
        if succeeded {
            self.latencies_us
                .push(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
        }
        if !succeeded {
            self.gave_up += 1;
        } else if retried && took > self.longest_outage.0 {
            self.longest_outage = (took, id.to_string());
        }
    }
}

/// The code name, or "connection lost" for a transport error (the entry pod died mid-call).
fn classify(s: &tonic::Status) -> String {
    let transport = s.message().contains("transport error")
        || s.message().contains("connection")
        || s.message().contains("broken pipe");
    match s.code() {
        Code::Unknown | Code::Cancelled | Code::Internal if transport => "connection lost".into(),
        // tonic's own client deadline fired before the server's answer (DEADLINE_EXCEEDED).
        Code::Cancelled if s.message() == "Timeout expired" => "DeadlineExceeded".into(),
        c => format!("{c:?}"),
    }
}

impl Shared {
    /// State for `pods` entry ports and the initial models.
    pub fn new(ports: Vec<u16>, models: Vec<String>) -> Arc<Shared> {
        Arc::new(Shared {
            registered: Mutex::new(models.iter().cloned().collect()),
            live: RwLock::new(models),
            uncertain: Mutex::default(),
            up: ports.iter().map(|_| AtomicBool::new(true)).collect(),
            ports,
            in_flight: Mutex::default(),
            stats: Mutex::default(),
            stop: AtomicBool::new(false),
        })
    }

    /// A model to request: one of the first `hot` live models, or with probability `cold`
    /// any live model.
    fn pick_model(&self, hot: usize, cold: f64) -> Option<String> {
        let live = self.live.read().unwrap_or_else(|p| p.into_inner());
        if live.is_empty() {
            return None;
        }
        let n = if fastrand::f64() >= cold {
            hot.clamp(1, live.len())
        } else {
            live.len()
        };
        Some(live[fastrand::usize(..n)].clone())
    }

    /// An entry pod that is up (a Service's ready endpoint).
    fn pick_pod(&self) -> Option<usize> {
        let up: Vec<usize> = (0..self.ports.len())
            .filter(|i| self.up[*i].load(Ordering::Relaxed))
            .collect();
        if up.is_empty() {
            return None;
        }
        Some(up[fastrand::usize(..up.len())])
    }

    fn enter(&self, id: &str, delta: isize) {
        let mut m = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(id.to_string()).or_default();
        *n = n.saturating_add_signed(delta);
        if *n == 0 {
            m.remove(id);
        }
    }

    fn busy(&self, id: &str) -> bool {
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
    }

    /// A management client through a pod that is up.
    pub fn mgmt(&self) -> Option<ModelMeshClient<tonic::transport::Channel>> {
        let up: Vec<u16> = (0..self.ports.len())
            .filter(|i| self.up[*i].load(Ordering::Relaxed))
            .map(|i| self.ports[i])
            .collect();
        let port = *up.get(fastrand::usize(..up.len().max(1)))?;
        channel(port).ok().map(ModelMeshClient::new)
    }
}

/// Requests in flight at most; a request due while that many are waiting is not sent, and
/// counted (the client, not the mesh, is then the bottleneck).
const MAX_IN_FLIGHT: usize = 512;

/// Starts `rate` requests per second (open loop: each in its own task, whatever the answers)
/// until the soak stops. A share `cold` of them go to any live model, the rest to the first
/// `hot` (which fit in the cluster); each is retried while it fails with a retryable code.
pub fn dispatch(
    shared: Arc<Shared>,
    body: ModelInferRequest,
    rate: f64,
    hot: usize,
    cold: f64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let channels: Arc<Vec<_>> = Arc::new(
            shared
                .ports
                .iter()
                .filter_map(|p| channel(*p).ok())
                .collect(),
        );
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut tasks = tokio::task::JoinSet::new();
        while !shared.stop.load(Ordering::Relaxed) {
            tick.tick().await;
            while tasks.try_join_next().is_some() {}
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                lock(&shared.stats).skipped += 1;
                continue;
            };
            let Some(id) = shared.pick_model(hot, cold) else {
                continue;
            };
            let (shared, body, channels) = (shared.clone(), body.clone(), channels.clone());
            tasks.spawn(async move {
                one_request(&shared, &body, &channels, &id).await;
                drop(slot);
            });
        }
        while tasks.join_next().await.is_some() {}
    })
}

/// One request, retried through any ready pod while it fails with a retryable code (60 s).
async fn one_request(
    shared: &Shared,
    body: &ModelInferRequest,
    channels: &[tonic::transport::Channel],
    id: &str,
) {
    shared.enter(id, 1);
    let first = Instant::now();
    let (mut succeeded, mut retried) = (false, false);
    while first.elapsed() < Duration::from_secs(60) {
        let Some(pod) = shared.pick_pod() else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut r = tonic::Request::new(body.clone());
        r.set_timeout(Duration::from_secs(10));
        if let Ok(v) = id.parse() {
            r.metadata_mut().insert("mm-model-id", v);
        }
        let result = Infer::new(channels[pod].clone())
            .model_infer(r)
            .await
            .map(|_| ());
        let again = lock(&shared.stats).attempt(id, &result);
        if result.is_ok() {
            succeeded = true;
            break;
        }
        if !again {
            break;
        }
        retried = true;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shared.enter(id, -1);
    lock(&shared.stats).done(id, succeeded, first.elapsed(), retried);
}

fn info(path: &str) -> Option<mm::ModelInfo> {
    Some(mm::ModelInfo {
        r#type: "onnx".into(),
        path: path.into(),
        key: "{}".into(),
        ..Default::default()
    })
}

/// Counts of the churn's management calls.
#[derive(Debug, Default, Clone, Copy)]
pub struct Churn {
    /// New models registered.
    pub registered: u64,
    /// Models unregistered.
    pub unregistered: u64,
    /// Calls that failed (retried on the next round).
    pub failed: u64,
}

/// Every `every`, registers a new model (becoming a request target) and unregisters one added
/// earlier (once no request for it is in flight, so no request is failed on purpose).
pub fn churn_loop(
    shared: Arc<Shared>,
    path: String,
    every: Duration,
) -> tokio::task::JoinHandle<Churn> {
    tokio::spawn(async move {
        let mut counts = Churn::default();
        let mut added: Vec<String> = Vec::new();
        let mut n = 0u64;
        while !shared.stop.load(Ordering::Relaxed) {
            tokio::time::sleep(every).await;
            let Some(mut mgmt) = shared.mgmt() else {
                continue;
            };
            n += 1;
            let id = format!("churn-{n:05}");
            let r = mgmt
                .register_model(mm::RegisterModelRequest {
                    model_id: id.clone(),
                    model_info: info(&path),
                    ..Default::default()
                })
                .await;
            match r {
                Ok(_) => {
                    counts.registered += 1;
                    lock(&shared.registered).insert(id.clone());
                    write(&shared.live).push(id.clone());
                    added.push(id);
                }
                Err(_) => {
                    counts.failed += 1;
                    lock(&shared.uncertain).insert(id);
                }
            }
            // Keep the set steady: once a few were added, retire the oldest.
            if added.len() > 5 {
                let old = added.remove(0);
                write(&shared.live).retain(|x| *x != old);
                let deadline = Instant::now() + Duration::from_secs(60);
                while shared.busy(&old) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let r = mgmt
                    .unregister_model(mm::UnregisterModelRequest {
                        model_id: old.clone(),
                    })
                    .await;
                lock(&shared.registered).remove(&old);
                match r {
                    Ok(_) => counts.unregistered += 1,
                    Err(_) => {
                        counts.failed += 1;
                        lock(&shared.uncertain).insert(old);
                    }
                }
            }
        }
        counts
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}
