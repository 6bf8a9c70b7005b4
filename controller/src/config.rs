//! The `model-serving-config` ConfigMap (key `config.yaml`): upstream's keys and defaults. Our
//! own image runs the adapter and the mesh sidecar, so the image defaults name it; everything
//! else keeps upstream's values.

use k8s_openapi::api::core::v1::{EnvVar, LocalObjectReference, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The image that runs `modelmesh adapter` and `modelmesh sidecar` unless configured.
pub const DEFAULT_IMAGE: &str = "modelmesh/modelmesh";

/// Why a config cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid model-serving-config: {0}")]
pub struct ConfigError(pub String);

/// The controller's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Config {
    /// Name of the inference Service (and prefix of runtime Deployments).
    pub inference_service_name: String,
    /// gRPC port of the inference Service.
    pub inference_service_port: u16,
    /// Pods per runtime unless the runtime sets `replicas`.
    pub pods_per_runtime: u16,
    /// Whether the Service is headless (clients balance over pods).
    pub headless_service: bool,
    /// The storage-config secret's name.
    pub storage_secret_name: String,
    /// Service account of runtime pods (empty: the namespace default).
    pub service_account_name: String,
    /// TLS for the mesh's ports.
    pub tls: Tls,
    /// Log every inference request.
    pub enable_access_logging: bool,
    /// Largest gRPC message, bytes.
    pub grpc_max_message_size_bytes: u64,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Scale runtimes without predictors to zero.
    pub scale_to_zero: ScaleToZero,
    /// KServe v2 REST (served by the mesh sidecar itself).
    pub rest_proxy: RestProxy,
    /// The mesh sidecar's image.
    pub model_mesh_image: Image,
    /// The mesh sidecar's resources.
    pub model_mesh_resources: ResourceRequirements,
    /// The adapter's (storage helper's) image.
    pub storage_helper_image: Image,
    /// The adapter's resources.
    pub storage_helper_resources: ResourceRequirements,
    /// Extra labels of runtime pods.
    pub runtime_pod_labels: BTreeMap<String, String>,
    /// Extra annotations of runtime pods.
    pub runtime_pod_annotations: BTreeMap<String, String>,
    /// Pull secrets of runtime pods.
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Mount any PVC a predictor names (not only those in storage-config).
    pub allow_any_pvc: bool,
    /// Run ServingRuntimes with privileged containers, added capabilities or host ports
    /// (ours; refused by default).
    pub allow_privileged_runtimes: bool,
    /// Run ServingRuntimes with hostPath volumes (ours; refused by default).
    pub allow_host_path_runtimes: bool,
    /// The mesh's ModelMesh API on a port of its own (ours; `managementPort`, 0: on the gRPC
    /// port as upstream), which the controller calls and the NetworkPolicy keeps to it.
    pub management_port: u16,
    /// The NetworkPolicy of runtime pods (ours).
    pub network_policy: NetworkPolicyConfig,
    /// Server types with a built-in adapter (`modelmesh` is our ONNX runtime).
    pub built_in_server_types: Vec<String>,
    /// Payload processors (`MM_PAYLOAD_PROCESSORS`).
    pub payload_processors: Vec<String>,
    /// Environment given to every mesh sidecar first (later entries override them).
    pub internal_model_mesh_env_vars: Vec<EnvVar>,
    /// (DEPRECATED: use the `ETCD_SECRET_NAME` environment variable) the etcd secret's name.
    pub etcd_secret_name: Option<String>,
    /// Development only: the mesh endpoint to call instead of the Service.
    pub model_mesh_endpoint: Option<String>,
}

/// `networkPolicy`: who may reach the runtime pods' ports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NetworkPolicyConfig {
    /// Render a NetworkPolicy in every served namespace.
    pub enabled: bool,
    /// Who may call inference (gRPC and REST); empty: anyone.
    pub inference_from: Vec<k8s_openapi::api::networking::v1::NetworkPolicyPeer>,
    /// Who besides the controller may call the management API.
    pub management_from: Vec<k8s_openapi::api::networking::v1::NetworkPolicyPeer>,
    /// Who may scrape metrics; empty: anyone.
    pub metrics_from: Vec<k8s_openapi::api::networking::v1::NetworkPolicyPeer>,
}

