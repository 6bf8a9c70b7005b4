//! `Predictor` (`serving.kserve.io/v1alpha1`): one model to serve, with upstream's fields,
//! defaults, enums, printer columns and status subresource, so upstream YAML applies unchanged.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The desired state of a Predictor.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "serving.kserve.io",
    version = "v1alpha1",
    kind = "Predictor",
    namespaced,
    doc = "Predictor is a model to serve through the mesh",
    status = "PredictorStatus",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.modelType.name"}"#,
    printcolumn = r#"{"name":"Available","type":"boolean","jsonPath":".status.available"}"#,
    printcolumn = r#"{"name":"ActiveModel","type":"string","jsonPath":".status.activeModelState"}"#,
    printcolumn = r#"{"name":"TargetModel","type":"string","jsonPath":".status.targetModelState"}"#,
    printcolumn = r#"{"name":"Transition","type":"string","jsonPath":".status.transitionStatus"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PredictorSpec {
    /// The model's format (`name`, optional `version`).
    pub model_type: ModelType,
    /// An explicit ServingRuntime to use instead of automatic selection by format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeRef>,
    /// (DEPRECATED) The path to the model files within the storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// (DEPRECATED) The path to the schema file within the storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_path: Option<String>,
    /// Where the model is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Storage>,
    /// May be absent, "preferred" or "required" (accepted; placement does not use it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuRequirement>,
    /// NOT YET SUPPORTED (accepted, unused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Protocol version to be exposed by the predictor (v1, v2, grpc-v1 or grpc-v2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
}

/// `spec.modelType`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ModelType {
    /// Format name, e.g. `onnx`.
    pub name: String,
    /// Format version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// `spec.runtime`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct RuntimeRef {
    /// ServingRuntime (or ClusterServingRuntime) name.
    pub name: String,
}

/// `spec.gpu`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GpuRequirement {
    /// A GPU is required.
    Required,
    /// A GPU is preferred.
    Preferred,
}

/// `spec.storage`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// The path to the model files within the storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The path to the schema file within the storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_path: Option<String>,
    /// Overrides of the storage-config entry's fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<BTreeMap<String, String>>,
    /// The key of the storage-config secret entry to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// (DEPRECATED) S3 storage; cannot be combined with the fields above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Storage>,
    /// (DEPRECATED, never supported) a PVC; a Predictor with it is InvalidSpec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<PvcSource>,
}

/// `spec.storage.s3`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Storage {
    /// The storage-config key.
    pub secret_key: String,
    /// The bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
}

/// `spec.storage.persistentVolumeClaim`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcSource {
    /// The claim's name.
    pub claim_name: String,
    /// Mount read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// Lifecycle of the predictor's model transitions.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TransitionStatus {
    /// The active model is the one the spec asks for.
    #[default]
    UpToDate,
    /// A new model is loading and will become active.
    InProgress,
    /// The new model failed to load; the previous one stays active.
    BlockedByFailedLoad,
    /// The spec is invalid.
    InvalidSpec,
}

/// State of the active or target model.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ModelState {
    /// No model (only for the target, when none is pending).
    #[serde(rename = "")]
    None,
    /// Not yet registered.
    #[default]
    Pending,
    /// Registered; loaded on demand.
    Standby,
    /// Loading.
    Loading,
    /// Loaded.
    Loaded,
    /// Failed to load.
    FailedToLoad,
}

/// Why the last failure happened.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum FailureReason {
    /// The model failed to load.
    ModelLoadFailed,
    /// No runtime pod able to serve the model is ready.
    RuntimeUnhealthy,
    /// No ServingRuntime supports the model's format or protocol.
    NoSupportingRuntime,
    /// The named runtime does not exist.
    RuntimeNotRecognized,
    /// The predictor's spec is invalid.
    InvalidPredictorSpec,
}

/// `status.lastFailureInfo`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureInfo {
    /// Where it failed (a pod), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<FailureReason>,
    /// What happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The concrete model id concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// When.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

/// The observed state of a Predictor.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend(
    "required" = ["activeModelState", "available", "failedCopies", "targetModelState", "totalCopies", "transitionStatus"],
    "default" = {"activeModelState": "Pending", "available": false, "failedCopies": 0, "targetModelState": "", "totalCopies": 0, "transitionStatus": "UpToDate"}
))]
pub struct PredictorStatus {
    /// Whether the predictor can serve requests.
    #[serde(default)]
    pub available: bool,
    /// Whether a new model is on its way.
    #[serde(default)]
    pub transition_status: TransitionStatus,
    /// State of the model serving requests.
    #[serde(default)]
    pub active_model_state: ModelState,
    /// State of the model that will replace it (empty when none).
    #[serde(default = "no_target")]
    pub target_model_state: ModelState,
    /// Details of the last failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_info: Option<FailureInfo>,
    /// The HTTP endpoint (KServe v2 REST).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_endpoint: Option<String>,
    /// The gRPC endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_endpoint: Option<String>,
    /// Copies that failed to load.
    #[serde(default)]
    pub failed_copies: i32,
    /// All copies.
    #[serde(default)]
    pub total_copies: i32,
}

fn no_target() -> ModelState {
    ModelState::None
}
