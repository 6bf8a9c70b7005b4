//! The Deployment of one ServingRuntime in one namespace: [runtime containers][built-in
//! adapter][mesh sidecar, last], with upstream's labels, env, ports, volumes, probes and
//! preStop hooks. The adapter and the sidecar run our image (`modelmesh adapter`, `modelmesh
//! sidecar`); the sidecar serves KServe v2 REST itself, so there is no REST proxy container.
//! Pure: a function of the runtime, the config and a few facts about the namespace.
//! containers.rs renders the runtime's containers and the adapter, sidecar.rs the mesh's
//! container, pod.rs the volumes and scheduling, k8s.rs the small objects they share.

mod containers;
mod k8s;
mod pod;
mod sidecar;
#[cfg(test)]
mod tests;

use crate::config::Config;
use crate::crd::serving_runtime::ServingRuntimeSpec;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// Port of `/prestop`, held by the sidecar until the pod's models moved.
pub const PRESTOP_PORT: i32 = 8090;
/// The sidecar's internal (pod-to-pod) port, its default `MM_INTERNAL_PORT`.
pub const INTERNAL_PORT: u16 = 8080;
/// Probe port of the sidecar (`/ready`, `/live`).
pub const PROBE_PORT: i32 = 8089;
/// Default model-management port of a runtime (or its adapter).
pub const DEFAULT_ADAPTER_PORT: i32 = 8085;
/// Grace period of runtime pods, seconds.
pub const GRACE_SECONDS: i64 = 90;
/// Where the type constraints and dataplane config are mounted in the sidecar.
pub const TC_CONFIG_DIR: &str = "/etc/watson/mmesh/config";
/// Where the etcd secret is mounted in the sidecar.
pub const ETCD_DIR: &str = "/opt/kserve/mmesh/etcd";
/// The binary in our image.
const BINARY: &str = "/usr/local/bin/modelmesh";

/// What the Deployment is rendered from besides the runtime and the config.
#[derive(Debug, Clone)]
pub struct RuntimeInput<'a> {
    /// ServingRuntime (or ClusterServingRuntime) name.
    pub name: &'a str,
    /// The runtime's spec.
    pub spec: &'a ServingRuntimeSpec,
    /// The runtime's metadata annotations (`maxLoadingConcurrency`, `perModelConcurrencyLimit`).
    pub annotations: &'a BTreeMap<String, String>,
    /// Pods to run.
    pub replicas: i32,
    /// PVCs to mount read-only at `/pvc_mounts/<name>` (sorted).
    pub pvcs: &'a [String],
    /// The namespace's etcd secret.
    pub etcd_secret: &'a str,
}

/// The runtime's endpoints (`port:N` or `unix:/path`), as every container needs them.
#[derive(Debug, Clone)]
struct Endpoints {
    /// Model management (the adapter's, or the runtime's own SPI).
    grpc: String,
    /// Inference.
    data: String,
    /// The runtime's HTTP inference API (`httpDataEndpoint`: an LLM runtime's OpenAI routes).
    http: String,
    /// The unix socket either one uses, if any.
    unix: Option<String>,
}

impl Endpoints {
    fn of(spec: &ServingRuntimeSpec) -> Self {
        let grpc = spec.grpc_endpoint.clone().unwrap_or_default();
        let data = spec.grpc_data_endpoint.clone().unwrap_or_default();
        let http = spec.http_data_endpoint.clone().unwrap_or_default();
        let unix = endpoint_socket(&grpc)
            .or_else(|| endpoint_socket(&data))
            .map(str::to_owned);
        Endpoints {
            grpc,
            data,
            http,
            unix,
        }
    }

    /// The socket's directory, shared by the runtime and the sidecar.
    fn socket_mount(&self) -> Option<VolumeMount> {
        let (dir, _) = self.unix.as_deref()?.rsplit_once('/')?;
        Some(k8s::mount(
            "domain-socket",
            if dir.is_empty() { "/" } else { dir },
            false,
        ))
    }
}

