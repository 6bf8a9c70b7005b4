//! What one served namespace should contain, from its runtimes, its predictors and the config:
//! the `tc-config` ConfigMap (type constraints and dataplane config), the inference Service,
//! the namespace's copy of the etcd secret, one Deployment per enabled multi-model runtime
//! (replicas from the runtime or the config, scaled to zero after a grace period when no
//! predictor needs it), and the runtime Deployments to delete. Pure over a clock; the
//! reconciler applies the plan.

use crate::config::Config;
use crate::crd::serving_runtime::ServingRuntimeSpec;
use crate::deployment::{RuntimeInput, object_meta as meta, render};
use crate::labels::{dataplane_config, runtime_labels, supports, type_constraints};
use crate::validation::validate;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

/// Key of the etcd connection JSON in the etcd secret.
pub const ETCD_KEY: &str = "etcd_connection";

/// A runtime as the plan sees it (a namespace's ServingRuntime wins over a
/// ClusterServingRuntime of the same name).
#[derive(Debug, Clone)]
pub struct Runtime {
    /// Name.
    pub name: String,
    /// Spec.
    pub spec: ServingRuntimeSpec,
    /// Metadata annotations.
    pub annotations: BTreeMap<String, String>,
}

/// The inputs of one namespace's plan.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// The namespace.
    pub namespace: &'a str,
    /// The controller's namespace (its etcd secret is used there directly).
    pub controller_namespace: &'a str,
    /// The config.
    pub config: &'a Config,
    /// The etcd secret's name.
    pub etcd_secret_name: &'a str,
    /// The controller namespace's `etcd_connection` JSON, if readable.
    pub etcd_connection: Option<&'a str>,
    /// Runtimes visible in the namespace.
    pub runtimes: &'a [Runtime],
    /// Placement labels of the namespace's predictors and ModelMesh InferenceServices.
    pub predictor_labels: &'a [String],
    /// PVCs to mount into runtime pods (sorted).
    pub pvcs: &'a [String],
    /// Runtime Deployments that exist now (names).
    pub existing_deployments: &'a [String],
    /// Now, ms.
    pub now_ms: i64,
}

/// When each runtime of a namespace last had no predictor (for scale-to-zero).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScaleState {
    /// Runtime → ms since it has had no predictor; absent: never needed since the controller
    /// started (counts as long ago, so a new runtime starts at zero).
    pub empty_since: HashMap<String, i64>,
    /// Runtimes that had a predictor at the last plan.
    pub needed: BTreeSet<String>,
}

/// A problem to report on a runtime (an event and a log line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeProblem {
    /// Runtime.
    pub runtime: String,
    /// What is wrong.
    pub message: String,
}

/// What the namespace should contain.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// tc-config (None: delete it, no runtimes).
    pub tc_config: Option<ConfigMap>,
    /// The inference Service.
    pub service: Option<Service>,
    /// The namespace's etcd secret (None: none needed, or delete the copy).
    pub etcd_secret: Option<Secret>,
    /// Whether the etcd secret copy should be deleted.
    pub delete_etcd_secret: bool,
    /// Deployments to apply.
    pub deployments: Vec<Deployment>,
    /// Deployment names to delete.
    pub delete_deployments: Vec<String>,
    /// Invalid runtimes.
    pub problems: Vec<RuntimeProblem>,
    /// When to look again (a scale-to-zero grace period running out).
    pub requeue_after: Option<Duration>,
    /// Leave tc-config and the etcd secret as they are (an invalid runtime's Deployment still
    /// runs and mounts them).
    pub keep_shared: bool,
    /// The runtime pods' NetworkPolicy (None: delete ours, if any).
    pub network_policy: Option<k8s_openapi::api::networking::v1::NetworkPolicy>,
}

