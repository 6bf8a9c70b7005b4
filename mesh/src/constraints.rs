//! Type constraints (`MM_TYPE_CONSTRAINTS[_PATH]`) and pod labels (`MM_LABELS`): which pods may
//! hold a model of a given type. `{"<type>": {"required": [labels], "preferred": [labels]},
//! "_default": {...}}`; unknown types use `_default` when present.

use serde::Deserialize;
use std::collections::HashMap;

/// Labels a model type needs or prefers.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Constraint {
    /// Every one of these must be on a pod.
    #[serde(default)]
    pub required: Vec<String>,
    /// Pods with these are preferred (recorded; placement does not weigh them yet).
    #[serde(default)]
    pub preferred: Vec<String>,
}

/// All type constraints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeConstraints {
    by_type: HashMap<String, Constraint>,
}

impl TypeConstraints {
    /// Parses the JSON form; the error says what is wrong.
    pub fn parse(json: &str) -> Result<Self, String> {
        let by_type: HashMap<String, Constraint> = modelmesh_settings::json::parse(json)
            .map_err(|e| format!("invalid type constraints: {e}"))?;
        Ok(TypeConstraints { by_type })
    }

    /// The labels a model type requires (empty: any pod).
    pub fn required(&self, model_type: &str) -> &[String] {
        self.by_type
            .get(model_type)
            .or_else(|| self.by_type.get("_default"))
            .map(|c| c.required.as_slice())
            .unwrap_or(&[])
    }

    /// Whether a pod with `labels` may hold a model of `model_type`.
    pub fn eligible(&self, model_type: &str, labels: &[String]) -> bool {
        self.required(model_type).iter().all(|r| labels.contains(r))
    }

    /// Upstream's message when no pod qualifies.
    pub fn no_instance_message(&self, model_type: &str) -> String {
        format!(
            "There are no running instances that meet the label requirements of type {model_type}: [{}]",
            self.required(model_type).join(", ")
        )
    }
}

/// Parses `MM_LABELS` (comma list), sorted as upstream publishes them.
pub fn parse_labels(list: &str) -> Vec<String> {
    let mut v: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_labels_and_default() {
        let c = TypeConstraints::parse(
            r#"{"onnx": {"required": ["mt:onnx"]}, "_default": {"required": ["any"]}}"#,
        )
        .unwrap();
        assert!(c.eligible("onnx", &parse_labels("rt:x, mt:onnx")));
        assert!(!c.eligible("onnx", &parse_labels("rt:x")));
        assert!(c.eligible("other", &parse_labels("any")));
        assert!(!c.eligible("other", &[]));
        assert!(TypeConstraints::default().eligible("x", &[]));
        assert!(
            c.no_instance_message("onnx")
                .contains("label requirements of type onnx")
        );
        assert!(TypeConstraints::parse("[").is_err());
        assert_eq!(parse_labels(" b,a,,a "), vec!["a", "b"]);
    }
}
