//! The `modelKey` JSON the controller puts in a model's registration, and the model type in it.
//! Unknown fields are kept, so a key passes through the puller without losing anything.

use crate::error::AdapterError;
use serde_json::{Map, Value};

/// A parsed `modelKey`: `{model_type, storage_key, storage_params, bucket, disk_size_bytes,
/// schema_path, ...}`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelKey(pub Map<String, Value>);

impl ModelKey {
    /// Parses the key; an empty string is an empty key.
    pub fn parse(key: &str) -> Result<ModelKey, AdapterError> {
        if key.trim().is_empty() {
            return Ok(ModelKey::default());
        }
        match serde_json::from_str::<Value>(key) {
            Ok(Value::Object(m)) => Ok(ModelKey(m)),
            Ok(_) => Err(AdapterError::invalid(format!(
                "modelKey must be a JSON object, got: {key}"
            ))),
            Err(e) => Err(AdapterError::invalid(format!(
                "modelKey is not valid JSON ({e}): {key}"
            ))),
        }
    }

    /// A string field, if present and a string.
    pub fn str(&self, k: &str) -> Option<&str> {
        self.0.get(k).and_then(Value::as_str)
    }

    /// `disk_size_bytes`, if present.
    pub fn disk_size_bytes(&self) -> Option<u64> {
        self.0.get("disk_size_bytes").and_then(Value::as_u64)
    }

    /// The model format: `model_type.name` (or a plain string `model_type`), else `fallback`,
    /// lower-cased and cut at the first `:` (so `onnx:1` is `onnx`).
    pub fn model_type(&self, fallback: &str) -> String {
        let raw = match self.0.get("model_type") {
            Some(Value::Object(o)) => o.get("name").and_then(Value::as_str).unwrap_or(fallback),
            Some(Value::String(s)) => s.as_str(),
            _ => fallback,
        };
        let t = raw.split(':').next().unwrap_or("");
        t.to_ascii_lowercase()
    }

    /// Serializes back to JSON.
    pub fn to_json(&self) -> String {
        Value::Object(self.0.clone()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_type_forms() {
        let k = ModelKey::parse(r#"{"model_type":{"name":"ONNX","version":"1"}}"#).unwrap();
        assert_eq!(k.model_type("x"), "onnx");
        let k = ModelKey::parse(r#"{"model_type":"sklearn:0"}"#).unwrap();
        assert_eq!(k.model_type("x"), "sklearn");
        assert_eq!(
            ModelKey::parse("").unwrap().model_type("Triton:2"),
            "triton"
        );
        assert!(ModelKey::parse("[1]").is_err());
        assert!(
            ModelKey::parse("{")
                .unwrap_err()
                .to_string()
                .contains("not valid JSON")
        );
    }
}
