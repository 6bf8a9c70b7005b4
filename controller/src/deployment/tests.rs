//! The rendered Deployment's env, mounts, volumes and labels.

use super::containers::image_tag;
use super::*;
use crate::crd::serving_runtime::BuiltInAdapter;
use k8s_openapi::api::core::v1::Container;

fn input<'a>(
    spec: &'a ServingRuntimeSpec,
    ann: &'a BTreeMap<String, String>,
    pvcs: &'a [String],
) -> RuntimeInput<'a> {
    RuntimeInput {
        name: "triton-2.x",
        spec,
        annotations: ann,
        replicas: 1,
        pvcs,
        etcd_secret: "model-serving-etcd",
    }
}

fn env_of<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
    c.env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)?
        .value
        .as_deref()
}

#[test]
fn rest_metrics_pvcs_sockets_and_tls() {
    let spec = ServingRuntimeSpec {
        containers: vec![Container {
            name: "triton".into(),
            image: Some("nvcr.io/nvidia/tritonserver:23.04-py3".into()),
            ..Default::default()
        }],
        protocol_versions: vec!["grpc-v2".into()],
        grpc_data_endpoint: Some("unix:/sockets/data.sock".into()),
        built_in_adapter: Some(BuiltInAdapter {
            server_type: Some("triton".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut cfg = Config::default();
    cfg.tls.secret_name = "mm-tls".into();
    cfg.tls.client_auth = "require".into();
    let ann = BTreeMap::new();
    let pvcs = vec!["models-pvc".to_string()];
    let d = render(&input(&spec, &ann, &pvcs), &cfg);
    let pod = d.spec.unwrap().template;
    let annotations = pod.metadata.unwrap().annotations.unwrap();
    assert_eq!(annotations["prometheus.io/port"], "2112");
    let ps = pod.spec.unwrap();
    let names: Vec<&str> = ps.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["triton", "triton-adapter", "mm"]);
    let mm = &ps.containers[2];
    assert_eq!(env_of(mm, "MM_REST_PORT"), Some("8008"));
    assert!(env_of(mm, "MM_LABELS").unwrap().contains("pv:v2"));
    assert_eq!(
        env_of(mm, "INTERNAL_SERVING_GRPC_SOCKET_PATH"),
        Some("/sockets/data.sock")
    );
    assert_eq!(env_of(mm, "MM_TLS_CLIENT_AUTH"), Some("require"));
    assert_eq!(
        env_of(mm, "MM_METRICS"),
        Some("prometheus:port=2112;scheme=https")
    );
    let ports: Vec<&str> = mm
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.name.as_deref())
        .collect();
    assert_eq!(ports, ["grpc", "mgmt", "http", "prometheus"]);
    let adapter = &ps.containers[1];
    assert_eq!(env_of(adapter, "RUNTIME_VERSION"), Some("23.04-py3"));
    assert_eq!(
        env_of(adapter, "RUNTIME_DATA_ENDPOINT"),
        Some("unix:/sockets/data.sock")
    );
    let runtime_mounts: Vec<&str> = ps.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(
        runtime_mounts,
        ["/models", "/pvc_mounts/models-pvc", "/sockets"]
    );
    let vols: Vec<&str> = ps
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(
        vols,
        [
            "models-dir",
            "domain-socket",
            "storage-config",
            "models-pvc",
            "tc-config",
            "etcd-config",
            "tls-certs"
        ]
    );
}

#[test]
fn user_labels_cannot_break_the_selector() {
    let spec = ServingRuntimeSpec {
        labels: [
            ("name".to_string(), "mine".to_string()),
            ("team".to_string(), "a".to_string()),
        ]
        .into(),
        ..Default::default()
    };
    let ann = BTreeMap::new();
    let d = render(&input(&spec, &ann, &[]), &Config::default());
    let labels = d.spec.unwrap().template.metadata.unwrap().labels.unwrap();
    assert_eq!(labels["name"], "modelmesh-serving-triton-2.x");
    assert_eq!(labels["team"], "a");
}

#[test]
fn endpoints_and_tags() {
    assert_eq!(endpoint_port("port:8085"), Some(8085));
    assert_eq!(endpoint_port("unix:/x"), None);
    assert_eq!(endpoint_socket("unix:/x/y.sock"), Some("/x/y.sock"));
    assert_eq!(image_tag("registry:5000/repo/img:1.2"), "1.2");
    assert_eq!(image_tag("img"), "");
}
