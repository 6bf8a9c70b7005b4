//! Predictor YAML files for `modelmesh up`: parsed into the controller's `Predictor` type and
//! registered exactly as the controller registers them (`modelmesh_controller::registration`),
//! with the checks a local user needs on top (apiVersion/kind, a DNS name, a model path).

use modelmesh_controller::crd::Predictor;
pub use modelmesh_controller::registration::Registration;
use modelmesh_controller::registration::{OWNER_PREDICTOR, registration as register};
use serde::Deserialize;
use serde_json::Value;

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
    let name = p.metadata.name.clone().unwrap_or_default();
    if !valid_name(&name) {
        return Err(format!(
            "metadata.name '{name}' must be a DNS-1123 name (lower case letters, digits, '-', '.')"
        ));
    }
    let annotations = p.metadata.annotations.clone().unwrap_or_default();
    let r = register(&name, OWNER_PREDICTOR, &p.spec, &annotations).map_err(|e| e.0)?;
    if r.path.is_empty() {
        return Err("spec.storage.path (or the deprecated spec.path) is required".into());
    }
    Ok(r)
}

/// Parses every Predictor document of a YAML file.
pub fn parse_file(text: &str) -> Result<Vec<Predictor>, String> {
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let v: Value = Value::deserialize(doc).map_err(|e| format!("not valid YAML: {e}"))?;
        if v.is_null() {
            continue;
        }
        let (api, kind) = (
            v.get("apiVersion").and_then(Value::as_str).unwrap_or(""),
            v.get("kind").and_then(Value::as_str).unwrap_or(""),
        );
        if api != "serving.kserve.io/v1alpha1" || kind != "Predictor" {
            return Err(format!(
                "expected apiVersion serving.kserve.io/v1alpha1 and kind Predictor, got '{api}' '{kind}'"
            ));
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
        assert!(r.model_id.starts_with("example-onnx-mnist__ksp-"));
        assert_eq!(r.path, "onnx/mnist.onnx");
        assert_eq!(r.model_type, "mt:onnx");
        let key: Value = serde_json::from_str(&r.key).unwrap();
        assert_eq!(key["storage_key"], "localMinIO");
    }

    #[test]
    fn copy_bounds_come_from_annotations() {
        let with = UPSTREAM.replace(
            "  name: example-onnx-mnist\n",
            "  name: example-onnx-mnist\n  annotations:\n    modelmesh.io/min-copies: \"2\"\n    modelmesh.io/max-copies: \"3\"\n",
        );
        let r = registration(&parse_file(&with).unwrap()[0]).unwrap();
        assert_eq!((r.min_copies, r.max_copies), (2, 3));
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
                .contains("expected apiVersion")
        );
        assert!(
            parse_file("apiVersion: serving.kserve.io/v1alpha1\nkind: Predictor\n")
                .unwrap_err()
                .contains("not a valid Predictor")
        );
    }
}
