//! `modelmesh runtime` end to end over gRPC and REST: loads the example ONNX models through the
//! repository API, infers with typed and raw tensors, and answers bad input with named errors.

mod common;

use common::kserve::{assert_outputs_match, raw_request, response_json, typed_request};
use common::*;
use modelmesh_proto::inference::{
    self as pb, grpc_inference_service_client::GrpcInferenceServiceClient as Client,
};
use tonic::Code;

const EXAMPLES: [&str; 4] = [
    "mnist-classifier",
    "tiny-regression",
    "typed-ops",
    "vector-sum",
];

async fn setup() -> (
    tempfile::TempDir,
    Proc,
    Client<tonic::transport::Channel>,
    u16,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    copy_tree(&root().join("examples/models/repository"), &repo);
    let (p, grpc, http) = start_runtime(&repo, dir.path()).await;
    (dir, p, Client::new(channel(grpc)), http)
}

async fn load(c: &mut Client<tonic::transport::Channel>, name: &str) -> Result<(), tonic::Status> {
    c.repository_model_load(pb::RepositoryModelLoadRequest {
        model_name: name.into(),
        ..Default::default()
    })
    .await
    .map(|_| ())
}

async fn ready(c: &mut Client<tonic::transport::Channel>, name: &str) -> bool {
    c.model_ready(pb::ModelReadyRequest {
        name: name.into(),
        version: String::new(),
    })
    .await
    .expect("ModelReady")
    .into_inner()
    .ready
}

#[tokio::test]
async fn loads_infers_and_unloads_every_example() {
    let (_dir, _p, mut c, _) = setup().await;
    let expected = expected();
    for name in EXAMPLES {
        assert!(!ready(&mut c, name).await, "{name} ready before load");
        load(&mut c, name).await.expect("load");
        assert!(ready(&mut c, name).await, "{name} not ready after load");
        let ex = &expected[name];
        for req in [
            typed_request(name, &ex["inputs"]),
            raw_request(name, &ex["inputs"]),
        ] {
            let resp = c.model_infer(req).await.expect("infer").into_inner();
            assert_eq!(resp.model_name, name);
            assert_eq!(resp.model_version, "1");
            assert_outputs_match(&response_json(&resp), &ex["outputs"]);
        }
        let md = c
            .model_metadata(pb::ModelMetadataRequest {
                name: name.into(),
                version: String::new(),
            })
            .await
            .expect("metadata")
            .into_inner();
        assert_eq!(
            md.inputs.len(),
            ex["inputs"].as_array().map(Vec::len).unwrap_or(0)
        );
        assert_eq!(md.platform, "onnxruntime_onnx");
        let cfg = c
            .model_config(pb::ModelConfigRequest {
                name: name.into(),
                version: String::new(),
            })
            .await
            .expect("config")
            .into_inner();
        assert_eq!(cfg.config.map(|c| c.name), Some(name.to_string()));
    }
    let idx = c
        .repository_index(pb::RepositoryIndexRequest {
            ready: true,
            ..Default::default()
        })
        .await
        .expect("index");
    let names: Vec<String> = idx
        .into_inner()
        .models
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, EXAMPLES.map(String::from).to_vec());

    c.repository_model_unload(pb::RepositoryModelUnloadRequest {
        model_name: "tiny-regression".into(),
        ..Default::default()
    })
    .await
    .expect("unload");
    assert!(!ready(&mut c, "tiny-regression").await);
    let err = c
        .model_infer(typed_request(
            "tiny-regression",
            &expected["tiny-regression"]["inputs"],
        ))
        .await
        .expect_err("infer after unload");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        err.message(),
        "Request for unknown model: 'tiny-regression' has no available versions"
    );
    // Unloading an unknown model is not an error (as in Triton).
    c.repository_model_unload(pb::RepositoryModelUnloadRequest {
        model_name: "never-seen".into(),
        ..Default::default()
    })
    .await
    .expect("unload unknown");
}

#[tokio::test]
async fn batch_dimension_from_config_accepts_several_rows() {
    let (_dir, _p, mut c, _) = setup().await;
    load(&mut c, "tiny-regression").await.expect("load");
    let mut req = typed_request("tiny-regression", &expected()["tiny-regression"]["inputs"]);
    let one = req.inputs[0].contents.clone().expect("contents");
    let mut three = one.clone();
    for _ in 0..2 {
        three.fp32_contents.extend(one.fp32_contents.iter());
    }
    req.inputs[0].contents = Some(three);
    req.inputs[0].shape = vec![3, 4];
    let resp = c.model_infer(req).await.expect("infer").into_inner();
    assert_eq!(resp.outputs[0].shape, vec![3, 3]);
    assert_eq!(resp.raw_output_contents[0].len(), 9 * 4);
}

