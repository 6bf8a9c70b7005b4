//! Helpers of the cluster tests: pods sharing a real etcd, model registration, copy counts.

use super::kserve::raw_request;
use super::{MeshPod, channel, start_pod_with, wait_pods_see_each_other};
use modelmesh_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient as Infer;
use modelmesh_proto::mmesh::{
    self as mm, model_mesh_client::ModelMeshClient, model_status_info::ModelStatus,
};
use std::time::Duration;

pub fn info(path: &str) -> Option<mm::ModelInfo> {
    Some(mm::ModelInfo {
        r#type: "onnx".into(),
        path: path.into(),
        key: "{}".into(),
        ..Default::default()
    })
}

pub fn req(
    id: &str,
    input: &serde_json::Value,
    balanced: bool,
) -> tonic::Request<modelmesh_proto::inference::ModelInferRequest> {
    let mut body = raw_request(id, input);
    body.model_name.clear();
    let mut r = tonic::Request::new(body);
    r.metadata_mut()
        .insert("mm-model-id", id.parse().expect("ascii"));
    if balanced {
        r.metadata_mut()
            .insert("mm-balanced", "true".parse().expect("ascii"));
    }
    r
}

pub async fn copies(
    mgmt: &mut ModelMeshClient<tonic::transport::Channel>,
    id: &str,
) -> Vec<String> {
    let s = mgmt
        .get_model_status(mm::GetStatusRequest {
            model_id: id.into(),
        })
        .await
        .expect("status")
        .into_inner();
    s.model_copy_infos
        .iter()
        .filter(|c| c.copy_status == ModelStatus::Unknown as i32)
        .map(|c| c.location.clone())
        .collect()
}

pub fn load_loop(
    port: u16,
    ids: Vec<String>,
    input: serde_json::Value,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Vec<tonic::Code>)> {
    tokio::spawn(async move {
        let mut c = Infer::new(channel(port));
        let (mut ok, mut failed) = (0, Vec::new());
        let mut i = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let id = &ids[i % ids.len()];
            i += 1;
            match c.model_infer(req(id, &input, false)).await {
                Ok(_) => ok += 1,
                Err(e) => {
                    eprintln!("request for {id} failed: {e:?}");
                    failed.push(e.code());
                }
            }
        }
        (ok, failed)
    })
}

/// `n` pods named `pod-<i>` sharing the etcd at `etcd_url`, each seeing all the others.
pub async fn cluster(n: usize, etcd_url: &str, extra: &[&str]) -> Vec<MeshPod> {
    sized_cluster(n, etcd_url, 1 << 30, 1_000_000, extra).await
}

/// [`cluster`] with each pod's capacity (`mem_bytes`) and predicted model size.
pub async fn sized_cluster(
    n: usize,
    etcd_url: &str,
    mem_bytes: u64,
    default_size: u64,
    extra: &[&str],
) -> Vec<MeshPod> {
    cluster_with(n, etcd_url, mem_bytes, default_size, extra, &[]).await
}

/// [`sized_cluster`] with extra flags for every pod's `modelmesh runtime` too.
pub async fn cluster_with(
    n: usize,
    etcd_url: &str,
    mem_bytes: u64,
    default_size: u64,
    extra: &[&str],
    runtime_extra: &[&str],
) -> Vec<MeshPod> {
    let kv = format!("etcd:{etcd_url}");
    let mut args = vec!["--kv-store", kv.as_str()];
    args.extend_from_slice(extra);
    let mut pods = Vec::new();
    for i in 0..n {
        let name = format!("pod-{i}");
        pods.push(start_pod_with(&name, mem_bytes, default_size, &args, runtime_extra).await);
    }
    wait_pods_see_each_other(&mut pods).await;
    pods
}

/// Polls `copies` of `id` until `ok` holds (30 s deadline); returns the last copies seen.
pub async fn wait_copies(
    mgmt: &mut ModelMeshClient<tonic::transport::Channel>,
    id: &str,
    what: &str,
    ok: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = copies(mgmt, id).await;
        if ok(&now) {
            return now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{id}: {what}; copies {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Registers each of `ids` as the example model at `path` (not loaded).
pub async fn register_all(
    mgmt: &mut ModelMeshClient<tonic::transport::Channel>,
    ids: &[String],
    path: &str,
) {
    for id in ids {
        mgmt.register_model(mm::RegisterModelRequest {
            model_id: id.clone(),
            model_info: info(path),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("register {id}: {e:?}"));
    }
}
