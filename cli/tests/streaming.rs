//! Streams take the same route as unary calls (issue 15). Two sidecars on a real etcd, each in
//! front of a fake runtime in this process that records how every stream it served ended:
//! a stream entering the pod without the copy is served by the other pod's copy (bidirectional,
//! server- and client-streaming) and no second copy is loaded; a stream over the per-copy limit
//! is refused with RESOURCE_EXHAUSTED; a client whose stream breaks leaves the runtime with a
//! broken stream, never a clean end; a model the runtime lost is loaded again; with the copy's
//! pod killed the next stream is served after a load elsewhere.

mod common;
#[path = "common/fake_runtime.rs"]
mod fake_runtime;

use bytes::Bytes;
use common::*;
use fake_runtime::{
    ANSWERS_PER_REQUEST, COLLECT, FakeRuntime, GENERATE, How, STREAM_INFER, TOKENS,
};
use futures::StreamExt;
use modelmesh_mesh::codec::RawCodec;
use modelmesh_proto::inference::{ModelInferRequest, ModelStreamInferResponse};
use modelmesh_proto::mmesh::{self as mm, model_mesh_client::ModelMeshClient};
use prost::Message;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::{Code, Status};

struct Pod {
    name: &'static str,
    sidecar: Proc,
    grpc: u16,
    metrics: u16,
    runtime: FakeRuntime,
    _dir: tempfile::TempDir,
}

async fn start_pod(name: &'static str, etcd: &str) -> Pod {
    let runtime = FakeRuntime::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (grpc, metrics, probe, internal) = (free_port(), free_port(), free_port(), free_port());
    let rt = runtime.port.to_string();
    let mut cmd = modelmesh();
    cmd.args(["sidecar", "--address", "127.0.0.1", "--instance-id", name])
        .args(["--grpc-port", &grpc.to_string()])
        .args([
            "--internal-grpc-port",
            &rt,
            "--internal-serving-grpc-port",
            &rt,
        ])
        .args(["--runtime-host", "127.0.0.1", "--rest-port", "0"])
        .args(["--probe-port", &probe.to_string()])
        .args(["--metrics-port", &metrics.to_string()])
        .args([
            "--internal-port",
            &internal.to_string(),
            "--prestop-port",
            "0",
        ])
        .args(["--kv-store", &format!("etcd:{etcd}")])
        .args(["--streaming-methods", &format!("{GENERATE},{COLLECT}")])
        .args(["--max-inflight-per-model-copy", "2"]);
    let mut sidecar = Proc::spawn(name, cmd, dir.path());
    wait_mesh_ready(&mut sidecar, grpc).await;
    Pod {
        name,
        sidecar,
        grpc,
        metrics,
        runtime,
        _dir: dir,
    }
}

impl Pod {
    /// Waits until this sidecar's `/metrics` has the line `want`.
    async fn wait_metric(&mut self, want: &str) {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics);
        let what = format!("{} reporting '{want}'", self.name);
        wait_until(&what, &mut self.sidecar, Duration::from_secs(30), || {
            let (url, want) = (url.clone(), want.to_string());
            async move {
                match reqwest::get(&url).await {
                    Ok(r) => r.text().await.is_ok_and(|t| t.lines().any(|l| l == want)),
                    Err(_) => false,
                }
            }
        })
        .await;
    }
}

/// A ModelStreamInfer request for `model`.
fn infer(model: &str, id: &str) -> Bytes {
    Bytes::from(
        ModelInferRequest {
            model_name: model.into(),
            id: id.into(),
            ..Default::default()
        }
        .encode_to_vec(),
    )
}

/// An open call: the sender of its messages and its answers.
struct Open {
    tx: mpsc::Sender<Bytes>,
    answers: Result<tonic::Streaming<Bytes>, Status>,
}

/// Opens `method` on `port` with `first` sent, for `model` named in the header.
async fn open(port: u16, method: &str, model: &str, first: Bytes) -> Open {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tx.send(first).await.expect("queued");
    let answers = call(port, method, model, rx).await;
    Open { tx, answers }
}

/// Calls `method` on `port` with the messages `rx` yields; returns once answers start.
async fn call(
    port: u16,
    method: &str,
    model: &str,
    rx: mpsc::Receiver<Bytes>,
) -> Result<tonic::Streaming<Bytes>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel(port));
    grpc.ready().await.expect("ready");
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("mm-model-id", model.parse().expect("ascii"));
    req.set_timeout(Duration::from_secs(30));
    let path = http::uri::PathAndQuery::try_from(format!("/{method}")).expect("path");
    grpc.streaming(req, path, RawCodec)
        .await
        .map(|r| r.into_inner())
}

