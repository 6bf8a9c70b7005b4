//! A Predictor spec → what the mesh is told (setVModel): vmodel id = the resource name, concrete
//! model id `<name>__<owner>-<10 hex of the SHA-1 of the spec JSON>`, the placement type label,
//! the model path and the key JSON the adapter reads. Pure.

use crate::crd::predictor::PredictorSpec;
use serde_json::{Map, Value, json};
use sha1::{Digest, Sha1};
use std::collections::BTreeMap;

/// Owner (source id) of vmodels made from Predictor resources.
pub const OWNER_PREDICTOR: &str = "ksp";
/// Owner (source id) of vmodels made from InferenceService resources.
pub const OWNER_ISVC: &str = "isvc";
/// Annotation: copies of the model to keep loaded at all times (our extension).
pub const MIN_COPIES: &str = "modelmesh.io/min-copies";
/// Annotation: copies of the model never to exceed (our extension).
pub const MAX_COPIES: &str = "modelmesh.io/max-copies";

/// What to register for one predictor.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    /// VModel id (the resource name).
    pub vmodel_id: String,
    /// Owner: `ksp` or `isvc`.
    pub owner: String,
    /// Concrete model id.
    pub model_id: String,
    /// ModelInfo.type: the placement label.
    pub model_type: String,
    /// ModelInfo.path.
    pub path: String,
    /// ModelInfo.key (JSON).
    pub key: String,
    /// Minimum copies (0 = none).
    pub min_copies: u32,
    /// Maximum copies (0 = no limit).
    pub max_copies: u32,
}

impl Registration {
    /// The setVModel request that registers it (the target is auto-deleted when replaced).
    pub fn set_vmodel_request(&self, load_now: bool) -> modelmesh_proto::mmesh::SetVModelRequest {
        modelmesh_proto::mmesh::SetVModelRequest {
            v_model_id: self.vmodel_id.clone(),
            target_model_id: self.model_id.clone(),
            model_info: Some(modelmesh_proto::mmesh::ModelInfo {
                r#type: self.model_type.clone(),
                path: self.path.clone(),
                key: self.key.clone(),
                min_copies: self.min_copies,
                max_copies: self.max_copies,
            }),
            auto_delete_target_model: true,
            load_now,
            owner: self.owner.clone(),
            ..Default::default()
        }
    }
}

/// Why a spec cannot be registered (the Predictor becomes `InvalidSpec`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSpec(pub String);

/// The placement label of a spec: `rt:<runtime>` when a runtime is named, else
/// `mt:<format>[:<version>]`; plus `|pv:<protocol>` when a protocol is set.
pub fn type_label(spec: &PredictorSpec) -> String {
    let mut label = match spec.runtime.as_ref().filter(|r| !r.name.is_empty()) {
        Some(r) => format!("rt:{}", r.name),
        None => match spec.model_type.version.as_deref().filter(|v| !v.is_empty()) {
            Some(v) => format!("mt:{}:{v}", spec.model_type.name),
            None => format!("mt:{}", spec.model_type.name),
        },
    };
    if let Some(pv) = spec.protocol_version.as_deref().filter(|p| !p.is_empty()) {
        label.push_str("|pv:");
        label.push_str(pv);
    }
    label
}

/// First 10 hex digits of the SHA-1 of the spec's JSON: a new id whenever the spec changes.
pub fn spec_hash(spec: &PredictorSpec) -> String {
    let json = serde_json::to_vec(spec).unwrap_or_default();
    let digest = Sha1::digest(&json);
    digest[..5].iter().map(|b| format!("{b:02x}")).collect()
}

/// The concrete model id for a spec.
pub fn model_id(name: &str, owner: &str, spec: &PredictorSpec) -> String {
    format!("{name}__{owner}-{}", spec_hash(spec))
}

