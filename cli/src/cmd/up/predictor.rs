//! Predictor YAML (`serving.kserve.io/v1alpha1`, upstream's schema) → the vmodel registration
//! the controller would make: vmodel id = predictor name, model id = `<name>__ksp-<10 hex of the
//! spec hash>`, owner `ksp`, auto-deleted target, load now. Pure.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The fields of a Predictor that matter here.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Predictor {
    /// Must be `serving.kserve.io/v1alpha1`.
    pub api_version: String,
    /// Must be `Predictor`.
    pub kind: String,
    /// Name.
    pub metadata: Metadata,
    /// Spec.
    pub spec: Spec,
}

/// `metadata`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Metadata {
    /// Predictor name.
    pub name: String,
    /// Annotations (`modelmesh.io/min-copies`, `modelmesh.io/max-copies` are read).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// Annotation: copies of the predictor's model to keep loaded at all times.
pub const MIN_COPIES: &str = "modelmesh.io/min-copies";
/// Annotation: copies of the predictor's model never to exceed.
pub const MAX_COPIES: &str = "modelmesh.io/max-copies";

/// `spec`.
#[derive(Debug, Clone, Deserialize, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    /// `modelType`.
    pub model_type: ModelType,
    /// Deprecated `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Deprecated `schemaPath`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_path: Option<String>,
    /// `storage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Storage>,
    /// Everything else (runtime, gpu, protocolVersion, ...), kept for the spec hash.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// `spec.modelType`.
#[derive(Debug, Clone, Deserialize, PartialEq, serde::Serialize)]
pub struct ModelType {
    /// Format name, e.g. `onnx`.
    pub name: String,
    /// Optional format version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// `spec.storage`.
#[derive(Debug, Clone, Deserialize, PartialEq, serde::Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// Path of the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Path of the schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_path: Option<String>,
    /// storage-config key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Overrides of the storage entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<BTreeMap<String, String>>,
    /// Deprecated S3 form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<Value>,
}

/// What to register for a predictor.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    /// VModel id (the predictor name).
    pub vmodel_id: String,
    /// Concrete model id.
    pub model_id: String,
    /// ModelInfo.type.
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

/// FNV-1a 64: a stable hash (std's hasher may change between releases, and ids must not).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && n.starts_with(|c: char| c.is_ascii_alphanumeric())
        && n.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Checks a predictor and derives its registration; the error says what to fix.
