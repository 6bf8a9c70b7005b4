//! The promised scale on a real etcd: 100,000 models registered through one of three
//! sidecars; the registration rate, each sidecar's RSS, how long a restarted sidecar takes to
//! be ready and serve, how long an unregistration takes to reach another sidecar (watch lag),
//! and the etcd writes per second while nothing happens. Targets (issue 14): ready within 10 s
//! of a restart, RSS within 256 MiB, at most one idle write per pod per 10 s.

use super::chaos::cluster::Etcd;
use super::mgmt::wait_mesh;
use super::pod::{Pod, spawn_sidecar, start_pod};
use super::procs::{bench_dirs, channel, free_port, wait_ready};
use super::procstat::rss;
use modelmesh_mesh::kv::KvStore;
use modelmesh_mesh::kv::etcd::{EtcdConfig, EtcdStore};
use modelmesh_proto::mmesh::{
    self as mm, model_mesh_client::ModelMeshClient, model_status_info::ModelStatus,
};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Flags of `modelmesh bench scale-etcd`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Models to register.
    #[arg(long, default_value_t = 100_000)]
    models: usize,
    /// Sidecars (each with its own runtime and adapter).
    #[arg(long, default_value_t = 3)]
    pods: usize,
    /// Concurrent registration calls.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds of idleness over which etcd's writes are counted.
    #[arg(long, default_value_t = 30)]
    idle_seconds: u64,
    /// Checkout root holding examples/.
    #[arg(long, default_value = ".")]
    root: PathBuf,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn model_info() -> Option<mm::ModelInfo> {
    Some(mm::ModelInfo {
        r#type: "onnx".into(),
        path: "tiny-regression".into(),
        key: "{}".into(),
        ..Default::default()
    })
}

