//! MLServer's layout: `<dir>/<modelId>/model-settings.json` with `name` = model id and an
//! absolute `parameters.uri`. MLServer finds models by globbing every `model-settings.json`
//! under its root, so the root must hold only these adapted directories.

use super::{entries, fresh_dir, link, schema};
use crate::error::AdapterError;
use crate::puller::safe_path;
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};

/// File MLServer reads a model's settings from.
pub const SETTINGS: &str = "model-settings.json";

/// MLServer implementation class for a model type, where one is standard.
pub fn implementation(model_type: &str) -> Option<&'static str> {
    match model_type {
        "sklearn" => Some("mlserver_sklearn.SKLearnModel"),
        "xgboost" => Some("mlserver_xgboost.XGBoostModel"),
        "lightgbm" => Some("mlserver_lightgbm.LightGBMModel"),
        "mllib" => Some("mlserver_mllib.MLlibModel"),
        _ => None,
    }
}

fn insert_schema(
    settings: &mut Map<String, Value>,
    schema_path: Option<&Path>,
) -> Result<(), AdapterError> {
    if let Some(sp) = schema_path {
        let s = schema::read(sp)?;
        settings.insert("inputs".into(), json!(s.inputs));
        settings.insert("outputs".into(), json!(s.outputs));
    }
    Ok(())
}

/// Builds `<mlserver_dir>/<model_id>` for a pulled model at `src`; returns that directory.
pub fn adapt(
    mlserver_dir: &Path,
    model_id: &str,
    model_type: &str,
    src: &Path,
    schema_path: Option<&Path>,
) -> Result<PathBuf, AdapterError> {
    let target = mlserver_dir.join(model_id);
    fresh_dir(&target)?;
    if !src.exists() {
        return Err(AdapterError::NotFound(format!(
            "model path {} does not exist",
            src.display()
        )));
    }
    let mut settings = if src.is_dir() && src.join(SETTINGS).is_file() {
        for e in entries(src)? {
            if e.file_name() != SETTINGS {
                link(&e.path(), &target.join(e.file_name()))?;
            }
        }
        let path = src.join(SETTINGS);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| AdapterError::io(format!("reading {}", path.display()), e))?;
        let mut s = match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(m)) => m,
            _ => {
                return Err(AdapterError::invalid(format!(
                    "{} is not a JSON object",
                    path.display()
                )));
            }
        };
        // A relative uri would resolve against the settings file; make it absolute under the
        // adapted dir, refusing paths that climb out of it.
        let uri = s
            .get("parameters")
            .and_then(|p| p.get("uri"))
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(uri) = uri {
            let abs = safe_path::join(&target, &uri)?;
            if let Some(Value::Object(p)) = s.get_mut("parameters") {
                p.insert(
                    "uri".into(),
                    Value::String(abs.to_string_lossy().into_owned()),
                );
            }
        }
        s
    } else {
        let name = src
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "model".into());
        let linked = target.join(name);
        link(src, &linked)?;
        let mut s = Map::new();
        if let Some(imp) = implementation(model_type) {
            s.insert("implementation".into(), json!(imp));
        }
        s.insert(
            "parameters".into(),
            json!({ "uri": linked.to_string_lossy() }),
        );
        s
    };
    settings.insert("name".into(), json!(model_id));
    insert_schema(&mut settings, schema_path)?;
    let out = target.join(SETTINGS);
    std::fs::write(&out, Value::Object(settings).to_string())
        .map_err(|e| AdapterError::io(format!("writing {}", out.display()), e))?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(SETTINGS)).unwrap()).unwrap()
    }

    #[test]
    fn single_file_gets_generated_settings() {
        let src = tempfile::tempdir().unwrap();
        let f = src.path().join("model.joblib");
        std::fs::write(&f, b"x").unwrap();
        let out = tempfile::tempdir().unwrap();
        let t = adapt(out.path(), "sk-1", "sklearn", &f, None).unwrap();
        let s = settings(&t);
        assert_eq!(s["name"], "sk-1");
        assert_eq!(s["implementation"], "mlserver_sklearn.SKLearnModel");
        assert_eq!(
            s["parameters"]["uri"],
            t.join("model.joblib").to_string_lossy().as_ref()
        );
        let t = adapt(out.path(), "custom-1", "custom", &f, None).unwrap();
        assert!(settings(&t).get("implementation").is_none());
    }

    #[test]
    fn existing_settings_are_rewritten_with_absolute_uri() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("m.joblib"), b"x").unwrap();
        std::fs::write(
            src.path().join(SETTINGS),
            r#"{"name":"orig","implementation":"x.Y","parameters":{"uri":"./m.joblib","version":"v1"}}"#,
        )
        .unwrap();
        let out = tempfile::tempdir().unwrap();
        let t = adapt(out.path(), "id9", "sklearn", src.path(), None).unwrap();
        let s = settings(&t);
        assert_eq!(s["name"], "id9");
        assert_eq!(s["implementation"], "x.Y");
        assert_eq!(
            s["parameters"]["uri"],
            t.join("m.joblib").to_string_lossy().as_ref()
        );
        assert_eq!(s["parameters"]["version"], "v1");
        std::fs::write(
            src.path().join(SETTINGS),
            r#"{"parameters":{"uri":"../../etc/passwd"}}"#,
        )
        .unwrap();
        assert!(adapt(out.path(), "id10", "sklearn", src.path(), None).is_err());
    }
}
