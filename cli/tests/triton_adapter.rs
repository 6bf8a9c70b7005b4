//! The Triton adapter against the real Triton server (python backend, CPU) and against our own
//! `modelmesh runtime`: runtimeStatus, loadModel pulled from local storage, inference straight
//! to the server, unloadModel.

mod common;

use common::*;
use modelmesh_proto::inference::{
    self as pb, InferTensorContents,
    grpc_inference_service_client::GrpcInferenceServiceClient as Infer,
    model_infer_request::InferInputTensor,
};
use modelmesh_proto::mmesh::{self as mm, model_runtime_client::ModelRuntimeClient};
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::Code;

const ADD_ONE_CONFIG: &str = r#"name: "add_one"
backend: "python"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"#;

const ADD_ONE_PY: &str = r#"import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            out.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", (x + 1).astype(np.float32))]))
        return out
"#;

/// A PVC-style store holding `add_one` (a python-backend model with config.pbtxt), and a
/// storage-config dir whose `pvc1` entry points at it.
fn storage(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let pvcs = dir.join("pvc_mounts");
    let model = pvcs.join("models-pvc/triton/add_one");
    std::fs::create_dir_all(model.join("1")).expect("mkdir");
    std::fs::write(model.join("config.pbtxt"), ADD_ONE_CONFIG).expect("write");
    std::fs::write(model.join("1/model.py"), ADD_ONE_PY).expect("write");
    let cfg = dir.join("storage-config");
    std::fs::create_dir_all(&cfg).expect("mkdir");
    std::fs::write(cfg.join("pvc1"), r#"{"type":"pvc","name":"models-pvc"}"#).expect("write");
    (pvcs, cfg)
}

async fn until_not_ready(c: &mut Infer<tonic::transport::Channel>, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = c
            .model_ready(pb::ModelReadyRequest {
                name: name.into(),
                version: String::new(),
            })
            .await;
        if !r.map(|r| r.into_inner().ready).unwrap_or(false) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} still ready 30 s after unload"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn triton_adapter_drives_the_real_triton() {
    let dir = tempfile::tempdir().expect("tempdir");
    let models = dir.path().join("models");
    let repo = models.join("_triton_models");
    std::fs::create_dir_all(&repo).expect("mkdir");
    // Left-over files from a previous run must be wiped by runtimeStatus.
    std::fs::create_dir_all(models.join("stale-model")).expect("mkdir");
    let (pvcs, cfg) = storage(dir.path());
    let (_triton, tport) = start_triton(&repo, dir.path()).await;
    let extra = [
        "--use-embedded-puller",
        "--storage-config-dir",
        cfg.to_str().expect("utf8"),
        "--pvc-mounts-dir",
        pvcs.to_str().expect("utf8"),
    ];
    let (mut adapter, aport) = start_adapter("triton", tport, &models, &extra, dir.path());
    let status = wait_runtime_status_ready(&mut adapter, aport, Duration::from_secs(60)).await;
    assert_eq!(status.capacity_in_bytes, (1 << 30) - (256 << 20));
    assert_eq!(status.max_loading_concurrency, 1);
    assert_eq!(status.model_loading_timeout_ms, 30_000);
    assert_eq!(status.default_model_size_in_bytes, 1_000_000);
    assert_eq!(status.runtime_version, "2.51.0");
    assert!(!status.limit_model_concurrency);
    for m in [
        "inference.GRPCInferenceService/ModelInfer",
        "inference.GRPCInferenceService/ModelMetadata",
    ] {
        assert_eq!(
            status
                .method_infos
                .get(m)
                .map(|i| i.id_injection_path.clone()),
            Some(vec![1]),
            "{m}"
        );
    }
    assert!(
        !models.join("stale-model").exists(),
        "runtimeStatus must wipe the model dir"
    );

    let mut rt = ModelRuntimeClient::new(channel(aport));
    let id = "add-one__isvc-0123456789";
    let load = rt
        .load_model(mm::LoadModelRequest {
            model_id: id.into(),
            model_type: "python".into(),
            model_path: "triton/add_one".into(),
            model_key: r#"{"storage_key":"pvc1","model_type":{"name":"python"}}"#.into(),
        })
        .await
        .expect("loadModel")
        .into_inner();
    let disk = (ADD_ONE_CONFIG.len() + ADD_ONE_PY.len()) as f64;
    assert_eq!(load.size_in_bytes, (disk * 1.25).ceil() as u64);

    // Inference goes straight to Triton, by model id.
    let mut triton = Infer::new(channel(tport));
    let req = pb::ModelInferRequest {
        model_name: id.into(),
        inputs: vec![InferInputTensor {
            name: "INPUT0".into(),
            datatype: "FP32".into(),
            shape: vec![3],
            contents: Some(InferTensorContents {
                fp32_contents: vec![1.0, 2.0, 3.5],
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let resp = triton
        .model_infer(req)
        .await
        .expect("ModelInfer on Triton")
        .into_inner();
    let out: Vec<f32> = resp.raw_output_contents[0]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(out, vec![2.0, 3.0, 4.5]);

    let size = rt
        .model_size(mm::ModelSizeRequest {
            model_id: id.into(),
        })
        .await
        .expect("modelSize")
        .into_inner();
    assert!(size.size_in_bytes > 0);

    rt.unload_model(mm::UnloadModelRequest {
        model_id: id.into(),
    })
    .await
    .expect("unloadModel");
    until_not_ready(&mut triton, id).await;
    assert!(!repo.join(id).exists(), "layout dir removed");
    assert!(!models.join(id).exists(), "pulled files removed");
    assert!(
        pvcs.join("models-pvc/triton/add_one/1/model.py").exists(),
        "the PVC is never touched"
    );
    // Unloading again (unknown model) succeeds.
    rt.unload_model(mm::UnloadModelRequest {
        model_id: id.into(),
    })
    .await
    .expect("second unload");

    // Bad inputs.
    let bad = |id: &str, path: &str, key: &str| mm::LoadModelRequest {
        model_id: id.into(),
        model_type: "python".into(),
        model_path: path.into(),
        model_key: key.into(),
    };
    let e = rt
        .load_model(bad("", "triton/add_one", r#"{"storage_key":"pvc1"}"#))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = rt
        .load_model(bad("m2", "triton/missing", r#"{"storage_key":"pvc1"}"#))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = rt
        .load_model(bad("m3", "../../etc", r#"{"storage_key":"pvc1"}"#))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = rt
        .load_model(bad("m4", "triton/add_one", r#"{"storage_key":"nope"}"#))
        .await
        .unwrap_err();
    assert!(
        e.message()
            .contains("Did not find storage config for key 'nope'"),
        "{e:?}"
    );
    let e = rt
        .load_model(bad("m5", "triton/add_one", "{not json"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = rt
        .load_model(bad("m6", "triton/add_one", "{}"))
        .await
        .unwrap_err();
    assert_eq!(e.message(), "Predictor Storage field missing");
    adapter.assert_running();
}

#[tokio::test]
async fn triton_adapter_drives_modelmesh_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let models = dir.path().join("models");
    let repo = models.join("_triton_models");
    std::fs::create_dir_all(&repo).expect("mkdir");
    let store = dir.path().join("store");
    copy_tree(&root().join("examples/models/repository"), &store);
    let cfg = dir.path().join("storage-config");
    std::fs::create_dir_all(&cfg).expect("mkdir");
    std::fs::write(
        cfg.join("default"),
        serde_json::json!({"type": "local", "root": store}).to_string(),
    )
    .expect("write");
    let (_rt_proc, rport, _) = start_runtime(&repo, dir.path()).await;
    let extra = [
        "--use-embedded-puller",
        "--storage-config-dir",
        cfg.to_str().expect("utf8"),
    ];
    let (mut adapter, aport) = start_adapter("triton", rport, &models, &extra, dir.path());
    let status = wait_runtime_status_ready(&mut adapter, aport, Duration::from_secs(30)).await;
    assert_eq!(status.runtime_version, env!("CARGO_PKG_VERSION"));

    let mut rt = ModelRuntimeClient::new(channel(aport));
    let expected = expected();
    // A single file, a versioned directory, and a native layout with config.pbtxt.
    for (id, path) in [
        ("mnist-file", "mnist-classifier/1/model.onnx"),
        ("mnist-dir", "mnist-classifier"),
        ("regression-native", "tiny-regression"),
    ] {
        rt.load_model(mm::LoadModelRequest {
            model_id: id.into(),
            model_type: "onnx".into(),
            model_path: path.into(),
            model_key: r#"{"model_type":{"name":"onnx"}}"#.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("load {id}: {e:?}"));
        let ex = if id.starts_with("mnist") {
            &expected["mnist-classifier"]
        } else {
            &expected["tiny-regression"]
        };
        let resp = Infer::new(channel(rport))
            .model_infer(common::kserve::raw_request(id, &ex["inputs"]))
            .await
            .unwrap_or_else(|e| panic!("infer {id}: {e:?}"))
            .into_inner();
        common::kserve::assert_outputs_match(&common::kserve::response_json(&resp), &ex["outputs"]);
    }
    for id in ["mnist-file", "mnist-dir", "regression-native"] {
        rt.unload_model(mm::UnloadModelRequest {
            model_id: id.into(),
        })
        .await
        .expect("unload");
        let r = Infer::new(channel(rport))
            .model_ready(pb::ModelReadyRequest {
                name: id.into(),
                version: String::new(),
            })
            .await
            .expect("ready")
            .into_inner();
        assert!(!r.ready, "{id} still ready");
    }
    // A corrupt model is reported with the runtime's code and message.
    std::fs::create_dir_all(store.join("broken")).expect("mkdir");
    std::fs::write(store.join("broken/model.onnx"), b"garbage").expect("write");
    let e = rt
        .load_model(mm::LoadModelRequest {
            model_id: "broken".into(),
            model_type: "onnx".into(),
            model_path: "broken/model.onnx".into(),
            model_key: "{}".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("not a valid ONNX model"),
        "{}",
        e.message()
    );

    // Bad inputs to every RPC get a code and a message that names the problem.
    let e = rt
        .unload_model(mm::UnloadModelRequest {
            model_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = rt
        .model_size(mm::ModelSizeRequest {
            model_id: "../x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let predict = |key: &str| mm::PredictModelSizeRequest {
        model_id: "p1".into(),
        model_type: "onnx".into(),
        model_path: "x".into(),
        model_key: key.into(),
    };
    let p = rt
        .predict_model_size(predict(r#"{"disk_size_bytes": 1000}"#))
        .await
        .expect("predict")
        .into_inner();
    assert_eq!(p.size_in_bytes, 1250);
    let p = rt
        .predict_model_size(predict("{}"))
        .await
        .expect("predict")
        .into_inner();
    assert_eq!(p.size_in_bytes, 1_000_000);
    let e = rt.predict_model_size(predict("[")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    std::fs::write(cfg.join("weird"), r#"{"type":"ftp"}"#).expect("write");
    let load = |id: &str, ty: &str, key: &str| mm::LoadModelRequest {
        model_id: id.into(),
        model_type: ty.into(),
        model_path: "tiny-regression".into(),
        model_key: key.into(),
    };
    let e = rt
        .load_model(load("w1", "onnx", r#"{"storage_key":"weird"}"#))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("storage type 'ftp' is not supported"),
        "{}",
        e.message()
    );
    let e = rt.load_model(load("w2", "", "{}")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("model type"), "{}", e.message());
    let e = rt
        .load_model(load("_reserved", "onnx", "{}"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    adapter.assert_running();
}
