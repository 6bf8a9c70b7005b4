//! The bad-input catalogue: every external entry point of a pod (mesh gRPC 8033, REST 8008,
//! the internal port 8080, the adapter's ModelRuntime 8085, the runtime's 8001), the command
//! line and the YAML/JSON files it reads, fed malformed, truncated, oversized, conflicting and
//! hostile input. Each case names the status (or exit) it must get and words its message must
//! contain, so a user can tell what was wrong; the pod must keep serving afterwards. The whole
//! table is printed (`--nocapture`) and every mismatch is reported at once.

mod common;

use bytes::Bytes;
use common::cluster::{info, req};
use common::*;
use modelmesh_mesh::codec::RawCodec;
use modelmesh_proto::inference::{
    self as pb, grpc_inference_service_client::GrpcInferenceServiceClient as Infer,
};
use modelmesh_proto::mmesh::{
    self as mm, model_mesh_client::ModelMeshClient, model_runtime_client::ModelRuntimeClient,
};
use prost::Message;
use std::str::FromStr;
use tonic::Code;

/// Largest gRPC message of the pod under test (small, so oversized cases stay cheap).
const MAX_MESSAGE: usize = 1 << 20;

#[derive(Default)]
struct Catalogue {
    rows: Vec<(String, String, String, bool)>,
}

impl Catalogue {
    fn record(&mut self, case: &str, want: String, got: String, ok: bool) {
        self.rows.push((case.to_string(), want, got, ok));
    }

    fn grpc<T: std::fmt::Debug>(
        &mut self,
        case: &str,
        r: Result<T, tonic::Status>,
        code: Code,
        words: &[&str],
    ) {
        let want = format!("{code:?} {words:?}");
        match r {
            Ok(v) => {
                let got: String = format!("OK {v:?}").chars().take(200).collect();
                self.record(case, want, got, code == Code::Ok)
            }
            Err(s) => {
                let ok = s.code() == code && words.iter().all(|w| s.message().contains(w));
                self.record(case, want, format!("{:?} {}", s.code(), s.message()), ok);
            }
        }
    }

    async fn http(&mut self, case: &str, r: reqwest::RequestBuilder, status: u16, words: &[&str]) {
        let want = format!("HTTP {status} {words:?}");
        match r.send().await {
            Ok(resp) => {
                let got = resp.status().as_u16();
                let body = resp.text().await.unwrap_or_default();
                let ok = got == status && words.iter().all(|w| body.contains(w));
                self.record(case, want, format!("HTTP {got} {body}"), ok);
            }
            Err(e) => self.record(case, want, format!("transport error: {e}"), false),
        }
    }

    /// A command that must fail with a message holding `words`.
    fn cli(&mut self, case: &str, args: &[&str], words: &[&str]) {
        let out = modelmesh()
            .args(args)
            .env_remove("CONTAINER_MEM_REQ_BYTES")
            .output()
            .expect("run modelmesh");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let ok = !out.status.success() && words.iter().all(|w| text.contains(w));
        let got = format!("exit {:?}: {}", out.status.code(), text.trim());
        self.record(case, format!("exit != 0 {words:?}"), got, ok);
    }

    fn finish(self) {
        let mut failed = Vec::new();
        for (case, want, got, ok) in &self.rows {
            let got: String = got.replace('\n', " ").chars().take(240).collect();
            println!(
                "{} {case}\n    want {want}\n    got  {got}",
                if *ok { "ok  " } else { "FAIL" }
            );
            if !ok {
                failed.push(format!("{case}: want {want}, got {got}"));
            }
        }
        println!("{} cases, {} failed", self.rows.len(), failed.len());
        assert!(
            failed.is_empty(),
            "bad-input cases failed:\n{}",
            failed.join("\n")
        );
    }
}

/// One unary call with raw request bytes and the given metadata.
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

const INFER: &str = "inference.GRPCInferenceService/ModelInfer";