async fn register_all(
    mgmt: &ModelMeshClient<tonic::transport::Channel>,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let per = n.div_ceil(concurrency.max(1));
    let mut tasks = Vec::new();
    for w in 0..concurrency.max(1) {
        let mut c = mgmt.clone();
        let ids = (w * per)..((w + 1) * per).min(n);
        tasks.push(tokio::spawn(async move {
            for i in ids {
                c.register_model(mm::RegisterModelRequest {
                    model_id: format!("model-{i:06}"),
                    model_info: model_info(),
                    ..Default::default()
                })
                .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(t.elapsed())
}

async fn status(mgmt: &mut ModelMeshClient<tonic::transport::Channel>, id: &str) -> i32 {
    mgmt.get_model_status(mm::GetStatusRequest {
        model_id: id.into(),
    })
    .await
    .map(|s| s.into_inner().status)
    .unwrap_or(-1)
}

/// Unregisters through `from` and times until `to` no longer knows the model (its local copy
/// of the registry follows the watch; before that it answers from the copy).
async fn watch_lag(
    from: &mut ModelMeshClient<tonic::transport::Channel>,
    to: &mut ModelMeshClient<tonic::transport::Channel>,
    id: &str,
) -> anyhow::Result<Duration> {
    from.register_model(mm::RegisterModelRequest {
        model_id: id.into(),
        model_info: model_info(),
        ..Default::default()
    })
    .await?;
    // Until the other sidecar's copy has it (a miss there is read from etcd itself).
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(to, id).await != ModelStatus::NotLoaded as i32 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{id} never reached the other sidecar"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    from.unregister_model(mm::UnregisterModelRequest {
        model_id: id.into(),
    })
    .await?;
    let t = Instant::now();
    while status(to, id).await != ModelStatus::NotFound as i32 {
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(30),
            "the unregistration of {id} never arrived"
        );
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    Ok(t.elapsed())
}

/// Runs the scenario.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let (_, repo, work) = bench_dirs(&a.root, "scale-etcd")?;
    let etcd = Etcd::start(&work).await?;
    let kv = format!("etcd:{}", etcd.url);
    let store = EtcdStore::connect(
        &EtcdConfig {
            endpoints: vec![etcd.url.clone()],
            ..Default::default()
        },
        Duration::from_secs(10),
    )
    .await?;
    let mut pods: Vec<Pod> = Vec::new();
    for i in 0..a.pods.max(2) {
        let internal = free_port()?.to_string();
        let mut pod = start_pod(
            &work,
            &format!("pod-{i}"),
            &kv,
            &repo,
            &["--internal-port", &internal],
        )?;
        wait_ready(&mut pod.runtime, Duration::from_secs(30)).await?;
        pods.push(pod);
    }
    let mut clients = Vec::new();
    for p in &pods {
        clients.push(wait_mesh(p.grpc, Duration::from_secs(60)).await?);
    }
    eprintln!(
        "registering {} models through pod-0 ({} at a time)",
        a.models, a.concurrency
    );
    let took = register_all(&clients[0], a.models, a.concurrency).await?;
    let (kvs, _) = store.range("/mm/modelmesh-serving/registry/").await?;
    let bytes: usize = kvs.iter().map(|kv| kv.key.len() + kv.value.len()).sum();
    drop(kvs);

    let mut lags = Vec::new();
    for i in 0..10 {
        let (from, to) = clients.split_at_mut(1);
        lags.push(
            watch_lag(
                &mut from[0],
                &mut to[to.len() - 1],
                &format!("lag-probe-{i}"),
            )
            .await?,
        );
    }
    lags.sort();

    // Idle: nothing registered, loaded or requested.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (_, rev0) = store.range("/none/").await?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(a.idle_seconds)).await;
    let (_, rev1) = store.range("/none/").await?;
    let idle_s = t0.elapsed().as_secs_f64();
    let writes_per_pod_per_10s = (rev1 - rev0) as f64 / pods.len() as f64 / idle_s * 10.0;
    let rss_all: Vec<u64> = pods.iter().map(|p| rss(p.sidecar.child.id())).collect();

    // A sidecar restarts: time to answer, and to serve a model it never loaded.
    let last = pods.len() - 1;
    let (port, adapter, runtime) = (
        pods[last].grpc,
        pods[last].adapter.port,
        pods[last].runtime_port,
    );
    let dir = work.join(format!("pod-{last}"));
    let internal = free_port()?.to_string();
    pods[last].sidecar.child.kill()?;
    pods[last].sidecar.child.wait()?;
    let t = Instant::now();
    let restarted = spawn_sidecar(
        &dir,
        &format!("pod-{last}"),
        &kv,
        port,
        adapter,
        runtime,
        &["--internal-port", &internal],
    )?;
    let mut mgmt = wait_mesh(port, Duration::from_secs(120)).await?;
    let ready = t.elapsed();
    let mut infer =
        modelmesh_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient::new(
            channel(port)?,
        );
    let mut req = super::procs::example_request(&a.root, "tiny-regression")?;
    req.model_name.clear();
    let mut r = tonic::Request::new(req);
    r.metadata_mut()
        .insert("mm-model-id", "model-054321".parse()?);
    infer.model_infer(r).await?;
    let served = t.elapsed();
    let restarted_rss = rss(restarted.child.id());
    let _ = status(&mut mgmt, "probe").await;

    println!(
        "\nScale on a real etcd: {} sidecars, {} models ({:.1} MiB of registry)",
        pods.len(),
        a.models,
        mib(bytes as u64)
    );
    println!(
        "registration: {:.1} s, {:.0} models/s through one sidecar",
        took.as_secs_f64(),
        a.models as f64 / took.as_secs_f64().max(1e-9)
    );
    for (i, r) in rss_all.iter().enumerate() {
        println!("sidecar pod-{i} RSS: {:.1} MiB (target <= 256)", mib(*r));
    }
    println!(
        "restart: ready (API answers) {:.2} s, first request served (a load) {:.2} s after the process started (target <= 10 s); RSS then {:.1} MiB",
        ready.as_secs_f64(),
        served.as_secs_f64(),
        mib(restarted_rss)
    );
    println!(
        "watch lag (unregistered on pod-0, gone on pod-{}): p50 {:.1} ms, max {:.1} ms",
        pods.len() - 1,
        lags[lags.len() / 2].as_secs_f64() * 1e3,
        lags[lags.len() - 1].as_secs_f64() * 1e3
    );
    println!(
        "idle: {} etcd writes in {:.0} s, {:.2} per pod per 10 s (target <= 1)",
        rev1 - rev0,
        idle_s,
        writes_per_pod_per_10s
    );
    drop(restarted);
    drop(pods);
    drop(etcd);
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
