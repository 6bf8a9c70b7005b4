//! Credentials never reach the logs: a full pod (runtime, adapter with the storage puller,
//! sidecar) logging at debug level pulls a model from S3 (moto) with an access key, keeps its
//! registry in a real etcd that requires a password, serves TLS with a private key, and goes
//! through failing paths too (missing objects, an unknown storage key, a wrong etcd password).
//! Every log line and every error message a client received is then searched for the secrets.

mod common;

use common::cluster::req;
use common::*;
use modelmesh_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient as Infer;
use modelmesh_proto::mmesh::{self as mm, model_mesh_client::ModelMeshClient};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const S3_KEY_ID: &str = "AKIAMODELMESHTEST0001";
const S3_SECRET: &str = "s3-secret-value-9f3a7c1e";
const ETCD_PASSWORD: &str = "etcd-password-4b8d2e6f";
const WRONG_PASSWORD: &str = "wrong-etcd-password-55aa";

fn etcdctl(url: &str, args: &[&str]) {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", url])
        .args(args)
        .output()
        .expect("etcdctl (Debian etcd-client; scripts/setup-peers.sh installs it)");
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every file under `dir` whose name ends in `.log`.
fn logs(dir: &Path, out: &mut Vec<(String, String)>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            logs(&p, out);
        } else if p.extension().is_some_and(|x| x == "log") {
            out.push((
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap_or_default(),
            ));
        }
    }
}

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let certs = d.join("certs");
    std::fs::create_dir_all(&certs).expect("mkdir");
    let pki = common::pki::make(&certs);
    let key_pem = std::fs::read_to_string(&pki.server_key).expect("key");
    // A line from the middle of the key: any leak of the key would contain it.
    let key_line = key_pem
        .lines()
        .find(|l| !l.starts_with("-----") && l.len() > 20)
        .expect("key body")
        .to_string();

    // S3 (moto) holding the example model; any credentials are accepted.
    let s3_port = free_port();
    let mut cmd = Command::new(peer(".venv-mlserver/bin/moto_server"));
    cmd.args(["-H", "127.0.0.1", "-p", &s3_port.to_string()]);
    let mut moto = Proc::spawn("moto", cmd, d);
    wait_http(&mut moto, s3_port, "/moto-api/", Duration::from_secs(60)).await;
    let src = d.join("src");
    copy_tree(
        &root().join("examples/models/repository/tiny-regression"),
        &src.join("models/tiny"),
    );
    let status = Command::new(peer(".venv-mlserver/bin/python"))
        .arg(root().join("scripts/peers/seed_storage.py"))
        .args(["s3", &s3_port.to_string(), "models"])
        .arg(&src)
        .status()
        .expect("seed");
    assert!(status.success(), "seeding S3 failed");
    let storage = d.join("storage-config");
    std::fs::create_dir_all(&storage).expect("mkdir");
    let entry = serde_json::json!({
        "type": "s3", "access_key_id": S3_KEY_ID, "secret_access_key": S3_SECRET,
        "endpoint_url": format!("http://127.0.0.1:{s3_port}"), "region": "us-east-1",
        "bucket": "models"
    });
    std::fs::write(storage.join("default"), entry.to_string()).expect("write");

    // etcd with authentication on.
    let etcd_dir = d.join("etcd");
    std::fs::create_dir_all(&etcd_dir).expect("mkdir");
    let (_etcd, url) = start_etcd(&etcd_dir).await;
    etcdctl(&url, &["user", "add", &format!("root:{ETCD_PASSWORD}")]);
    etcdctl(&url, &["auth", "enable"]);
    let connection = |password: &str, name: &str| {
        let p = d.join(name);
        let json = serde_json::json!({"endpoints": url, "userid": "root", "password": password,
            "root_prefix": "secrets-test"});
        std::fs::write(&p, json.to_string()).expect("write");
        format!("etcd:{}", p.display())
    };

    // The pod, every process logging at debug level.
    let models = d.join("models");
    std::fs::create_dir_all(models.join("_triton_models")).expect("mkdir");
    let (_runtime, rport, _) =
        start_runtime_with(&models.join("_triton_models"), d, &["--log", "debug"]).await;
    let storage_dir = storage.to_string_lossy().into_owned();
    let (mut adapter, aport) = start_adapter(
        "triton",
        rport,
        &models,
        &[
            "--log",
            "debug",
            "--use-embedded-puller",
            "--storage-config-dir",
            &storage_dir,
        ],
        d,
    );
    wait_runtime_status_ready(&mut adapter, aport, Duration::from_secs(30)).await;
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let (mport, probe) = (free_port(), free_port());
    let sidecar_cmd = |kv: &str| {
        let mut cmd = modelmesh();
        cmd.args(["sidecar", "--log", "debug", "--address", "127.0.0.1"])
            .args(["--instance-id", "pod-1", "--grpc-port", &mport.to_string()])
            .args(["--internal-grpc-port", &aport.to_string()])
            .args(["--internal-serving-grpc-port", &rport.to_string()])
            .args(["--runtime-host", "127.0.0.1", "--rest-port", "0"])
            .args(["--probe-port", &probe.to_string(), "--metrics-port", "0"])
            .args([
                "--prestop-port",
                "0",
                "--internal-port",
                "0",
                "--kv-store",
                kv,
            ])
            .args(["--tls-key-cert-path", &s(&pki.server_cert)])
            .args(["--tls-private-key-path", &s(&pki.server_key)]);
        cmd
    };
    // A wrong password first: start-up fails, saying so without echoing it.
    let wrong = sidecar_cmd(&connection(WRONG_PASSWORD, "wrong_connection"))
        .output()
        .expect("run sidecar");
    assert!(
        !wrong.status.success(),
        "a wrong etcd password was accepted"
    );
    let wrong_text = format!(
        "{}{}",
        String::from_utf8_lossy(&wrong.stdout),
        String::from_utf8_lossy(&wrong.stderr)
    );
    assert!(wrong_text.contains("etcd"), "{wrong_text}");

    let mut sidecar = Proc::spawn(
        "sidecar",
        sidecar_cmd(&connection(ETCD_PASSWORD, "etcd_connection")),
        d,
    );
    wait_http_ok(&mut sidecar, probe, "/ready").await;
    let ch = pki.channel(mport, None).await.expect("TLS");
    let mut mgmt = ModelMeshClient::new(ch.clone());
    let mut messages = vec![wrong_text];
    let register = |id: &str, path: &str, key: &str| mm::RegisterModelRequest {
        model_id: id.into(),
        model_info: Some(mm::ModelInfo {
            r#type: "onnx".into(),
            path: path.into(),
            key: key.into(),
            ..Default::default()
        }),
        load_now: true,
        sync: true,
        ..Default::default()
    };
    mgmt.register_model(register("good", "models/tiny", "{}"))
        .await
        .expect("a model from S3 loads");
    let input = expected()["tiny-regression"]["inputs"].clone();
    Infer::new(ch.clone())
        .model_infer(req("good", &input, false))
        .await
        .expect("infer");
    // Failing paths: a missing object, an unknown storage key, a request for an unknown model.
    for (id, path, key) in [
        ("missing", "models/nope", "{}"),
        ("badkey", "models/tiny", r#"{"storage_key":"nosuchkey"}"#),
    ] {
        let r = mgmt.register_model(register(id, path, key)).await;
        let status = mgmt
            .get_model_status(mm::GetStatusRequest {
                model_id: id.into(),
            })
            .await
            .map(|s| format!("{:?}", s.into_inner()))
            .unwrap_or_else(|e| e.to_string());
        messages.push(format!("{r:?} {status}"));
    }
    let unknown = Infer::new(ch)
        .model_infer(req("nobody", &input, false))
        .await
        .expect_err("unknown model");
    messages.push(unknown.to_string());
    assert!(
        messages
            .iter()
            .any(|m| m.contains("nope") || m.contains("not found") || m.contains("NotFound")),
        "the failing paths did fail: {messages:?}"
    );
    sidecar.stop(Duration::from_secs(15));

    let mut all = Vec::new();
    logs(d, &mut all);
    let total: usize = all.iter().map(|(_, t)| t.lines().count()).sum();
    assert!(total > 100, "expected debug logs, got {total} lines");
    for (name, text) in all
        .iter()
        .cloned()
        .chain(messages.iter().map(|m| ("client".to_string(), m.clone())))
    {
        for secret in [
            S3_KEY_ID,
            S3_SECRET,
            ETCD_PASSWORD,
            WRONG_PASSWORD,
            key_line.as_str(),
        ] {
            assert!(
                !text.contains(secret),
                "{name} contains a secret ({secret}):\n{}",
                text.lines()
                    .filter(|l| l.contains(secret))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}