/// The labels every object the controller makes carries.
pub fn common_labels() -> BTreeMap<String, String> {
    ["instance", "managed-by", "name"]
        .iter()
        .map(|k| {
            (
                format!("app.kubernetes.io/{k}"),
                "modelmesh-controller".to_string(),
            )
        })
        .collect()
}

/// A namespaced object's metadata, with the controller's labels.
pub fn object_meta(name: &str, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(common_labels()),
        ..Default::default()
    }
}

/// The Deployment's name: `<service>-<runtime>`.
pub fn name(cfg: &Config, runtime: &str) -> String {
    format!("{}-{runtime}", cfg.inference_service_name)
}

/// `port:N` → N; `unix:/path` → None.
pub fn endpoint_port(endpoint: &str) -> Option<i32> {
    endpoint.strip_prefix("port:")?.parse().ok()
}

/// `unix:/path` → the socket path.
pub fn endpoint_socket(endpoint: &str) -> Option<&str> {
    endpoint.strip_prefix("unix:")
}

/// The adapter that drives a server type: our own runtime (`modelmesh`) speaks Triton's
/// repository API, so the Triton adapter drives it.
pub fn adapter_kind(server_type: &str) -> &str {
    match server_type {
        "modelmesh" => "triton",
        other => other,
    }
}

/// The pod's annotations: Prometheus' when metrics are on, then the config's, then the
/// runtime's.
fn pod_annotations(rt: &RuntimeInput, cfg: &Config) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    if cfg.metrics.enabled {
        a.insert("prometheus.io/path".to_string(), "/metrics".to_string());
        a.insert(
            "prometheus.io/port".to_string(),
            cfg.metrics.port.to_string(),
        );
        a.insert(
            "prometheus.io/scheme".to_string(),
            cfg.metrics.scheme.clone(),
        );
        a.insert("prometheus.io/scrape".to_string(), "true".to_string());
    }
    a.extend(cfg.runtime_pod_annotations.clone());
    a.extend(rt.spec.annotations.clone());
    a
}

/// Renders the Deployment.
pub fn render(rt: &RuntimeInput, cfg: &Config) -> Deployment {
    let spec = rt.spec;
    let deployment = name(cfg, rt.name);
    let selector: BTreeMap<String, String> = [
        (
            "modelmesh-service".to_string(),
            cfg.inference_service_name.clone(),
        ),
        ("name".to_string(), deployment.clone()),
    ]
    .into();
    let mut pod_labels = common_labels();
    pod_labels.extend(cfg.runtime_pod_labels.clone());
    pod_labels.extend(spec.labels.clone());
    // Last: user labels must not break the Deployment's selector.
    pod_labels.extend(selector.clone());
    let annotations = pod_annotations(rt, cfg);

    let ep = Endpoints::of(spec);
    let mut containers = containers::runtime_containers(rt, &ep);
    let adapter = containers::builtin_adapter(rt);
    if let Some((server, a)) = &adapter {
        containers.push(containers::adapter_container(rt, cfg, &ep, server, a));
    }
    containers.push(sidecar::container(rt, cfg, &ep));
    let volumes = pod::volumes(rt, cfg, &ep, adapter.is_some());
    let pull_secrets = pod::pull_secrets(rt, cfg);

    Deployment {
        metadata: ObjectMeta {
            name: Some(deployment.clone()),
            labels: Some({
                let mut l = common_labels();
                l.extend(selector.clone());
                l
            }),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(rt.replicas),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::String("75%".into())),
                    max_unavailable: Some(IntOrString::String("15%".into())),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: (!annotations.is_empty()).then_some(annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers,
                    volumes: Some(volumes),
                    affinity: Some(pod::affinity(rt)),
                    node_selector: (!spec.node_selector.is_empty())
                        .then(|| spec.node_selector.clone()),
                    tolerations: (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone()),
                    image_pull_secrets: (!pull_secrets.is_empty()).then_some(pull_secrets),
                    service_account_name: (!cfg.service_account_name.is_empty())
                        .then(|| cfg.service_account_name.clone()),
                    termination_grace_period_seconds: Some(GRACE_SECONDS),
                    // Nothing in a runtime pod calls the Kubernetes API: a stolen token would
                    // be the only use of one.
                    automount_service_account_token: Some(false),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}
