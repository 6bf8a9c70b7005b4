//! TLS with certificates generated for the test (rcgen): the external gRPC port and REST with
//! mutual TLS (a client with no certificate, or one from another CA, is refused; plaintext is
//! refused), and a two-pod mesh whose pods forward to each other over the internal port with
//! mutual TLS (only peers: a certificate of the same CA that does not name the mesh is refused)
//! and reach a real etcd that requires client certificates.

mod common;

use common::cluster::{info, req};
use common::pki::{self, Pki};
use common::*;
use modelmesh_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient as Infer;
use modelmesh_proto::mmesh::{self as mm, model_mesh_client::ModelMeshClient};
use std::time::Duration;

fn tls_flags(p: &Pki) -> Vec<String> {
    let s = |x: &std::path::Path| x.to_string_lossy().into_owned();
    vec![
        "--tls-key-cert-path".into(),
        s(&p.server_cert),
        "--tls-private-key-path".into(),
        s(&p.server_key),
        "--tls-client-auth".into(),
        "require".into(),
        "--tls-trust-cert-path".into(),
        s(&p.ca),
    ]
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

const BODY: &str =
    r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#;

#[tokio::test]
async fn grpc_and_rest_require_a_client_certificate_from_the_trusted_ca() {
    let certs = tempfile::tempdir().expect("tempdir");
    let p = pki::make(certs.path());
    let flags = tls_flags(&p);
    let pod = start_pod_with("pod-1", 1 << 30, 1 << 20, &refs(&flags), &[]).await;
    let port = pod.mesh_port;

    // A trusted client: registers, loads and infers over TLS.
    let ch = p.channel(port, Some("client")).await.expect("mutual TLS");
    ModelMeshClient::new(ch.clone())
        .register_model(mm::RegisterModelRequest {
            model_id: "m".into(),
            model_info: info("tiny-regression"),
            load_now: true,
            sync: true,
            ..Default::default()
        })
        .await
        .expect("register over TLS");
    let input = expected()["tiny-regression"]["inputs"].clone();
    Infer::new(ch)
        .model_infer(req("m", &input, false))
        .await
        .expect("infer over TLS");

    // No client certificate, a certificate from another CA, and plaintext are all refused.
    for who in [None, Some("rogue")] {
        let refused = match p.channel(port, who).await {
            Err(_) => true,
            Ok(ch) => Infer::new(ch)
                .model_infer(req("m", &input, false))
                .await
                .is_err(),
        };
        assert!(refused, "a client with {who:?} certificate was served");
    }
    // (The client sees its connection closed: a transport error, not a server status.)
    let plain = Infer::new(channel(port))
        .model_infer(req("m", &input, false))
        .await;
    assert!(plain.is_err(), "plaintext on a TLS port was served");

    // REST: the same rules.
    let url = format!("https://localhost:{}/v2/models/m/infer", pod.rest_port);
    let ok = p
        .http(true)
        .post(&url)
        .header("mm-model-id", "m")
        .body(BODY)
        .send()
        .await
        .expect("REST over mutual TLS");
    assert!(ok.status().is_success(), "{:?}", ok.text().await);
    assert!(
        p.http(false)
            .post(&url)
            .header("mm-model-id", "m")
            .body(BODY)
            .send()
            .await
            .is_err(),
        "REST without a client certificate was served"
    );
    let plain_rest = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/v2/models/m/infer",
            pod.rest_port
        ))
        .body(BODY)
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        plain_rest.map(|r| !r.status().is_success()).unwrap_or(true),
        "plaintext REST on a TLS port was served"
    );
    // The pod keeps serving trusted clients after the refused ones.
    let ch = p.channel(port, Some("client")).await.expect("mutual TLS");
    Infer::new(ch.clone())
        .model_infer(req("m", &input, false))
        .await
        .expect("still serving");

    // `modelmesh infer` speaks TLS too (through a vmodel, as users call it).
    ModelMeshClient::new(ch)
        .set_v_model(set_reg_vmodel("reg-1"))
        .await
        .expect("vmodel");
    let s = |x: &std::path::Path| x.to_string_lossy().into_owned();
    let out = modelmesh()
        .args(["infer", "reg", "--header", "--input", "input=[[1,2,3,4]]"])
        .args([
            "--grpc",
            &format!("127.0.0.1:{port}"),
            "--tls-server-name",
            "localhost",
        ])
        .args(["--tls-ca", &s(&p.ca), "--tls-cert", &s(&p.client_cert)])
        .args(["--tls-key", &s(&p.client_key)])
        .output()
        .expect("run modelmesh infer");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("output"),
        "modelmesh infer over TLS: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = modelmesh()
        .args(["infer", "reg", "--header", "--input", "input=[[1,2,3,4]]"])
        .args(["--grpc", &format!("https://127.0.0.1:{port}")])
        .output()
        .expect("run modelmesh infer");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--tls-ca"), "{err}");
}

