//! The runtime's own containers (capabilities dropped, `/models`, the PVCs and the socket
//! directory mounted, preStop held until the sidecar moved the pod's models) and the built-in
//! adapter, which runs our image (`modelmesh adapter`) next to the server it drives.

use super::k8s::{drop_all, env, hardened, mount, prestop_http, set_env};
use super::{BINARY, DEFAULT_ADAPTER_PORT, Endpoints, RuntimeInput, adapter_kind, endpoint_port};
use crate::config::Config;
use crate::crd::serving_runtime::BuiltInAdapter;
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, ResourceFieldSelector, VolumeMount,
};

/// The PVCs, read-only at `/pvc_mounts/<name>`.
pub fn pvc_mounts(rt: &RuntimeInput) -> Vec<VolumeMount> {
    rt.pvcs
        .iter()
        .map(|p| mount(p, &format!("/pvc_mounts/{p}"), true))
        .collect()
}

/// The runtime's containers as the pod runs them.
pub fn runtime_containers(rt: &RuntimeInput, ep: &Endpoints) -> Vec<Container> {
    let pvcs = pvc_mounts(rt);
    rt.spec
        .containers
        .iter()
        .map(|c| {
            let mut c = c.clone();
            if c.security_context.is_none() {
                c.security_context = drop_all();
            }
            let mut mounts = vec![mount("models-dir", "/models", false)];
            mounts.extend(pvcs.iter().cloned());
            mounts.extend(ep.socket_mount());
            mounts.extend(c.volume_mounts.take().unwrap_or_default());
            c.volume_mounts = Some(mounts);
            c.lifecycle = prestop_http();
            c
        })
        .collect()
}

/// The built-in adapter the runtime asks for: its server type and settings.
pub fn builtin_adapter<'a>(rt: &RuntimeInput<'a>) -> Option<(String, &'a BuiltInAdapter)> {
    let a = rt.spec.built_in_adapter.as_ref()?;
    let server = a.server_type.clone().filter(|s| !s.is_empty())?;
    Some((server, a))
}

/// The adapter container for `server`.
pub fn adapter_container(
    rt: &RuntimeInput,
    cfg: &Config,
    ep: &Endpoints,
    server: &str,
    a: &BuiltInAdapter,
) -> Container {
    let spec = rt.spec;
    let mgmt = a.runtime_management_port.unwrap_or(8001);
    let runtime_image = spec
        .containers
        .iter()
        .find(|c| c.name == server)
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let mut e = vec![
        env(
            "ADAPTER_PORT",
            endpoint_port(&ep.grpc)
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
                    container_name: Some(server.to_string()),
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
        set_env(&mut e, extra.clone());
    }
    let mut mounts = vec![
        mount("models-dir", "/models", false),
        mount("storage-config", "/storage-config", true),
    ];
    mounts.extend(pvc_mounts(rt));
    Container {
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
    }
}

/// The tag part of an image (`repo:tag` → `tag`), upstream's `RUNTIME_VERSION`.
pub fn image_tag(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    last.split_once(':')
        .map(|(_, t)| t.to_string())
        .unwrap_or_default()
}
