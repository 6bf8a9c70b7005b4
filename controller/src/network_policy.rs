//! The NetworkPolicy of a namespace's runtime pods: inference (gRPC and REST) from the
//! configured clients (anyone by default), the ModelMesh management API only from the
//! controller's pods (and configured clients), the internal port only from the mesh's own pods,
//! metrics from the configured scrapers, probes from anyone. Everything else of the pod (the
//! adapter, the runtime) listens on loopback; the preStop port is the kubelet's. Without it any pod in the cluster could
//! re-point vmodels, call a peer's internal port or read metrics. Pure.

use crate::config::Config;
use crate::deployment::object_meta as meta;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// The label the controller's own pods carry (the chart's Deployment).
pub const CONTROLLER_POD_LABEL: (&str, &str) = ("control-plane", "modelmesh-controller");

fn selector(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    }
}

fn ports(ps: &[u16]) -> Option<Vec<NetworkPolicyPort>> {
    Some(
        ps.iter()
            .map(|p| NetworkPolicyPort {
                port: Some(IntOrString::Int(i32::from(*p))),
                protocol: Some("TCP".into()),
                ..Default::default()
            })
            .collect(),
    )
}

/// A rule admitting `from` (None: any source) to `ps`.
fn rule(ps: &[u16], from: Option<Vec<NetworkPolicyPeer>>) -> NetworkPolicyIngressRule {
    NetworkPolicyIngressRule {
        ports: ports(ps),
        from,
    }
}

/// Peers as configured: an empty list means any source.
fn configured(peers: &[NetworkPolicyPeer]) -> Option<Vec<NetworkPolicyPeer>> {
    (!peers.is_empty()).then(|| peers.to_vec())
}

/// The policy for `namespace` (None when `networkPolicy.enabled` is off).
pub fn network_policy(
    cfg: &Config,
    namespace: &str,
    controller_namespace: &str,
) -> Option<NetworkPolicy> {
    let np = &cfg.network_policy;
    if !np.enabled {
        return None;
    }
    let service = cfg.inference_service_name.as_str();
    let mesh_pods = selector(&[("modelmesh-service", service)]);
    let mut inference = vec![cfg.inference_service_port];
    if cfg.rest_proxy.enabled {
        inference.push(cfg.rest_proxy.port);
    }
    let mut rules = vec![rule(&inference, configured(&np.inference_from))];
    if cfg.management_port != 0 {
        let mut from = vec![NetworkPolicyPeer {
            namespace_selector: Some(selector(&[(
                "kubernetes.io/metadata.name",
                controller_namespace,
            )])),
            pod_selector: Some(selector(&[CONTROLLER_POD_LABEL])),
            ..Default::default()
        }];
        from.extend(np.management_from.iter().cloned());
        rules.push(rule(&[cfg.management_port], Some(from)));
    }
    // Pods of this mesh only (the same namespace: a NetworkPolicyPeer with only a pod
    // selector means this namespace).
    rules.push(rule(
        &[crate::deployment::INTERNAL_PORT],
        Some(vec![NetworkPolicyPeer {
            pod_selector: Some(mesh_pods.clone()),
            ..Default::default()
        }]),
    ));
    if cfg.metrics.enabled {
        rules.push(rule(&[cfg.metrics.port], configured(&np.metrics_from)));
    }
    // Readiness and liveness (the kubelet's, from the node; they tell nothing else). The
    // preStop port stays closed to pods: it starts moving the pod's models away.
    rules.push(rule(&[crate::deployment::PROBE_PORT as u16], None));
    Some(NetworkPolicy {
        metadata: meta(service, namespace),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(mesh_pods),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(rules),
            ..Default::default()
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports_of(r: &NetworkPolicyIngressRule) -> Vec<i32> {
        r.ports
            .iter()
            .flatten()
            .filter_map(|p| match p.port {
                Some(IntOrString::Int(n)) => Some(n),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn each_port_admits_only_its_callers() {
        let mut cfg = Config::default();
        cfg.network_policy.enabled = true;
        let p = network_policy(&cfg, "team-a", "modelmesh-serving").unwrap_or_default();
        let spec = p.spec.unwrap_or_default();
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
        let rules = spec.ingress.unwrap_or_default();
        let by_port = |port: i32| {
            rules
                .iter()
                .find(|r| ports_of(r).contains(&port))
                .cloned()
                .unwrap_or_default()
        };
        // Inference from anyone.
        assert!(by_port(8033).from.is_none() && by_port(8008).from.is_none());
        // Management from the controller's pods in its namespace.
        let mgmt = by_port(i32::from(cfg.management_port))
            .from
            .unwrap_or_default();
        assert_eq!(mgmt.len(), 1);
        let ns = mgmt[0].namespace_selector.clone().unwrap_or_default();
        assert_eq!(
            ns.match_labels.unwrap_or_default()["kubernetes.io/metadata.name"],
            "modelmesh-serving"
        );
        assert!(mgmt[0].pod_selector.is_some());
        // The internal port from the mesh's own pods only.
        let internal = by_port(8080).from.unwrap_or_default();
        assert_eq!(internal.len(), 1);
        assert!(internal[0].namespace_selector.is_none());
        assert_eq!(
            internal[0]
                .pod_selector
                .clone()
                .unwrap_or_default()
                .match_labels,
            spec.pod_selector.unwrap_or_default().match_labels
        );
        // Nothing for the adapter or the runtime.
        assert!(
            rules
                .iter()
                .all(|r| !ports_of(r).contains(&8085) && !ports_of(r).contains(&8001))
        );
        cfg.network_policy.enabled = false;
        assert!(network_policy(&cfg, "team-a", "modelmesh-serving").is_none());
    }
}