impl Default for NetworkPolicyConfig {
    fn default() -> Self {
        NetworkPolicyConfig {
            enabled: true,
            inference_from: Vec::new(),
            management_from: Vec::new(),
            metrics_from: Vec::new(),
        }
    }
}

/// `tls`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Tls {
    /// Secret with `tls.crt`, `tls.key` (and optional `ca.crt`).
    pub secret_name: String,
    /// `require` or `optional` client certificates.
    pub client_auth: String,
}

/// `metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Metrics {
    /// Expose Prometheus metrics.
    pub enabled: bool,
    /// Port.
    pub port: u16,
    /// `http` or `https`.
    pub scheme: String,
    /// Do not create a ServiceMonitor.
    pub disable_prometheus_operator_support: bool,
}

/// `scaleToZero`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ScaleToZero {
    /// Scale runtimes no predictor needs to zero.
    pub enabled: bool,
    /// How long a runtime stays up after its last predictor goes.
    pub grace_period_seconds: u64,
}

/// `restProxy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RestProxy {
    /// Serve KServe v2 REST.
    pub enabled: bool,
    /// Port.
    pub port: u16,
    /// Skip certificate verification towards the mesh (accepted; the sidecar serves REST itself).
    pub skip_verify: bool,
    /// Image (accepted; no separate proxy container is needed).
    pub image: Image,
    /// Resources (accepted; see `image`).
    pub resources: ResourceRequirements,
}

/// An image reference.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Image {
    /// Repository.
    pub name: String,
    /// Tag.
    pub tag: String,
    /// Digest (wins over the tag).
    pub digest: String,
    /// Command (storage helper only).
    pub command: Vec<String>,
}

impl Image {
    /// `name@digest`, `name:tag` or `name`.
    pub fn reference(&self) -> String {
        if !self.digest.is_empty() {
            format!("{}@{}", self.name, self.digest)
        } else if !self.tag.is_empty() {
            format!("{}:{}", self.name, self.tag)
        } else {
            self.name.clone()
        }
    }
}

fn resources(req: (&str, &str), lim: (&str, &str)) -> ResourceRequirements {
    let q = |cpu: &str, mem: &str| {
        BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.to_string())),
            ("memory".to_string(), Quantity(mem.to_string())),
        ])
    };
    ResourceRequirements {
        requests: Some(q(req.0, req.1)),
        limits: Some(q(lim.0, lim.1)),
        ..Default::default()
    }
}

fn our_image() -> Image {
    Image {
        name: DEFAULT_IMAGE.into(),
        tag: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            inference_service_name: "modelmesh-serving".into(),
            inference_service_port: 8033,
            pods_per_runtime: 2,
            headless_service: true,
            storage_secret_name: "storage-config".into(),
            service_account_name: String::new(),
            tls: Tls::default(),
            enable_access_logging: false,
            grpc_max_message_size_bytes: 16 * 1024 * 1024,
            metrics: Metrics::default(),
            scale_to_zero: ScaleToZero::default(),
            rest_proxy: RestProxy::default(),
            model_mesh_image: our_image(),
            model_mesh_resources: resources(("300m", "448Mi"), ("3", "448Mi")),
            storage_helper_image: our_image(),
            storage_helper_resources: resources(("50m", "96Mi"), ("2", "512Mi")),
            runtime_pod_labels: BTreeMap::new(),
            runtime_pod_annotations: BTreeMap::new(),
            image_pull_secrets: Vec::new(),
            allow_any_pvc: false,
            allow_privileged_runtimes: false,
            allow_host_path_runtimes: false,
            management_port: 8034,
            network_policy: NetworkPolicyConfig::default(),
            built_in_server_types: vec![
                "modelmesh".into(),
                "triton".into(),
                "mlserver".into(),
                "llamacpp".into(),
            ],
            payload_processors: Vec::new(),
            internal_model_mesh_env_vars: Vec::new(),
            etcd_secret_name: None,
            model_mesh_endpoint: None,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            enabled: true,
            port: 2112,
            scheme: "https".into(),
            disable_prometheus_operator_support: false,
        }
    }
}

impl Default for ScaleToZero {
    fn default() -> Self {
        ScaleToZero {
            enabled: true,
            grace_period_seconds: 60,
        }
    }
}

