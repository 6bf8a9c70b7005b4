//! `modelmesh up` as users run it: the examples served, requests answered on every instance of
//! `--instances N`, an invalid predictor file reported without stopping the others, and two
//! `up --etcd` processes on one etcd forming one cluster.

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

#[tokio::test]
async fn two_up_processes_on_one_etcd_form_one_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_etcd, url) = start_etcd(dir.path()).await;
    // A serves the examples; B, once both see each other, one more predictor, which placement
    // puts on B (the emptier instance).
    let predictors_a = dir.path().join("predictors-a");
    copy_tree(&root().join("examples/predictors"), &predictors_a);
    let predictors_b = dir.path().join("predictors-b");
    std::fs::create_dir_all(&predictors_b).expect("mkdir");
    let start = |name: &str, predictors: &std::path::Path| {
        let (grpc, rest) = (free_port(), free_port());
        let mut cmd = modelmesh();
        cmd.args(["up", "--etcd", &url, "--predictors"])
            .arg(predictors)
            .arg("--models")
            .arg(root().join("examples/models"))
            .args([
                "--grpc-port",
                &grpc.to_string(),
                "--rest-port",
                &rest.to_string(),
            ]);
        (Proc::spawn(name, cmd, dir.path()), grpc, rest)
    };
    let loaded = |log: std::path::PathBuf| async move {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains("model(s) loaded")
    };
    let (mut a, grpc_a, rest_a) = start("up-a", &predictors_a);
    let log_a = dir.path().join("up-a.log");
    wait_until(
        "A loaded the examples",
        &mut a,
        Duration::from_secs(60),
        || loaded(log_a.clone()),
    )
    .await;
    let (mut b, grpc_b, rest_b) = start("up-b", &predictors_b);
    let log_b = dir.path().join("up-b.log");
    wait_until(
        "B sees A's models loaded",
        &mut b,
        Duration::from_secs(60),
        || loaded(log_b.clone()),
    )
    .await;
    let status = |rest: u16| async move {
        match reqwest::get(format!("http://127.0.0.1:{rest}/_modelmesh/status")).await {
            Ok(r) => r.json::<serde_json::Value>().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        }
    };
    let two_instances = |rest: u16| async move {
        status(rest).await["instances"].as_array().map(Vec::len) == Some(2)
    };
    wait_until(
        "A sees two instances",
        &mut a,
        Duration::from_secs(30),
        || two_instances(rest_a),
    )
    .await;
    wait_until(
        "B sees two instances",
        &mut b,
        Duration::from_secs(30),
        || two_instances(rest_b),
    )
    .await;
    std::fs::write(
        predictors_b.join("tiny-b.yaml"),
        "apiVersion: serving.kserve.io/v1alpha1\nkind: Predictor\nmetadata:\n  name: tiny-b\n\
         spec:\n  modelType:\n    name: onnx\n  storage:\n    path: repository/tiny-regression\n",
    )
    .expect("write");
    let both_hold_copies = |rest: u16| async move {
        let s = status(rest).await;
        let all = s["instances"].as_array().cloned().unwrap_or_default();
        all.len() == 2 && all.iter().all(|i| i["copies"].as_i64().unwrap_or(0) > 0)
    };
    wait_until(
        "two instance records, each holding copies",
        &mut a,
        Duration::from_secs(30),
        || both_hold_copies(rest_a),
    )
    .await;
    wait_until("B sees both too", &mut b, Duration::from_secs(30), || {
        both_hold_copies(rest_b)
    })
    .await;
    // Distinct ids, derived from the host and each process's gRPC port.
    let s = status(rest_a).await;
    let ids: Vec<String> = s["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["instance"].as_str().map(str::to_string))
        .collect();
    assert_eq!(ids.len(), 2, "{s}");
    assert_ne!(ids[0], ids[1], "{s}");
    assert!(
        ids.iter().any(|i| i.ends_with(&format!("-{grpc_a}")))
            && ids.iter().any(|i| i.ends_with(&format!("-{grpc_b}"))),
        "{s}"
    );
    // A request entering either process is served, wherever the copy is.
    serve_examples_on(&[grpc_a, grpc_b]).await;
    let ex = expected();
    for port in [grpc_a, grpc_b] {
        let r = Infer::new(channel(port))
            .model_infer(raw_request("tiny-b", &ex["tiny-regression"]["inputs"]))
            .await
            .unwrap_or_else(|e| panic!("tiny-b on port {port}: {e:?}"))
            .into_inner();
        assert_outputs_match(&response_json(&r), &ex["tiny-regression"]["outputs"]);
    }
    // `modelmesh status` lists both instances.
    let out = modelmesh()
        .args(["status", "--rest", &format!("127.0.0.1:{rest_b}")])
        .output()
        .expect("modelmesh status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for id in &ids {
        assert!(
            text.contains(id.as_str()),
            "status does not list {id}:\n{text}"
        );
    }
    assert!(text.contains("(this)"), "{text}");
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