/// A valid ServingRuntime, to isolate a bad model-serving config.
const RUNTIME_YAML: &str = r#"apiVersion: serving.kserve.io/v1alpha1
kind: ServingRuntime
metadata: {name: rt}
spec:
  supportedModelFormats: [{name: onnx}]
  multiModel: true
  grpcEndpoint: "port:8085"
  grpcDataEndpoint: "port:8001"
  containers: [{name: rt, image: x}]
"#;

fn infer_body(input: &serde_json::Value) -> Vec<u8> {
    let mut b = common::kserve::raw_request("m", input);
    b.model_name.clear();
    b.encode_to_vec()
}

#[tokio::test]
async fn every_entry_point_names_what_is_wrong_and_keeps_serving() {
    let max = MAX_MESSAGE.to_string();
    let mut pod = start_pod_with(
        "pod-1",
        1 << 30,
        1 << 20,
        &["--max-message-size", &max],
        &[],
    )
    .await;
    let (port, rest, internal) = (pod.mesh_port, pod.rest_port, pod.internal_port);
    let mut mgmt = ModelMeshClient::new(channel(port));
    mgmt.register_model(mm::RegisterModelRequest {
        model_id: "m".into(),
        model_info: info("tiny-regression"),
        load_now: true,
        sync: true,
        ..Default::default()
    })
    .await
    .expect("register m");
    let input = expected()["tiny-regression"]["inputs"].clone();
    let body = infer_body(&input);
    let mut c = Catalogue::default();

    // ---- mesh gRPC (8033): inference ----
    c.grpc(
        "8033 infer: no model id anywhere",
        raw(port, INFER, &[], body.clone()).await,
        Code::InvalidArgument,
        &["mm-model-id", "mm-vmodel-id"],
    );
    c.grpc(
        "8033 infer: both id headers",
        raw(
            port,
            INFER,
            &[("mm-model-id", "m"), ("mm-vmodel-id", "v")],
            body.clone(),
        )
        .await,
        Code::InvalidArgument,
        &["mm-model-id", "mm-vmodel-id"],
    );
    c.grpc(
        "8033 infer: empty id",
        raw(port, INFER, &[("mm-model-id", "")], body.clone()).await,
        Code::InvalidArgument,
        &["empty"],
    );
    c.grpc(
        "8033 infer: unknown model",
        raw(port, INFER, &[("mm-model-id", "nobody")], body.clone()).await,
        Code::NotFound,
        &["model nobody not found"],
    );
    c.grpc(
        "8033 infer: unknown vmodel",
        raw(port, INFER, &[("mm-vmodel-id", "nobody")], body.clone()).await,
        Code::NotFound,
        &["vmodel nobody not found"],
    );
    c.grpc(
        "8033 infer: hop metadata from a client",
        raw(
            port,
            INFER,
            &[("mm-model-id", "m"), ("mm-hop", "hit")],
            body.clone(),
        )
        .await,
        Code::InvalidArgument,
        &["mm-hop", "reserved"],
    );
    c.grpc(
        "8033 infer: known-size metadata from a client",
        raw(
            port,
            INFER,
            &[("mm-model-id", "m"), ("mm-known-size", "1")],
            body.clone(),
        )
        .await,
        Code::InvalidArgument,
        &["mm-known-size", "reserved"],
    );
    c.grpc(
        "8033 infer: garbage body",
        raw(
            port,
            INFER,
            &[("mm-model-id", "m")],
            b"\xff\xff\xff\xff not protobuf".to_vec(),
        )
        .await,
        Code::InvalidArgument,
        &["not a valid protobuf"],
    );
    c.grpc(
        "8033 infer: truncated body",
        raw(
            port,
            INFER,
            &[("mm-model-id", "m")],
            body[..body.len() / 2].to_vec(),
        )
        .await,
        Code::InvalidArgument,
        &["not a valid protobuf"],
    );
    c.grpc(
        "8033 infer: wrong input name",
        {
            let mut r = common::kserve::raw_request("m", &input);
            r.inputs[0].name = "nosuch".into();
            raw(port, INFER, &[("mm-model-id", "m")], r.encode_to_vec()).await
        },
        Code::InvalidArgument,
        &["'nosuch'"],
    );
    c.grpc(
        "8033 infer: oversized message",
        raw(
            port,
            INFER,
            &[("mm-model-id", "m")],
            vec![0u8; MAX_MESSAGE + 1],
        )
        .await,
        Code::ResourceExhausted,
        &[
            &format!("{} bytes", MAX_MESSAGE + 1),
            &format!("limit of {MAX_MESSAGE} bytes"),
            "MM_SVC_GRPC_MAX_MSG_SIZE",
        ],
    );
    c.grpc(
        "8033 infer: bad grpc-timeout",
        raw(
            port,
            INFER,
            &[("mm-model-id", "m"), ("grpc-timeout", "soon")],
            body.clone(),
        )
        .await,
        Code::InvalidArgument,
        &["grpc-timeout"],
    );
    c.grpc(
        "8033: the runtime SPI is not callable through the mesh",
        raw(
            port,
            "mmesh.ModelRuntime/loadModel",
            &[("mm-model-id", "m")],
            vec![],
        )
        .await,
        Code::Unimplemented,
        &["mmesh.ModelRuntime/loadModel"],
    );
    c.grpc(
        "8033: an unknown method",
        raw(port, "no.Such/Method", &[("mm-model-id", "m")], vec![]).await,
        Code::Unimplemented,
        &[],
    );

    // ---- mesh gRPC (8033): the ModelMesh API ----
    let reg = |id: &str, info: Option<mm::ModelInfo>| mm::RegisterModelRequest {
        model_id: id.into(),
        model_info: info,
        ..Default::default()
    };
    c.grpc(
        "8033 registerModel: empty id",
        mgmt.register_model(reg("", info("tiny-regression"))).await,
        Code::InvalidArgument,
        &["modelId"],
    );
    c.grpc(
        "8033 registerModel: no modelInfo",
        mgmt.register_model(reg("x", None)).await,
        Code::InvalidArgument,
        &["modelInfo"],
    );
    c.grpc(
        "8033 registerModel: id with a slash",
        mgmt.register_model(reg("a/../b", info("tiny-regression")))
            .await,
        Code::InvalidArgument,
        &["a/../b"],
    );
    c.grpc(
        "8033 registerModel: conflicting re-registration",
        mgmt.register_model(reg("m", info("typed-ops"))).await,
        Code::AlreadyExists,
        &["model m", "differ"],
    );
    c.grpc(
        "8033 setVModel: no target",
        mgmt.set_v_model(mm::SetVModelRequest {
            v_model_id: "v".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        &["targetModelId"],
    );
    c.grpc(
        "8033 setVModel: empty vmodel id",
        mgmt.set_v_model(mm::SetVModelRequest {
            target_model_id: "m".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        &["vModelId"],
    );
    // ensureLoaded answers with a status, as upstream does: NOT_FOUND in the body.
    let ensured = mgmt
        .ensure_loaded(mm::EnsureLoadedRequest {
            model_id: "nobody".into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().status);
    c.record(
        "8033 ensureLoaded: unknown model",
        "OK, status NOT_FOUND".into(),
        format!("{ensured:?}"),
        ensured.as_ref().ok() == Some(&(mm::model_status_info::ModelStatus::NotFound as i32)),
    );
    c.grpc(
        "8033 deleteVModel: unknown",
        mgmt.delete_v_model(mm::DeleteVModelRequest {
            v_model_id: "nobody".into(),
            ..Default::default()
        })
        .await
        .map(|_| "deleting an unknown vmodel is a no-op, as upstream"),
        Code::Ok,
        &[],
    );

    // ---- REST (8008) ----
    let http = reqwest::Client::new();
    let url = |p: &str| format!("http://127.0.0.1:{rest}{p}");
    let post = |p: &str, b: &str| http.post(url(p)).body(b.to_string());
    c.http(
        "8008 infer: not JSON",
        post("/v2/models/m/infer", "{not json").header("mm-model-id", "m"),
        400,
        &["not a valid KServe v2 inference request", "line 1 column 2"],
    )
    .await;
    c.http(
        "8008 infer: no inputs",
        post("/v2/models/m/infer", "{}").header("mm-model-id", "m"),
        400,
        &["inputs"],
    )
    .await;
    c.http(
        "8008 infer: data does not fill the shape",
        post(
            "/v2/models/m/infer",
            r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2]}]}"#,
        )
        .header("mm-model-id", "m"),
        400,
        &["input"],
    )
    .await;
    c.http(
        "8008 infer: unknown datatype",
        post(
            "/v2/models/m/infer",
            r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP33","data":[1,2,3,4]}]}"#,
        )
        .header("mm-model-id", "m"),
        400,
        &["FP33"],
    )
    .await;
    c.http("8008 infer: shape too large to count", post("/v2/models/m/infer",
        r#"{"inputs":[{"name":"input","shape":[4294967296,4294967296,4294967296],"datatype":"FP32","data":[1]}]}"#).header("mm-model-id", "m"),
        400, &["input"]).await;
    c.http(
        "8008 infer: unknown model",
        post("/v2/models/nobody/infer", r#"{"inputs":[]}"#),
        404,
        &["nobody"],
    )
    .await;
    c.http(
        "8008 infer: hop metadata from a client",
        post(
            "/v2/models/m/infer",
            r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#,
        )
        .header("mm-model-id", "m")
        .header("mm-hop", "load"),
        400,
        &["mm-hop"],
    )
    .await;
    c.http(
        "8008 infer: oversized body",
        post("/v2/models/m/infer", &" ".repeat(4 * MAX_MESSAGE + 1)).header("mm-model-id", "m"),
        413,
        &[
            "REST body",
            &format!("limit of {} bytes", 4 * MAX_MESSAGE),
            "MM_SVC_GRPC_MAX_MSG_SIZE",
        ],
    )
    .await;
    c.http(
        "8008 infer: wrong HTTP method",
        http.get(url("/v2/models/m/infer")),
        405,
        &[],
    )
    .await;

    // ---- internal port (8080) ----
    c.grpc(
        "8080: an unknown hop",
        raw(
            internal,
            INFER,
            &[("mm-model-id", "m"), ("mm-hop", "jump")],
            body.clone(),
        )
        .await,
        Code::InvalidArgument,
        &["mm-hop", "'hit' or 'load'"],
    );
    c.grpc(
        "8080: oversized message",
        raw(
            internal,
            INFER,
            &[("mm-model-id", "m"), ("mm-hop", "load")],
            vec![0u8; MAX_MESSAGE + 1],
        )
        .await,
        Code::ResourceExhausted,
        &["MM_SVC_GRPC_MAX_MSG_SIZE"],
    );
    c.grpc(
        "8080: a known size that is not a number",
        raw(
            internal,
            INFER,
            &[
                ("mm-model-id", "m"),
                ("mm-hop", "load"),
                ("mm-known-size", "lots"),
            ],
            body.clone(),
        )
        .await,
        Code::InvalidArgument,
        &["mm-known-size"],
    );
    c.grpc(
        "8080: hit-only for a model not here",
        raw(
            internal,
            INFER,
            &[("mm-model-id", "nobody"), ("mm-hop", "hit")],
            body.clone(),
        )
        .await,
        Code::NotFound,
        &["nobody"],
    );

    // ---- adapter (8085): mmesh.ModelRuntime ----
    let mut spi = ModelRuntimeClient::new(channel(pod.adapter_port));
    let load = |id: &str, path: &str, key: &str| mm::LoadModelRequest {
        model_id: id.into(),
        model_type: "onnx".into(),
        model_path: path.into(),
        model_key: key.into(),
    };
    c.grpc(
        "8085 loadModel: path escaping the storage root",
        spi.load_model(load("esc", "../../../etc", "{}")).await,
        Code::InvalidArgument,
        &["../../../etc"],
    );
    c.grpc(
        "8085 loadModel: absolute path",
        spi.load_model(load("abs", "/etc/passwd", "{}")).await,
        Code::InvalidArgument,
        &["/etc/passwd"],
    );
    c.grpc(
        "8085 loadModel: model id escaping the models dir",
        spi.load_model(load("../evil", "tiny-regression", "{}"))
            .await,
        Code::InvalidArgument,
        &["../evil"],
    );
    c.grpc(
        "8085 loadModel: empty model id",
        spi.load_model(load("", "tiny-regression", "{}")).await,
        Code::InvalidArgument,
        &["model"],
    );
    c.grpc(
        "8085 loadModel: model key not JSON",
        spi.load_model(load("k", "tiny-regression", "{oops")).await,
        Code::InvalidArgument,
        &["key"],
    );
    c.grpc(
        "8085 loadModel: unknown storage key",
        spi.load_model(load("sk", "tiny-regression", r#"{"storage_key":"nosuch"}"#))
            .await,
        Code::NotFound,
        &["storage config", "nosuch"],
    );
    c.grpc(
        "8085 loadModel: missing model files",
        spi.load_model(load("nf", "no-such-model", "{}")).await,
        Code::NotFound,
        &["no-such-model"],
    );

    // ---- runtime (8001): KServe v2 ----
    let mut rt = Infer::new(channel(pod.runtime_port));
    c.grpc(
        "8001 load: name escaping the repository",
        rt.repository_model_load(pb::RepositoryModelLoadRequest {
            model_name: "../x".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        &["../x"],
    );
    c.grpc(
        "8001 infer: unknown model",
        rt.model_infer(common::kserve::raw_request("nobody", &input))
            .await,
        Code::NotFound,
        &["nobody"],
    );
    c.grpc(
        "8001 infer: garbage body",
        raw(
            pod.runtime_port,
            INFER,
            &[],
            b"\x0a\xff\xff\xff\xff".to_vec(),
        )
        .await,
        Code::InvalidArgument,
        &["not a valid protobuf"],
    );

    // ---- command line ----
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).expect("mkdir");
    let p = common::pki::make(&certs);
    let (crt, key) = (
        p.server_cert.to_string_lossy().into_owned(),
        p.server_key.to_string_lossy().into_owned(),
    );
    c.cli(
        "cli: unknown KV store",
        &["sidecar", "--kv-store", "zookeeper:x"],
        &["zookeeper:x", "not supported"],
    );
    c.cli(
        "cli: TLS certificate without key",
        &["sidecar", "--tls-key-cert-path", &crt],
        &["MM_TLS_PRIVATE_KEY_PATH"],
    );
    c.cli(
        "cli: unknown client-auth mode",
        &[
            "sidecar",
            "--tls-key-cert-path",
            &crt,
            "--tls-private-key-path",
            &key,
            "--tls-client-auth",
            "sometimes",
        ],
        &["sometimes", "NONE, OPTIONAL, REQUIRE"],
    );
    c.cli(
        "cli: encrypted key passphrase",
        &[
            "sidecar",
            "--tls-key-cert-path",
            &crt,
            "--tls-private-key-path",
            &key,
            "--tls-private-key-passphrase",
            "x",
        ],
        &["not supported"],
    );
    c.cli(
        "cli: key file that is not a key",
        &[
            "sidecar",
            "--tls-key-cert-path",
            &crt,
            "--tls-private-key-path",
            &crt,
        ],
        &["MM_TLS_PRIVATE_KEY_PATH", "private key"],
    );
    c.cli(
        "cli: dataplane config not JSON",
        &["sidecar", "--dataplane-config", "{bad"],
        &["dataplane"],
    );
    c.cli(
        "cli: type constraints not an object",
        &["sidecar", "--type-constraints", "[1]"],
        &["constraints"],
    );
    c.cli(
        "cli: negative limit",
        &["sidecar", "--max-inflight-requests", "-1"],
        &["'-1'", "--max-inflight-requests"],
    );
    c.cli(
        "cli: a size with an unknown unit",
        &["up", "--memory", "2 lots"],
        &["--memory", "unknown unit", "512Mi", "1GiB"],
    );
    c.cli(
        "cli: a size in milli",
        &[
            "adapter",
            "--server-type",
            "triton",
            "--container-mem-req-bytes",
            "512m",
        ],
        &["--container-mem-req-bytes", "milli", "Mi"],
    );
    c.cli(
        "cli: a negative size",
        &["sidecar", "--max-message-size=-1Mi"],
        &["--max-message-size", "negative"],
    );
    c.cli(
        "cli: a size too large",
        &[
            "adapter",
            "--server-type",
            "triton",
            "--mem-buffer-bytes",
            "9Ei",
        ],
        &["--mem-buffer-bytes", "too large"],
    );
    c.cli(
        "cli: fault delay that is not a delay",
        &[
            "runtime",
            "--model-repository",
            ".",
            "--fault-load-delay",
            "soon",
        ],
        &["not a delay"],
    );
    c.cli(
        "cli: infer input that is not JSON",
        &[
            "infer",
            "m",
            "--grpc",
            &format!("127.0.0.1:{port}"),
            "--header",
            "--input",
            "input=[1,",
        ],
        &["--input input", "not JSON"],
    );

    // ---- files: YAML and JSON the binary reads ----
    let write = |name: &str, text: &str| {
        let f = dir.path().join(name);
        std::fs::write(&f, text).expect("write");
        f.to_string_lossy().into_owned()
    };
    let bad_yaml = write("bad.yaml", "kind: ServingRuntime\nspec: [unclosed\n");
    let wrong_kind = write(
        "wrong.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
    );
    let bad_config = write("config.yaml", "podsPerRuntime: many\n");
    let good_runtime = write("runtime.yaml", RUNTIME_YAML);
    c.cli(
        "file: runtime YAML that does not parse",
        &["controller", "render", "--runtime", &bad_yaml],
        &["bad.yaml"],
    );
    c.cli(
        "file: a YAML of another kind",
        &["controller", "render", "--runtime", &wrong_kind],
        &["ConfigMap"],
    );
    c.cli(
        "file: model-serving config with a wrong type",
        &[
            "controller",
            "render",
            "--runtime",
            &good_runtime,
            "--config",
            &bad_config,
        ],
        &["podsPerRuntime"],
    );
    let bad_conn = write("etcd_connection", r#"{"endpoints": 5}"#);
    c.cli(
        "file: etcd connection JSON with a wrong type",
        &["sidecar", "--kv-store", &format!("etcd:{bad_conn}")],
        &["etcd_connection", "endpoints"],
    );
    let constraints = write("tc.json", r#"{"onnx": {"required": "not a list"}}"#);
    c.cli(
        "file: type constraints file",
        &["sidecar", "--type-constraints-path", &constraints],
        &["required"],
    );

    // ---- and the pod still serves ----
    pod.sidecar.assert_running();
    pod.adapter.assert_running();
    pod.runtime.assert_running();
    let served = Infer::new(channel(port))
        .model_infer(req("m", &input, false))
        .await;
    c.record(
        "after everything: a good request",
        "OK".into(),
        format!("{:?}", served.as_ref().map(|_| "OK")),
        served.is_ok(),
    );
    c.finish();
}