/// Reads `n` answers.
async fn take(answers: &mut tonic::Streaming<Bytes>, n: usize) -> Vec<Bytes> {
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(20), answers.next()).await {
            Ok(Some(Ok(m))) => out.push(m),
            other => panic!("answer {} of {n}: {other:?}", out.len() + 1),
        }
    }
    out
}

/// Sends `requests` ModelStreamInfer requests on one stream, half-closes it, and returns the
/// ids of the answers (panicking on an in-stream error).
async fn stream_infer(port: u16, model: &str, requests: usize) -> Vec<String> {
    let o = open(port, STREAM_INFER, model, infer(model, "r0")).await;
    for i in 1..requests {
        o.tx.send(infer(model, &format!("r{i}")))
            .await
            .expect("send");
    }
    drop(o.tx);
    let mut answers = o
        .answers
        .unwrap_or_else(|e| panic!("stream via {port}: {e:?}"));
    let mut ids = Vec::new();
    for m in take(&mut answers, requests * ANSWERS_PER_REQUEST).await {
        let a = ModelStreamInferResponse::decode(m.as_ref()).expect("decodes");
        assert!(
            a.error_message.is_empty(),
            "in-stream error: {}",
            a.error_message
        );
        let r = a.infer_response.expect("an answer");
        assert_eq!(r.model_name, model, "the concrete id reached the runtime");
        ids.push(r.id);
    }
    assert!(
        answers.next().await.is_none(),
        "the stream ends after the answers"
    );
    ids
}

async fn copies(port: u16, id: &str) -> Vec<String> {
    common::cluster::copies(&mut ModelMeshClient::new(channel(port)), id).await
}

