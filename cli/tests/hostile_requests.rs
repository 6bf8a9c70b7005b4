//! What one hostile client can make a sidecar allocate or remember: a 16 MB REST body for a
//! model that does not exist is never read (peak RSS grew by 190-360 MB when it was parsed into
//! a JSON tree first), one for a model that does costs a small multiple of itself; 2,000 made-up
//! gRPC paths mint no metric series; streams that never send hold none of the pod's request
//! permits, so they cannot lock out other requests.

mod common;

use bytes::Bytes;
use common::kserve::{assert_outputs_match, raw_request, response_json};
use common::*;
use modelmesh_mesh::codec::RawCodec;
use modelmesh_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient as Infer;
use modelmesh_proto::mmesh::{self as mm, model_mesh_client::ModelMeshClient};
use std::str::FromStr;

/// The sidecar's peak resident set size (VmHWM), bytes.
fn peak_rss(p: &Proc) -> u64 {
    let text =
        std::fs::read_to_string(format!("/proc/{}/status", p.child.id())).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A KServe v2 JSON body of about `bytes` bytes: one FP32 tensor of `[n, 4]`.
fn json_body(bytes: usize) -> (String, usize) {
    let n = bytes / (4 * 4);
    let mut s = String::with_capacity(bytes + 200);
    s.push_str(&format!(
        r#"{{"inputs":[{{"name":"input","shape":[{n},4],"datatype":"FP32","data":["#
    ));
    for i in 0..n * 4 {
        if i > 0 {
            s.push(',');
        }
        s.push_str("0.5");
    }
    s.push_str("]}]}");
    (s, n)
}

async fn register(port: u16, id: &str) {
    ModelMeshClient::new(channel(port))
        .register_model(mm::RegisterModelRequest {
            model_id: id.into(),
            model_info: common::cluster::info("tiny-regression"),
            load_now: true,
            sync: true,
            ..Default::default()
        })
        .await
        .expect("register");
}

#[tokio::test]
async fn a_large_rest_body_costs_a_small_multiple_of_itself() {
    let pod = start_mesh_pod(1 << 30, 1_000_000, &[]).await;
    register(pod.mesh_port, "known").await;
    let http = reqwest::Client::new();
    let url = |m: &str| format!("http://127.0.0.1:{}/v2/models/{m}/infer", pod.rest_port);
    // Warm up (allocator, connection pools) with a small request.
    let (small, _) = json_body(1 << 10);
    let r = http
        .post(url("known"))
        .header("mm-model-id", "known")
        .body(small)
        .send()
        .await
        .expect("small");
    assert!(r.status().is_success(), "{:?}", r.text().await);

    let (big, _) = json_body(16 << 20);
    let size = big.len() as u64;
    let before = peak_rss(&pod.sidecar);
    // A model that does not exist: answered before the body is read.
    let r = http
        .post(url("nosuch"))
        .header("mm-model-id", "nosuch")
        .body(big.clone())
        .send()
        .await
        .expect("answered (the body is read and thrown away after the answer)");
    assert_eq!(r.status().as_u16(), 404);
    let unknown = peak_rss(&pod.sidecar).saturating_sub(before);
    assert!(
        unknown <= 4 * size,
        "a {size}-byte body for an unknown model raised peak RSS by {unknown} bytes"
    );
    println!(
        "unknown model: peak RSS +{} KiB for a {} KiB body",
        unknown >> 10,
        size >> 10
    );

    // A model that exists: read, decoded straight into typed tensors, forwarded.
    let (body, n) = json_body(4 << 20);
    let size = body.len() as u64;
    let before = peak_rss(&pod.sidecar);
    let r = http
        .post(url("known"))
        .header("mm-model-id", "known")
        .body(body)
        .send()
        .await
        .expect("known");
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["outputs"][0]["shape"], serde_json::json!([n, 3]));
    let known = peak_rss(&pod.sidecar).saturating_sub(before);
    // Body, typed values, the request and the runtime's answer, each once.
    assert!(
        known <= 8 * size,
        "a {size}-byte body for a loaded model raised peak RSS by {known} bytes"
    );
    println!(
        "loaded model: peak RSS +{} KiB for a {} KiB body",
        known >> 10,
        size >> 10
    );
}

