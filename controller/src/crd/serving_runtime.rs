//! `ServingRuntime` (namespaced) and `ClusterServingRuntime` (cluster-scoped),
//! `serving.kserve.io/v1alpha1`: a model server the mesh can place models on. Same spec for
//! both, upstream's fields; pod fields use the Kubernetes types themselves.

use k8s_openapi::api::core::v1::{
    Affinity, Container, EnvVar, LocalObjectReference, Toleration, Volume,
};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A model server and how to run it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "serving.kserve.io",
    version = "v1alpha1",
    kind = "ServingRuntime",
    namespaced,
    doc = "ServingRuntime is a model server, and how to run it, in one namespace",
    printcolumn = r#"{"name":"Disabled","type":"boolean","jsonPath":".spec.disabled"}"#,
    printcolumn = r#"{"name":"ModelType","type":"string","jsonPath":".spec.supportedModelFormats[*].name"}"#,
    printcolumn = r#"{"name":"Containers","type":"string","jsonPath":".spec.containers[*].name"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ServingRuntimeSpec {
    /// Model formats this runtime serves; only `autoSelect: true` ones are chosen automatically.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supported_model_formats: Vec<SupportedModelFormat>,
    /// Must be true for the mesh to run this runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_model: Option<bool>,
    /// A disabled runtime has no Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// Protocols the runtime speaks (`grpc-v2`, `v2`, `grpc-v1`, `v1`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protocol_versions: Vec<String>,
    /// Model-management endpoint (`port:N` or `unix:/path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_endpoint: Option<String>,
    /// Inference endpoint (`port:N` or `unix:/path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_data_endpoint: Option<String>,
    /// HTTP inference endpoint (accepted, unused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_data_endpoint: Option<String>,
    /// The runtime's containers.
    pub containers: Vec<Container>,
    /// Extra pod volumes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// Pod node selector.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Pod affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Pod tolerations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Extra pod labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra pod annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Pull secrets for the pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Pods of this runtime (overrides the config's `podsPerRuntime`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u16>,
    /// The model puller injected when there is no built-in adapter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_helper: Option<StorageHelper>,
    /// The built-in adapter to inject in front of the runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub built_in_adapter: Option<BuiltInAdapter>,
}

/// A model format a runtime serves.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SupportedModelFormat {
    /// Format name.
    pub name: String,
    /// Format version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Whether models of this format are placed here without naming the runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_select: Option<bool>,
    /// Priority among runtimes (accepted; the mesh does not use it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub priority: Option<i32>,
}

/// `spec.storageHelper`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct StorageHelper {
    /// Do not inject the model puller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
}

/// `spec.builtInAdapter`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuiltInAdapter {
    /// Which adapter (`triton`, `mlserver`, ...); a container of that name must exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_type: Option<String>,
    /// The runtime's management port the adapter talks to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_management_port: Option<i32>,
    /// Memory kept free of models, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_buffer_bytes: Option<i64>,
    /// Load timeout, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_loading_timeout_millis: Option<i32>,
    /// Extra adapter environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
}

/// A runtime available in every namespace the controller serves.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "serving.kserve.io",
    version = "v1alpha1",
    kind = "ClusterServingRuntime",
    doc = "ClusterServingRuntime is a model server every served namespace may use",
    printcolumn = r#"{"name":"Disabled","type":"boolean","jsonPath":".spec.disabled"}"#,
    printcolumn = r#"{"name":"ModelType","type":"string","jsonPath":".spec.supportedModelFormats[*].name"}"#,
    printcolumn = r#"{"name":"Containers","type":"string","jsonPath":".spec.containers[*].name"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct ClusterServingRuntimeSpec {
    /// The same spec as a ServingRuntime's.
    #[serde(flatten)]
    pub runtime: ServingRuntimeSpec,
}