/// Checks the spec as upstream's controller does (storage fields that cannot be combined,
/// the unsupported PVC field) and derives the registration.
pub fn registration(
    name: &str,
    owner: &str,
    spec: &PredictorSpec,
    annotations: &BTreeMap<String, String>,
) -> Result<Registration, InvalidSpec> {
    let invalid = |m: &str| Err(InvalidSpec(m.to_string()));
    if spec.model_type.name.is_empty() {
        return invalid("spec.modelType.name must be set");
    }
    let storage = spec.storage.clone().unwrap_or_default();
    if storage.persistent_volume_claim.is_some() {
        return invalid(
            "spec.storage.persistentVolumeClaim is not supported; use a storage-config entry of type pvc, or a pvc:// storageUri",
        );
    }
    let new_fields = storage.key.is_some()
        || storage.path.is_some()
        || storage.schema_path.is_some()
        || storage.parameters.is_some();
    if storage.s3.is_some() && new_fields {
        return invalid(
            "spec.storage.s3 (deprecated) cannot be combined with storage.key, storage.path, storage.schemaPath or storage.parameters",
        );
    }
    let path = match (&spec.path, &storage.path) {
        (Some(_), Some(_)) => return invalid("spec.path and spec.storage.path cannot both be set"),
        (Some(p), None) | (None, Some(p)) => p.clone(),
        (None, None) => String::new(),
    };
    let schema = match (&spec.schema_path, &storage.schema_path) {
        (Some(_), Some(_)) => {
            return invalid("spec.schemaPath and spec.storage.schemaPath cannot both be set");
        }
        (Some(s), None) | (None, Some(s)) => Some(s.clone()),
        (None, None) => None,
    };
    let mut key = Map::new();
    let storage_key = storage
        .key
        .clone()
        .or_else(|| storage.s3.as_ref().map(|s| s.secret_key.clone()));
    if let Some(k) = storage_key {
        key.insert("storage_key".into(), json!(k));
    }
    let mut params = storage.parameters.clone().unwrap_or_default();
    if let Some(b) = storage.s3.as_ref().and_then(|s| s.bucket.clone()) {
        params.insert("bucket".into(), b);
    }
    if !params.is_empty() {
        key.insert("storage_params".into(), json!(params));
    }
    let mut mt = json!({ "name": spec.model_type.name });
    if let Some(v) = spec.model_type.version.as_deref().filter(|v| !v.is_empty()) {
        mt["version"] = json!(v);
    }
    key.insert("model_type".into(), mt);
    if let Some(s) = schema {
        key.insert("schema_path".into(), json!(s));
    }
    let (min_copies, max_copies) = copy_bounds(annotations)?;
    Ok(Registration {
        vmodel_id: name.to_string(),
        owner: owner.to_string(),
        model_id: model_id(name, owner, spec),
        model_type: type_label(spec),
        path,
        key: Value::Object(key).to_string(),
        min_copies,
        max_copies,
    })
}

