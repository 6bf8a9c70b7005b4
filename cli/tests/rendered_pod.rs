//! The pod the controller renders actually serves: the Deployment for the chart's
//! `modelmesh-onnx` runtime is rendered by the controller's code, and its three containers
//! (runtime, adapter, mesh sidecar) are started as local processes with exactly the commands
//! and environment it contains, against a real etcd. Only what the kubelet would provide is
//! emulated: volumes become local directories (with the tc-config and etcd secret contents the
//! controller writes), downward-API values are filled in, and fixed pod ports are moved to free
//! loopback ports. A Predictor registered as the controller registers it then answers.

mod common;

use common::kserve::{assert_outputs_match, raw_request, response_json};
use common::*;
use k8s_openapi::api::core::v1::{Container, EnvVar};
use modelmesh_controller::config::Config;
use modelmesh_controller::crd::predictor::{ModelType, PredictorSpec, Storage};
use modelmesh_controller::crd::serving_runtime::ServingRuntimeSpec;
use modelmesh_controller::deployment::{RuntimeInput, render};
use modelmesh_controller::labels::{dataplane_config, runtime_labels, type_constraints};
use modelmesh_controller::registration::{OWNER_PREDICTOR, registration};
use modelmesh_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient as Infer;
use modelmesh_proto::mmesh::{self as mm, model_mesh_client::ModelMeshClient};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The chart's modelmesh-onnx runtime (charts/modelmesh/templates/runtimes.yaml).
const RUNTIME: &str = r#"
supportedModelFormats:
  - {name: onnx, version: "1", autoSelect: true}
protocolVersions: [grpc-v2]
multiModel: true
grpcEndpoint: "port:8085"
grpcDataEndpoint: "port:8001"
containers:
  - name: modelmesh
    image: modelmesh/modelmesh:0.1.0
    command:
      - /usr/local/bin/modelmesh
      - runtime
      - --model-repository=/models/_triton_models
      - --create-repository
      - --grpc-port=8001
      - --address=127.0.0.1
    resources:
      requests: {cpu: 500m, memory: 1Gi}
      limits: {cpu: "2", memory: 1Gi}
builtInAdapter:
  serverType: modelmesh
  runtimeManagementPort: 8001
  memBufferBytes: 134217728
  modelLoadingTimeoutMillis: 90000
"#;

/// What the kubelet provides: volumes at local paths and ports the test can use.
struct Kubelet {
    mounts: Vec<(String, PathBuf)>,
    ports: BTreeMap<u16, u16>,
    memory_requests: BTreeMap<String, String>,
}

impl Kubelet {
    /// A rendered string with mount paths and pod ports made local.
    fn localize(&self, s: &str) -> String {
        let mut out = s.to_string();
        for (mount, local) in &self.mounts {
            if out.contains(mount.as_str()) {
                out = out.replace(mount.as_str(), &local.to_string_lossy());
            }
        }
        for (pod, local) in &self.ports {
            if out == pod.to_string() {
                return local.to_string();
            }
            for sep in ["=", ":"] {
                out = out.replace(&format!("{sep}{pod}"), &format!("{sep}{local}"));
            }
        }
        out
    }

    fn env(&self, e: &EnvVar) -> (String, String) {
        if let Some(v) = &e.value {
            return (e.name.clone(), self.localize(v));
        }
        let from = e.value_from.as_ref().expect("a value or a source");
        let value = if let Some(f) = &from.field_ref {
            match f.field_path.as_str() {
                "metadata.name" => "pod-0".to_string(),
                "status.podIP" | "status.hostIP" => "127.0.0.1".to_string(),
                other => panic!("unexpected downward API field {other}"),
            }
        } else if let Some(r) = &from.resource_field_ref {
            let c = r.container_name.clone().unwrap_or_default();
            let q = &self.memory_requests[&c];
            modelmesh_controller::quantity::bytes(
                &k8s_openapi::apimachinery::pkg::api::resource::Quantity(q.clone()),
            )
            .expect("quantity")
            .to_string()
        } else {
            panic!("unexpected env source for {}", e.name)
        };
        (e.name.clone(), value)
    }

