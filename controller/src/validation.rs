//! Upstream's ServingRuntime rules: names, ports, mounts and volumes the controller injects
//! may not be used by the runtime's own containers, and a built-in adapter must be a known
//! server type with a container of that name. Pure; the reconciler reports failures as events
//! and a condition.

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
const RESERVED_PORT_NAMES: [&str; 3] = ["grpc", "http", "prometheus"];
/// Ports the sidecar and adapter listen on inside the pod.
const RESERVED_PORTS: [i32; 4] = [8080, 8085, 8089, 8090];

/// Every problem with a runtime spec, each naming the field and the rule.
pub fn validate(spec: &ServingRuntimeSpec, built_in_server_types: &[String]) -> Vec<String> {
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
    for c in &spec.containers {
        let n = &c.name;
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
                    "container '{n}': port name '{pn}' is reserved (grpc, http, prometheus, mm-*)"
                ));
            }
            let port = p.container_port;
            if RESERVED_PORTS.contains(&port) || (11881..=11899).contains(&port) {
                out.push(format!(
                    "container '{n}': port {port} is reserved (8080, 8085, 8089, 8090, 11881-11899)"
                ));
            }
        }
    }
    for v in &spec.volumes {
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
    use k8s_openapi::api::core::v1::{Container, ContainerPort, Probe, Volume, VolumeMount};

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
    fn a_good_runtime_passes() {
        assert!(validate(&runtime(named("triton")), &types()).is_empty());
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
        ];
        for (spec, want) in cases {
            let problems = validate(&spec, &types());
            assert!(
                problems.iter().any(|p| p.contains(want)),
                "expected '{want}' in {problems:?}"
            );
        }
    }
}
