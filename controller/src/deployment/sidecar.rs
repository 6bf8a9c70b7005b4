//! The mesh sidecar container, last in the pod: `modelmesh sidecar` with upstream's env (the
//! service, ports, the runtime's endpoints, the etcd secret, metrics, TLS), its ports, probes
//! and mounts.

use super::k8s::{env, field_env, hardened, http_probe, mount, set_env};
use super::{
    BINARY, DEFAULT_ADAPTER_PORT, ETCD_DIR, Endpoints, GRACE_SECONDS, RuntimeInput, TC_CONFIG_DIR,
    endpoint_port, endpoint_socket,
};
use crate::config::Config;
use crate::labels::runtime_labels;
use k8s_openapi::api::core::v1::{Container, ContainerPort, EnvVar};

/// Where the serving TLS secret is mounted.
const TLS_DIR: &str = "/opt/kserve/mmesh/tls";

/// The sidecar's environment: the config's own variables, overridden by what the controller
/// sets.
fn mesh_env(rt: &RuntimeInput, cfg: &Config, ep: &Endpoints) -> Vec<EnvVar> {
    let mut e: Vec<EnvVar> = cfg.internal_model_mesh_env_vars.clone();
    let mut set = |v: EnvVar| set_env(&mut e, v);
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
    match (endpoint_port(&ep.data), endpoint_socket(&ep.data)) {
        (Some(p), _) => set(env("INTERNAL_SERVING_GRPC_PORT", p.to_string())),
        (None, Some(s)) => set(env("INTERNAL_SERVING_GRPC_SOCKET_PATH", s)),
        _ => {}
    }
    // Only the mesh calls a runtime's HTTP API for OpenAI routes (KServe REST goes over gRPC).
    if let Some(p) = endpoint_port(&ep.http) {
        set(env("INTERNAL_SERVING_HTTP_PORT", p.to_string()));
    }
    match (endpoint_port(&ep.grpc), endpoint_socket(&ep.grpc)) {
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
    let labels: Vec<String> = runtime_labels(rt.name, rt.spec, cfg.rest_proxy.enabled)
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
        set(env("MM_TLS_KEY_CERT_PATH", format!("{TLS_DIR}/tls.crt")));
        set(env("MM_TLS_PRIVATE_KEY_PATH", format!("{TLS_DIR}/tls.key")));
        if !cfg.tls.client_auth.is_empty() {
            set(env("MM_TLS_CLIENT_AUTH", cfg.tls.client_auth.clone()));
            set(env(
                "MM_TLS_TRUST_CERT_PATH",
                format!("{TLS_DIR}/tls.crt,{TLS_DIR}/ca.crt"),
            ));
        }
    }
    e
}

/// The sidecar container.
pub fn container(rt: &RuntimeInput, cfg: &Config, ep: &Endpoints) -> Container {
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
    let mut mounts = vec![
        mount("tc-config", TC_CONFIG_DIR, false),
        mount("etcd-config", ETCD_DIR, true),
    ];
    if !cfg.tls.secret_name.is_empty() {
        mounts.push(mount("tls-certs", TLS_DIR, true));
    }
    mounts.extend(ep.socket_mount());
    Container {
        name: "mm".into(),
        image: Some(cfg.model_mesh_image.reference()),
        command: Some(vec![BINARY.into(), "sidecar".into()]),
        env: Some(mesh_env(rt, cfg, ep)),
        ports: Some(ports),
        resources: Some(cfg.model_mesh_resources.clone()),
        readiness_probe: Some(http_probe("/ready", 5, 5, 1, 3)),
        liveness_probe: Some(http_probe("/live", 90, 30, 5, 2)),
        // No preStop hook: SIGTERM itself starts the move of this pod's models, and the
        // runtime containers' preStop (/prestop) holds them up until it is done.
        lifecycle: None,
        security_context: hardened(),
        volume_mounts: Some(mounts),
        ..Default::default()
    }
}
