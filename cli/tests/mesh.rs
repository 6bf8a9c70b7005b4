//! The mesh sidecar end to end in one pod (runtime + adapter + sidecar as real processes):
//! registration, vmodels, routing by header and by `model_name`, LRU eviction with transparent
//! reload, healing a model the runtime lost, a vmodel rollout under load, and bad input.

mod common;

use common::kserve::{assert_outputs_match, raw_request, response_json};
use common::*;
use modelmesh_proto::inference::{
    self as pb, grpc_inference_service_client::GrpcInferenceServiceClient as Infer,
};
use modelmesh_proto::mmesh::{
    self as mm, model_mesh_client::ModelMeshClient, model_status_info::ModelStatus,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;

const KSERVE: &str = r#"{"rpcConfigs":{"inference.GRPCInferenceService/ModelInfer":{"idExtractionPath":[1],"vModelId":true}}}"#;

fn info(path: &str) -> Option<mm::ModelInfo> {
    Some(mm::ModelInfo {
        r#type: "onnx".into(),
        path: path.into(),
        key: r#"{"model_type":{"name":"onnx"}}"#.into(),
        ..Default::default()
    })
}

async fn register(c: &mut ModelMeshClient<Channel>, id: &str, path: &str) {
    c.register_model(mm::RegisterModelRequest {
        model_id: id.into(),
        model_info: info(path),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("register {id}: {e:?}"));
}

fn with_header(
    mut req: pb::ModelInferRequest,
    key: &'static str,
    val: &str,
) -> tonic::Request<pb::ModelInferRequest> {
    req.model_name.clear();
    let mut r = tonic::Request::new(req);
    r.metadata_mut().insert(key, val.parse().expect("ascii"));
    r
}

async fn runtime_ready(port: u16, id: &str) -> bool {
    Infer::new(channel(port))
        .model_ready(pb::ModelReadyRequest {
            name: id.into(),
            version: String::new(),
        })
        .await
        .map(|r| r.into_inner().ready)
        .unwrap_or(false)
}

#[tokio::test]
async fn routes_by_vmodel_header_model_header_and_model_name() {
    let pod = start_mesh_pod(1 << 30, 1_000_000, &["--dataplane-config", KSERVE]).await;
    let mut mgmt = ModelMeshClient::new(channel(pod.mesh_port));
    let vs = mgmt
        .set_v_model(mm::SetVModelRequest {
            v_model_id: "mnist".into(),
            target_model_id: "mnist__isvc-0123456789".into(),
            model_info: info("mnist-classifier"),
            auto_delete_target_model: true,
            load_now: true,
            sync: true,
            owner: "isvc".into(),
            ..Default::default()
        })
        .await
        .expect("setVModel")
        .into_inner();
    assert_eq!(vs.active_model_id, "mnist__isvc-0123456789");
    assert_eq!(
        vs.status,
        mm::v_model_status_info::VModelStatus::Defined as i32
    );
    assert_eq!(
        vs.active_model_status.map(|s| s.status),
        Some(ModelStatus::Loaded as i32)
    );

    let ex = expected();
    let want = &ex["mnist-classifier"]["outputs"];
    let base = raw_request("mnist", &ex["mnist-classifier"]["inputs"]);
    let mut infer = Infer::new(channel(pod.mesh_port));
    // model_name alone (dataplane config: field 1 is a vmodel id).
    let r = infer
        .model_infer(base.clone())
        .await
        .expect("by model_name")
        .into_inner();
    assert_eq!(
        r.model_name, "mnist__isvc-0123456789",
        "the concrete id is spliced into model_name"
    );
    assert_outputs_match(&response_json(&r), want);
    let r = infer
        .model_infer(with_header(base.clone(), "mm-vmodel-id", "mnist"))
        .await
        .expect("by vmodel header")
        .into_inner();
    assert_outputs_match(&response_json(&r), want);
    let r = infer
        .model_infer(with_header(
            base.clone(),
            "mm-model-id",
            "mnist__isvc-0123456789",
        ))
        .await
        .expect("by model header")
        .into_inner();
    assert_outputs_match(&response_json(&r), want);

    // Bad input: each a clear error, and the mesh keeps serving.
    let e = infer
        .model_infer(with_header(base.clone(), "mm-vmodel-id", "nope"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(e.message(), "vmodel nope not found");
    let e = infer
        .model_infer(with_header(base.clone(), "mm-model-id", "nope"))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::NotFound, "model nope not found")
    );
    let mut r = with_header(base.clone(), "mm-model-id", "x");
    r.metadata_mut()
        .insert("mm-vmodel-id", "y".parse().expect("ascii"));
    assert_eq!(
        infer.model_infer(r).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let e = infer
        .model_infer(with_header(base.clone(), "mm-model-id", ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let mut none = base.clone();
    none.model_name.clear();
    let e = infer.model_infer(none).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("mm-model-id"), "{}", e.message());
    let e = mgmt
        .register_model(mm::RegisterModelRequest {
            model_id: String::new(),
            model_info: info("x"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "must provide non-empty modelId")
    );
    // Malformed protobuf: raw bytes through a generic client.
    let mut grpc = tonic::client::Grpc::new(channel(pod.mesh_port));
    grpc.ready().await.expect("ready");
    let path = http::uri::PathAndQuery::from_static("/inference.GRPCInferenceService/ModelInfer");
    let e = grpc
        .unary(
            tonic::Request::new(bytes::Bytes::from_static(b"\x0a\x7fshort")),
            path,
            modelmesh_mesh::codec::RawCodec,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("not a valid protobuf"),
        "{}",
        e.message()
    );

    let r = infer
        .model_infer(base)
        .await
        .expect("still serving")
        .into_inner();
    assert_outputs_match(&response_json(&r), want);

    // REST on the mesh, through the same routing.
    let h = reqwest::Client::new();
    let rest = format!("http://127.0.0.1:{}", pod.rest_port);
    let body = serde_json::json!({ "inputs": ex["mnist-classifier"]["inputs"] });
    let r = h
        .post(format!("{rest}/v2/models/mnist/infer"))
        .json(&body)
        .send()
        .await
        .expect("rest infer");
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.expect("json");
    assert_outputs_match(&v["outputs"], want);
    let r = h
        .post(format!("{rest}/v2/models/ignored/infer"))
        .header("mm-model-id", "mnist__isvc-0123456789")
        .json(&body)
        .send()
        .await
        .expect("rest infer by model id");
    assert_eq!(r.status(), 200);
    let r = h
        .post(format!("{rest}/v2/models/nope/infer"))
        .json(&body)
        .send()
        .await
        .expect("rest");
    assert_eq!(r.status(), 404);
    let r = h
        .post(format!("{rest}/v2/models/mnist/infer"))
        .body("{oops")
        .send()
        .await
        .expect("rest");
    assert_eq!(r.status(), 400);
    let bad = serde_json::json!({"inputs":[{"name":"input","shape":[1,784],"datatype":"FP32","data":[1,2,3]}]});
    let r = h
        .post(format!("{rest}/v2/models/mnist/infer"))
        .json(&bad)
        .send()
        .await
        .expect("rest");
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.expect("json");
    assert!(v["error"].as_str().unwrap_or("").contains("'input'"), "{v}");
    let md: serde_json::Value = h
        .get(format!("{rest}/v2/models/mnist"))
        .send()
        .await
        .expect("md")
        .json()
        .await
        .expect("json");
    assert_eq!(md["name"], "mnist");
    assert_eq!(md["inputs"][0]["shape"], serde_json::json!([-1, 784]));
    assert_eq!(
        h.get(format!("{rest}/v2/models/mnist/ready"))
            .send()
            .await
            .expect("ready")
            .status(),
        200
    );
    // Probes and metrics.
    let ready = h
        .get(format!("http://127.0.0.1:{}/ready", pod.probe_port))
        .send()
        .await
        .expect("probe");
    assert_eq!(ready.status(), 200);
    let metrics = h
        .get(format!("http://127.0.0.1:{}/metrics", pod.metrics_port))
        .send()
        .await
        .expect("metrics");
    let text = metrics.text().await.expect("text");
    for name in [
        "modelmesh_loadmodel_milliseconds",
        "modelmesh_api_request_milliseconds",
        "modelmesh_instance_capacity_bytes",
        "modelmesh_instance_used_bytes",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }

    // deleteVModel removes the auto-deleted model too.
    mgmt.delete_v_model(mm::DeleteVModelRequest {
        v_model_id: "mnist".into(),
        owner: "isvc".into(),
    })
    .await
    .expect("delete");
    let s = mgmt
        .get_model_status(mm::GetStatusRequest {
            model_id: "mnist__isvc-0123456789".into(),
        })
        .await
        .expect("status");
    assert_eq!(s.into_inner().status, ModelStatus::NotFound as i32);
}

#[tokio::test]
async fn a_copy_moved_here_takes_only_free_room_and_never_evicts() {
    // Room for exactly two mnist copies (5 units each, see the LRU test below).
    let pod = start_mesh_pod(10 * 8192, 8192, &[]).await;
    let mut mgmt = ModelMeshClient::new(channel(pod.mesh_port));
    for id in ["a", "b", "moved"] {
        register(&mut mgmt, id, "mnist-classifier").await;
    }
    // A peer's load hop, as the janitor sends when it moves a copy its pod evicted.
    let mut internal = ModelMeshClient::new(channel(pod.internal_port));
    let hop = |id: &str, room: Option<&str>| {
        let mut r = tonic::Request::new(mm::EnsureLoadedRequest {
            model_id: id.into(),
            sync: true,
            ..Default::default()
        });
        r.metadata_mut()
            .insert("mm-hop", "load".parse().expect("ascii"));
        if let Some(v) = room {
            r.metadata_mut()
                .insert("mm-room-only", v.parse().expect("ascii"));
        }
        r
    };
    for id in ["a", "b"] {
        let s = internal
            .ensure_loaded(hop(id, None))
            .await
            .expect("load hop");
        assert_eq!(s.into_inner().status, ModelStatus::Loaded as i32, "{id}");
    }
    // Full: a moved copy is refused at once, and nothing is evicted for it.
    let e = internal
        .ensure_loaded(hop("moved", Some("free")))
        .await
        .expect_err("a full pod took a moved copy");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message().contains("moved") && e.message().contains("never evicts"),
        "{}",
        e.message()
    );
    for id in ["a", "b"] {
        assert!(
            runtime_ready(pod.runtime_port, id).await,
            "{id} was evicted"
        );
    }
    assert!(!runtime_ready(pod.runtime_port, "moved").await);
    // A bad value is refused; clients may not send the header at all.
    let e = internal
        .ensure_loaded(hop("moved", Some("some")))
        .await
        .expect_err("bad mm-room-only");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let mut r = tonic::Request::new(mm::EnsureLoadedRequest {
        model_id: "moved".into(),
        ..Default::default()
    });
    r.metadata_mut()
        .insert("mm-room-only", "free".parse().expect("ascii"));
    let e = mgmt
        .ensure_loaded(r)
        .await
        .expect_err("external mm-room-only");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("mm-room-only"), "{}", e.message());
    // An ordinary load hop may evict: it loads, and the least recently used copy goes.
    let s = internal
        .ensure_loaded(hop("moved", None))
        .await
        .expect("load hop that may evict");
    assert_eq!(s.into_inner().status, ModelStatus::Loaded as i32);
    assert!(runtime_ready(pod.runtime_port, "moved").await);
}

#[tokio::test]
async fn a_copy_queued_for_a_load_evicts_nothing_until_its_load_starts() {
    // Room for two mnist copies (5 units each); one load at a time, each taking 2 s.
    let mut pod = start_pod_with(
        "pod-1",
        10 * 8192,
        8192,
        &[],
        &["--fault-load-delay", "2000"],
    )
    .await;
    let mut mgmt = ModelMeshClient::new(channel(pod.mesh_port));
    // The size on disk in the key: the mesh admits each copy at its true 5 units.
    for id in ["a", "b", "c", "d"] {
        mgmt.register_model(mm::RegisterModelRequest {
            model_id: id.into(),
            model_info: Some(mm::ModelInfo {
                key: r#"{"disk_size_bytes": 31606}"#.into(),
                ..info("mnist-classifier").expect("info")
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("register {id}: {e:?}"));
    }
    let input = expected()["mnist-classifier"]["inputs"].clone();
    let port = pod.mesh_port;
    let send = |id: &'static str| {
        let input = input.clone();
        tokio::spawn(async move {
            Infer::new(channel(port))
                .model_infer(with_header(raw_request(id, &input), "mm-model-id", id))
                .await
        })
    };
    for id in ["a", "b"] {
        send(id)
            .await
            .expect("task")
            .unwrap_or_else(|e| panic!("{id}: {e:?}"));
    }
    // c and d need room: one loads (evicting a, the least recently used), the other waits
    // for the load slot, and while it waits b keeps its place and keeps serving.
    let (c, d) = (send("c"), send("d"));
    wait_metric(&mut pod, "modelmesh_loads_queued 1").await;
    assert!(
        runtime_ready(pod.runtime_port, "b").await,
        "a copy still queued for its load evicted b"
    );
    send("b")
        .await
        .expect("task")
        .expect("b serves while d waits");
    for (id, t) in [("c", c), ("d", d)] {
        t.await
            .expect("task")
            .unwrap_or_else(|e| panic!("{id}: {e:?}"));
    }
    pod.sidecar.assert_running();
}

#[tokio::test]
async fn lru_evicts_the_least_recently_used_and_reloads_it_transparently() {
    // The mnist example is 31,606 bytes on disk: 39,508 bytes (5 units of 8 KiB) with the
    // adapter's 1.25 multiplier. Capacity for exactly three copies: 15 units.
    let pod = start_mesh_pod(15 * 8192, 8192, &[]).await;
    let mut mgmt = ModelMeshClient::new(channel(pod.mesh_port));
    for id in ["m1", "m2", "m3", "m4"] {
        register(&mut mgmt, id, "mnist-classifier").await;
    }
    let ex = expected();
    let (input, want) = (
        &ex["mnist-classifier"]["inputs"],
        &ex["mnist-classifier"]["outputs"],
    );
    let mut infer = Infer::new(channel(pod.mesh_port));
    let mut call = async |id: &str| {
        let r = infer
            .model_infer(with_header(raw_request(id, input), "mm-model-id", id))
            .await;
        assert_outputs_match(
            &response_json(
                &r.unwrap_or_else(|e| panic!("infer {id}: {e:?}"))
                    .into_inner(),
            ),
            want,
        );
    };
    for id in ["m1", "m2", "m3"] {
        call(id).await;
    }
    let loaded = async |ids: &[&str]| {
        let mut v = Vec::new();
        for id in ids {
            v.push(runtime_ready(pod.runtime_port, id).await);
        }
        v
    };
    assert_eq!(loaded(&["m1", "m2", "m3"]).await, vec![true, true, true]);
    call("m1").await; // m2 is now the least recently used
    call("m4").await;
    // Unloads are asynchronous; poll until the runtime reflects the eviction.
    for _ in 0..100 {
        if !runtime_ready(pod.runtime_port, "m2").await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        loaded(&["m1", "m2", "m3", "m4"]).await,
        vec![true, false, true, true]
    );
    call("m2").await; // reloads transparently, evicting m3
    let ready = loaded(&["m1", "m2", "m3", "m4"]).await;
    assert!(
        ready.iter().filter(|r| **r).count() <= 3,
        "runtime holds more than capacity: {ready:?}"
    );
    assert!(ready[1], "m2 reloaded");
    let s = mgmt
        .get_model_status(mm::GetStatusRequest {
            model_id: "m3".into(),
        })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(s.status, ModelStatus::NotLoaded as i32);
}

#[tokio::test]
async fn a_model_the_runtime_lost_is_reloaded_by_the_next_request() {
    let pod = start_mesh_pod(1 << 30, 1_000_000, &[]).await;
    let mut mgmt = ModelMeshClient::new(channel(pod.mesh_port));
    register(&mut mgmt, "tiny", "tiny-regression").await;
    let ex = expected();
    let (input, want) = (
        &ex["tiny-regression"]["inputs"],
        &ex["tiny-regression"]["outputs"],
    );
    let mut infer = Infer::new(channel(pod.mesh_port));
    let r = infer
        .model_infer(with_header(
            raw_request("tiny", input),
            "mm-model-id",
            "tiny",
        ))
        .await
        .expect("first");
    assert_outputs_match(&response_json(&r.into_inner()), want);
    // Unload behind the mesh's back.
    Infer::new(channel(pod.runtime_port))
        .repository_model_unload(pb::RepositoryModelUnloadRequest {
            model_name: "tiny".into(),
            ..Default::default()
        })
        .await
        .expect("unload");
    assert!(!runtime_ready(pod.runtime_port, "tiny").await);
    let r = infer
        .model_infer(with_header(
            raw_request("tiny", input),
            "mm-model-id",
            "tiny",
        ))
        .await
        .expect("healed");
    assert_outputs_match(&response_json(&r.into_inner()), want);
    assert!(runtime_ready(pod.runtime_port, "tiny").await);
}

#[tokio::test]
async fn vmodel_rollout_under_load_has_no_failed_requests() {
    let pod = start_mesh_pod(1 << 30, 1_000_000, &[]).await;
    let mut mgmt = ModelMeshClient::new(channel(pod.mesh_port));
    let set = set_reg_vmodel;
    mgmt.set_v_model(set("reg-a")).await.expect("first version");
    let ex = expected();
    let (input, want) = (
        ex["tiny-regression"]["inputs"].clone(),
        ex["tiny-regression"]["outputs"].clone(),
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, input, want) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            input.clone(),
            want.clone(),
        );
        let port = pod.mesh_port;
        tasks.push(tokio::spawn(async move {
            let mut c = Infer::new(channel(port));
            while !stop.load(Ordering::Relaxed) {
                match c
                    .model_infer(with_header(
                        raw_request("reg", &input),
                        "mm-vmodel-id",
                        "reg",
                    ))
                    .await
                {
                    Ok(r) => {
                        assert_outputs_match(&response_json(&r.into_inner()), &want);
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("request failed during rollout: {e:?}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut s = set("reg-b");
    s.sync = false;
    let first = mgmt
        .set_v_model(s)
        .await
        .expect("roll forward")
        .into_inner();
    assert_eq!(first.target_model_id, "reg-b");
    // The active id switches only once reg-b is loaded.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let st = mgmt
            .get_v_model_status(mm::GetVModelStatusRequest {
                v_model_id: "reg".into(),
                owner: "ksp".into(),
            })
            .await
            .expect("status")
            .into_inner();
        if st.active_model_id == "reg-b" {
            assert!(
                runtime_ready(pod.runtime_port, "reg-b").await,
                "active switched before the target was loaded"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "transition did not complete: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests during the rollout"
    );
    assert!(ok.load(Ordering::Relaxed) > 10);
    // The old version was auto-deleted.
    let s = mgmt
        .get_model_status(mm::GetStatusRequest {
            model_id: "reg-a".into(),
        })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(s.status, ModelStatus::NotFound as i32);
}

#[tokio::test]
async fn background_loads_finish_without_anyone_waiting() {
    let pod = start_mesh_pod(1 << 30, 1_000_000, &[]).await;
    let mut mgmt = ModelMeshClient::new(channel(pod.mesh_port));
    let r = mgmt
        .register_model(mm::RegisterModelRequest {
            model_id: "bg".into(),
            model_info: info("typed-ops"),
            load_now: true,
            sync: false,
            ..Default::default()
        })
        .await
        .expect("register")
        .into_inner();
    assert!(
        r.status == ModelStatus::Loading as i32 || r.status == ModelStatus::Loaded as i32,
        "{r:?}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = mgmt
            .get_model_status(mm::GetStatusRequest {
                model_id: "bg".into(),
            })
            .await
            .expect("status")
            .into_inner();
        if s.status == ModelStatus::Loaded as i32 {
            assert_eq!(s.model_copy_infos.len(), 1);
            assert_eq!(s.model_copy_infos[0].location, "pod-1");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "background load never finished: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A model whose files are missing fails with a status, not an error, and says why.
    mgmt.register_model(mm::RegisterModelRequest {
        model_id: "broken".into(),
        model_info: info("no/such/dir"),
        ..Default::default()
    })
    .await
    .expect("register");
    let s = mgmt
        .ensure_loaded(mm::EnsureLoadedRequest {
            model_id: "broken".into(),
            sync: true,
            ..Default::default()
        })
        .await
        .expect("ensureLoaded")
        .into_inner();
    assert_eq!(s.status, ModelStatus::LoadingFailed as i32, "{s:?}");
    assert!(s.errors.iter().any(|e| e.contains("no/such/dir")), "{s:?}");
    let e = mgmt
        .register_model(mm::RegisterModelRequest {
            model_id: "broken".into(),
            model_info: info("other"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
}

#[tokio::test]
async fn same_flow_on_a_real_etcd() {
    let etcd_dir = tempfile::tempdir().expect("tempdir");
    let (_etcd, url) = start_etcd(etcd_dir.path()).await;
    let kv = format!("etcd:{url};rootPrefix=modelmesh-serving/mm_ns/test");
    let pod = start_mesh_pod(
        1 << 30,
        1_000_000,
        &["--kv-store", &kv, "--dataplane-config", KSERVE],
    )
    .await;
    let mut mgmt = ModelMeshClient::new(channel(pod.mesh_port));
    let vs = mgmt
        .set_v_model(mm::SetVModelRequest {
            v_model_id: "typed".into(),
            target_model_id: "typed__ksp-0000000001".into(),
            model_info: info("typed-ops"),
            auto_delete_target_model: true,
            load_now: true,
            sync: true,
            ..Default::default()
        })
        .await
        .expect("setVModel")
        .into_inner();
    assert_eq!(
        vs.active_model_status.map(|s| s.status),
        Some(ModelStatus::Loaded as i32)
    );
    let ex = expected();
    let r = Infer::new(channel(pod.mesh_port))
        .model_infer(raw_request("typed", &ex["typed-ops"]["inputs"]))
        .await
        .expect("infer through etcd-backed mesh")
        .into_inner();
    assert_outputs_match(&response_json(&r), &ex["typed-ops"]["outputs"]);
    // The records are where upstream tools look for them.
    let out = std::process::Command::new("etcdctl")
        .args([
            "--endpoints",
            &url,
            "get",
            "--prefix",
            "/modelmesh-serving/mm_ns/test/mm/modelmesh-serving/",
        ])
        .env("ETCDCTL_API", "3")
        .output()
        .expect("etcdctl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/mm/modelmesh-serving/registry/typed__ksp-0000000001"),
        "{text}"
    );
    assert!(
        text.contains("/mm/modelmesh-serving/vmodels/typed"),
        "{text}"
    );
    assert!(text.contains(r#""instanceIds":{"pod-1""#), "{text}");
    assert!(
        text.contains("/mm/modelmesh-serving/instances/pod-1"),
        "instance record published: {text}"
    );
    assert!(text.contains(r#""cap":131072"#), "{text}");
}

#[tokio::test]
async fn oversized_requests_are_refused_and_the_mesh_keeps_serving() {
    let pod = start_mesh_pod(1 << 30, 1_000_000, &["--max-message-size", "2000"]).await;
    let mut mgmt = ModelMeshClient::new(channel(pod.mesh_port));
    register(&mut mgmt, "big", "mnist-classifier").await;
    register(&mut mgmt, "small", "tiny-regression").await;
    let ex = expected();
    let mut infer = Infer::new(channel(pod.mesh_port));
    let big = with_header(
        raw_request("big", &ex["mnist-classifier"]["inputs"]),
        "mm-model-id",
        "big",
    );
    let e = infer.model_infer(big).await.unwrap_err();
    // As grpc-go, grpc-java and upstream answer, naming the limit and the setting.
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message().contains("limit of 2000 bytes")
            && e.message().contains("MM_SVC_GRPC_MAX_MSG_SIZE"),
        "{}",
        e.message()
    );
    // REST bodies may be 4x the limit: one over that is 413 with the same text.
    let body = format!(
        r#"{{"inputs":[{{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}}],"pad":"{}"}}"#,
        " ".repeat(8000)
    );
    let resp = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/v2/models/small/infer",
            pod.rest_port
        ))
        .header("mm-model-id", "small")
        .body(body)
        .send()
        .await
        .expect("REST request");
    assert_eq!(resp.status().as_u16(), 413);
    let text = resp.text().await.unwrap_or_default();
    assert!(
        text.contains("limit of 8000 bytes") && text.contains("MM_SVC_GRPC_MAX_MSG_SIZE"),
        "{text}"
    );
    let small = with_header(
        raw_request("small", &ex["tiny-regression"]["inputs"]),
        "mm-model-id",
        "small",
    );
    let r = infer
        .model_infer(small)
        .await
        .expect("small request still served")
        .into_inner();
    assert_outputs_match(&response_json(&r), &ex["tiny-regression"]["outputs"]);
}

#[tokio::test]
async fn management_api_semantics_match_upstream() {
    let pod = start_mesh_pod(1 << 30, 1_000_000, &["--default-vmodel-owner", "dflt"]).await;
    let mut mgmt = ModelMeshClient::new(channel(pod.mesh_port));
    register(&mut mgmt, "a", "tiny-regression").await;
    // Idempotent re-registration; conflicting attributes are ALREADY_EXISTS.
    register(&mut mgmt, "a", "tiny-regression").await;
    let set = |vid: &str, target: &str| mm::SetVModelRequest {
        v_model_id: vid.into(),
        target_model_id: target.into(),
        ..Default::default()
    };
    // No modelInfo and an unknown target: NOT_FOUND naming it.
    let e = mgmt.set_v_model(set("v", "missing")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("missing"), "{}", e.message());
    // updateOnly on an absent vmodel.
    let mut r = set("v", "a");
    r.update_only = true;
    assert_eq!(
        mgmt.set_v_model(r).await.unwrap_err().code(),
        Code::NotFound
    );
    let s = mgmt
        .set_v_model(set("v", "a"))
        .await
        .expect("create")
        .into_inner();
    assert_eq!(s.owner, "dflt", "default owner applied");
    // The model is referenced: it cannot be unregistered.
    let e = mgmt
        .unregister_model(mm::UnregisterModelRequest {
            model_id: "a".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::FailedPrecondition, "Model a has referents")
    );
    // Owner mismatch.
    let mut r = set("v", "a");
    r.owner = "someone-else".into();
    assert_eq!(
        mgmt.set_v_model(r).await.unwrap_err().code(),
        Code::AlreadyExists
    );
    // expectedTargetModelId precondition.
    register(&mut mgmt, "b", "tiny-regression").await;
    let mut r = set("v", "b");
    r.expected_target_model_id = "not-a".into();
    assert_eq!(
        mgmt.set_v_model(r).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    // force switches at once, even though b is not loaded.
    let mut r = set("v", "b");
    r.expected_target_model_id = "a".into();
    r.force = true;
    let s = mgmt.set_v_model(r).await.expect("force").into_inner();
    assert_eq!(
        (s.active_model_id.as_str(), s.target_model_id.as_str()),
        ("b", "b")
    );
    // a was registered directly (no autoDelete): it stays, and is free to unregister now.
    mgmt.unregister_model(mm::UnregisterModelRequest {
        model_id: "a".into(),
    })
    .await
    .expect("unregister a");
    // Status of absent things.
    let s = mgmt
        .get_v_model_status(mm::GetVModelStatusRequest {
            v_model_id: "nope".into(),
            owner: String::new(),
        })
        .await
        .expect("status");
    assert_eq!(
        s.into_inner().status,
        mm::v_model_status_info::VModelStatus::NotFound as i32
    );
    let s = mgmt
        .get_v_model_status(mm::GetVModelStatusRequest {
            v_model_id: "v".into(),
            owner: "other".into(),
        })
        .await
        .expect("status");
    assert_eq!(
        s.into_inner().status,
        mm::v_model_status_info::VModelStatus::NotFound as i32,
        "other owner sees nothing"
    );
    // deleteVModel with another owner is a silent no-op.
    mgmt.delete_v_model(mm::DeleteVModelRequest {
        v_model_id: "v".into(),
        owner: "other".into(),
    })
    .await
    .expect("no-op");
    assert_eq!(
        mgmt.get_v_model_status(mm::GetVModelStatusRequest {
            v_model_id: "v".into(),
            owner: String::new()
        })
        .await
        .expect("status")
        .into_inner()
        .active_model_id,
        "b"
    );
    mgmt.delete_v_model(mm::DeleteVModelRequest {
        v_model_id: "v".into(),
        owner: "dflt".into(),
    })
    .await
    .expect("delete");
    mgmt.unregister_model(mm::UnregisterModelRequest {
        model_id: "b".into(),
    })
    .await
    .expect("b unreferenced now");
    // Unregistering an absent model is a no-op.
    mgmt.unregister_model(mm::UnregisterModelRequest {
        model_id: "never".into(),
    })
    .await
    .expect("absent");
}

#[tokio::test]
async fn sigterm_stops_the_sidecar_cleanly() {
    let pod = start_mesh_pod(1 << 30, 1_000_000, &[]).await;
    let mut mgmt = ModelMeshClient::new(channel(pod.mesh_port));
    register(&mut mgmt, "t", "tiny-regression").await;
    drop(mgmt);
    let mut sidecar = pod.sidecar;
    // Stop from a blocking thread so this runtime keeps driving (and closing) its connections.
    let sidecar = tokio::task::spawn_blocking(move || {
        sidecar.stop(Duration::from_secs(15));
        sidecar
    })
    .await
    .expect("stop");
    let mut sidecar = sidecar;
    let status = sidecar
        .child
        .try_wait()
        .expect("wait")
        .expect("exited after SIGTERM");
    assert!(
        status.success(),
        "sidecar exit status {status}; log:\n{}",
        sidecar.log_text()
    );
    assert!(sidecar.log_text().contains("mesh stopped"));
}

#[tokio::test]
async fn the_sidecar_reaches_the_runtime_over_a_unix_socket() {
    // The runtime serves its socket too; the sidecar is told only the socket for inference.
    let pod = start_mesh_pod(
        1 << 30,
        1_000_000,
        &["--internal-serving-grpc-socket", "{pod_dir}/runtime.sock"],
    )
    .await;
    let mut mgmt = ModelMeshClient::new(channel(pod.mesh_port));
    register(&mut mgmt, "uds", "tiny-regression").await;
    let ex = expected();
    let r = Infer::new(channel(pod.mesh_port))
        .model_infer(with_header(
            raw_request("uds", &ex["tiny-regression"]["inputs"]),
            "mm-model-id",
            "uds",
        ))
        .await
        .unwrap_or_else(|e| panic!("infer over the socket: {e:?}\n{}", pod.sidecar.log_text()));
    assert_outputs_match(
        &response_json(&r.into_inner()),
        &ex["tiny-regression"]["outputs"],
    );
}

#[tokio::test]
async fn clients_cannot_send_hop_metadata_on_the_external_port() {
    let pod = start_mesh_pod(1 << 30, 1_000_000, &[]).await;
    let mut mgmt = ModelMeshClient::new(channel(pod.mesh_port));
    register(&mut mgmt, "small", "tiny-regression").await;
    let ex = expected();
    let mut infer = Infer::new(channel(pod.mesh_port));
    let req = || raw_request("small", &ex["tiny-regression"]["inputs"]);
    for (k, v) in [("mm-hop", "load"), ("mm-known-size", "8")] {
        let mut r = with_header(req(), "mm-model-id", "small");
        r.metadata_mut().insert(k, v.parse().expect("ascii"));
        let e = infer.model_infer(r).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(k), "{}", e.message());
    }
    let r = infer
        .model_infer(with_header(req(), "mm-model-id", "small"))
        .await
        .expect("a clean request is still served")
        .into_inner();
    assert_outputs_match(&response_json(&r), &ex["tiny-regression"]["outputs"]);
}
