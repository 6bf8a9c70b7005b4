//! Placement labels: the labels a runtime's pods carry (`MM_LABELS`), the type constraints the
//! mesh enforces (the `tc-config` ConfigMap), and whether a runtime can serve a predictor.
//! Pure.

use crate::crd::serving_runtime::ServingRuntimeSpec;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// The required label of types no runtime supports: such models fail with upstream's "no
/// running instances" message ending in `[_no_runtime]`, which status mapping decodes.
pub const NO_RUNTIME: &str = "_no_runtime";

/// The labels of a runtime's pods: `rt:<name>`, `mt:<format>` and `mt:<format>:<version>` for
/// each auto-selectable format, and `pv:<protocol>` (plus `pv:v2` when the mesh serves KServe
/// v2 REST for a `grpc-v2` runtime). Sorted, as `MM_LABELS` lists them.
pub fn runtime_labels(
    name: &str,
    spec: &ServingRuntimeSpec,
    rest_enabled: bool,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    out.insert(format!("rt:{name}"));
    for f in &spec.supported_model_formats {
        if f.auto_select != Some(true) || f.name.is_empty() {
            continue;
        }
        out.insert(format!("mt:{}", f.name));
        if let Some(v) = f.version.as_deref().filter(|v| !v.is_empty()) {
            out.insert(format!("mt:{}:{v}", f.name));
        }
    }
    for pv in &spec.protocol_versions {
        out.insert(format!("pv:{pv}"));
        if rest_enabled && pv == "grpc-v2" {
            out.insert("pv:v2".into());
        }
    }
    out
}

/// Whether a runtime with `labels` can serve a predictor placed by `type_label` (every
/// `|`-separated part must be among the runtime's labels).
pub fn supports(labels: &BTreeSet<String>, type_label: &str) -> bool {
    type_label.split('|').all(|part| labels.contains(part))
}

/// The type constraints JSON for the enabled runtimes (name → labels): each runtime and format
/// label requires itself, each with a protocol requires both, and any other type requires
/// `_no_runtime`, which no pod has.
pub fn type_constraints(runtimes: &BTreeMap<String, BTreeSet<String>>) -> Value {
    let mut out = Map::new();
    for labels in runtimes.values() {
        let protocols: Vec<&String> = labels.iter().filter(|l| l.starts_with("pv:")).collect();
        for l in labels.iter().filter(|l| !l.starts_with("pv:")) {
            out.insert(l.clone(), json!({"required": [l]}));
            for pv in &protocols {
                out.insert(format!("{l}|{pv}"), json!({"required": [l, pv]}));
            }
        }
    }
    out.insert("_default".into(), json!({"required": [NO_RUNTIME]}));
    Value::Object(out)
}

/// The dataplane config every runtime gets: KServe v2, TensorFlow Serving and TorchServe
/// inference methods carry the vmodel id in their first field (`model_spec.name` for TFS).
pub fn dataplane_config() -> Value {
    let rpc = |path: &[u32]| json!({"idExtractionPath": path, "vModelId": true});
    json!({
        "rpcConfigs": {
            "inference.GRPCInferenceService/ModelInfer": rpc(&[1]),
            "inference.GRPCInferenceService/ModelMetadata": rpc(&[1]),
            "tensorflow.serving.PredictionService/Predict": rpc(&[1, 1]),
            "org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions": rpc(&[1]),
        },
        "allowOtherRpcs": true
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::serving_runtime::SupportedModelFormat;

    fn fmt(name: &str, version: &str, auto: bool) -> SupportedModelFormat {
        SupportedModelFormat {
            name: name.into(),
            version: Some(version.into()),
            auto_select: Some(auto),
            priority: None,
        }
    }

    fn mlserver() -> ServingRuntimeSpec {
        ServingRuntimeSpec {
            supported_model_formats: vec![
                fmt("sklearn", "0", true),
                fmt("xgboost", "1", true),
                fmt("lightgbm", "3", true),
            ],
            protocol_versions: vec!["grpc-v2".into()],
            ..Default::default()
        }
    }

    #[test]
    fn labels_match_upstream_mm_labels() {
        let joined = |s: BTreeSet<String>| s.into_iter().collect::<Vec<_>>().join(",");
        assert_eq!(
            joined(runtime_labels("mlserver-1.x", &mlserver(), false)),
            "mt:lightgbm,mt:lightgbm:3,mt:sklearn,mt:sklearn:0,mt:xgboost,mt:xgboost:1,pv:grpc-v2,rt:mlserver-1.x"
        );
        assert_eq!(
            joined(runtime_labels("mlserver-1.x", &mlserver(), true)),
            "mt:lightgbm,mt:lightgbm:3,mt:sklearn,mt:sklearn:0,mt:xgboost,mt:xgboost:1,pv:grpc-v2,pv:v2,rt:mlserver-1.x"
        );
        let mut triton = mlserver();
        triton.supported_model_formats = vec![fmt("onnx", "1", true), fmt("sklearn", "0", false)];
        let l = runtime_labels("triton-2.x", &triton, false);
        assert!(l.contains("mt:onnx:1") && !l.contains("mt:sklearn"));
    }

    #[test]
    fn a_gguf_predictor_is_served_by_the_llamacpp_runtime_only() {
        let llamacpp = ServingRuntimeSpec {
            supported_model_formats: vec![fmt("gguf", "1", true)],
            ..Default::default()
        };
        let l = runtime_labels("llamacpp", &llamacpp, true);
        assert!(supports(&l, "mt:gguf") && supports(&l, "mt:gguf:1"));
        assert!(!supports(&l, "mt:onnx"));
        assert!(!supports(
            &runtime_labels("mlserver-1.x", &mlserver(), true),
            "mt:gguf"
        ));
        let rts = BTreeMap::from([("llamacpp".to_string(), l)]);
        assert_eq!(
            type_constraints(&rts)["mt:gguf"],
            json!({"required": ["mt:gguf"]})
        );
    }

    #[test]
    fn support_and_constraints() {
        let l = runtime_labels("mlserver-1.x", &mlserver(), false);
        assert!(supports(&l, "mt:sklearn"));
        assert!(supports(&l, "mt:sklearn|pv:grpc-v2"));
        assert!(supports(&l, "rt:mlserver-1.x"));
        assert!(!supports(&l, "mt:onnx"));
        assert!(!supports(&l, "mt:sklearn|pv:v1"));
        let mut rts = BTreeMap::new();
        rts.insert("mlserver-1.x".to_string(), l);
        let tc = type_constraints(&rts);
        assert_eq!(tc["mt:sklearn"], json!({"required": ["mt:sklearn"]}));
        assert_eq!(
            tc["mt:sklearn:0|pv:grpc-v2"],
            json!({"required": ["mt:sklearn:0", "pv:grpc-v2"]})
        );
        assert_eq!(
            tc["rt:mlserver-1.x"],
            json!({"required": ["rt:mlserver-1.x"]})
        );
        assert_eq!(tc["_default"], json!({"required": ["_no_runtime"]}));
        // The mesh reads it as it is: mlserver pods take sklearn, nobody takes onnx, and the
        // refusal ends in [_no_runtime] as status mapping expects.
        let mesh = modelmesh_mesh::constraints::TypeConstraints::parse(&tc.to_string()).unwrap();
        let pod: Vec<String> = rts["mlserver-1.x"].iter().cloned().collect();
        assert!(mesh.eligible("mt:sklearn|pv:grpc-v2", &pod));
        assert!(!mesh.eligible("mt:onnx", &pod));
        assert!(
            mesh.no_instance_message("mt:onnx")
                .ends_with("[_no_runtime]")
        );
    }
}
