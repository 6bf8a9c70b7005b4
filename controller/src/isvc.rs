//! A ModelMesh-mode InferenceService → the Predictor spec it stands for: the `model` form or
//! an old per-framework form, and `storageUri` (pvc, s3, gs, Azure blob, http) turned into a
//! storage path plus storage-config parameters. Pure.

use crate::crd::inference_service::{
    DEPLOYMENT_MODE, FrameworkSpec, InferenceServiceSpec, SCHEMA_PATH, SECRET_KEY, SERVING_RUNTIME,
    StorageSpec,
};
use crate::crd::predictor::{ModelType, PredictorSpec, RuntimeRef, Storage};
use crate::registration::InvalidSpec;
use std::collections::BTreeMap;

/// Whether the annotations hand the InferenceService to ModelMesh.
pub fn is_modelmesh(annotations: &BTreeMap<String, String>) -> bool {
    annotations.get(DEPLOYMENT_MODE).map(String::as_str) == Some("ModelMesh")
}

/// The Predictor spec of an InferenceService.
pub fn predictor_spec(
    spec: &InferenceServiceSpec,
    annotations: &BTreeMap<String, String>,
) -> Result<PredictorSpec, InvalidSpec> {
    let invalid = |m: String| Err(InvalidSpec(m));
    let p = &spec.predictor;
    let frameworks: [(&str, &Option<FrameworkSpec>); 8] = [
        ("xgboost", &p.xgboost),
        ("lightgbm", &p.lightgbm),
        ("sklearn", &p.sklearn),
        ("tensorflow", &p.tensorflow),
        ("onnx", &p.onnx),
        ("pytorch", &p.pytorch),
        ("triton", &p.triton),
        ("pmml", &p.pmml),
    ];
    let framework = frameworks
        .iter()
        .find_map(|(name, f)| f.as_ref().map(|f| (*name, f)));
    let annotated_runtime = annotations.get(SERVING_RUNTIME).filter(|r| !r.is_empty());
    let (model_type, runtime, protocol, uri, storage) = match (&p.model, framework) {
        (Some(_), Some((name, _))) => {
            return invalid(format!(
                "spec.predictor.model cannot be combined with spec.predictor.{name}"
            ));
        }
        (Some(_), None) if annotated_runtime.is_some() => {
            return invalid(format!(
                "the {SERVING_RUNTIME} annotation cannot be used with spec.predictor.model (use spec.predictor.model.runtime)"
            ));
        }
        (Some(m), None) => (
            ModelType {
                name: m.model_format.name.clone(),
                version: m.model_format.version.clone(),
            },
            m.runtime.clone(),
            m.protocol_version.clone(),
            m.storage_uri.clone(),
            m.storage.clone(),
        ),
        (None, Some((name, f))) => (
            ModelType {
                name: name.to_string(),
                version: None,
            },
            annotated_runtime.cloned(),
            f.protocol_version.clone(),
            f.storage_uri.clone(),
            f.storage.clone(),
        ),
        (None, None) => {
            return invalid(
                "spec.predictor must have a model (or a framework such as sklearn or onnx)".into(),
            );
        }
    };
    if model_type.name.is_empty() {
        return invalid("spec.predictor.model.modelFormat.name must be set".into());
    }
    let storage = storage.unwrap_or_default();
    let (path, uri_params) = match (uri.as_deref().filter(|u| !u.is_empty()), &storage.path) {
        (Some(_), Some(_)) => {
            return invalid("storageUri and storage.path cannot both be set".into());
        }
        (None, None) => return invalid("one of storageUri or storage.path must be set".into()),
        (None, Some(path)) => (path.clone(), BTreeMap::new()),
        (Some(u), None) => parse_storage_uri(u)?,
    };
    let mut params = storage.parameters.clone().unwrap_or_default();
    params.extend(uri_params); // the URI wins
    let StorageSpec {
        schema_path, key, ..
    } = storage;
    Ok(PredictorSpec {
        model_type,
        runtime: runtime
            .filter(|r| !r.is_empty())
            .map(|name| RuntimeRef { name }),
        storage: Some(Storage {
            path: Some(path),
            schema_path: schema_path.or_else(|| annotations.get(SCHEMA_PATH).cloned()),
            parameters: (!params.is_empty()).then_some(params),
            key: key.or_else(|| annotations.get(SECRET_KEY).cloned()),
            ..Default::default()
        }),
        protocol_version: protocol.filter(|p| !p.is_empty() && p != "unknown"),
        ..Default::default()
    })
}