#[tokio::test]
async fn bad_requests_get_named_errors_and_the_server_keeps_serving() {
    let (dir, mut p, mut c, _) = setup().await;
    let expected = expected();
    let repo = dir.path().join("repo");
    load(&mut c, "mnist-classifier").await.expect("load");
    let good = typed_request("mnist-classifier", &expected["mnist-classifier"]["inputs"]);

    let err = c
        .model_infer(typed_request(
            "nope",
            &expected["mnist-classifier"]["inputs"],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(
        err.message().contains("Request for unknown model: 'nope'"),
        "{}",
        err.message()
    );

    let mut bad = good.clone();
    bad.inputs[0].shape = vec![1, 783];
    let err = c.model_infer(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("'input'") && err.message().contains("[-1,784]"),
        "{}",
        err.message()
    );

    let mut bad = good.clone();
    bad.inputs[0].datatype = "FP64".into();
    let err = c.model_infer(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("expects 'FP32'"),
        "{}",
        err.message()
    );

    let mut bad = good.clone();
    bad.inputs[0].name = "wrong".into();
    let err = c.model_infer(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("'wrong'"), "{}", err.message());

    let mut bad = good.clone();
    bad.inputs.clear();
    assert_eq!(
        c.model_infer(bad).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    let mut bad = good.clone();
    if let Some(ct) = bad.inputs[0].contents.as_mut() {
        ct.fp32_contents.pop();
    }
    let err = c.model_infer(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("needs 784"), "{}", err.message());

    let mut bad = good.clone();
    bad.outputs
        .push(pb::model_infer_request::InferRequestedOutputTensor {
            name: "nope".into(),
            ..Default::default()
        });
    assert_eq!(
        c.model_infer(bad).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    let err = load(&mut c, "").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("empty"), "{}", err.message());
    assert_eq!(
        load(&mut c, "../etc").await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let err = load(&mut c, "absent").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("absent"), "{}", err.message());

    std::fs::create_dir_all(repo.join("corrupt/1")).expect("mkdir");
    std::fs::write(repo.join("corrupt/1/model.onnx"), b"this is not protobuf").expect("write");
    let err = load(&mut c, "corrupt").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("not a valid ONNX model"),
        "{}",
        err.message()
    );
    assert!(!ready(&mut c, "corrupt").await);

    std::fs::create_dir_all(repo.join("noversion")).expect("mkdir");
    let err = load(&mut c, "noversion").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("model.onnx"), "{}", err.message());

    // Still serving.
    p.assert_running();
    let resp = c
        .model_infer(good)
        .await
        .expect("good request after bad ones");
    assert_eq!(resp.into_inner().outputs.len(), 1);
}

#[tokio::test]
async fn parallel_requests_across_models() {
    let (_dir, _p, c, _) = setup().await;
    let mut c2 = c.clone();
    for name in EXAMPLES {
        load(&mut c2, name).await.expect("load");
    }
    let expected = expected();
    let mut tasks = Vec::new();
    for i in 0..60 {
        let name = EXAMPLES[i % EXAMPLES.len()];
        let req = raw_request(name, &expected[name]["inputs"]);
        let want = expected[name]["outputs"].clone();
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            let resp = c.model_infer(req).await.expect("infer").into_inner();
            assert_outputs_match(&response_json(&resp), &want);
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
}

#[tokio::test]
async fn rest_api_serves_health_metadata_and_json_inference() {
    let (_dir, _p, mut c, http) = setup().await;
    load(&mut c, "typed-ops").await.expect("load");
    let base = format!("http://127.0.0.1:{http}");
    let h = reqwest::Client::new();
    assert!(
        h.get(format!("{base}/v2/health/live"))
            .send()
            .await
            .expect("live")
            .status()
            .is_success()
    );
    assert!(
        h.get(format!("{base}/v2/health/ready"))
            .send()
            .await
            .expect("ready")
            .status()
            .is_success()
    );
    let r = h
        .get(format!("{base}/v2/models/typed-ops/ready"))
        .send()
        .await
        .expect("model ready");
    assert_eq!(r.status(), 200);
    let r = h
        .get(format!("{base}/v2/models/absent/ready"))
        .send()
        .await
        .expect("model ready");
    assert_eq!(r.status(), 400);
    let md: serde_json::Value = h
        .get(format!("{base}/v2/models/typed-ops"))
        .send()
        .await
        .expect("md")
        .json()
        .await
        .expect("json");
    assert_eq!(md["inputs"].as_array().map(Vec::len), Some(4));
    let ex = &expected()["typed-ops"];
    let body = serde_json::json!({ "inputs": ex["inputs"] });
    let r = h
        .post(format!("{base}/v2/models/typed-ops/infer"))
        .json(&body)
        .send()
        .await
        .expect("infer");
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.expect("json");
    assert_outputs_match(&v["outputs"], &ex["outputs"]);
    let r = h
        .post(format!("{base}/v2/models/absent/infer"))
        .json(&body)
        .send()
        .await
        .expect("infer");
    assert_eq!(r.status(), 404);
    let r = h
        .post(format!("{base}/v2/models/typed-ops/infer"))
        .body("{not json")
        .send()
        .await
        .expect("infer");
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.expect("json");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains("not a valid KServe v2 inference request")
    );
}

#[tokio::test]
async fn health_service_reports_serving() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("repo")).expect("mkdir");
    let (_p, grpc, _) = start_runtime(&dir.path().join("repo"), dir.path()).await;
    let mut h = HealthClient::new(channel(grpc));
    for service in ["", "inference.GRPCInferenceService"] {
        let r = h
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(
            r.status,
            ServingStatus::Serving as i32,
            "service {service:?}"
        );
    }
}
