//! Overload limits against a slow runtime (the real `modelmesh runtime` with injected delays):
//! requests over the per-copy and per-pod in-flight limits, and loads over the load-queue
//! limit, are refused with RESOURCE_EXHAUSTED while the admitted ones are still running (so the
//! refusal is prompt, not queued), the admitted ones succeed, and the pod keeps serving.

mod common;

use common::cluster::{info, req};
use common::*;
use modelmesh_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient as Infer;
use modelmesh_proto::mmesh::{self as mm, model_mesh_client::ModelMeshClient};
use tonic::Code;

async fn register(mgmt: &mut ModelMeshClient<tonic::transport::Channel>, id: &str, load: bool) {
    mgmt.register_model(mm::RegisterModelRequest {
        model_id: id.into(),
        model_info: info("tiny-regression"),
        load_now: load,
        sync: load,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("register {id}: {e:?}"));
}

/// Sends one request for `id` in the background.
fn send(port: u16, id: &str) -> tokio::task::JoinHandle<Result<(), tonic::Status>> {
    let input = expected()["tiny-regression"]["inputs"].clone();
    let id = id.to_string();
    tokio::spawn(async move {
        Infer::new(channel(port))
            .model_infer(req(&id, &input, false))
            .await
            .map(|_| ())
    })
}

#[tokio::test]
async fn requests_over_the_copy_and_pod_limits_are_refused_at_once() {
    let mut pod = start_pod_with(
        "pod-1",
        1 << 30,
        1 << 20,
        &[
            "--max-inflight-per-model-copy",
            "2",
            "--max-inflight-requests",
            "3",
        ],
        &["--fault-infer-delay", "4000"],
    )
    .await;
    let port = pod.mesh_port;
    let mut mgmt = ModelMeshClient::new(channel(port));
    register(&mut mgmt, "a", true).await;
    register(&mut mgmt, "b", true).await;

    // Two requests occupy model a's copy.
    let first = [send(port, "a"), send(port, "a")];
    wait_metric(&mut pod, "modelmesh_requests_in_flight 2").await;
    let refused = send(port, "a").await.expect("task").expect_err("copy full");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("model a")
            && refused.message().contains("MM_MAX_INFLIGHT_PER_MODEL_COPY"),
        "{refused:?}"
    );
    assert!(
        first.iter().all(|t| !t.is_finished()),
        "the refusal must not wait for the running requests"
    );

    // A third request (model b) fills the pod; the next one, for any model, is refused.
    let third = send(port, "b");
    wait_metric(&mut pod, "modelmesh_requests_in_flight 3").await;
    let refused = send(port, "b").await.expect("task").expect_err("pod full");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("MM_MAX_INFLIGHT_REQUESTS"),
        "{refused:?}"
    );
    // REST is counted against the same limit: 429 with the reason.
    let rest = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/v2/models/b/infer",
            pod.rest_port
        ))
        .header("mm-model-id", "b")
        .body(r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#)
        .send()
        .await
        .expect("rest");
    assert_eq!(rest.status(), reqwest::StatusCode::TOO_MANY_REQUESTS);
    let text = rest.text().await.expect("body");
    assert!(text.contains("MM_MAX_INFLIGHT_REQUESTS"), "{text}");
    assert!(!third.is_finished() && first.iter().all(|t| !t.is_finished()));

    // The admitted requests finish normally, and the pod serves again.
    for t in first.into_iter().chain([third]) {
        t.await
            .expect("task")
            .expect("an admitted request succeeds");
    }
    wait_metric(&mut pod, "modelmesh_requests_in_flight 0").await;
    send(port, "a")
        .await
        .expect("task")
        .expect("serves after the overload");
    pod.sidecar.assert_running();
}

#[tokio::test]
async fn loads_over_the_queue_limit_are_refused_at_once() {
    // One load at a time (the adapter's default LOADING_CONCURRENCY), each taking 4 s.
    let mut pod = start_pod_with(
        "pod-1",
        1 << 30,
        1 << 20,
        &["--max-queued-loads", "1"],
        &["--fault-load-delay", "4000"],
    )
    .await;
    let port = pod.mesh_port;
    let mut mgmt = ModelMeshClient::new(channel(port));
    for id in ["c1", "c2", "c3"] {
        register(&mut mgmt, id, false).await;
    }
    // c1 loads, c2 waits for the load slot, c3 finds the queue full.
    let admitted = [send(port, "c1"), send(port, "c2")];
    wait_metric(&mut pod, "modelmesh_loads_queued 1").await;
    let refused = send(port, "c3")
        .await
        .expect("task")
        .expect_err("queue full");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("model c3") && refused.message().contains("MM_MAX_QUEUED_LOADS"),
        "{refused:?}"
    );
    assert!(admitted.iter().all(|t| !t.is_finished()));
    for t in admitted {
        t.await.expect("task").expect("a queued load completes");
    }
    // Nothing of the refused load was left behind: it loads once there is room.
    send(port, "c3")
        .await
        .expect("task")
        .expect("c3 loads after the queue drains");
    pod.sidecar.assert_running();
}

#[tokio::test]
async fn a_full_copy_sends_the_request_to_another_copy() {
    let etcd_dir = tempfile::tempdir().expect("tempdir");
    let (_etcd, url) = start_etcd(etcd_dir.path()).await;
    let mut pods = common::cluster::cluster_with(
        2,
        &url,
        1 << 30,
        1_000_000,
        &["--max-inflight-per-model-copy", "1"],
        &["--fault-infer-delay", "4000"],
    )
    .await;
    let port = pods[0].mesh_port;
    let mut mgmt = ModelMeshClient::new(channel(port));
    mgmt.register_model(mm::RegisterModelRequest {
        model_id: "m".into(),
        model_info: Some(mm::ModelInfo {
            min_copies: 2,
            ..info("tiny-regression").expect("info")
        }),
        ..Default::default()
    })
    .await
    .expect("register");
    common::cluster::wait_copies(&mut mgmt, "m", "two copies", |c| c.len() == 2).await;
    // Both requests enter pod-0: one runs on its copy, the other on pod-1's.
    let first = send(port, "m");
    wait_metric(&mut pods[0], "modelmesh_requests_in_flight 1").await;
    let second = send(port, "m");
    wait_metric(&mut pods[1], "modelmesh_requests_in_flight 1").await;
    // Every copy is full now: a third request is refused, naming the per-copy limit.
    let refused = send(port, "m")
        .await
        .expect("task")
        .expect_err("all copies full");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("MM_MAX_INFLIGHT_PER_MODEL_COPY"),
        "{refused:?}"
    );
    first.await.expect("task").expect("served on pod-0");
    second.await.expect("task").expect("served on pod-1's copy");
}