/// Sends one message, reads its answers, then resets the stream with HTTP/2 CANCEL, as a gRPC
/// client that cancels its call does (grpc-go, grpc-java and Python's `call.cancel()`). tonic's
/// client offers no way to send that reset, so this speaks HTTP/2 itself.
async fn break_mid_stream(port: u16, model: &str) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (mut client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::post(format!("http://127.0.0.1:{port}/{STREAM_INFER}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("mm-model-id", model)
        .body(())
        .expect("request");
    let (response, mut send) = client.send_request(req, false).expect("send request");
    let msg = infer(model, "b0");
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    send.send_data(Bytes::from(frame), false)
        .expect("send message");
    let response = tokio::time::timeout(Duration::from_secs(20), response)
        .await
        .expect("headers in time")
        .expect("headers");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    // Read until the answers to the one message are here (5-byte frame headers + messages).
    let mut got = Vec::new();
    let mut answers = 0;
    while answers < ANSWERS_PER_REQUEST {
        let chunk = tokio::time::timeout(Duration::from_secs(20), body.data())
            .await
            .expect("answers in time")
            .expect("more answers")
            .expect("data");
        let _ = body.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
        answers = 0;
        let mut at = 0;
        while at + 5 <= got.len() {
            let len = u32::from_be_bytes([got[at + 1], got[at + 2], got[at + 3], got[at + 4]]);
            at += 5 + len as usize;
            if at <= got.len() {
                answers += 1;
            }
        }
    }
    send.send_reset(h2::Reason::CANCEL);
}

#[tokio::test]
async fn streams_are_routed_across_pods_like_unary_calls() {
    let etcd_dir = tempfile::tempdir().expect("tempdir");
    let (_etcd, url) = start_etcd(etcd_dir.path()).await;
    let mut pods = [
        start_pod("pod-a", &url).await,
        start_pod("pod-b", &url).await,
    ];
    for p in pods.iter_mut() {
        p.wait_metric("modelmesh_instances_total 2").await;
    }
    let (a, b) = (pods[0].grpc, pods[1].grpc);
    let mut mgmt = ModelMeshClient::new(channel(a));
    mgmt.register_model(mm::RegisterModelRequest {
        model_id: "m".into(),
        model_info: Some(mm::ModelInfo {
            r#type: "fake".into(),
            path: "m".into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("register");
    // The copy goes to pod-b (ensureLoaded there, balanced).
    let mut ensure = tonic::Request::new(mm::EnsureLoadedRequest {
        model_id: "m".into(),
        sync: true,
        ..Default::default()
    });
    ensure
        .metadata_mut()
        .insert("mm-balanced", "true".parse().expect("ascii"));
    ModelMeshClient::new(channel(b))
        .ensure_loaded(ensure)
        .await
        .expect("loaded on pod-b");
    assert_eq!(pods[1].runtime.state.loads(), vec!["m"]);

    // 1. Entering pod-a, which has no copy: bidirectional, server- and client-streaming
    //    calls are all served by pod-b's copy.
    let ids = stream_infer(a, "m", 2).await;
    assert_eq!(ids, vec!["r0/0", "r0/1", "r0/2", "r1/0", "r1/1", "r1/2"]);
    let mut tokens = open(a, GENERATE, "m", Bytes::from_static(b"prompt")).await;
    drop(tokens.tx);
    let got = take(tokens.answers.as_mut().expect("generate"), TOKENS).await;
    assert_eq!(got[0], "token-0");
    // A client-streaming call answers only after the client's last message: the messages
    // after the first must flow before any answer (gRPC servers need not send headers first,
    // so the client sends without waiting for them).
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    for i in 1..=4 {
        tx.send(Bytes::from(i.to_string())).await.expect("queued");
    }
    drop(tx);
    let mut answers = call(a, COLLECT, "m", rx).await.expect("collect");
    assert_eq!(take(&mut answers, 1).await[0], "4 messages");
    assert!(pods[0].runtime.state.loads().is_empty(), "no copy on pod-a");
    assert_eq!(pods[1].runtime.state.loads(), vec!["m"], "no second load");
    assert_eq!(copies(a, "m").await, vec!["pod-b"]);
    let ends = pods[1].runtime.wait_ends(3).await;
    assert!(ends.iter().all(|e| e.model == "m"), "{ends:?}");
    let how: Vec<(&str, usize, &How)> = ends
        .iter()
        .map(|e| (e.method.as_str(), e.messages, &e.how))
        .collect();
    assert_eq!(
        how,
        vec![
            (STREAM_INFER, 2, &How::Clean),
            (GENERATE, 1, &How::Clean),
            (COLLECT, 4, &How::Clean)
        ]
    );

    // 2. The per-copy limit (2): two open streams hold the copy; a third is refused.
    for p in pods.iter_mut() {
        p.wait_metric("modelmesh_requests_in_flight 0").await;
    }
    let mut held = Vec::new();
    for i in 0..2 {
        let mut o = open(a, STREAM_INFER, "m", infer("m", &format!("h{i}"))).await;
        take(o.answers.as_mut().expect("held"), ANSWERS_PER_REQUEST).await;
        held.push(o);
    }
    let refused = open(a, STREAM_INFER, "m", infer("m", "over")).await;
    match refused.answers {
        Err(s) => {
            assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
            assert!(
                s.message().contains("MM_MAX_INFLIGHT_PER_MODEL_COPY"),
                "{s:?}"
            );
            assert!(
                s.metadata().get("mm-outcome").is_none(),
                "no internal marker"
            );
        }
        Ok(_) => panic!("a third stream on a copy limited to 2 was served"),
    }
    drop(held);
    pods[1].runtime.wait_ends(5).await;

    // 3. A client that breaks its stream: the runtime's stream ends with an error, through
    //    the forwarding pod and directly.
    break_mid_stream(a, "m").await;
    let end = pods[1].runtime.wait_ends(6).await.pop().expect("an end");
    assert!(matches!(end.how, How::Error(_)), "forwarded: {end:?}");
    break_mid_stream(b, "m").await;
    let end = pods[1].runtime.wait_ends(7).await.pop().expect("an end");
    assert!(matches!(end.how, How::Error(_)), "direct: {end:?}");

    // 4. The runtime lost the model (as after a restart): the stream still gets its
    //    answers, after one load.
    pods[1].runtime.state.lose("m");
    assert_eq!(stream_infer(a, "m", 1).await.len(), ANSWERS_PER_REQUEST);
    let loads = pods[0].runtime.state.loads().len() + pods[1].runtime.state.loads().len();
    assert_eq!(loads, 2, "one reload");

    // 5. The copy's pod is killed: the next stream entering the other pod is served after a
    //    load there.
    let holder = copies(a, "m").await;
    assert_eq!(holder.len(), 1, "one copy: {holder:?}");
    let (dead, alive) = if holder[0] == "pod-a" { (0, 1) } else { (1, 0) };
    pods[dead].sidecar.stop(Duration::ZERO);
    let before = pods[alive].runtime.state.loads().len();
    let ids = stream_infer(pods[alive].grpc, "m", 1).await;
    assert_eq!(ids.len(), ANSWERS_PER_REQUEST);
    assert_eq!(
        pods[alive].runtime.state.loads().len(),
        before + 1,
        "loaded on the live pod"
    );
    assert_eq!(pods[alive].runtime.state.open_streams(), 0);
}