/// The namespace's copy of the etcd connection: the same, with `root_prefix` moved under
/// `<root>/mm_ns/<namespace>` so namespaces never share keys.
pub fn namespaced_etcd_connection(json: &str, namespace: &str) -> Option<String> {
    let mut v: serde_json::Value = serde_json::from_str(json).ok()?;
    let root = v
        .get("root_prefix")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("")
        .trim_end_matches('/')
        .to_string();
    v.as_object_mut()?.insert(
        "root_prefix".into(),
        serde_json::Value::String(modelmesh_kv::layout::namespace_root(&root, namespace)),
    );
    Some(v.to_string())
}

/// Plans one namespace; `scale` is updated.
pub fn plan(i: &Inputs, scale: &mut ScaleState) -> Plan {
    let cfg = i.config;
    let mut p = Plan::default();
    let mut enabled: Vec<&Runtime> = Vec::new();
    for rt in i.runtimes {
        let problems = validate(&rt.spec, &cfg.built_in_server_types, cfg.runtime_policy());
        if !problems.is_empty() {
            p.problems
                .extend(problems.into_iter().map(|m| RuntimeProblem {
                    runtime: rt.name.clone(),
                    message: m,
                }));
            continue;
        }
        if rt.spec.multi_model == Some(true) && rt.spec.disabled != Some(true) {
            enabled.push(rt);
        }
    }
    // Deployments of runtimes gone, disabled or no longer multi-model.
    let wanted: BTreeSet<String> = enabled
        .iter()
        .map(|r| crate::deployment::name(cfg, &r.name))
        .collect();
    let invalid: BTreeSet<String> = p
        .problems
        .iter()
        .map(|x| crate::deployment::name(cfg, &x.runtime))
        .collect();
    p.delete_deployments = i
        .existing_deployments
        .iter()
        .filter(|d| !wanted.contains(*d) && !invalid.contains(*d))
        .cloned()
        .collect();
    if enabled.is_empty() {
        p.keep_shared = i.existing_deployments.iter().any(|d| invalid.contains(d));
        p.delete_etcd_secret = !p.keep_shared && i.namespace != i.controller_namespace;
        return p;
    }
    let labels: BTreeMap<String, BTreeSet<String>> = enabled
        .iter()
        .map(|r| {
            (
                r.name.clone(),
                runtime_labels(&r.name, &r.spec, cfg.rest_proxy.enabled),
            )
        })
        .collect();
    let mut tc = ConfigMap {
        metadata: meta("tc-config", i.namespace),
        ..Default::default()
    };
    tc.binary_data = Some(BTreeMap::from([
        (
            "type_constraints".to_string(),
            ByteString(type_constraints(&labels).to_string().into_bytes()),
        ),
        (
            "dataplane_api_config".to_string(),
            ByteString(dataplane_config().to_string().into_bytes()),
        ),
    ]));
    p.tc_config = Some(tc);
    p.service = Some(service(cfg, i.namespace));
    p.network_policy =
        crate::network_policy::network_policy(cfg, i.namespace, i.controller_namespace);
    let etcd_secret = if i.namespace == i.controller_namespace {
        i.etcd_secret_name.to_string()
    } else {
        match i
            .etcd_connection
            .and_then(|j| namespaced_etcd_connection(j, i.namespace))
        {
            Some(conn) => {
                let mut s = Secret {
                    metadata: meta(i.etcd_secret_name, i.namespace),
                    ..Default::default()
                };
                s.string_data = Some(BTreeMap::from([(ETCD_KEY.to_string(), conn)]));
                p.etcd_secret = Some(s);
            }
            None => p.problems.push(RuntimeProblem {
                runtime: String::new(),
                message: format!(
                    "secret {}/{} has no valid {ETCD_KEY} to copy",
                    i.controller_namespace, i.etcd_secret_name
                ),
            }),
        }
        i.etcd_secret_name.to_string()
    };
    for rt in enabled {
        let mut replicas = rt
            .spec
            .replicas
            .map(i32::from)
            .unwrap_or(i32::from(cfg.pods_per_runtime));
        let rt_labels = &labels[&rt.name];
        let needed = i.predictor_labels.iter().any(|l| supports(rt_labels, l));
        if cfg.scale_to_zero.enabled {
            if needed {
                scale.empty_since.remove(&rt.name);
                scale.needed.insert(rt.name.clone());
            } else {
                let since = match scale.empty_since.get(&rt.name) {
                    Some(t) => *t,
                    None if scale.needed.remove(&rt.name) => {
                        scale.empty_since.insert(rt.name.clone(), i.now_ms);
                        i.now_ms
                    }
                    None => i64::MIN,
                };
                let grace = cfg.scale_to_zero.grace_period_seconds as i64 * 1000;
                let left = since.saturating_add(grace).saturating_sub(i.now_ms);
                if left > 0 {
                    let d = Duration::from_millis(left as u64);
                    p.requeue_after = Some(p.requeue_after.map_or(d, |r| r.min(d)));
                } else {
                    replicas = 0;
                }
            }
        }
        p.deployments.push(render(
            &RuntimeInput {
                name: &rt.name,
                spec: &rt.spec,
                annotations: &rt.annotations,
                replicas,
                pvcs: i.pvcs,
                etcd_secret: &etcd_secret,
            },
            cfg,
        ));
    }
    p
}

