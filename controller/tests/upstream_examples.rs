//! YAML an upstream user already has works unchanged: every upstream example Predictor and
//! InferenceService parses into our types and registers (ISVCs through the ModelMesh
//! conversion), and every built-in upstream runtime parses and yields its placement labels.
//! Read from `../shared/reference/upstream-data` beside the checkout.

use modelmesh_controller::crd::{ClusterServingRuntime, InferenceService, Predictor};
use modelmesh_controller::registration::{OWNER_ISVC, OWNER_PREDICTOR, registration};
use modelmesh_controller::{isvc, labels};
use std::path::{Path, PathBuf};

fn dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/reference/upstream-data/config")
        .join(sub)
}

fn yaml_files(sub: &str) -> Vec<(String, String)> {
    let d = dir(sub);
    let mut out: Vec<(String, String)> = std::fs::read_dir(&d)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (upstream data must sit beside the checkout)",
                d.display()
            )
        })
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "yaml") && !p.ends_with("kustomization.yaml")
        })
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read");
            (
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                text,
            )
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no files in {}", d.display());
    out
}

#[test]
fn upstream_example_predictors_register() {
    for (file, text) in yaml_files("example-predictors") {
        let p: Predictor = serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let name = p.metadata.name.clone().unwrap_or_default();
        let r = registration(&name, OWNER_PREDICTOR, &p.spec, &Default::default())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(r.model_id.starts_with(&format!("{name}__ksp-")), "{file}");
        assert!(
            r.model_type.starts_with("mt:") || r.model_type.starts_with("rt:"),
            "{file}"
        );
        assert!(!r.path.is_empty(), "{file}");
    }
}

#[test]
fn upstream_example_inference_services_register() {
    for (file, text) in yaml_files("example-isvcs") {
        let i: InferenceService =
            serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let ann = i.metadata.annotations.clone().unwrap_or_default();
        assert!(isvc::is_modelmesh(&ann), "{file} is not ModelMesh mode");
        let spec = isvc::predictor_spec(&i.spec, &ann).unwrap_or_else(|e| panic!("{file}: {e}"));
        let name = i.metadata.name.clone().unwrap_or_default();
        let r =
            registration(&name, OWNER_ISVC, &spec, &ann).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(r.model_id.starts_with(&format!("{name}__isvc-")), "{file}");
        assert!(!r.path.is_empty(), "{file}");
        let key: serde_json::Value = serde_json::from_str(&r.key).expect("key json");
        assert!(key["model_type"]["name"].is_string(), "{file}: {key}");
    }
}

#[test]
fn upstream_runtimes_parse_and_label() {
    let mut seen = 0;
    for (file, text) in yaml_files("runtimes") {
        let rt: ClusterServingRuntime =
            serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let name = rt.metadata.name.clone().unwrap_or_default();
        assert_eq!(rt.spec.runtime.multi_model, Some(true), "{file}");
        let l = labels::runtime_labels(&name, &rt.spec.runtime, false);
        assert!(l.contains(&format!("rt:{name}")), "{file}: {l:?}");
        if name == "triton-2.x" {
            let joined: Vec<&str> = l.iter().map(String::as_str).collect();
            assert_eq!(
                joined.join(","),
                "mt:keras,mt:keras:2,mt:onnx,mt:onnx:1,mt:pytorch,mt:pytorch:1,mt:tensorflow,mt:tensorflow:1,mt:tensorflow:2,mt:tensorrt,mt:tensorrt:7,pv:grpc-v2,rt:triton-2.x"
            );
        }
        seen += 1;
    }
    assert_eq!(seen, 4);
}
