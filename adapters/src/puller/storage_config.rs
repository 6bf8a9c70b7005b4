//! Storage configuration: the `storage-config` secret mounted as a directory (one file per
//! storage key, each a JSON object with a `type`), the defaults used when a model names no key,
//! and the predictor's `storage_params` overrides, limited to what `overrides` allows.

use crate::error::AdapterError;
use crate::model_key::ModelKey;
use serde_json::{Map, Value};
use std::path::Path;

/// One resolved storage entry: its `type` plus provider fields.
#[derive(Clone, PartialEq)]
pub struct StorageConfig {
    /// Provider type: `s3`, `gcs`, `azure`, `http`, `pvc` or `local`.
    pub kind: String,
    /// All fields, including `type`.
    pub fields: Map<String, Value>,
}

impl std::fmt::Debug for StorageConfig {
    // Entries hold credentials: print the field names only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageConfig")
            .field("kind", &self.kind)
            .field("fields", &self.fields.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl StorageConfig {
    /// A string field, if present.
    pub fn str(&self, k: &str) -> Option<&str> {
        self.fields
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// A required string field, or an error naming it and the provider.
    pub fn require(&self, k: &str) -> Result<&str, AdapterError> {
        self.str(k).ok_or_else(|| {
            AdapterError::invalid(format!(
                "{} storage configuration is missing required string '{k}'",
                self.kind
            ))
        })
    }
}

fn valid_key(key: &str) -> bool {
    !key.is_empty() && !key.starts_with('.') && !key.contains(['/', '\\', '\0'])
}

fn read_entry(dir: &Path, key: &str) -> Result<Option<Map<String, Value>>, AdapterError> {
    if !valid_key(key) {
        return Err(AdapterError::invalid(format!(
            "storage key '{key}' is not a valid key name"
        )));
    }
    let path = dir.join(key);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(AdapterError::io(
                format!("reading storage config {}", path.display()),
                e,
            ));
        }
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(Some(m)),
        // Never echo the file: it holds credentials.
        Ok(_) => Err(AdapterError::invalid(format!(
            "storage config entry '{key}' is not a JSON object"
        ))),
        Err(e) => Err(AdapterError::invalid(format!(
            "storage config entry '{key}' is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))),
    }
}

/// Sets `path` (dot-separated) in `map` to `value`, creating objects on the way. Overwriting a
/// non-object with an object path is an error.
pub fn set_dot_path(
    map: &mut Map<String, Value>,
    path: &str,
    value: Value,
) -> Result<(), AdapterError> {
    let mut parts = path.split('.').peekable();
    let mut cur = map;
    while let Some(part) = parts.next() {
        if part.is_empty() {
            return Err(AdapterError::invalid(format!(
                "storage parameter name '{path}' has an empty segment"
            )));
        }
        if parts.peek().is_none() {
            cur.insert(part.to_string(), value);
            return Ok(());
        }
        let next = cur
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        cur = match next {
            Value::Object(m) => m,
            _ => {
                return Err(AdapterError::invalid(format!(
                    "storage parameter '{path}': '{part}' is already a value, not an object"
                )));
            }
        };
    }
    Ok(())
}

/// Resolves the storage entry for a model: its `storage_key`, else `default_<type>` / `default`,
/// then `bucket` and `storage_params` overrides. A missing `type` is upstream's
/// "Predictor Storage field missing".
pub fn resolve(dir: &Path, key: &ModelKey) -> Result<StorageConfig, AdapterError> {
    let params = match key.0.get("storage_params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            return Err(AdapterError::invalid(
                "modelKey.storage_params must be a JSON object",
            ));
        }
    };
    let mut fields = match key.str("storage_key").filter(|s| !s.is_empty()) {
        Some(k) => read_entry(dir, k)?.ok_or_else(|| {
            AdapterError::NotFound(format!(
                "Did not find storage config for key '{k}' (no file {} from the storage-config secret)",
                dir.join(k).display()
            ))
        })?,
        None => {
            let typed = params.get("type").and_then(Value::as_str).map(|t| format!("default_{t}"));
            let mut found = None;
            for k in typed.iter().map(String::as_str).chain(["default"]) {
                if let Some(m) = read_entry(dir, k)? {
                    found = Some(m);
                    break;
                }
            }
            found.unwrap_or_default()
        }
    };
    if let Some(b) = key.str("bucket").filter(|b| !b.is_empty()) {
        fields.insert("bucket".into(), Value::String(b.to_string()));
    }
    // Only what picks an object may come from the registration (see `overrides`).
    for (k, v) in super::overrides::allowed(&fields, params)? {
        set_dot_path(&mut fields, &k, v)?;
    }
    if !fields.contains_key("bucket")
        && let Some(b) = fields.get("default_bucket").cloned()
    {
        fields.insert("bucket".into(), b);
    }
    let kind = match fields.get("type") {
        Some(Value::String(t)) if !t.is_empty() => t.to_ascii_lowercase(),
        _ => return Err(AdapterError::invalid("Predictor Storage field missing")),
    };
    Ok(StorageConfig { kind, fields })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(entries: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (k, v) in entries {
            std::fs::write(d.path().join(k), v).unwrap();
        }
        d
    }

    #[test]
    fn named_key_default_and_overrides() {
        let d = dir_with(&[
            (
                "mys3",
                r#"{"type":"s3","bucket":"b1","endpoint_url":"http://x"}"#,
            ),
            ("default", r#"{"type":"pvc","name":"p"}"#),
        ]);
        let k =
            ModelKey::parse(r#"{"storage_key":"mys3","storage_params":{"bucket":"b2"}}"#).unwrap();
        let c = resolve(d.path(), &k).unwrap();
        assert_eq!(c.kind, "s3");
        assert_eq!(c.str("bucket"), Some("b2"));
        assert_eq!(c.str("endpoint_url"), Some("http://x"));
        // Where to connect is the secret's alone.
        let k = ModelKey::parse(
            r#"{"storage_key":"mys3","storage_params":{"endpoint_url":"http://attacker"}}"#,
        )
        .unwrap();
        let e = resolve(d.path(), &k).unwrap_err();
        assert!(e.to_string().contains("storage_params.endpoint_url"), "{e}");
        let c = resolve(d.path(), &ModelKey::default()).unwrap();
        assert_eq!(c.kind, "pvc");
        let e = resolve(
            d.path(),
            &ModelKey::parse(r#"{"storage_key":"nope"}"#).unwrap(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("Did not find storage config for key 'nope'")
        );
        let e = resolve(
            d.path(),
            &ModelKey::parse(r#"{"storage_key":"../etc"}"#).unwrap(),
        )
        .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn missing_type_is_upstreams_message() {
        let d = dir_with(&[]);
        let e = resolve(d.path(), &ModelKey::default()).unwrap_err();
        assert_eq!(e.to_string(), "Predictor Storage field missing");
    }

    #[test]
    fn bad_json_never_echoes_secrets() {
        let d = dir_with(&[("k", r#"{"type":"s3","secret_access_key":"SUPERSECRET""#)]);
        let e = resolve(
            d.path(),
            &ModelKey::parse(r#"{"storage_key":"k"}"#).unwrap(),
        )
        .unwrap_err();
        assert!(!e.to_string().contains("SUPERSECRET"));
    }

    #[test]
    fn dot_path_conflicts_are_errors() {
        let mut m = Map::new();
        set_dot_path(&mut m, "a", Value::from("x")).unwrap();
        assert!(set_dot_path(&mut m, "a.b", Value::from("y")).is_err());
        assert!(set_dot_path(&mut m, "c..d", Value::from("y")).is_err());
    }
}
