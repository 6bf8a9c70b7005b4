//! The ModelMesh-mode subset of KServe's `InferenceService` (`serving.kserve.io/v1beta1`):
//! the fields a ModelMesh deployment reads (annotation `serving.kserve.io/deploymentMode:
//! ModelMesh`, `spec.predictor.model` or a per-framework spec, storage) and the status it
//! writes. Everything else KServe defines is accepted and kept (unknown fields are preserved),
//! so the same objects work with KServe's own CRD installed instead of ours.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Annotation that hands an InferenceService to ModelMesh.
pub const DEPLOYMENT_MODE: &str = "serving.kserve.io/deploymentMode";
/// Annotation naming the runtime (old per-framework form).
pub const SERVING_RUNTIME: &str = "serving.kserve.io/servingRuntime";
/// Annotation naming the storage-config key (fallback for `storage.key`).
pub const SECRET_KEY: &str = "serving.kserve.io/secretKey";
/// Annotation naming the schema path (fallback for `storage.schemaPath`).
pub const SCHEMA_PATH: &str = "serving.kserve.io/schemaPath";

/// The desired state of an InferenceService (the parts ModelMesh reads).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "serving.kserve.io",
    version = "v1beta1",
    kind = "InferenceService",
    shortname = "isvc",
    doc = "InferenceService is a model to serve (KServe's resource; ModelMesh mode)",
    namespaced,
    status = "InferenceServiceStatus",
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".status.url"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type=='Ready')].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct InferenceServiceSpec {
    /// The predictor.
    pub predictor: PredictorComponent,
    /// The explainer (KServe; not used by ModelMesh, kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explainer: Option<FreeForm>,
    /// The transformer (KServe; not used by ModelMesh, kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transformer: Option<FreeForm>,
}

/// Any object, kept as it is.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct FreeForm {
    /// The object's fields.
    #[serde(flatten)]
    #[schemars(skip)]
    pub fields: BTreeMap<String, serde_json::Value>,
}

/// `spec.predictor`: the new `model` form or one of the old per-framework forms.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct PredictorComponent {
    /// The model (new form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSpec>,
    /// XGBoost (old form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xgboost: Option<FrameworkSpec>,
    /// LightGBM (old form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lightgbm: Option<FrameworkSpec>,
    /// scikit-learn (old form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sklearn: Option<FrameworkSpec>,
    /// TensorFlow (old form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensorflow: Option<FrameworkSpec>,
    /// ONNX (old form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onnx: Option<FrameworkSpec>,
    /// PyTorch (old form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pytorch: Option<FrameworkSpec>,
    /// Triton (old form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triton: Option<FrameworkSpec>,
    /// PMML (old form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pmml: Option<FrameworkSpec>,
}

/// `spec.predictor.model`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct ModelSpec {
    /// The model's format (required in practice; KServe's schema does not enforce it).
    #[serde(default)]
    pub model_format: ModelFormat,
    /// An explicit runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// The protocol (`v1`, `v2`, `grpc-v1`, `grpc-v2`; `unknown` is ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// Model location as a URI (`pvc://`, `s3://`, `gs://`, `https://<acct>.blob.core.windows.net/`, `http(s)://`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_uri: Option<String>,
    /// Model location within a storage-config entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
}

/// `spec.predictor.model.modelFormat`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ModelFormat {
    /// Format name.
    pub name: String,
    /// Format version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// An old per-framework predictor (`spec.predictor.sklearn`, ...).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct FrameworkSpec {
    /// The protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// Model location as a URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_uri: Option<String>,
    /// Model location within a storage-config entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
}

/// `storage` of a model or framework spec.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Path within the storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Schema path within the storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_path: Option<String>,
    /// Overrides of the storage-config entry's fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<BTreeMap<String, String>>,
    /// The storage-config key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The observed state written back (KServe's status shape, ModelMesh's parts).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct InferenceServiceStatus {
    /// The inference URL (the gRPC endpoint), when available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Conditions (`PredictorReady`, `Ready`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Per-component URLs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<String, ComponentStatus>,
    /// The model's state in the mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_status: Option<ModelStatus>,
}

/// A Knative-style condition.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Severity (empty for errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// When it last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

/// `status.components.<name>`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct ComponentStatus {
    /// Main URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// gRPC URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_url: Option<String>,
    /// REST URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rest_url: Option<String>,
}

/// `status.modelStatus`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelStatus {
    /// Transition status (`UpToDate`, `InProgress`, `BlockedByFailedLoad`, `InvalidSpec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["", "UpToDate", "InProgress", "BlockedByFailedLoad", "InvalidSpec"]))]
    pub transition_status: Option<String>,
    /// Active and target model states.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub states: Option<ModelStates>,
    /// Copy counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copies: Option<ModelCopies>,
    /// The last failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_info: Option<IsvcFailureInfo>,
}

/// `status.modelStatus.states`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelStates {
    /// The active model's state.
    #[serde(default)]
    #[schemars(extend("enum" = ["", "Pending", "Standby", "Loading", "Loaded", "FailedToLoad"]))]
    pub active_model_state: String,
    /// The target model's state (empty when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["", "Pending", "Standby", "Loading", "Loaded", "FailedToLoad"]))]
    pub target_model_state: Option<String>,
}

/// `status.modelStatus.copies`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelCopies {
    /// Copies that failed to load.
    #[serde(default)]
    pub failed_copies: i32,
    /// All copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_copies: Option<i32>,
}

/// `status.modelStatus.lastFailureInfo`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IsvcFailureInfo {
    /// Where.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Why (the Predictor failure reasons, and KServe's `RuntimeDisabled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["ModelLoadFailed", "RuntimeUnhealthy", "RuntimeDisabled", "NoSupportingRuntime", "RuntimeNotRecognized", "InvalidPredictorSpec"]))]
    pub reason: Option<String>,
    /// What happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The concrete model id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_revision_name: Option<String>,
    /// Exit code of a failed container (KServe; not set by ModelMesh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// When.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}