/// The inference Service: gRPC, REST (when enabled) and metrics (when enabled) ports, headless
/// by default so clients balance over pods.
pub fn service(cfg: &Config, namespace: &str) -> Service {
    let mut selector = BTreeMap::new();
    selector.insert(
        "modelmesh-service".to_string(),
        cfg.inference_service_name.clone(),
    );
    let mut m = meta(&cfg.inference_service_name, namespace);
    if let Some(l) = m.labels.as_mut() {
        l.extend(selector.clone());
    }
    let ports: Vec<ServicePort> = cfg
        .ports()
        .into_iter()
        .map(|(name, p)| ServicePort {
            name: Some(name.into()),
            port: i32::from(p),
            target_port: Some(IntOrString::String(name.into())),
            protocol: Some("TCP".into()),
            ..Default::default()
        })
        .collect();
    Service {
        metadata: m,
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(ports),
            cluster_ip: cfg.headless_service.then(|| "None".to_string()),
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::serving_runtime::{BuiltInAdapter, SupportedModelFormat};
    use k8s_openapi::api::core::v1::Container;

    fn mlserver(disabled: bool) -> Runtime {
        Runtime {
            name: "mlserver-1.x".into(),
            spec: ServingRuntimeSpec {
                supported_model_formats: vec![SupportedModelFormat {
                    name: "sklearn".into(),
                    version: Some("0".into()),
                    auto_select: Some(true),
                    priority: None,
                }],
                multi_model: Some(true),
                disabled: Some(disabled),
                protocol_versions: vec!["grpc-v2".into()],
                grpc_endpoint: Some("port:8085".into()),
                grpc_data_endpoint: Some("port:8001".into()),
                containers: vec![Container {
                    name: "mlserver".into(),
                    image: Some("seldonio/mlserver:1.3.2".into()),
                    ..Default::default()
                }],
                built_in_adapter: Some(BuiltInAdapter {
                    server_type: Some("mlserver".into()),
                    runtime_management_port: Some(8001),
                    ..Default::default()
                }),
                ..Default::default()
            },
            annotations: BTreeMap::new(),
        }
    }

    fn inputs<'a>(
        cfg: &'a Config,
        rts: &'a [Runtime],
        labels: &'a [String],
        now: i64,
    ) -> Inputs<'a> {
        Inputs {
            namespace: "team-a",
            controller_namespace: "modelmesh-serving",
            config: cfg,
            etcd_secret_name: "model-serving-etcd",
            etcd_connection: Some(
                r#"{"endpoints":"http://etcd:2379","root_prefix":"modelmesh-serving"}"#,
            ),
            runtimes: rts,
            predictor_labels: labels,
            pvcs: &[],
            existing_deployments: &[],
            now_ms: now,
        }
    }

    fn replicas(p: &Plan) -> i32 {
        p.deployments[0].spec.as_ref().unwrap().replicas.unwrap()
    }

    #[test]
    fn a_needed_runtime_gets_objects_and_replicas() {
        let cfg = Config::default();
        let rts = [mlserver(false)];
        let labels = ["mt:sklearn".to_string()];
        let mut s = ScaleState::default();
        let p = plan(&inputs(&cfg, &rts, &labels, 0), &mut s);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert_eq!(replicas(&p), 2);
        let tc = p.tc_config.unwrap().binary_data.unwrap();
        let constraints: serde_json::Value =
            serde_json::from_slice(&tc["type_constraints"].0).unwrap();
        assert_eq!(constraints["mt:sklearn"]["required"][0], "mt:sklearn");
        let svc = p.service.unwrap().spec.unwrap();
        assert_eq!(svc.cluster_ip.as_deref(), Some("None"));
        // grpc, mgmt, http, prometheus.
        assert_eq!(svc.ports.unwrap().len(), 4);
        assert!(p.network_policy.is_some());
        let secret = p.etcd_secret.unwrap().string_data.unwrap();
        let conn: serde_json::Value = serde_json::from_str(&secret[ETCD_KEY]).unwrap();
        assert_eq!(conn["root_prefix"], "modelmesh-serving/mm_ns/team-a");
        assert_eq!(conn["endpoints"], "http://etcd:2379");
    }

    #[test]
    fn scale_to_zero_and_back() {
        let cfg = Config::default();
        let rts = [mlserver(false)];
        let mut s = ScaleState::default();
        // New runtime, nothing needs it: zero at once.
        let p = plan(&inputs(&cfg, &rts, &[], 0), &mut s);
        assert_eq!((replicas(&p), p.requeue_after), (0, None));
        // A predictor arrives: up.
        let labels = ["mt:sklearn".to_string()];
        assert_eq!(
            replicas(&plan(&inputs(&cfg, &rts, &labels, 1_000), &mut s)),
            2
        );
        // It goes: stays up for the grace period, then zero.
        let p = plan(&inputs(&cfg, &rts, &[], 10_000), &mut s);
        assert_eq!(replicas(&p), 2);
        assert_eq!(p.requeue_after, Some(Duration::from_secs(60)));
        let p = plan(&inputs(&cfg, &rts, &[], 40_000), &mut s);
        assert_eq!(
            (replicas(&p), p.requeue_after),
            (2, Some(Duration::from_secs(30)))
        );
        let p = plan(&inputs(&cfg, &rts, &[], 70_001), &mut s);
        assert_eq!(replicas(&p), 0);
        // Disabled scale-to-zero keeps replicas.
        let mut no = Config::default();
        no.scale_to_zero.enabled = false;
        assert_eq!(
            replicas(&plan(
                &inputs(&no, &rts, &[], 0),
                &mut ScaleState::default()
            )),
            2
        );
    }

    #[test]
    fn disabled_invalid_and_gone_runtimes() {
        let cfg = Config::default();
        let existing = vec![
            "modelmesh-serving-mlserver-1.x".to_string(),
            "modelmesh-serving-old".to_string(),
        ];
        let rts = [mlserver(true)];
        let mut i = inputs(&cfg, &rts, &[], 0);
        i.existing_deployments = &existing;
        let p = plan(&i, &mut ScaleState::default());
        assert!(p.deployments.is_empty() && p.tc_config.is_none());
        assert_eq!(p.delete_deployments, existing);
        assert!(p.delete_etcd_secret);
        // An invalid runtime is reported; its Deployment is left as it is.
        let mut bad = mlserver(false);
        bad.spec.containers[0].name = "mm".into();
        let rts = [bad];
        let mut i = inputs(&cfg, &rts, &[], 0);
        i.existing_deployments = &existing;
        let p = plan(&i, &mut ScaleState::default());
        assert!(!p.problems.is_empty());
        assert_eq!(
            p.delete_deployments,
            vec!["modelmesh-serving-old".to_string()]
        );
    }
}
