//! The CRDs: the chart's copies are exactly what `modelmesh controller crdgen` prints, and our
//! schemas accept everything upstream's accept (every upstream field exists here with the same
//! type and enum values, we require nothing upstream does not, same names, scope and printer
//! columns), so upstream users apply their YAML unchanged. Upstream's CRDs are read from
//! `../shared/reference/upstream-data` beside the checkout (the project keeps no copy).

use modelmesh_controller::crd;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn upstream(file: &str) -> Value {
    let path = root()
        .join("../shared/reference/upstream-data/config/crd/bases")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the upstream reference data must sit beside the checkout as ../shared)",
            path.display()
        )
    });
    serde_norway::from_str(&text).expect("upstream CRD YAML")
}

#[test]
fn chart_crds_match_crdgen() {
    for c in crd::all() {
        let path = root()
            .join("charts/modelmesh/crds")
            .join(crd::file_name(&c));
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        let want = crd::to_yaml(&c).expect("yaml");
        assert!(
            have == want,
            "{} is out of date: run `modelmesh controller crdgen --out-dir charts/modelmesh/crds`",
            path.display()
        );
    }
}

/// Walks upstream's schema and checks ours accepts the same documents; returns the problems.
fn compare(path: &str, up: &Value, ours: &Value, problems: &mut Vec<String>) {
    if ours.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
        && ours.get("properties").is_none()
    {
        return; // anything goes here
    }
    let up_type = up.get("type");
    let our_type = ours.get("type");
    let int_or_string = |v: &Value| v.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    if int_or_string(up) != int_or_string(ours) {
        problems.push(format!("{path}: int-or-string differs"));
    } else if up_type.is_some() && up_type != our_type {
        problems.push(format!(
            "{path}: type {up_type:?} upstream, {our_type:?} here"
        ));
    }
    if let Some(up_enum) = up.get("enum")
        && ours.get("enum") != Some(up_enum)
    {
        problems.push(format!(
            "{path}: enum {up_enum} upstream, {:?} here",
            ours.get("enum")
        ));
    }
    let required = |v: &Value| -> Vec<String> {
        v.get("required")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let up_req = required(up);
    for r in required(ours) {
        if !up_req.contains(&r) {
            problems.push(format!("{path}: we require {r}, upstream does not"));
        }
    }
    if let Some(props) = up.get("properties").and_then(Value::as_object) {
        let preserve = ours.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        for (name, up_p) in props {
            match ours.get("properties").and_then(|p| p.get(name)) {
                Some(our_p) => compare(&format!("{path}.{name}"), up_p, our_p, problems),
                None if preserve => {}
                None => problems.push(format!("{path}.{name}: missing here")),
            }
        }
    }
    if let Some(up_items) = up.get("items") {
        match ours.get("items") {
            Some(our_items) => compare(&format!("{path}[]"), up_items, our_items, problems),
            None => problems.push(format!("{path}[]: no item schema here")),
        }
    }
    if let Some(up_ap) = up.get("additionalProperties").filter(|v| v.is_object()) {
        match ours.get("additionalProperties") {
            Some(our_ap) => compare(&format!("{path}{{}}"), up_ap, our_ap, problems),
            None => problems.push(format!("{path}{{}}: no map value schema here")),
        }
    }
}

fn check_against_upstream(file: &str, kind: &str) {
    let up = upstream(file);
    let ours = crd::all()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .expect("we define the kind");
    let ours = serde_json::to_value(&ours).expect("json");
    for field in ["group", "scope"] {
        assert_eq!(
            ours["spec"][field], up["spec"][field],
            "{kind}: spec.{field}"
        );
    }
    for field in ["kind", "plural", "singular"] {
        assert_eq!(
            ours["spec"]["names"][field], up["spec"]["names"][field],
            "{kind}: names.{field}"
        );
    }
    let version = |crd: &Value, name: &Value| -> Value {
        crd["spec"]["versions"]
            .as_array()
            .and_then(|vs| vs.iter().find(|v| &v["name"] == name))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let our_v = &ours["spec"]["versions"][0];
    let up_v = version(&up, &our_v["name"]);
    assert!(
        !up_v.is_null(),
        "{kind}: upstream has no version {}",
        our_v["name"]
    );
    let mut problems = Vec::new();
    compare(
        kind,
        &up_v["schema"]["openAPIV3Schema"]["properties"]["spec"],
        &our_v["schema"]["openAPIV3Schema"]["properties"]["spec"],
        &mut problems,
    );
    if let Some(up_status) = up_v["schema"]["openAPIV3Schema"]["properties"].get("status") {
        compare(
            &format!("{kind}.status"),
            up_status,
            &our_v["schema"]["openAPIV3Schema"]["properties"]["status"],
            &mut problems,
        );
        for field in ["default", "required"] {
            if let Some(d) = up_status.get(field) {
                assert_eq!(
                    our_v["schema"]["openAPIV3Schema"]["properties"]["status"].get(field),
                    Some(d),
                    "{kind}: status {field}"
                );
            }
        }
    }
    // Kubernetes 1.28 gave volume claims their own resource type without `claims` (a field
    // that never did anything there); the API server drops it either way.
    problems.retain(|p| {
        !p.ends_with("ephemeral.volumeClaimTemplate.spec.resources.claims: missing here")
    });
    assert!(problems.is_empty(), "{kind}:\n{}", problems.join("\n"));
    // `subresources: {}` and no subresources mean the same.
    let subresources = |v: &Value| match &v["subresources"] {
        Value::Object(m) if m.is_empty() => Value::Null,
        other => other.clone(),
    };
    assert_eq!(
        subresources(our_v),
        subresources(&up_v),
        "{kind}: subresources"
    );
    if kind != "InferenceService" {
        let cols = |v: &Value| -> Vec<(Value, Value, Value)> {
            v["additionalPrinterColumns"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|c| (c["name"].clone(), c["jsonPath"].clone(), c["type"].clone()))
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(cols(our_v), cols(&up_v), "{kind}: printer columns");
    }
}

#[test]
fn predictor_accepts_what_upstream_accepts() {
    check_against_upstream("serving.kserve.io_predictors.yaml", "Predictor");
}

#[test]
fn serving_runtime_accepts_what_upstream_accepts() {
    check_against_upstream("serving.kserve.io_servingruntimes.yaml", "ServingRuntime");
}

#[test]
fn cluster_serving_runtime_accepts_what_upstream_accepts() {
    check_against_upstream(
        "serving.kserve.io_clusterservingruntimes.yaml",
        "ClusterServingRuntime",
    );
}

#[test]
fn inference_service_accepts_what_upstream_accepts() {
    check_against_upstream(
        "serving.kserve.io_inferenceservices.yaml",
        "InferenceService",
    );
}