async fn raw(
    port: u16,
    method: &str,
    md: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<Bytes, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel(port));
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut r = tonic::Request::new(Bytes::from(body));
    for (k, v) in md {
        let key = tonic::metadata::AsciiMetadataKey::from_str(k).expect("key");
        r.metadata_mut().insert(key, v.parse().expect("value"));
    }
    let path = http::uri::PathAndQuery::from_str(&format!("/{method}")).expect("path");
    grpc.unary(r, path, RawCodec).await.map(|r| r.into_inner())
}

async fn metrics(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default()
}

#[tokio::test]
async fn made_up_method_paths_mint_no_metric_series() {
    let pod = start_mesh_pod(1 << 30, 1_000_000, &[]).await;
    register(pod.mesh_port, "m").await;
    let ex = expected();
    Infer::new(channel(pod.mesh_port))
        .model_infer(common::cluster::req(
            "m",
            &ex["tiny-regression"]["inputs"],
            false,
        ))
        .await
        .expect("infer");
    let series = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
    let before = metrics(pod.metrics_port).await;
    for i in 0..2000 {
        let method = format!("attacker{i}.Service{i}/Method{i}");
        let _ = raw(pod.mesh_port, &method, &[("mm-model-id", "m")], vec![]).await;
        let method = format!("inference.GRPCInferenceService/Made{i}Up");
        let _ = raw(pod.mesh_port, &method, &[("mm-model-id", "m")], vec![]).await;
    }
    let after = metrics(pod.metrics_port).await;
    assert!(
        !after.contains("attacker") && !after.contains("Made"),
        "a made-up path became a label"
    );
    // The requests land in the `other` series of each metric: a handful of new lines at most.
    assert!(
        series(&after) <= series(&before) + 40,
        "series grew from {} to {}",
        series(&before),
        series(&after)
    );
    assert!(after.contains("method=\"other\""), "{after}");
}

#[tokio::test]
async fn streams_that_never_send_do_not_lock_out_requests() {
    // Two requests in flight at most.
    let pod = start_mesh_pod(1 << 30, 1_000_000, &["--max-inflight-requests", "2"]).await;
    register(pod.mesh_port, "m").await;
    // Five streams that open and send nothing, on the connection the requests use after them
    // (HTTP/2 delivers their HEADERS first).
    let ch = channel(pod.mesh_port);
    let mut idle = Vec::new();
    for _ in 0..5 {
        let (tx, rx) =
            tokio::sync::mpsc::channel::<modelmesh_proto::inference::ModelInferRequest>(1);
        let mut client = Infer::new(ch.clone());
        let call = tokio::spawn(async move {
            let mut r = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            r.metadata_mut()
                .insert("mm-model-id", "m".parse().expect("ascii"));
            client.model_stream_infer(r).await.map(|_| ())
        });
        idle.push((tx, call));
    }
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    let ex = expected();
    for _ in 0..5 {
        let r = Infer::new(ch.clone())
            .model_infer(common::cluster::req(
                "m",
                &ex["tiny-regression"]["inputs"],
                false,
            ))
            .await
            .expect("a request beside idle streams")
            .into_inner();
        assert_outputs_match(&response_json(&r), &ex["tiny-regression"]["outputs"]);
    }
    // A stream that does send is served.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut r = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    r.metadata_mut()
        .insert("mm-model-id", "m".parse().expect("ascii"));
    let mut body = raw_request("m", &ex["tiny-regression"]["inputs"]);
    body.model_name.clear();
    tx.send(body).await.expect("send");
    let mut out = Infer::new(channel(pod.mesh_port))
        .model_stream_infer(r)
        .await
        .expect("stream")
        .into_inner();
    let first = out.message().await.expect("message").expect("one");
    assert!(first.error_message.is_empty(), "{first:?}");
    drop(tx);
    drop(idle);
}
