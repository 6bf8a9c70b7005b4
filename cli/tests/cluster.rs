//! Three pods (each its own `modelmesh runtime`, adapter and sidecar) sharing a real etcd:
//! models spread across pods, a request entering any pod is served (forwarded when needed), and
//! with `mm-balanced: true` a pod that holds a copy serves it itself.

mod common;

use common::kserve::{assert_outputs_match, raw_request, response_json};
use common::*;
use modelmesh_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient as Infer;
use modelmesh_proto::mmesh::{
    self as mm, model_mesh_client::ModelMeshClient, model_status_info::ModelStatus,
};
use std::collections::BTreeMap;
use std::time::Duration;

fn info(path: &str) -> Option<mm::ModelInfo> {
    Some(mm::ModelInfo {
        r#type: "onnx".into(),
        path: path.into(),
        key: "{}".into(),
    })
}

fn req(
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

async fn copies(mgmt: &mut ModelMeshClient<tonic::transport::Channel>, id: &str) -> Vec<String> {
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

#[tokio::test]
async fn three_pods_spread_models_and_forward_requests() {
    let etcd_dir = tempfile::tempdir().expect("tempdir");
    let (_etcd, url) = start_etcd(etcd_dir.path()).await;
    let kv = format!("etcd:{url}");
    let mut pods = Vec::new();
    for name in ["pod-a", "pod-b", "pod-c"] {
        pods.push(start_named_pod(name, 1 << 30, 1_000_000, &["--kv-store", &kv]).await);
    }
    // Every pod sees all three instances before requests start.
    let mut mgmt = ModelMeshClient::new(channel(pods[0].mesh_port));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ex = expected();
    let input = &ex["tiny-regression"]["inputs"];
    let want = &ex["tiny-regression"]["outputs"];
    let ids: Vec<String> = (0..6).map(|i| format!("m{i}")).collect();
    for id in &ids {
        mgmt.register_model(mm::RegisterModelRequest {
            model_id: id.clone(),
            model_info: info("tiny-regression"),
            ..Default::default()
        })
        .await
        .expect("register");
    }
    // All requests enter pod-a; placement spreads the copies by free space.
    let mut via_a = Infer::new(channel(pods[0].mesh_port));
    for id in &ids {
        let r = via_a
            .model_infer(req(id, input, false))
            .await
            .unwrap_or_else(|e| panic!("{id} via pod-a: {e:?}"));
        assert_outputs_match(&response_json(&r.into_inner()), want);
    }
    let mut where_: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for id in &ids {
        let c = copies(&mut mgmt, id).await;
        assert_eq!(c.len(), 1, "{id} has copies {c:?}");
        where_.entry(c[0].clone()).or_default().push(id.clone());
    }
    assert!(where_.len() >= 2, "copies did not spread: {where_:?}");
    // A request entering any pod is served, forwarded to the copy (no new copies).
    for pod in &pods {
        let mut c = Infer::new(channel(pod.mesh_port));
        for id in &ids {
            let r = c
                .model_infer(req(id, input, false))
                .await
                .unwrap_or_else(|e| panic!("{id}: {e:?}"));
            assert_outputs_match(&response_json(&r.into_inner()), want);
        }
    }
    for id in &ids {
        assert_eq!(
            copies(&mut mgmt, id).await.len(),
            1,
            "{id} gained a copy from a forwarded request"
        );
    }
    // mm-balanced: the pod that holds a copy serves it itself (its runtime has it; no new copy).
    let (holder, held) = where_
        .iter()
        .next()
        .map(|(k, v)| (k.clone(), v[0].clone()))
        .expect("a holder");
    let idx = ["pod-a", "pod-b", "pod-c"]
        .iter()
        .position(|p| *p == holder)
        .expect("known pod");
    let mut c = Infer::new(channel(pods[idx].mesh_port));
    let r = c
        .model_infer(req(&held, input, true))
        .await
        .expect("balanced");
    assert_outputs_match(&response_json(&r.into_inner()), want);
    assert_eq!(copies(&mut mgmt, &held).await, vec![holder]);
}