impl Default for RestProxy {
    fn default() -> Self {
        RestProxy {
            enabled: true,
            port: 8008,
            skip_verify: false,
            image: Image {
                name: "kserve/rest-proxy".into(),
                tag: "latest".into(),
                ..Default::default()
            },
            resources: resources(("50m", "96Mi"), ("1", "512Mi")),
        }
    }
}

impl Config {
    /// The mesh's named ports, as its container and the Service expose them: gRPC, the
    /// management API when it has its own port, then REST and metrics when enabled.
    pub fn ports(&self) -> Vec<(&'static str, u16)> {
        let mut ports = vec![("grpc", self.inference_service_port)];
        if self.management_port != 0 {
            ports.push(("mgmt", self.management_port));
        }
        if self.rest_proxy.enabled {
            ports.push(("http", self.rest_proxy.port));
        }
        if self.metrics.enabled {
            ports.push(("prometheus", self.metrics.port));
        }
        ports
    }

    /// The config from the ConfigMap's `config.yaml` (empty: the defaults). Fields not given
    /// keep their defaults; the error names what is wrong.
    pub fn parse(yaml: &str) -> Result<Config, ConfigError> {
        if yaml.trim().is_empty() {
            return Ok(Config::default());
        }
        let cfg: Config = serde_norway::from_str(yaml).map_err(|e| ConfigError(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Upstream's checks: payload processors are space-separated in the sidecar's environment,
    /// so none may contain a space; resource quantities must parse.
    /// What runtimes may do beyond an ordinary pod.
    pub fn runtime_policy(&self) -> crate::validation::RuntimePolicy {
        crate::validation::RuntimePolicy {
            allow_privileged: self.allow_privileged_runtimes,
            allow_host_path: self.allow_host_path_runtimes,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(p) = self.payload_processors.iter().find(|p| p.contains(' ')) {
            return Err(ConfigError(format!(
                "payloadProcessors entry '{p}' contains a space"
            )));
        }
        for (what, r) in [
            ("modelMeshResources", &self.model_mesh_resources),
            ("storageHelperResources", &self.storage_helper_resources),
            ("restProxy.resources", &self.rest_proxy.resources),
        ] {
            for q in r
                .requests
                .iter()
                .chain(r.limits.iter())
                .flat_map(|m| m.values())
            {
                if crate::quantity::bytes(q).is_none() && crate::quantity::millicores(q).is_none() {
                    return Err(ConfigError(format!("{what}: '{}' is not a quantity", q.0)));
                }
            }
        }
        if !matches!(self.tls.client_auth.as_str(), "" | "require" | "optional") {
            return Err(ConfigError(format!(
                "tls.clientAuth must be require or optional, not '{}'",
                self.tls.client_auth
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_upstream_except_our_images() {
        let c = Config::default();
        assert_eq!(c.inference_service_name, "modelmesh-serving");
        assert_eq!((c.inference_service_port, c.pods_per_runtime), (8033, 2));
        assert!(c.headless_service && c.rest_proxy.enabled && c.metrics.enabled);
        assert_eq!((c.metrics.port, c.metrics.scheme.as_str()), (2112, "https"));
        assert_eq!(c.scale_to_zero.grace_period_seconds, 60);
        assert!(
            c.model_mesh_image
                .reference()
                .starts_with("modelmesh/modelmesh:")
        );
        assert_eq!(Config::parse("").unwrap(), c);
    }

    #[test]
    fn user_values_override_and_bad_ones_are_named() {
        let c = Config::parse("podsPerRuntime: 1\nrestProxy:\n  enabled: false\n").unwrap();
        assert_eq!(c.pods_per_runtime, 1);
        assert!(!c.rest_proxy.enabled);
        assert_eq!(c.rest_proxy.port, 8008, "unset fields keep defaults");
        let e = Config::parse("payloadProcessors: [\"a b\"]\n").unwrap_err();
        assert!(e.0.contains("space"), "{e}");
        let e = Config::parse("modelMeshResources:\n  requests:\n    memory: lots\n").unwrap_err();
        assert!(e.0.contains("lots"), "{e}");
        assert!(Config::parse("podsPerRuntime: many\n").is_err());
        let img = Image {
            name: "x".into(),
            tag: "1".into(),
            digest: "sha256:ab".into(),
            ..Default::default()
        };
        assert_eq!(img.reference(), "x@sha256:ab");
    }
}
