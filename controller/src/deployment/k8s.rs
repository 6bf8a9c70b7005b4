//! Small builders for the pod's objects (env vars, mounts, security contexts, probes, the
//! preStop hook), so the renderers read as what they put where.

use super::{PRESTOP_PORT, PROBE_PORT};
use k8s_openapi::api::core::v1::{
    Capabilities, EnvVar, EnvVarSource, HTTPGetAction, Lifecycle, LifecycleHandler,
    ObjectFieldSelector, Probe, SecurityContext, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// `name=value`.
pub fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// An env var from a field of the pod (`metadata.name`, `status.podIP`, ...).
pub fn field_env(name: &str, path: &str) -> EnvVar {
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

/// Sets `e` in `list`, replacing a variable of the same name.
pub fn set_env(list: &mut Vec<EnvVar>, e: EnvVar) {
    match list.iter_mut().find(|x| x.name == e.name) {
        Some(x) => *x = e,
        None => list.push(e),
    }
}

/// A volume mount.
pub fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

/// Every capability dropped.
pub fn drop_all() -> Option<SecurityContext> {
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
pub fn hardened() -> Option<SecurityContext> {
    Some(SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        ..drop_all()?
    })
}

/// The preStop hook that waits on the sidecar's `/prestop` until this pod's models moved.
pub fn prestop_http() -> Option<Lifecycle> {
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

/// An HTTP probe on the sidecar's probe port.
pub fn http_probe(path: &str, initial: i32, period: i32, timeout: i32, failures: i32) -> Probe {
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
