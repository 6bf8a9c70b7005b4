//! The Deployment of one ServingRuntime in one namespace: [runtime containers][built-in
//! adapter][mesh sidecar, last], with upstream's labels, env, ports, volumes, probes and
//! preStop hooks. The adapter and the sidecar run our image (`modelmesh adapter`, `modelmesh
//! sidecar`); the sidecar serves KServe v2 REST itself, so there is no REST proxy container.
//! Pure: a function of the runtime, the config and a few facts about the namespace.

use crate::config::Config;
use crate::crd::serving_runtime::ServingRuntimeSpec;
use crate::labels::runtime_labels;
use crate::quantity;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, Lifecycle, LifecycleHandler, NodeAffinity, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, ObjectFieldSelector,
    PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Probe, ResourceFieldSelector,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
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

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: Some("v1".into()),
                field_path: path.into(),
            }),
            ..Default::default()
        }),
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

fn drop_all() -> Option<SecurityContext> {
    Some(SecurityContext {
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        ..Default::default()
    })
}

/// Our own containers (adapter, sidecar): no capabilities, no privilege escalation, not root,
/// and a read-only root filesystem (they write only to the mounted models volume).
fn hardened() -> Option<SecurityContext> {
    Some(SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        ..drop_all()?
    })
}

fn prestop_http() -> Option<Lifecycle> {
    Some(Lifecycle {
        pre_stop: Some(LifecycleHandler {
            http_get: Some(HTTPGetAction {
                path: Some("/prestop".into()),
                port: IntOrString::Int(PRESTOP_PORT),
                scheme: Some("HTTP".into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn http_probe(path: &str, initial: i32, period: i32, timeout: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(PROBE_PORT),
            scheme: Some("HTTP".into()),
            ..Default::default()
        }),
        initial_delay_seconds: Some(initial),
        period_seconds: Some(period),
        timeout_seconds: Some(timeout),
        failure_threshold: Some(failures),
        success_threshold: Some(1),
        ..Default::default()
    }
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

/// The tag part of an image (`repo:tag` → `tag`), upstream's `RUNTIME_VERSION`.
fn image_tag(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    last.split_once(':')
        .map(|(_, t)| t.to_string())
        .unwrap_or_default()
}

/// Renders the Deployment.
pub fn render(rt: &RuntimeInput, cfg: &Config) -> Deployment {
    let spec = rt.spec;
    let deployment = name(cfg, rt.name);
    let mut selector = BTreeMap::new();
    selector.insert(
        "modelmesh-service".to_string(),
        cfg.inference_service_name.clone(),
    );
    selector.insert("name".to_string(), deployment.clone());
    let mut pod_labels = common_labels();
    pod_labels.extend(cfg.runtime_pod_labels.clone());
    pod_labels.extend(spec.labels.clone());
    // Last: user labels must not break the Deployment's selector.
    pod_labels.extend(selector.clone());
    let mut annotations = BTreeMap::new();
    if cfg.metrics.enabled {
        annotations.insert("prometheus.io/path".to_string(), "/metrics".to_string());
        annotations.insert(
            "prometheus.io/port".to_string(),
            cfg.metrics.port.to_string(),
        );
        annotations.insert(
            "prometheus.io/scheme".to_string(),
            cfg.metrics.scheme.clone(),
        );
        annotations.insert("prometheus.io/scrape".to_string(), "true".to_string());
    }
    annotations.extend(cfg.runtime_pod_annotations.clone());
    annotations.extend(spec.annotations.clone());

    let grpc_endpoint = spec.grpc_endpoint.clone().unwrap_or_default();
    let data_endpoint = spec.grpc_data_endpoint.clone().unwrap_or_default();
    let unix = endpoint_socket(&grpc_endpoint).or_else(|| endpoint_socket(&data_endpoint));
    let pvc_mounts: Vec<VolumeMount> = rt
        .pvcs
        .iter()
        .map(|p| mount(p, &format!("/pvc_mounts/{p}"), true))
        .collect();

    // Runtime containers: drop capabilities, /models (and PVCs) first, hold preStop until the
    // sidecar has moved this pod's models.
    let mut containers: Vec<Container> = spec
        .containers
        .iter()
        .map(|c| {
            let mut c = c.clone();
            if c.security_context.is_none() {
                c.security_context = drop_all();
            }
            let mut mounts = vec![mount("models-dir", "/models", false)];
            mounts.extend(pvc_mounts.iter().cloned());
            if let Some(sock) = unix
                && let Some((dir, _)) = sock.rsplit_once('/')
            {
                mounts.push(mount(
                    "domain-socket",
                    if dir.is_empty() { "/" } else { dir },
                    false,
                ));
            }
            mounts.extend(c.volume_mounts.take().unwrap_or_default());
            c.volume_mounts = Some(mounts);
            c.lifecycle = prestop_http();
            c
        })
        .collect();

    // The built-in adapter.
    let adapter = spec.built_in_adapter.as_ref().and_then(|a| {
        let server = a.server_type.clone().filter(|s| !s.is_empty())?;
        Some((server, a))
    });
    if let Some((server, a)) = &adapter {
        let mgmt = a.runtime_management_port.unwrap_or(8001);
        let runtime_image = spec
            .containers
            .iter()
            .find(|c| &c.name == server)
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        let mut e = vec![
            env(
                "ADAPTER_PORT",
                endpoint_port(&grpc_endpoint)
                    .unwrap_or(DEFAULT_ADAPTER_PORT)
                    .to_string(),
            ),
            env("RUNTIME_PORT", mgmt.to_string()),
            env(
                "RUNTIME_DATA_ENDPOINT",
                spec.grpc_data_endpoint
                    .clone()
                    .unwrap_or_else(|| format!("port:{mgmt}")),
            ),
            EnvVar {
                name: "CONTAINER_MEM_REQ_BYTES".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    resource_field_ref: Some(ResourceFieldSelector {
                        container_name: Some(server.clone()),
                        divisor: Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                            "0".into(),
                        )),
                        resource: "requests.memory".into(),
                    }),
                    ..Default::default()
                }),
            },
            env(
                "MEM_BUFFER_BYTES",
                a.mem_buffer_bytes.unwrap_or(128 * 1024 * 1024).to_string(),
            ),
            env(
                "LOADTIME_TIMEOUT",
                a.model_loading_timeout_millis.unwrap_or(90_000).to_string(),
            ),
            env("USE_EMBEDDED_PULLER", "true"),
            env("RUNTIME_VERSION", image_tag(&runtime_image)),
        ];
        if let Some(v) = rt.annotations.get("maxLoadingConcurrency") {
            e.push(env("LOADING_CONCURRENCY", v.clone()));
        }
        if let Some(v) = rt.annotations.get("perModelConcurrencyLimit") {
            e.push(env("LIMIT_PER_MODEL_CONCURRENCY", v.clone()));
        }
        for extra in &a.env {
            match e.iter_mut().find(|x| x.name == extra.name) {
                Some(x) => *x = extra.clone(),
                None => e.push(extra.clone()),
            }
        }
        let mut mounts = vec![
            mount("models-dir", "/models", false),
            mount("storage-config", "/storage-config", true),
        ];
        mounts.extend(pvc_mounts.iter().cloned());
        containers.push(Container {
            name: format!("{server}-adapter"),
            image: Some(cfg.storage_helper_image.reference()),
            command: Some(vec![
                BINARY.into(),
                "adapter".into(),
                "--server-type".into(),
                adapter_kind(server).into(),
            ]),
            env: Some(e),
            resources: Some(cfg.storage_helper_resources.clone()),
            volume_mounts: Some(mounts),
            lifecycle: prestop_http(),
            security_context: hardened(),
            ..Default::default()
        });
    }

    // The mesh sidecar, last.
    let mut mm_env: Vec<EnvVar> = cfg.internal_model_mesh_env_vars.clone();
    let mut set = |e: EnvVar| match mm_env.iter_mut().find(|x| x.name == e.name) {
        Some(x) => *x = e,
        None => mm_env.push(e),
    };
    set(env("MM_SERVICE_NAME", cfg.inference_service_name.clone()));
    set(env(
        "MM_SVC_GRPC_PORT",
        cfg.inference_service_port.to_string(),
    ));
    if cfg.management_port != 0 {
        // The API's changes only there, where the NetworkPolicy admits the controller alone.
        set(env("MM_MANAGEMENT_PORT", cfg.management_port.to_string()));
        set(env("MM_MANAGEMENT_ON_GRPC_PORT", "false".to_string()));
    }
    set(field_env("WKUBE_POD_NAME", "metadata.name"));
    set(field_env("WKUBE_POD_IPADDR", "status.podIP"));
    set(field_env("MM_LOCATION", "status.hostIP"));
    set(env("KV_STORE", format!("etcd:{ETCD_DIR}/etcd_connection")));
    set(env(
        "MM_METRICS",
        if cfg.metrics.enabled {
            format!(
                "prometheus:port={};scheme={}",
                cfg.metrics.port, cfg.metrics.scheme
            )
        } else {
            "disabled".into()
        },
    ));
    set(env(
        "SHUTDOWN_TIMEOUT_MS",
        (GRACE_SECONDS * 1000).to_string(),
    ));
    match (
        endpoint_port(&data_endpoint),
        endpoint_socket(&data_endpoint),
    ) {
        (Some(p), _) => set(env("INTERNAL_SERVING_GRPC_PORT", p.to_string())),
        (None, Some(s)) => set(env("INTERNAL_SERVING_GRPC_SOCKET_PATH", s)),
        _ => {}
    }
    match (
        endpoint_port(&grpc_endpoint),
        endpoint_socket(&grpc_endpoint),
    ) {
        (Some(p), _) => set(env("INTERNAL_GRPC_PORT", p.to_string())),
        (None, Some(s)) => set(env("INTERNAL_GRPC_SOCKET_PATH", s)),
        _ => set(env("INTERNAL_GRPC_PORT", DEFAULT_ADAPTER_PORT.to_string())),
    }
    if cfg.enable_access_logging {
        set(env("MM_LOG_EACH_INVOKE", "true"));
    }
    set(env(
        "MM_SVC_GRPC_MAX_MSG_SIZE",
        cfg.grpc_max_message_size_bytes.to_string(),
    ));
    set(env("MM_KVSTORE_PREFIX", "mm"));
    set(env("MM_DEFAULT_VMODEL_OWNER", "ksp"));
    if !cfg.payload_processors.is_empty() {
        set(env(
            "MM_PAYLOAD_PROCESSORS",
            cfg.payload_processors.join(" "),
        ));
    }
    let labels: Vec<String> = runtime_labels(rt.name, spec, cfg.rest_proxy.enabled)
        .into_iter()
        .collect();
    set(env("MM_LABELS", labels.join(",")));
    set(env(
        "MM_TYPE_CONSTRAINTS_PATH",
        format!("{TC_CONFIG_DIR}/type_constraints"),
    ));
    set(env(
        "MM_DATAPLANE_CONFIG_PATH",
        format!("{TC_CONFIG_DIR}/dataplane_api_config"),
    ));
    set(env(
        "MM_REST_PORT",
        if cfg.rest_proxy.enabled {
            cfg.rest_proxy.port.to_string()
        } else {
            "0".into()
        },
    ));
    if !cfg.tls.secret_name.is_empty() {
        set(env("MM_TLS_KEY_CERT_PATH", "/opt/kserve/mmesh/tls/tls.crt"));
        set(env(
            "MM_TLS_PRIVATE_KEY_PATH",
            "/opt/kserve/mmesh/tls/tls.key",
        ));
        if !cfg.tls.client_auth.is_empty() {
            set(env("MM_TLS_CLIENT_AUTH", cfg.tls.client_auth.clone()));
            set(env(
                "MM_TLS_TRUST_CERT_PATH",
                "/opt/kserve/mmesh/tls/tls.crt,/opt/kserve/mmesh/tls/ca.crt",
            ));
        }
    }
    let ports: Vec<ContainerPort> = cfg
        .ports()
        .into_iter()
        .map(|(name, p)| ContainerPort {
            name: Some(name.into()),
            container_port: i32::from(p),
            protocol: Some("TCP".into()),
            ..Default::default()
        })
        .collect();
    let mut mm_mounts = vec![
        mount("tc-config", TC_CONFIG_DIR, false),
        mount("etcd-config", ETCD_DIR, true),
    ];
    if !cfg.tls.secret_name.is_empty() {
        mm_mounts.push(mount("tls-certs", "/opt/kserve/mmesh/tls", true));
    }
    if let Some(sock) = unix
        && let Some((dir, _)) = sock.rsplit_once('/')
    {
        mm_mounts.push(mount(
            "domain-socket",
            if dir.is_empty() { "/" } else { dir },
            false,
        ));
    }
    containers.push(Container {
        name: "mm".into(),
        image: Some(cfg.model_mesh_image.reference()),
        command: Some(vec![BINARY.into(), "sidecar".into()]),
        env: Some(mm_env),
        ports: Some(ports),
        resources: Some(cfg.model_mesh_resources.clone()),
        readiness_probe: Some(http_probe("/ready", 5, 5, 1, 3)),
        liveness_probe: Some(http_probe("/live", 90, 30, 5, 2)),
        // No preStop hook: SIGTERM itself starts the move of this pod's models, and the
        // runtime containers' preStop (/prestop) holds them up until it is done.
        lifecycle: None,
        security_context: hardened(),
        volume_mounts: Some(mm_mounts),
        ..Default::default()
    });

    // Volumes: the runtime's, then ours.
    let memory_limits: u64 = spec
        .containers
        .iter()
        .filter_map(|c| c.resources.as_ref()?.limits.as_ref()?.get("memory"))
        .filter_map(quantity::bytes)
        .sum();
    let mut volumes: Vec<Volume> = spec.volumes.clone();
    volumes.push(Volume {
        name: "models-dir".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: (memory_limits > 0).then(|| quantity::format_bytes(memory_limits / 2 * 3)),
            ..Default::default()
        }),
        ..Default::default()
    });
    if unix.is_some() {
        volumes.push(Volume {
            name: "domain-socket".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
    }
    let secret = |name: &str, secret: &str| Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            default_mode: Some(420),
            ..Default::default()
        }),
        ..Default::default()
    };
    let storage_helper =
        adapter.is_some() || spec.storage_helper.as_ref().and_then(|s| s.disabled) != Some(true);
    if storage_helper {
        volumes.push(secret("storage-config", &cfg.storage_secret_name));
    }
    for p in rt.pvcs {
        volumes.push(Volume {
            name: p.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: p.clone(),
                read_only: Some(true),
            }),
            ..Default::default()
        });
    }
    volumes.push(Volume {
        name: "tc-config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: "tc-config".into(),
            default_mode: Some(420),
            ..Default::default()
        }),
        ..Default::default()
    });
    volumes.push(secret("etcd-config", rt.etcd_secret));
    if !cfg.tls.secret_name.is_empty() {
        volumes.push(secret("tls-certs", &cfg.tls.secret_name));
    }

    // Affinity: the runtime's, plus a required node architecture our images are built for.
    let mut affinity = spec.affinity.clone().unwrap_or_default();
    let arch = NodeSelectorRequirement {
        key: "kubernetes.io/arch".into(),
        operator: "In".into(),
        values: Some(vec!["amd64".into(), "arm64".into(), "s390x".into()]),
    };
    let node = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    let required = node
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(|| NodeSelector {
            node_selector_terms: Vec::new(),
        });
    if required.node_selector_terms.is_empty() {
        required
            .node_selector_terms
            .push(NodeSelectorTerm::default());
    }
    for term in &mut required.node_selector_terms {
        term.match_expressions
            .get_or_insert_with(Vec::new)
            .push(arch.clone());
    }
    let mut pull_secrets = cfg.image_pull_secrets.clone();
    for s in &spec.image_pull_secrets {
        if !pull_secrets.contains(s) {
            pull_secrets.push(s.clone());
        }
    }

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
                    affinity: Some(Affinity { ..affinity }),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::serving_runtime::BuiltInAdapter;

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
}