#[tokio::test]
async fn pods_forward_over_mutual_tls_and_use_etcd_over_tls() {
    let certs = tempfile::tempdir().expect("tempdir");
    let p = pki::make(certs.path());
    let etcd_dir = tempfile::tempdir().expect("tempdir");
    let (mut etcd, url) = start_etcd_with(etcd_dir.path(), Some(&p)).await;
    // The connection as the etcd secret would hold it, with the PEMs as sibling keys (files).
    let connection = certs.path().join("etcd_connection");
    std::fs::write(
        &connection,
        serde_json::json!({
            "endpoints": url,
            "root_prefix": "tls-test",
            "certificate_file": "ca.crt",
            "client_certificate_file": "client.crt",
            "client_key_file": "client.key",
        })
        .to_string(),
    )
    .expect("write connection");
    let kv = format!("etcd:{}", connection.display());
    let mut flags = tls_flags(&p);
    flags.extend(["--kv-store".to_string(), kv]);
    let mut pods = Vec::new();
    for i in 0..2 {
        pods.push(start_pod_with(&format!("pod-{i}"), 1 << 30, 1 << 20, &refs(&flags), &[]).await);
    }
    wait_pods_see_each_other(&mut pods).await;

    let ch = p
        .channel(pods[0].mesh_port, Some("client"))
        .await
        .expect("TLS");
    let mut mgmt = ModelMeshClient::new(ch);
    mgmt.register_model(mm::RegisterModelRequest {
        model_id: "m".into(),
        model_info: info("tiny-regression"),
        load_now: true,
        sync: true,
        ..Default::default()
    })
    .await
    .expect("register (stored in etcd over TLS)");
    let holders = common::cluster::copies(&mut mgmt, "m").await;
    assert_eq!(holders.len(), 1, "{holders:?}");
    // Enter the pod without the copy: the request crosses the internal port (mutual TLS).
    let other = if holders[0] == "pod-0" { 1 } else { 0 };
    let ch = p
        .channel(pods[other].mesh_port, Some("client"))
        .await
        .expect("TLS");
    let input = expected()["tiny-regression"]["inputs"].clone();
    for _ in 0..5 {
        Infer::new(ch.clone())
            .model_infer(req("m", &input, false))
            .await
            .expect("forwarded over TLS");
    }
    let metrics = reqwest::get(format!(
        "http://127.0.0.1:{}/metrics",
        pods[other].metrics_port
    ))
    .await
    .expect("metrics")
    .text()
    .await
    .expect("text");
    assert!(
        metrics.contains("modelmesh_forwarded_requests{hop=\"hit\"} 5"),
        "the requests were not forwarded:\n{metrics}"
    );
    // The internal port takes only callers with a certificate of the mesh's CA.
    let internal = pods[0].internal_port;
    for who in [None, Some("rogue")] {
        let refused = match p.channel(internal, who).await {
            Err(_) => true,
            Ok(ch) => Infer::new(ch)
                .model_infer(req("m", &input, false))
                .await
                .is_err(),
        };
        assert!(
            refused,
            "the internal port served a caller with {who:?} certificate"
        );
    }
    assert!(
        Infer::new(channel(internal))
            .model_infer(req("m", &input, false))
            .await
            .is_err(),
        "the internal port served plaintext"
    );
    // A certificate the mesh's own CA issued to another workload is not a mesh peer: it does
    // not name the mesh (MM_TLS_INTERNAL_SERVER_NAME).
    let ch = p
        .channel(internal, Some("client"))
        .await
        .expect("the handshake with the CA's client certificate");
    let e = Infer::new(ch)
        .model_infer(req("m", &input, false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("not a mesh peer"), "{}", e.message());
    etcd.assert_running();
}
