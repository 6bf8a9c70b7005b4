//! Upstream's ServingRuntime rules: names, ports, mounts and volumes the controller injects
//! may not be used by the runtime's own containers, and a built-in adapter must be a known
//! server type with a container of that name. Ours on top: a runtime is a pod anyone allowed to
//! write ServingRuntimes gets the controller to run, so privileged containers, added
//! capabilities, host ports and hostPath volumes are refused unless `model-serving-config`
//! allows them (`allowPrivilegedRuntimes`, `allowHostPathRuntimes`). Pure; the reconciler
//! reports failures as events and a condition.

use crate::crd::serving_runtime::ServingRuntimeSpec;

/// Container names the controller uses itself.
const RESERVED_CONTAINERS: [&str; 3] = ["mm", "rest-proxy", "puller"];
/// Volume names the controller mounts itself.
const RESERVED_VOLUMES: [&str; 5] = [
    "storage-config",
    "etcd-config",
    "tc-config",
    "domain-socket",
    "models-dir",
];
/// Port names the controller uses itself.
const RESERVED_PORT_NAMES: [&str; 4] = ["grpc", "mgmt", "http", "prometheus"];
/// Ports the sidecar and adapter listen on inside the pod.
const RESERVED_PORTS: [i32; 5] = [8034, 8080, 8085, 8089, 8090];

/// What the operator allows runtimes beyond an ordinary pod.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuntimePolicy {
    /// Privileged containers, privilege escalation, added capabilities and host ports.
    pub allow_privileged: bool,
    /// `hostPath` volumes.
    pub allow_host_path: bool,
}

/// Adapter settings a runtime's `builtInAdapter.env` may not set: they widen what storage the
/// adapter reads or where (an operator's choice, not a runtime author's).
const PROTECTED_ADAPTER_ENV: [&str; 5] = [
    "MODELMESH_ALLOW_LOCAL_STORAGE",
    "MODELMESH_STORAGE_ALLOW_LOOPBACK",
    "PVC_MOUNTS_DIR",
    "STORAGE_CONFIG_DIR",
    "ROOT_MODEL_DIR",
];

