//! The MLServer adapter against the real MLServer with its scikit-learn runtime: a model trained
//! by the test is pulled from local storage, loaded, answers ModelInfer, and unloads.

mod common;

use common::*;
use modelmesh_proto::inference::{
    self as pb, grpc_inference_service_client::GrpcInferenceServiceClient as Infer,
    model_infer_request::InferInputTensor,
};
use modelmesh_proto::mmesh::{self as mm, model_runtime_client::ModelRuntimeClient};
use std::process::Command;
use std::time::Duration;
use tonic::Code;

#[tokio::test]
async fn mlserver_adapter_loads_infers_and_unloads_a_sklearn_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let trained = store.join("sklearn/digits-svm");
    let status = Command::new(peer(".venv-mlserver/bin/python"))
        .arg(root().join("scripts/peers/train_sklearn.py"))
        .arg(&trained)
        .status()
        .expect("run the training script");
    assert!(status.success(), "training failed");
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(trained.join("expected.json")).expect("read"),
    )
    .expect("json");
    std::fs::remove_file(trained.join("expected.json")).expect("rm");

    let models = dir.path().join("models");
    let repo = models.join("_mlserver_models");
    std::fs::create_dir_all(&repo).expect("mkdir");
    let cfg = dir.path().join("storage-config");
    std::fs::create_dir_all(&cfg).expect("mkdir");
    std::fs::write(
        cfg.join("localdisk"),
        serde_json::json!({"type": "local", "root": store}).to_string(),
    )
    .expect("write");
    let work = dir.path().join("mlserver-work");
    std::fs::create_dir_all(&work).expect("mkdir");
    let (_ml, mport) = start_mlserver(&repo, &work).await;
    let extra = [
        "--use-embedded-puller",
        "--storage-config-dir",
        cfg.to_str().expect("utf8"),
    ];
    let (mut adapter, aport) = start_adapter("mlserver", mport, &models, &extra, dir.path());
    let status = wait_runtime_status_ready(&mut adapter, aport, Duration::from_secs(60)).await;
    assert_eq!(status.runtime_version, "1.7.1");
    assert_eq!(
        status
            .method_infos
            .get("inference.GRPCInferenceService/ModelInfer")
            .map(|m| m.id_injection_path.clone()),
        Some(vec![1])
    );

    let mut rt = ModelRuntimeClient::new(channel(aport));
    let id = "digits-svm__ksp-abcdef0123";
    let resp = rt
        .load_model(mm::LoadModelRequest {
            model_id: id.into(),
            model_type: "sklearn".into(),
            model_path: "sklearn/digits-svm".into(),
            model_key: r#"{"storage_key":"localdisk","model_type":{"name":"sklearn"}}"#.into(),
        })
        .await
        .expect("loadModel")
        .into_inner();
    assert!(resp.size_in_bytes > 100_000, "size {}", resp.size_in_bytes);
    let settings: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo.join(id).join("model-settings.json")).expect("settings"),
    )
    .expect("json");
    assert_eq!(settings["name"], id);
    assert_eq!(settings["implementation"], "mlserver_sklearn.SKLearnModel");

    let rows: Vec<f64> = expected["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .flat_map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|v| v.as_f64().expect("f64"))
                .collect::<Vec<_>>()
        })
        .collect();
    let raw: Vec<u8> = rows.iter().flat_map(|v| v.to_le_bytes()).collect();
    let req = pb::ModelInferRequest {
        model_name: id.into(),
        inputs: vec![InferInputTensor {
            name: "input-0".into(),
            datatype: "FP64".into(),
            shape: vec![5, 64],
            ..Default::default()
        }],
        raw_input_contents: vec![raw],
        ..Default::default()
    };
    let mut ml = Infer::new(channel(mport));
    let out = ml
        .model_infer(req.clone())
        .await
        .expect("ModelInfer on MLServer")
        .into_inner();
    assert_eq!(out.outputs[0].datatype, "INT64");
    let labels: Vec<i64> = out.raw_output_contents[0]
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().expect("8")))
        .collect();
    let want: Vec<i64> = expected["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .map(|v| v.as_i64().expect("i64"))
        .collect();
    assert_eq!(labels, want);

    rt.unload_model(mm::UnloadModelRequest {
        model_id: id.into(),
    })
    .await
    .expect("unloadModel");
    let e = ml.model_infer(req).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(!repo.join(id).exists());
    assert!(!models.join(id).exists());
    rt.unload_model(mm::UnloadModelRequest {
        model_id: id.into(),
    })
    .await
    .expect("unload of an unknown model succeeds");

    // A corrupt model file: MLServer's own error comes back with its code.
    std::fs::create_dir_all(store.join("sklearn/corrupt")).expect("mkdir");
    std::fs::write(
        store.join("sklearn/corrupt/model.joblib"),
        b"not a joblib file",
    )
    .expect("write");
    let e = rt
        .load_model(mm::LoadModelRequest {
            model_id: "corrupt".into(),
            model_type: "sklearn".into(),
            model_path: "sklearn/corrupt".into(),
            model_key: r#"{"storage_key":"localdisk"}"#.into(),
        })
        .await
        .unwrap_err();
    assert!(
        e.message()
            .contains("model server failed to load 'corrupt'"),
        "{e:?}"
    );
    adapter.assert_running();
}