    /// Starts a container as a local process.
    fn start(&self, c: &Container, extra: &[(&str, String)], logdir: &Path) -> Proc {
        let command: Vec<String> = c
            .command
            .iter()
            .flatten()
            .chain(c.args.iter().flatten())
            .map(|s| self.localize(s))
            .collect();
        assert_eq!(
            command[0], "/usr/local/bin/modelmesh",
            "{}: our image's binary",
            c.name
        );
        let mut cmd = modelmesh();
        cmd.args(&command[1..]);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        for e in c.env.iter().flatten() {
            let (k, v) = self.env(e);
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        Proc::spawn(&c.name, cmd, logdir)
    }
}

#[tokio::test]
async fn the_pod_the_controller_renders_serves_a_predictor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_etcd, etcd_url) = start_etcd(dir.path()).await;

    // What the controller renders and writes.
    let spec: ServingRuntimeSpec = serde_norway::from_str(RUNTIME).expect("runtime");
    let cfg = Config::default();
    let deployment = render(
        &RuntimeInput {
            name: "modelmesh-onnx",
            spec: &spec,
            annotations: &BTreeMap::new(),
            replicas: 1,
            pvcs: &[],
            etcd_secret: "model-serving-etcd",
        },
        &cfg,
    );
    let pod = deployment.spec.expect("spec").template.spec.expect("pod");
    let local = |name: &str| {
        let p = dir.path().join(name);
        std::fs::create_dir_all(&p).expect("mkdir");
        p
    };
    let (models, storage, tc, etcd) = (
        local("models"),
        local("storage-config"),
        local("tc-config"),
        local("etcd"),
    );
    let mut rts = BTreeMap::new();
    rts.insert(
        "modelmesh-onnx".to_string(),
        runtime_labels("modelmesh-onnx", &spec, cfg.rest_proxy.enabled),
    );
    std::fs::write(
        tc.join("type_constraints"),
        type_constraints(&rts).to_string(),
    )
    .expect("write");
    std::fs::write(
        tc.join("dataplane_api_config"),
        dataplane_config().to_string(),
    )
    .expect("write");
    let connection =
        serde_json::json!({"endpoints": etcd_url, "root_prefix": "modelmesh-serving/mm_ns/team-a"});
    std::fs::write(etcd.join("etcd_connection"), connection.to_string()).expect("write");
    let store = dir.path().join("store");
    copy_tree(
        &root().join("examples/models/repository"),
        &store.join("repository"),
    );
    std::fs::write(
        storage.join("default"),
        serde_json::json!({"type": "local", "root": store}).to_string(),
    )
    .expect("write");

    let mut mounts = Vec::new();
    for c in &pod.containers {
        for m in c.volume_mounts.iter().flatten() {
            let localdir = match m.name.as_str() {
                "models-dir" => models.clone(),
                "storage-config" => storage.clone(),
                "tc-config" => tc.clone(),
                "etcd-config" => etcd.clone(),
                other => panic!("unexpected volume {other}"),
            };
            mounts.push((m.mount_path.clone(), localdir));
        }
    }
    mounts.sort_by_key(|(m, _)| std::cmp::Reverse(m.len())); // longest mount path first
    mounts.dedup();
    let ports: BTreeMap<u16, u16> = [8001, 8085, 8033, 8034, 8008, 2112]
        .into_iter()
        .map(|p| (p, free_port()))
        .collect();
    let memory_requests = pod
        .containers
        .iter()
        .filter_map(|c| {
            let q = c
                .resources
                .as_ref()?
                .requests
                .as_ref()?
                .get("memory")?
                .0
                .clone();
            Some((c.name.clone(), q))
        })
        .collect();
    let kubelet = Kubelet {
        mounts,
        ports: ports.clone(),
        memory_requests,
    };

    // [runtime][adapter][sidecar], as rendered.
    let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["modelmesh", "modelmesh-adapter", "mm"]);
    let _runtime = kubelet.start(&pod.containers[0], &[], dir.path());
    // The adapter's and the sidecar's upstream defaults point at fixed pod paths and ports
    // the Deployment does not spell out: the kubelet stand-in supplies them.
    let _adapter = kubelet.start(
        &pod.containers[1],
        &[
            ("ROOT_MODEL_DIR", models.to_string_lossy().into_owned()),
            ("STORAGE_CONFIG_DIR", storage.to_string_lossy().into_owned()),
            // The test's model store is a local directory.
            ("MODELMESH_ALLOW_LOCAL_STORAGE", "true".into()),
        ],
        dir.path(),
    );
    let mut sidecar = kubelet.start(
        &pod.containers[2],
        &[
            ("MM_INTERNAL_PORT", free_port().to_string()),
            ("MM_PROBE_PORT", free_port().to_string()),
            ("MM_PRESTOP_WAIT_PORT", free_port().to_string()),
            ("MM_LISTEN_ADDRESS", "127.0.0.1".into()),
        ],
        dir.path(),
    );
    let grpc = ports[&8033];
    wait_mesh_ready(&mut sidecar, grpc).await;

    // A Predictor, registered as the controller registers it.
    let p = PredictorSpec {
        model_type: ModelType {
            name: "onnx".into(),
            version: None,
        },
        storage: Some(Storage {
            path: Some("repository/tiny-regression".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let reg = registration("tiny", OWNER_PREDICTOR, &p, &BTreeMap::new()).expect("registration");
    // The rendered pod serves the management API on its own port (the controller's, behind
    // the NetworkPolicy), and refuses changes on the inference port clients reach.
    let mgmt = ports[&8034];
    let set = mm::SetVModelRequest {
        v_model_id: reg.vmodel_id.clone(),
        target_model_id: reg.model_id.clone(),
        ..Default::default()
    };
    let e = ModelMeshClient::new(channel(grpc))
        .set_v_model(set)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("MM_MANAGEMENT_PORT"),
        "{}",
        e.message()
    );
    let status = ModelMeshClient::new(channel(mgmt))
        .set_v_model(mm::SetVModelRequest {
            v_model_id: reg.vmodel_id.clone(),
            target_model_id: reg.model_id.clone(),
            model_info: Some(mm::ModelInfo {
                r#type: reg.model_type.clone(),
                path: reg.path.clone(),
                key: reg.key.clone(),
                ..Default::default()
            }),
            auto_delete_target_model: true,
            load_now: true,
            sync: true,
            owner: reg.owner.clone(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("setVModel: {e:?}\nsidecar log:\n{}", sidecar.log_text()))
        .into_inner();
    assert_eq!(status.active_model_id, reg.model_id, "{status:?}");
    let ex = expected();
    let mut req = tonic::Request::new(raw_request("", &ex["tiny-regression"]["inputs"]));
    req.metadata_mut()
        .insert("mm-vmodel-id", "tiny".parse().expect("ascii"));
    let out = Infer::new(channel(grpc))
        .model_infer(req)
        .await
        .unwrap_or_else(|e| panic!("infer: {e:?}\nsidecar log:\n{}", sidecar.log_text()))
        .into_inner();
    assert_outputs_match(&response_json(&out), &ex["tiny-regression"]["outputs"]);
    // The rendered MM_METRICS put Prometheus where the pod annotations say.
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", ports[&2112]))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("modelmesh_"), "{metrics}");
}
