//! `modelmesh up` as users run it: the examples served, requests answered on every instance of
//! `--instances N`, and an invalid predictor file reported without stopping the others.

mod common;

use common::kserve::{assert_outputs_match, raw_request, response_json};
use common::*;
use modelmesh_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient as Infer;
use std::time::Duration;

#[tokio::test]
async fn up_with_two_instances_serves_on_both_and_reports_bad_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let predictors = dir.path().join("predictors");
    copy_tree(&root().join("examples/predictors"), &predictors);
    std::fs::write(
        predictors.join("broken.yaml"),
        "apiVersion: serving.kserve.io/v1alpha1\nkind: Predictor\n",
    )
    .expect("write");
    let (_up, grpc, rest) = up_two_instances(dir.path(), &predictors, &[]).await;
    serve_examples_on(&[grpc, grpc + 1]).await;
    let status: serde_json::Value =
        reqwest::get(format!("http://127.0.0.1:{rest}/_modelmesh/status"))
            .await
            .expect("status")
            .json()
            .await
            .expect("json");
    assert!(
        status["invalid_files"]["broken.yaml"]
            .as_str()
            .unwrap_or("")
            .contains("metadata"),
        "{status}"
    );
    assert_eq!(
        status["vmodels"].as_array().map(Vec::len),
        std::fs::read_dir(root().join("examples/predictors"))
            .map(|d| d.count())
            .ok(),
        "{status}"
    );
}

#[tokio::test]
async fn up_with_two_instances_over_a_real_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_etcd, url) = start_etcd(dir.path()).await;
    let predictors = dir.path().join("predictors");
    copy_tree(&root().join("examples/predictors"), &predictors);
    let (_up, grpc, _) = up_two_instances(dir.path(), &predictors, &["--etcd", &url]).await;
    serve_examples_on(&[grpc, grpc + 1]).await;
}

/// Starts `modelmesh up --instances 2` on fresh ports; returns it and its base gRPC and REST
/// ports once the examples are loaded.
async fn up_two_instances(
    dir: &std::path::Path,
    predictors: &std::path::Path,
    extra: &[&str],
) -> (Proc, u16, u16) {
    // Instance i listens on base + i: find a port whose successor is free too, and reserve both.
    let pair = || loop {
        let a = free_port();
        let marker = std::env::temp_dir()
            .join("modelmesh-test-ports")
            .join((a + 1).to_string());
        if std::fs::File::create_new(&marker).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", a + 1)).is_ok()
        {
            return a;
        }
    };
    let (grpc, rest) = (pair(), pair());
    let mut cmd = modelmesh();
    cmd.args(["up", "--instances", "2", "--predictors"])
        .arg(predictors)
        .arg("--models")
        .arg(root().join("examples/models"))
        .args([
            "--grpc-port",
            &grpc.to_string(),
            "--rest-port",
            &rest.to_string(),
        ])
        .args(extra);
    let mut up = Proc::spawn("up", cmd, dir);
    let log = dir.join("up.log");
    wait_until("examples loaded", &mut up, Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move { text.contains("model(s) loaded") }
    })
    .await;
    (up, grpc, rest)
}

/// Every example model answers correctly through each of `ports`.
async fn serve_examples_on(ports: &[u16]) {
    let ex = expected();
    for port in ports {
        for name in ["mnist-classifier", "tiny-regression", "typed-ops"] {
            let r = Infer::new(channel(*port))
                .model_infer(raw_request(name, &ex[name]["inputs"]))
                .await
                .unwrap_or_else(|e| panic!("{name} on port {port}: {e:?}"))
                .into_inner();
            assert_outputs_match(&response_json(&r), &ex[name]["outputs"]);
        }
    }
}