/// Every problem with a runtime spec, each naming the field and the rule.
pub fn validate(
    spec: &ServingRuntimeSpec,
    built_in_server_types: &[String],
    policy: RuntimePolicy,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(a) = &spec.built_in_adapter {
        match a.server_type.as_deref() {
            None | Some("") => out.push("builtInAdapter.serverType must be set".to_string()),
            Some(t) if !built_in_server_types.iter().any(|b| b == t) => out.push(format!(
                "builtInAdapter.serverType '{t}' is not one of the built-in server types ({})",
                built_in_server_types.join(", ")
            )),
            Some(t) if !spec.containers.iter().any(|c| c.name == t) => out.push(format!(
                "builtInAdapter.serverType '{t}' needs a container named '{t}'"
            )),
            _ => {}
        }
    }
    if let Some(a) = &spec.built_in_adapter {
        for e in &a.env {
            if PROTECTED_ADAPTER_ENV.contains(&e.name.as_str()) {
                out.push(format!(
                    "builtInAdapter.env {} is set by the controller only (it decides what storage the adapter may read)",
                    e.name
                ));
            }
        }
    }
    for c in &spec.containers {
        let n = &c.name;
        if !policy.allow_privileged {
            let sc = c.security_context.as_ref();
            let unconfined =
                |p: Option<&str>| p.is_some_and(|t| t.eq_ignore_ascii_case("Unconfined"));
            if sc
                .and_then(|s| s.se_linux_options.as_ref())
                .and_then(|o| o.type_.as_deref())
                .is_some_and(|t| t == "spc_t")
            {
                out.push(format!(
                    "container '{n}': securityContext.seLinuxOptions.type spc_t (unconfined) is not allowed (set allowPrivilegedRuntimes in model-serving-config to allow it)"
                ));
            }
            if unconfined(
                sc.and_then(|s| s.seccomp_profile.as_ref())
                    .map(|p| p.type_.as_str()),
            ) || unconfined(
                sc.and_then(|s| s.app_armor_profile.as_ref())
                    .map(|p| p.type_.as_str()),
            ) {
                out.push(format!(
                    "container '{n}': an Unconfined seccomp or AppArmor profile is not allowed (set allowPrivilegedRuntimes in model-serving-config to allow it)"
                ));
            }
            if sc
                .and_then(|s| s.proc_mount.as_deref())
                .is_some_and(|m| m == "Unmasked")
            {
                out.push(format!(
                    "container '{n}': securityContext.procMount Unmasked is not allowed (set allowPrivilegedRuntimes in model-serving-config to allow it)"
                ));
            }
            if sc.and_then(|s| s.privileged) == Some(true) {
                out.push(format!(
                    "container '{n}': securityContext.privileged is not allowed (set allowPrivilegedRuntimes in model-serving-config to allow it)"
                ));
            }
            if sc.and_then(|s| s.allow_privilege_escalation) == Some(true) {
                out.push(format!(
                    "container '{n}': securityContext.allowPrivilegeEscalation is not allowed (set allowPrivilegedRuntimes in model-serving-config to allow it)"
                ));
            }
            let added = sc
                .and_then(|s| s.capabilities.as_ref())
                .and_then(|c| c.add.as_ref())
                .filter(|a| !a.is_empty());
            if let Some(a) = added {
                out.push(format!(
                    "container '{n}': securityContext.capabilities.add ({}) is not allowed (set allowPrivilegedRuntimes in model-serving-config to allow it)",
                    a.join(", ")
                ));
            }
            for p in c.ports.iter().flatten() {
                if p.host_port.is_some_and(|h| h != 0) {
                    out.push(format!(
                        "container '{n}': port {} has a hostPort, which is not allowed (set allowPrivilegedRuntimes in model-serving-config to allow it)",
                        p.container_port
                    ));
                }
            }
        }
        if RESERVED_CONTAINERS.contains(&n.as_str()) || n.starts_with("mm-") {
            out.push(format!(
                "container name '{n}' is reserved (mm, rest-proxy, puller, mm-*)"
            ));
        }
        if c.readiness_probe.is_some() {
            out.push(format!(
                "container '{n}': readinessProbe is not allowed (the mesh sidecar decides readiness)"
            ));
        }
        if c.lifecycle.is_some() {
            out.push(format!(
                "container '{n}': lifecycle is not allowed (the controller sets the preStop hook)"
            ));
        }
        for m in c.volume_mounts.iter().flatten() {
            if RESERVED_VOLUMES[..4].contains(&m.name.as_str()) {
                out.push(format!(
                    "container '{n}': volume mount '{}' is reserved",
                    m.name
                ));
            }
        }
        for p in c.ports.iter().flatten() {
            if let Some(pn) = &p.name
                && (RESERVED_PORT_NAMES.contains(&pn.as_str()) || pn.starts_with("mm-"))
            {
                out.push(format!(
                    "container '{n}': port name '{pn}' is reserved (grpc, mgmt, http, prometheus, mm-*)"
                ));
            }
            let port = p.container_port;
            if RESERVED_PORTS.contains(&port) || (11881..=11899).contains(&port) {
                out.push(format!(
                    "container '{n}': port {port} is reserved (8034, 8080, 8085, 8089, 8090, 11881-11899)"
                ));
            }
        }
    }
    for v in &spec.volumes {
        // Runtime pods mount no service-account token; a projected one would bring it back.
        let token = v.projected.as_ref().is_some_and(|p| {
            p.sources
                .iter()
                .flatten()
                .any(|s| s.service_account_token.is_some())
        });
        if token && !policy.allow_privileged {
            out.push(format!(
                "volume '{}': a projected service-account token is not allowed (runtime pods call no Kubernetes API; set allowPrivilegedRuntimes in model-serving-config to allow it)",
                v.name
            ));
        }
        if v.host_path.is_some() && !policy.allow_host_path {
            out.push(format!(
                "volume '{}': hostPath volumes are not allowed (set allowHostPathRuntimes in model-serving-config to allow them)",
                v.name
            ));
        }
        if RESERVED_VOLUMES.contains(&v.name.as_str()) || v.name.starts_with("mm-") {
            out.push(format!(
                "volume name '{}' is reserved (storage-config, etcd-config, tc-config, domain-socket, models-dir, mm-*)",
                v.name
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::serving_runtime::BuiltInAdapter;
    use k8s_openapi::api::core::v1::{
        Capabilities, Container, ContainerPort, HostPathVolumeSource, Probe, SecurityContext,
        Volume, VolumeMount,
    };

    fn types() -> Vec<String> {
        vec!["triton".into(), "mlserver".into()]
    }

    fn runtime(c: Container) -> ServingRuntimeSpec {
        ServingRuntimeSpec {
            containers: vec![c],
            built_in_adapter: Some(BuiltInAdapter {
                server_type: Some("triton".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn named(n: &str) -> Container {
        Container {
            name: n.into(),
            ..Default::default()
        }
    }

    #[test]
    fn privileges_pass_only_where_the_operator_allows_them() {
        let spec = ServingRuntimeSpec {
            volumes: vec![Volume {
                name: "gpu-drivers".into(),
                host_path: Some(HostPathVolumeSource {
                    path: "/usr/local/nvidia".into(),
                    type_: None,
                }),
                ..Default::default()
            }],
            ..runtime(Container {
                security_context: Some(SecurityContext {
                    privileged: Some(true),
                    ..Default::default()
                }),
                ..named("triton")
            })
        };
        assert_eq!(validate(&spec, &types(), RuntimePolicy::default()).len(), 2);
        let all = RuntimePolicy {
            allow_privileged: true,
            allow_host_path: true,
        };
        assert!(validate(&spec, &types(), all).is_empty());
    }

    #[test]
    fn a_good_runtime_passes() {
        assert!(
            validate(
                &runtime(named("triton")),
                &types(),
                RuntimePolicy::default()
            )
            .is_empty()
        );
    }

    #[test]
    fn each_rule_names_the_problem() {
        let cases: Vec<(ServingRuntimeSpec, &str)> = vec![
            (runtime(named("other")), "needs a container named 'triton'"),
            (
                ServingRuntimeSpec {
                    built_in_adapter: Some(BuiltInAdapter {
                        server_type: Some("ovms".into()),
                        ..Default::default()
                    }),
                    ..runtime(named("ovms"))
                },
                "not one of the built-in server types",
            ),
            (
                ServingRuntimeSpec {
                    containers: vec![named("triton"), named("mm-extra")],
                    ..runtime(named("triton"))
                },
                "'mm-extra' is reserved",
            ),
            (
                runtime(Container {
                    readiness_probe: Some(Probe::default()),
                    ..named("triton")
                }),
                "readinessProbe",
            ),
            (
                runtime(Container {
                    volume_mounts: Some(vec![VolumeMount {
                        name: "tc-config".into(),
                        mount_path: "/x".into(),
                        ..Default::default()
                    }]),
                    ..named("triton")
                }),
                "volume mount 'tc-config'",
            ),
            (
                runtime(Container {
                    ports: Some(vec![ContainerPort {
                        name: Some("grpc".into()),
                        container_port: 9000,
                        ..Default::default()
                    }]),
                    ..named("triton")
                }),
                "port name 'grpc'",
            ),
            (
                runtime(Container {
                    ports: Some(vec![ContainerPort {
                        container_port: 11885,
                        ..Default::default()
                    }]),
                    ..named("triton")
                }),
                "port 11885 is reserved",
            ),
            (
                ServingRuntimeSpec {
                    volumes: vec![Volume {
                        name: "models-dir".into(),
                        ..Default::default()
                    }],
                    ..runtime(named("triton"))
                },
                "volume name 'models-dir'",
            ),
            (
                runtime(Container {
                    security_context: Some(SecurityContext {
                        privileged: Some(true),
                        ..Default::default()
                    }),
                    ..named("triton")
                }),
                "securityContext.privileged",
            ),
            (
                runtime(Container {
                    security_context: Some(SecurityContext {
                        allow_privilege_escalation: Some(true),
                        ..Default::default()
                    }),
                    ..named("triton")
                }),
                "allowPrivilegeEscalation",
            ),
            (
                runtime(Container {
                    security_context: Some(SecurityContext {
                        capabilities: Some(Capabilities {
                            add: Some(vec!["SYS_ADMIN".into()]),
                            drop: None,
                        }),
                        ..Default::default()
                    }),
                    ..named("triton")
                }),
                "capabilities.add (SYS_ADMIN)",
            ),
            (
                runtime(Container {
                    ports: Some(vec![ContainerPort {
                        container_port: 9000,
                        host_port: Some(9000),
                        ..Default::default()
                    }]),
                    ..named("triton")
                }),
                "hostPort",
            ),
            (
                runtime(Container {
                    security_context: Some(SecurityContext {
                        se_linux_options: Some(k8s_openapi::api::core::v1::SELinuxOptions {
                            type_: Some("spc_t".into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..named("triton")
                }),
                "spc_t",
            ),
            (
                runtime(Container {
                    security_context: Some(SecurityContext {
                        seccomp_profile: Some(k8s_openapi::api::core::v1::SeccompProfile {
                            type_: "Unconfined".into(),
                            localhost_profile: None,
                        }),
                        ..Default::default()
                    }),
                    ..named("triton")
                }),
                "Unconfined",
            ),
            (
                ServingRuntimeSpec {
                    built_in_adapter: Some(BuiltInAdapter {
                        server_type: Some("triton".into()),
                        env: vec![k8s_openapi::api::core::v1::EnvVar {
                            name: "MODELMESH_ALLOW_LOCAL_STORAGE".into(),
                            value: Some("true".into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    ..runtime(named("triton"))
                },
                "builtInAdapter.env MODELMESH_ALLOW_LOCAL_STORAGE",
            ),
            (
                ServingRuntimeSpec {
                    volumes: vec![Volume {
                        name: "token".into(),
                        projected: Some(k8s_openapi::api::core::v1::ProjectedVolumeSource {
                            sources: Some(vec![k8s_openapi::api::core::v1::VolumeProjection {
                                service_account_token: Some(
                                    k8s_openapi::api::core::v1::ServiceAccountTokenProjection {
                                        path: "token".into(),
                                        ..Default::default()
                                    },
                                ),
                                ..Default::default()
                            }]),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..runtime(named("triton"))
                },
                "projected service-account token",
            ),
            (
                ServingRuntimeSpec {
                    volumes: vec![Volume {
                        name: "root".into(),
                        host_path: Some(HostPathVolumeSource {
                            path: "/".into(),
                            type_: None,
                        }),
                        ..Default::default()
                    }],
                    ..runtime(named("triton"))
                },
                "hostPath volumes are not allowed",
            ),
        ];
        for (spec, want) in cases {
            let problems = validate(&spec, &types(), RuntimePolicy::default());
            assert!(
                problems.iter().any(|p| p.contains(want)),
                "expected '{want}' in {problems:?}"
            );
        }
    }
}
