//! Three pods (each its own `modelmesh runtime`, adapter and sidecar) sharing a real etcd:
//! models spread across pods, a request entering any pod is served (forwarded when needed), and
//! with `mm-balanced: true` a pod that holds a copy serves it itself.

mod common;

use common::cluster::*;
use common::kserve::{assert_outputs_match, raw_request, response_json};
use common::*;
use modelmesh_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient as Infer;
use modelmesh_proto::mmesh::{
    self as mm, model_mesh_client::ModelMeshClient, model_status_info::ModelStatus,
};
use std::collections::BTreeMap;
use std::time::Duration;

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
    wait_pods_see_each_other(&mut pods).await;
    let mut mgmt = ModelMeshClient::new(channel(pods[0].mesh_port));
    let ex = expected();
    let input = &ex["tiny-regression"]["inputs"];
    let want = &ex["tiny-regression"]["outputs"];
    let ids: Vec<String> = (0..6).map(|i| format!("m{i}")).collect();
    register_all(&mut mgmt, &ids, "tiny-regression").await;
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

/// Sends requests for `ids` round-robin through `port` until `stop`; returns (ok, failed codes).
#[tokio::test]
async fn sigkill_of_a_pod_keeps_requests_succeeding() {
    let etcd_dir = tempfile::tempdir().expect("tempdir");
    let (_etcd, url) = start_etcd(etcd_dir.path()).await;
    let mut pods = cluster(3, &url, &[]).await;
    let mut mgmt = ModelMeshClient::new(channel(pods[0].mesh_port));
    let ids: Vec<String> = (0..6).map(|i| format!("k{i}")).collect();
    register_all(&mut mgmt, &ids, "tiny-regression").await;
    let input = expected()["tiny-regression"]["inputs"].clone();
    let mut warm = Infer::new(channel(pods[0].mesh_port));
    for id in &ids {
        warm.model_infer(req(id, &input, false))
            .await
            .expect("warm-up");
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let task = load_loop(pods[0].mesh_port, ids.clone(), input, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Kill pod-2 outright: sidecar, runtime and adapter.
    let victim = pods.remove(2);
    drop(victim);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = task.await.expect("load loop");
    let total = ok + failed.len();
    assert!(total > 50, "too few requests: {total}");
    assert!(
        failed.len() * 100 <= total,
        "{} of {total} requests failed: {failed:?}",
        failed.len()
    );
    assert!(
        failed
            .iter()
            .all(|c| matches!(c, tonic::Code::Unavailable | tonic::Code::DeadlineExceeded)),
        "{failed:?}"
    );
}

#[tokio::test]
async fn etcd_outage_does_not_fail_requests_to_loaded_models() {
    let etcd_dir = tempfile::tempdir().expect("tempdir");
    let (mut etcd, url) = start_etcd(etcd_dir.path()).await;
    let pods = cluster(2, &url, &[]).await;
    let mut mgmt = ModelMeshClient::new(channel(pods[0].mesh_port));
    let ids: Vec<String> = (0..4).map(|i| format!("e{i}")).collect();
    register_all(&mut mgmt, &ids, "tiny-regression").await;
    let input = expected()["tiny-regression"]["inputs"].clone();
    let mut warm = Infer::new(channel(pods[0].mesh_port));
    for id in &ids {
        warm.model_infer(req(id, &input, false))
            .await
            .expect("warm-up");
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks = [
        load_loop(pods[0].mesh_port, ids.clone(), input.clone(), stop.clone()),
        load_loop(pods[1].mesh_port, ids.clone(), input.clone(), stop.clone()),
    ];
    register_all(&mut mgmt, &["cold".to_string()], "tiny-regression").await;
    // Stop etcd for 20 s (SIGSTOP keeps its data and ports; nothing answers meanwhile).
    let pid = etcd.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .expect("kill -STOP");
    // A model that needs a load now cannot be registered where it loads: the request may
    // wait or get a retryable code, but it is never a load failure held against the model.
    let mut cold = Infer::new(channel(pods[1].mesh_port));
    let mut r = req("cold", &input, false);
    r.set_timeout(Duration::from_secs(5));
    if let Err(s) = cold.model_infer(r).await {
        assert!(
            matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ),
            "a load during the outage failed with {s:?}"
        );
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .expect("kill -CONT");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let (ok, failed) = t.await.expect("load loop");
        assert!(ok > 100, "too few requests: {ok}");
        assert!(
            failed.is_empty(),
            "requests failed during the etcd outage: {failed:?}"
        );
    }
    // Registrations intact, and new loads work after etcd returns.
    for id in &ids {
        let s = mgmt
            .get_model_status(mm::GetStatusRequest {
                model_id: id.clone(),
            })
            .await
            .expect("status")
            .into_inner();
        assert_ne!(s.status, ModelStatus::NotFound as i32, "{id} lost");
    }
    // The model whose load the outage interrupted loads and serves now.
    let mut r = req("cold", &input, false);
    r.set_timeout(Duration::from_secs(60));
    cold.model_infer(r)
        .await
        .expect("the interrupted model loads after the outage");
    mgmt.register_model(mm::RegisterModelRequest {
        model_id: "after".into(),
        model_info: info("typed-ops"),
        load_now: true,
        sync: true,
        ..Default::default()
    })
    .await
    .expect("register after the outage");
    etcd.assert_running();
}

async fn failure_times(
    mgmt: &mut ModelMeshClient<tonic::transport::Channel>,
    id: &str,
) -> BTreeMap<String, u64> {
    let s = mgmt
        .get_model_status(mm::GetStatusRequest {
            model_id: id.into(),
        })
        .await
        .expect("status")
        .into_inner();
    s.model_copy_infos
        .iter()
        .filter(|c| c.copy_status == ModelStatus::LoadingFailed as i32)
        .map(|c| (c.location.clone(), c.time))
        .collect()
}

#[tokio::test]
async fn failed_loads_move_to_other_pods_then_fail_fast_until_they_expire() {
    let etcd_dir = tempfile::tempdir().expect("tempdir");
    let (_etcd, url) = start_etcd(etcd_dir.path()).await;
    let pods = cluster(3, &url, &["--load-failure-expiry-ms", "3000"]).await;
    let mut mgmt = ModelMeshClient::new(channel(pods[0].mesh_port));
    mgmt.register_model(mm::RegisterModelRequest {
        model_id: "bad".into(),
        model_info: info("no/such/model"),
        ..Default::default()
    })
    .await
    .expect("register");
    let input = expected()["tiny-regression"]["inputs"].clone();
    let mut c = Infer::new(channel(pods[0].mesh_port));
    let e = c.model_infer(req("bad", &input, false)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Internal, "{e:?}");
    assert!(
        e.message().contains("failed to load model bad") && e.message().contains("no/such/model"),
        "{}",
        e.message()
    );
    let first = failure_times(&mut mgmt, "bad").await;
    assert_eq!(first.len(), 3, "the load was tried on every pod: {first:?}");
    // Three recent failures: fail fast with the load's error, no new attempt.
    let e = c.model_infer(req("bad", &input, false)).await.unwrap_err();
    assert!(e.message().contains("no/such/model"), "{}", e.message());
    assert_eq!(
        failure_times(&mut mgmt, "bad").await,
        first,
        "a new load was attempted before the failures expired"
    );
    // After the expiry a new attempt is made.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let _ = c.model_infer(req("bad", &input, false)).await.unwrap_err();
    let later = failure_times(&mut mgmt, "bad").await;
    assert!(
        later
            .iter()
            .any(|(pod, t)| first.get(pod).is_some_and(|old| t > old)),
        "no new attempt: {first:?} -> {later:?}"
    );
}

#[tokio::test]
async fn sigterm_moves_a_pods_models_first_and_no_request_fails() {
    let etcd_dir = tempfile::tempdir().expect("tempdir");
    let (_etcd, url) = start_etcd(etcd_dir.path()).await;
    let mut pods = cluster(2, &url, &[]).await;
    let mut mgmt = ModelMeshClient::new(channel(pods[0].mesh_port));
    let ids: Vec<String> = (0..4).map(|i| format!("s{i}")).collect();
    register_all(&mut mgmt, &ids, "tiny-regression").await;
    let input = expected()["tiny-regression"]["inputs"].clone();
    let mut warm = Infer::new(channel(pods[0].mesh_port));
    for id in &ids {
        warm.model_infer(req(id, &input, false))
            .await
            .expect("warm-up");
    }
    let mut on_1 = Vec::new();
    for id in &ids {
        if copies(&mut mgmt, id).await.contains(&"pod-1".to_string()) {
            on_1.push(id.clone());
        }
    }
    assert!(!on_1.is_empty(), "placement put nothing on pod-1");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let task = load_loop(pods[0].mesh_port, ids.clone(), input, stop.clone());
    let victim = pods.remove(1);
    let mut sidecar = victim.sidecar;
    let sidecar = tokio::task::spawn_blocking(move || {
        sidecar.stop(Duration::from_secs(90));
        sidecar
    })
    .await
    .expect("stop");
    let mut sidecar = sidecar;
    let status = sidecar.child.try_wait().expect("wait").expect("exited");
    assert!(status.success(), "{status}");
    let log = sidecar.log_text();
    for id in &on_1 {
        let c = copies(&mut mgmt, id).await;
        assert!(
            c.contains(&"pod-0".to_string()),
            "{id} was not moved before pod-1 exited: {c:?}; log:\n{log}"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = task.await.expect("load loop");
    assert!(ok > 20, "too few requests: {ok}");
    assert!(
        failed.is_empty(),
        "requests failed during the shutdown: {failed:?}"
    );
}

#[tokio::test]
async fn type_constraints_restrict_where_models_load() {
    let etcd_dir = tempfile::tempdir().expect("tempdir");
    let (_etcd, url) = start_etcd(etcd_dir.path()).await;
    let kv = format!("etcd:{url}");
    let tc = r#"{"onnx": {"required": ["mt:onnx"]}, "gpu-only": {"required": ["gpu"]}}"#;
    let pod0 = start_named_pod(
        "pod-0",
        1 << 30,
        1_000_000,
        &[
            "--kv-store",
            &kv,
            "--type-constraints",
            tc,
            "--labels",
            "mt:onnx,rt:ours",
        ],
    )
    .await;
    let pod1 = start_named_pod(
        "pod-1",
        1 << 30,
        1_000_000,
        &[
            "--kv-store",
            &kv,
            "--type-constraints",
            tc,
            "--labels",
            "rt:other",
        ],
    )
    .await;
    let (mut pod0, mut pod1) = (pod0, pod1);
    wait_pod_sees(&mut pod0, 2).await;
    wait_pod_sees(&mut pod1, 2).await;
    let mut mgmt = ModelMeshClient::new(channel(pod1.mesh_port));
    for (id, ty) in [("c1", "onnx"), ("c2", "onnx"), ("g1", "gpu-only")] {
        mgmt.register_model(mm::RegisterModelRequest {
            model_id: id.into(),
            model_info: Some(mm::ModelInfo {
                r#type: ty.into(),
                path: "tiny-regression".into(),
                key: r#"{"model_type":{"name":"onnx"}}"#.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("register");
    }
    let input = expected()["tiny-regression"]["inputs"].clone();
    // Requests enter pod-1, whose labels do not allow onnx: the copies land on pod-0.
    let mut c = Infer::new(channel(pod1.mesh_port));
    for id in ["c1", "c2"] {
        c.model_infer(req(id, &input, false))
            .await
            .unwrap_or_else(|e| panic!("{id}: {e:?}"));
        assert_eq!(
            copies(&mut mgmt, id).await,
            vec!["pod-0".to_string()],
            "{id}"
        );
    }
    let e = c.model_infer(req("g1", &input, false)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains(
            "There are no running instances that meet the label requirements of type gpu-only"
        ),
        "{}",
        e.message()
    );
    drop(pod0);
}

#[tokio::test]
async fn the_leader_reaps_registrations_of_dead_pods_and_leadership_moves_on() {
    let etcd_dir = tempfile::tempdir().expect("tempdir");
    let (_etcd, url) = start_etcd(etcd_dir.path()).await;
    let fast = [
        "--instance-lease-ttl-secs",
        "2",
        "--reaper-interval-ms",
        "300",
        "--assume-instance-gone-ms",
        "1000",
    ];
    let mut pods = cluster(3, &url, &fast).await;
    let mut mgmt = ModelMeshClient::new(channel(pods[2].mesh_port));
    let ids: Vec<String> = (0..6).map(|i| format!("r{i}")).collect();
    register_all(&mut mgmt, &ids, "tiny-regression").await;
    let input = expected()["tiny-regression"]["inputs"].clone();
    let mut c = Infer::new(channel(pods[2].mesh_port));
    for id in &ids {
        c.model_infer(req(id, &input, false)).await.expect("load");
    }
    // Kill pod-0 (the first candidate, so the leader) and pod-1: pod-2 must take over and reap.
    let mut held_by_dead = 0;
    for id in &ids {
        let cs = copies(&mut mgmt, id).await;
        held_by_dead += cs.iter().filter(|p| *p != "pod-2").count();
    }
    assert!(held_by_dead > 0, "nothing placed on the pods to be killed");
    drop(pods.remove(0));
    drop(pods.remove(0));
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let mut stale = 0;
        for id in &ids {
            stale += copies(&mut mgmt, id)
                .await
                .iter()
                .filter(|p| *p != "pod-2")
                .count();
        }
        if stale == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{stale} registrations of dead pods were not reaped"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Requests still work from the surviving pod.
    for id in &ids {
        c.model_infer(req(id, &input, false))
            .await
            .unwrap_or_else(|e| panic!("{id}: {e:?}"));
    }
}

#[tokio::test]
async fn a_crashed_runtime_is_routed_around() {
    let etcd_dir = tempfile::tempdir().expect("tempdir");
    let (_etcd, url) = start_etcd(etcd_dir.path()).await;
    let mut pods = cluster(2, &url, &[]).await;
    let mut mgmt = ModelMeshClient::new(channel(pods[0].mesh_port));
    mgmt.register_model(mm::RegisterModelRequest {
        model_id: "rc".into(),
        model_info: info("tiny-regression"),
        ..Default::default()
    })
    .await
    .expect("register");
    let input = expected()["tiny-regression"]["inputs"].clone();
    let mut c = Infer::new(channel(pods[0].mesh_port));
    let mut b = tonic::Request::new(raw_request("rc", &input));
    b.get_mut().model_name.clear();
    b.metadata_mut()
        .insert("mm-model-id", "rc".parse().expect("ascii"));
    b.metadata_mut()
        .insert("mm-balanced", "true".parse().expect("ascii"));
    c.model_infer(b).await.expect("load on pod-0");
    assert_eq!(copies(&mut mgmt, "rc").await, vec!["pod-0".to_string()]);
    // pod-0's runtime crashes (the sidecar stays up).
    let _ = pods[0].runtime.child.kill();
    let _ = pods[0].runtime.child.wait();
    for _ in 0..20 {
        let r = c
            .model_infer(req("rc", &input, false))
            .await
            .expect("served from the other pod");
        assert_outputs_match(
            &response_json(&r.into_inner()),
            &expected()["tiny-regression"]["outputs"],
        );
    }
    assert!(copies(&mut mgmt, "rc").await.contains(&"pod-1".to_string()));
}

#[tokio::test]
async fn vmodel_rolls_forward_across_pods_with_no_failed_request() {
    let etcd_dir = tempfile::tempdir().expect("tempdir");
    let (_etcd, url) = start_etcd(etcd_dir.path()).await;
    let pods = cluster(3, &url, &[]).await;
    // Managed through pod-2, requested through pod-1.
    let mut mgmt = ModelMeshClient::new(channel(pods[2].mesh_port));
    let set = set_reg_vmodel;
    mgmt.set_v_model(set("reg-a")).await.expect("first version");
    let input = expected()["tiny-regression"]["inputs"].clone();
    let port = pods[1].mesh_port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let requests = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut c = Infer::new(channel(port));
            let (mut ok, mut failed) = (0usize, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut r = req("reg", &input, false);
                r.metadata_mut().remove("mm-model-id");
                r.metadata_mut()
                    .insert("mm-vmodel-id", "reg".parse().expect("ascii"));
                match c.model_infer(r).await {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(format!("{e:?}")),
                }
            }
            (ok, failed)
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = mgmt
        .set_v_model(set("reg-b"))
        .await
        .expect("roll forward")
        .into_inner();
    assert_eq!(
        (s.active_model_id.as_str(), s.target_model_id.as_str()),
        ("reg-b", "reg-b"),
        "{s:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = requests.await.expect("request task");
    assert!(ok > 0 && failed.is_empty(), "{ok} ok, failed: {failed:?}");
    // The old version was auto-deleted once it stopped being active.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let st = mgmt
            .get_model_status(mm::GetStatusRequest {
                model_id: "reg-a".into(),
            })
            .await
            .expect("status")
            .into_inner();
        if st.status == ModelStatus::NotFound as i32 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reg-a still registered: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