/// The copy bounds from the `modelmesh.io/min-copies` and `max-copies` annotations.
pub fn copy_bounds(annotations: &BTreeMap<String, String>) -> Result<(u32, u32), InvalidSpec> {
    let bound = |key: &str| -> Result<u32, InvalidSpec> {
        match annotations.get(key) {
            None => Ok(0),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| InvalidSpec(format!("annotation {key}: '{v}' is not a whole number"))),
        }
    };
    let (min, max) = (bound(MIN_COPIES)?, bound(MAX_COPIES)?);
    if max > 0 && min > max {
        return Err(InvalidSpec(format!(
            "annotation {MIN_COPIES} ({min}) exceeds {MAX_COPIES} ({max})"
        )));
    }
    Ok((min, max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::predictor::{ModelType, RuntimeRef, S3Storage, Storage};

    fn spec() -> PredictorSpec {
        PredictorSpec {
            model_type: ModelType {
                name: "onnx".into(),
                version: None,
            },
            storage: Some(Storage {
                key: Some("localMinIO".into()),
                path: Some("onnx/mnist.onnx".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn ids_labels_and_key() {
        let r = registration("mnist", OWNER_PREDICTOR, &spec(), &BTreeMap::new()).unwrap();
        assert_eq!(r.vmodel_id, "mnist");
        assert!(r.model_id.starts_with("mnist__ksp-") && r.model_id.len() == 21);
        assert!(r.model_id[11..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(r.model_type, "mt:onnx");
        assert_eq!(r.path, "onnx/mnist.onnx");
        let key: Value = serde_json::from_str(&r.key).unwrap();
        assert_eq!(
            key,
            json!({"storage_key": "localMinIO", "model_type": {"name": "onnx"}})
        );
        // The same spec gives the same id; any change gives another.
        let again = registration("mnist", OWNER_PREDICTOR, &spec(), &BTreeMap::new()).unwrap();
        assert_eq!(again.model_id, r.model_id);
        let mut changed = spec();
        changed.storage.as_mut().unwrap().path = Some("onnx/mnist2.onnx".into());
        assert_ne!(model_id("mnist", "ksp", &changed), r.model_id);
        assert!(model_id("mnist", "isvc", &spec()).starts_with("mnist__isvc-"));
    }

    #[test]
    fn type_labels() {
        let mut s = spec();
        s.model_type.version = Some("1".into());
        assert_eq!(type_label(&s), "mt:onnx:1");
        s.protocol_version = Some("grpc-v2".into());
        assert_eq!(type_label(&s), "mt:onnx:1|pv:grpc-v2");
        s.runtime = Some(RuntimeRef {
            name: "triton-2.x".into(),
        });
        assert_eq!(type_label(&s), "rt:triton-2.x|pv:grpc-v2");
    }

    #[test]
    fn legacy_s3_storage_becomes_key_and_bucket() {
        let s = PredictorSpec {
            path: Some("sklearn/mnist-svm.joblib".into()),
            storage: Some(Storage {
                s3: Some(S3Storage {
                    secret_key: "localMinIO".into(),
                    bucket: Some("models".into()),
                }),
                ..Default::default()
            }),
            ..spec()
        };
        let r = registration("svm", OWNER_PREDICTOR, &s, &BTreeMap::new()).unwrap();
        assert_eq!(r.path, "sklearn/mnist-svm.joblib");
        let key: Value = serde_json::from_str(&r.key).unwrap();
        assert_eq!(key["storage_key"], "localMinIO");
        assert_eq!(key["storage_params"]["bucket"], "models");
    }

    #[test]
    fn invalid_specs_say_why() {
        let both_paths = PredictorSpec {
            path: Some("a".into()),
            ..spec()
        };
        let e = registration("x", "ksp", &both_paths, &BTreeMap::new()).unwrap_err();
        assert!(e.0.contains("spec.path and spec.storage.path"), "{e}");
        let s3_and_key = PredictorSpec {
            storage: Some(Storage {
                key: Some("k".into()),
                s3: Some(S3Storage::default()),
                ..Default::default()
            }),
            ..spec()
        };
        assert!(
            registration("x", "ksp", &s3_and_key, &BTreeMap::new())
                .unwrap_err()
                .0
                .contains("s3")
        );
        let pvc = PredictorSpec {
            storage: Some(Storage {
                persistent_volume_claim: Some(Default::default()),
                ..Default::default()
            }),
            ..spec()
        };
        assert!(
            registration("x", "ksp", &pvc, &BTreeMap::new())
                .unwrap_err()
                .0
                .contains("persistentVolumeClaim")
        );
        let mut ann = BTreeMap::new();
        ann.insert(MIN_COPIES.to_string(), "3".to_string());
        ann.insert(MAX_COPIES.to_string(), "2".to_string());
        assert!(
            registration("x", "ksp", &spec(), &ann)
                .unwrap_err()
                .0
                .contains("exceeds")
        );
        ann.insert(MAX_COPIES.to_string(), "4".to_string());
        let r = registration("x", "ksp", &spec(), &ann).unwrap();
        assert_eq!((r.min_copies, r.max_copies), (3, 4));
    }
}