/// Splits a `storageUri` into the path within the storage and the storage-config parameters
/// that locate the storage.
pub fn parse_storage_uri(uri: &str) -> Result<(String, BTreeMap<String, String>), InvalidSpec> {
    let bad = |why: &str| InvalidSpec(format!("storageUri '{uri}': {why}"));
    let params = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let bucket_and_path = |rest: &str| -> Result<(String, String), InvalidSpec> {
        match rest.split_once('/') {
            Some((b, p)) if !b.is_empty() && !p.is_empty() => Ok((b.to_string(), p.to_string())),
            _ => Err(bad("expected <name>/<path>")),
        }
    };
    if let Some(rest) = uri.strip_prefix("pvc://") {
        let (name, path) = bucket_and_path(rest)?;
        return Ok((path, params(&[("type", "pvc"), ("name", &name)])));
    }
    if let Some(rest) = uri.strip_prefix("s3://") {
        let (bucket, path) = bucket_and_path(rest)?;
        return Ok((path, params(&[("type", "s3"), ("bucket", &bucket)])));
    }
    if let Some(rest) = uri.strip_prefix("gs://") {
        let (bucket, path) = bucket_and_path(rest)?;
        return Ok((path, params(&[("type", "gcs"), ("bucket", &bucket)])));
    }
    if uri.starts_with("http://") || uri.starts_with("https://") {
        let url = url::Url::parse(uri).map_err(|e| bad(&e.to_string()))?;
        let host = url.host_str().ok_or_else(|| bad("no host"))?;
        if let Some(account) = host.strip_suffix(".blob.core.windows.net") {
            let (container, path) = bucket_and_path(url.path().trim_start_matches('/'))?;
            return Ok((
                path,
                params(&[
                    ("type", "azure"),
                    ("account_name", account),
                    ("container", &container),
                ]),
            ));
        }
        let mut base = format!("{}://{}", url.scheme(), host);
        if let Some(port) = url.port() {
            base.push_str(&format!(":{port}"));
        }
        if let Some(q) = url.query() {
            base.push('?');
            base.push_str(q);
        }
        let path = url.path().trim_start_matches('/').to_string();
        if path.is_empty() {
            return Err(bad("no path to a model"));
        }
        return Ok((path, params(&[("type", "http"), ("url", &base)])));
    }
    Err(bad(
        "unsupported scheme (use pvc://, s3://, gs://, https://<account>.blob.core.windows.net/, http:// or https://)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::inference_service::{ModelFormat, ModelSpec, PredictorComponent};

    fn model(uri: Option<&str>, path: Option<&str>) -> InferenceServiceSpec {
        InferenceServiceSpec {
            predictor: PredictorComponent {
                model: Some(ModelSpec {
                    model_format: ModelFormat {
                        name: "sklearn".into(),
                        version: None,
                    },
                    storage_uri: uri.map(String::from),
                    storage: path.map(|p| StorageSpec {
                        path: Some(p.into()),
                        key: Some("localMinIO".into()),
                        ..Default::default()
                    }),
                    protocol_version: Some("unknown".into()),
                    runtime: None,
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn storage_uris() {
        let p = |u: &str| parse_storage_uri(u).unwrap();
        assert_eq!(
            p("pvc://models-pvc/sklearn/svm.joblib").0,
            "sklearn/svm.joblib"
        );
        assert_eq!(
            p("pvc://models-pvc/sklearn/svm.joblib").1["name"],
            "models-pvc"
        );
        assert_eq!(p("s3://bucket/a/b").1["bucket"], "bucket");
        assert_eq!(p("gs://bucket/a").1["type"], "gcs");
        let (path, az) = p("https://acct.blob.core.windows.net/cont/dir/model.onnx");
        assert_eq!(
            (
                path.as_str(),
                az["account_name"].as_str(),
                az["container"].as_str()
            ),
            ("dir/model.onnx", "acct", "cont")
        );
        let (path, h) = p("https://example.com:8443/m/model.onnx?sig=1");
        assert_eq!(path, "m/model.onnx");
        assert_eq!(h["url"], "https://example.com:8443?sig=1");
        assert_eq!(h["type"], "http");
        for bad in [
            "ftp://x/y",
            "s3://bucket",
            "pvc:///path",
            "https://example.com/",
        ] {
            assert!(parse_storage_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn model_form_with_uri_and_annotations() {
        let mut ann = BTreeMap::new();
        ann.insert(SECRET_KEY.to_string(), "localMinIO".to_string());
        let s = predictor_spec(
            &model(
                Some("s3://modelmesh-example-models/sklearn/mnist-svm.joblib"),
                None,
            ),
            &ann,
        )
        .unwrap();
        assert_eq!(s.model_type.name, "sklearn");
        assert_eq!(s.protocol_version, None, "'unknown' is dropped");
        let st = s.storage.unwrap();
        assert_eq!(st.path.as_deref(), Some("sklearn/mnist-svm.joblib"));
        assert_eq!(st.key.as_deref(), Some("localMinIO"));
        assert_eq!(st.parameters.unwrap()["bucket"], "modelmesh-example-models");
    }

    #[test]
    fn old_framework_form_takes_the_runtime_annotation() {
        let spec = InferenceServiceSpec {
            predictor: PredictorComponent {
                sklearn: Some(FrameworkSpec {
                    storage_uri: Some("s3://b/sklearn/mnist-svm.joblib".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut ann = BTreeMap::new();
        ann.insert(SERVING_RUNTIME.to_string(), "mlserver-1.x".to_string());
        let s = predictor_spec(&spec, &ann).unwrap();
        assert_eq!(s.model_type.name, "sklearn");
        assert_eq!(s.runtime.unwrap().name, "mlserver-1.x");
    }

    #[test]
    fn conflicts_are_invalid() {
        let none = BTreeMap::new();
        assert!(predictor_spec(&model(None, None), &none).is_err());
        assert!(predictor_spec(&model(Some("s3://b/p"), Some("p")), &none).is_err());
        let mut both = model(None, Some("p"));
        both.predictor.onnx = Some(FrameworkSpec::default());
        assert!(predictor_spec(&both, &none).unwrap_err().0.contains("onnx"));
        let mut ann = BTreeMap::new();
        ann.insert(SERVING_RUNTIME.to_string(), "x".to_string());
        assert!(predictor_spec(&model(None, Some("p")), &ann).is_err());
        let mut mm = BTreeMap::new();
        assert!(!is_modelmesh(&mm));
        mm.insert(DEPLOYMENT_MODE.to_string(), "ModelMesh".to_string());
        assert!(is_modelmesh(&mm));
    }
}