pub fn registration(p: &Predictor) -> Result<Registration, String> {
    if p.api_version != "serving.kserve.io/v1alpha1" || p.kind != "Predictor" {
        return Err(format!(
            "expected apiVersion serving.kserve.io/v1alpha1 and kind Predictor, got {} {}",
            p.api_version, p.kind
        ));
    }
    let name = &p.metadata.name;
    if !valid_name(name) {
        return Err(format!(
            "metadata.name '{name}' must be a DNS-1123 name (lower case letters, digits, '-', '.')"
        ));
    }
    if p.spec.model_type.name.is_empty() {
        return Err("spec.modelType.name is required".into());
    }
    let storage = p.spec.storage.clone().unwrap_or_default();
    if storage.s3.is_some() && (storage.key.is_some() || storage.path.is_some()) {
        return Err(
            "spec.storage.s3 (deprecated) cannot be combined with spec.storage.key or .path".into(),
        );
    }
    let path = match (&p.spec.path, &storage.path) {
        (Some(_), Some(_)) => {
            return Err("spec.path and spec.storage.path cannot both be set".into());
        }
        (Some(p), None) | (None, Some(p)) if !p.is_empty() => p.clone(),
        _ => return Err("spec.storage.path (or the deprecated spec.path) is required".into()),
    };
    let schema = match (&p.spec.schema_path, &storage.schema_path) {
        (Some(_), Some(_)) => {
            return Err("spec.schemaPath and spec.storage.schemaPath cannot both be set".into());
        }
        (Some(s), None) | (None, Some(s)) => Some(s.clone()),
        (None, None) => None,
    };
    let mut key = Map::new();
    let mut mt = json!({ "name": p.spec.model_type.name });
    if let Some(v) = &p.spec.model_type.version {
        mt["version"] = json!(v);
    }
    key.insert("model_type".into(), mt);
    let storage_key = storage.key.clone().or_else(|| {
        storage
            .s3
            .as_ref()
            .and_then(|s| s.get("secretKey"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    if let Some(k) = storage_key {
        key.insert("storage_key".into(), json!(k));
    }
    if let Some(params) = &storage.parameters {
        key.insert("storage_params".into(), json!(params));
    }
    if let Some(b) = storage
        .s3
        .as_ref()
        .and_then(|s| s.get("bucket"))
        .and_then(Value::as_str)
    {
        key.insert("bucket".into(), json!(b));
    }
    if let Some(s) = schema {
        key.insert("schema_path".into(), json!(s));
    }
    let bound = |key: &str| -> Result<u32, String> {
        match p.metadata.annotations.get(key) {
            None => Ok(0),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| format!("annotation {key}: '{v}' is not a whole number")),
        }
    };
    let (min_copies, max_copies) = (bound(MIN_COPIES)?, bound(MAX_COPIES)?);
    if max_copies > 0 && min_copies > max_copies {
        return Err(format!(
            "annotation {MIN_COPIES} ({min_copies}) exceeds {MAX_COPIES} ({max_copies})"
        ));
    }
    let spec_json = serde_json::to_vec(&p.spec).map_err(|e| e.to_string())?;
    let hash = format!("{:016x}", fnv1a(&spec_json));
    Ok(Registration {
        vmodel_id: name.clone(),
        model_id: format!("{name}__ksp-{}", &hash[..10]),
        model_type: p.spec.model_type.name.clone(),
        path,
        key: Value::Object(key).to_string(),
        min_copies,
        max_copies,
    })
}

/// Parses every Predictor document of a YAML file.
pub fn parse_file(text: &str) -> Result<Vec<Predictor>, String> {
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let v: Value = Value::deserialize(doc).map_err(|e| format!("not valid YAML: {e}"))?;
        if v.is_null() {
            continue;
        }
        out.push(serde_json::from_value(v).map_err(|e| format!("not a valid Predictor: {e}"))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPSTREAM: &str = r#"
apiVersion: serving.kserve.io/v1alpha1
kind: Predictor
metadata:
  name: example-onnx-mnist
spec:
  modelType:
    name: onnx
  path: onnx/mnist.onnx
  storage:
    s3:
      secretKey: localMinIO
"#;

    #[test]
    fn upstream_example_is_accepted() {
        let p = parse_file(UPSTREAM).unwrap();
        let r = registration(&p[0]).unwrap();
        assert_eq!(r.vmodel_id, "example-onnx-mnist");
        assert!(
            r.model_id.starts_with("example-onnx-mnist__ksp-")
                && r.model_id.len() == "example-onnx-mnist__ksp-".len() + 10
        );
        assert_eq!(r.path, "onnx/mnist.onnx");
        let key: Value = serde_json::from_str(&r.key).unwrap();
        assert_eq!(key["storage_key"], "localMinIO");
        assert_eq!(key["model_type"]["name"], "onnx");
        // Same spec, same id; changed spec, new id.
        assert_eq!(
            registration(&parse_file(UPSTREAM).unwrap()[0])
                .unwrap()
                .model_id,
            r.model_id
        );
        let changed = UPSTREAM.replace("onnx/mnist.onnx", "onnx/mnist2.onnx");
        assert_ne!(
            registration(&parse_file(&changed).unwrap()[0])
                .unwrap()
                .model_id,
            r.model_id
        );
    }

    #[test]
    fn copy_bounds_come_from_annotations() {
        let with = UPSTREAM.replace(
            "  name: example-onnx-mnist\n",
            "  name: example-onnx-mnist\n  annotations:\n    modelmesh.io/min-copies: \"2\"\n    modelmesh.io/max-copies: \"3\"\n",
        );
        let r = registration(&parse_file(&with).unwrap()[0]).unwrap();
        assert_eq!((r.min_copies, r.max_copies), (2, 3));
        let bad = with.replace("\"3\"", "\"1\"");
        assert!(
            registration(&parse_file(&bad).unwrap()[0])
                .unwrap_err()
                .contains("exceeds")
        );
    }

    #[test]
    fn invalid_predictors_say_why() {
        let no_path = UPSTREAM.replace("  path: onnx/mnist.onnx\n", "");
        assert!(
            registration(&parse_file(&no_path).unwrap()[0])
                .unwrap_err()
                .contains("storage.path")
        );
        let bad_name = UPSTREAM.replace("example-onnx-mnist", "Bad_Name");
        assert!(
            registration(&parse_file(&bad_name).unwrap()[0])
                .unwrap_err()
                .contains("DNS-1123")
        );
        assert!(parse_file("kind: [").unwrap_err().contains("YAML"));
        assert!(
            parse_file("apiVersion: x\nkind: Predictor\n")
                .unwrap_err()
                .contains("not a valid Predictor")
        );
    }
}
