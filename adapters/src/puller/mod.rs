//! The model puller: resolves a model's storage entry, fetches its files into
//! `<root>/<modelId>/`, and rewrites the modelKey to point at the local copy (with its size).

pub mod http_guard;
pub mod overrides;
pub mod providers;
pub mod safe_path;
pub mod storage_config;

use crate::error::AdapterError;
use crate::model_key::ModelKey;
use providers::Mounts;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Name used for the local copy when the model path is empty or the storage root itself.
const DEFAULT_LOCAL_NAME: &str = "_model";

/// A model fetched to local disk.
#[derive(Debug, Clone)]
pub struct PulledModel {
    /// The local file or directory holding the model.
    pub model_path: PathBuf,
    /// The modelKey, rewritten: `disk_size_bytes` added, `schema_path` local, storage fields dropped.
    pub model_key: ModelKey,
}

/// What storage the operator allows beyond the cloud providers and PVCs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoragePolicy {
    /// `type: local` entries (a directory on the adapter's own disk): `modelmesh up` and tests
    /// only (`MODELMESH_ALLOW_LOCAL_STORAGE`).
    pub allow_local: bool,
    /// `http` storage on loopback and link-local addresses (`MODELMESH_STORAGE_ALLOW_LOOPBACK`).
    pub allow_loopback: bool,
}

/// Fetches models from storage into a local root.
#[derive(Debug, Clone)]
pub struct Puller {
    root: PathBuf,
    storage_config_dir: PathBuf,
    mounts: Mounts,
    policy: StoragePolicy,
}

/// Checks a model id can be used as one directory name.
pub fn validate_model_id(id: &str) -> Result<(), AdapterError> {
    if id.is_empty() {
        return Err(AdapterError::invalid("modelId must not be empty"));
    }
    if id == "." || id == ".." || id.starts_with('_') || id.contains(['/', '\\', '\0']) {
        return Err(AdapterError::invalid(format!(
            "modelId '{}' cannot be used as a directory name (no '/', '\\', leading '_', '.' or '..')",
            id.escape_debug()
        )));
    }
    Ok(())
}

/// Total size of the files under `path`, following symlinks (bounded depth, so a link loop ends).
pub fn disk_size(path: &Path) -> u64 {
    fn walk(p: &Path, depth: u32) -> u64 {
        if depth > 32 {
            return 0;
        }
        match std::fs::metadata(p) {
            Ok(m) if m.is_file() => m.len(),
            Ok(m) if m.is_dir() => std::fs::read_dir(p)
                .map(|rd| {
                    rd.filter_map(Result::ok)
                        .map(|e| walk(&e.path(), depth + 1))
                        .sum()
                })
                .unwrap_or(0),
            _ => 0,
        }
    }
    walk(path, 0)
}

impl Puller {
    /// A puller writing under `root`, reading storage entries from `storage_config_dir`.
    pub fn new(
        root: impl Into<PathBuf>,
        storage_config_dir: impl Into<PathBuf>,
        pvc_root: impl Into<PathBuf>,
        policy: StoragePolicy,
    ) -> Self {
        Puller {
            root: root.into(),
            storage_config_dir: storage_config_dir.into(),
            mounts: Mounts {
                pvc_root: pvc_root.into(),
                allow_loopback: policy.allow_loopback,
            },
            policy,
        }
    }

    /// The local directory of a model's files.
    pub fn model_dir(&self, model_id: &str) -> PathBuf {
        self.root.join(model_id)
    }

    /// Fetches a model; any previous local copy is replaced.
    pub async fn pull(
        &self,
        model_id: &str,
        model_path: &str,
        key: &ModelKey,
    ) -> Result<PulledModel, AdapterError> {
        validate_model_id(model_id)?;
        let cfg = storage_config::resolve(&self.storage_config_dir, key)?;
        if cfg.kind == "local" && !self.policy.allow_local {
            return Err(AdapterError::invalid(
                "storage type 'local' (a directory on the adapter's own disk) is only allowed with modelmesh up or MODELMESH_ALLOW_LOCAL_STORAGE=true; use pvc, s3, gcs, azure or http",
            ));
        }
        let remote = safe_path::clean_relative(model_path)?;
        let local_name = remote
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| DEFAULT_LOCAL_NAME.to_string());
        let dir = self.model_dir(model_id);
        remove_all(&dir)?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| AdapterError::io(format!("creating {}", dir.display()), e))?;
        let dest = dir.join(&local_name);
        tracing::info!(model_id, storage = %cfg.kind, path = model_path, "pulling model");
        providers::fetch(&cfg, &remote, &dest, &self.mounts).await?;

        let mut new_key = key.clone();
        if let Some(schema) = key.str("schema_path").filter(|s| !s.is_empty()) {
            let remote_schema = safe_path::clean_relative(schema)?;
            let mut name = remote_schema
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "_schema.json".into());
            if name == local_name {
                name = "_schema.json".into();
            }
            let schema_dest = dir.join(&name);
            providers::fetch(&cfg, &remote_schema, &schema_dest, &self.mounts).await?;
            new_key.0.insert(
                "schema_path".into(),
                Value::String(schema_dest.to_string_lossy().into_owned()),
            );
        }
        let size = disk_size(&dest);
        new_key
            .0
            .insert("disk_size_bytes".into(), Value::from(size));
        for k in ["storage_key", "storage_params", "bucket"] {
            new_key.0.remove(k);
        }
        tracing::info!(model_id, bytes = size, local = %dest.display(), "model pulled");
        Ok(PulledModel {
            model_path: dest,
            model_key: new_key,
        })
    }

    /// Where a model on mounted storage (a PVC, or `local` where allowed) is, without pulling
    /// it; `None` for storage that must be fetched (its size is not known before the pull).
    pub fn mounted_path(&self, model_path: &str, key: &ModelKey) -> Option<PathBuf> {
        let cfg = storage_config::resolve(&self.storage_config_dir, key).ok()?;
        if cfg.kind == "local" && !self.policy.allow_local {
            return None;
        }
        let remote = safe_path::clean_relative(model_path).ok()?;
        providers::mounted_path(&cfg, &remote, &self.mounts)
            .ok()
            .flatten()
    }

    /// Deletes a model's local files (nothing to do if there are none).
    pub fn cleanup(&self, model_id: &str) -> Result<(), AdapterError> {
        validate_model_id(model_id)?;
        remove_all(&self.model_dir(model_id))
    }
}

/// Removes a file, symlink or directory tree; absent is fine. Symlinks are removed, never
/// followed.
pub fn remove_all(p: &Path) -> Result<(), AdapterError> {
    match std::fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(AdapterError::io(format!("inspecting {}", p.display()), e)),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p)
            .map_err(|e| AdapterError::io(format!("removing {}", p.display()), e)),
        Ok(_) => std::fs::remove_file(p)
            .map_err(|e| AdapterError::io(format!("removing {}", p.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pulls_from_a_local_root_and_refuses_escapes() {
        let store = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(store.path().join("models/m1")).unwrap();
        std::fs::write(store.path().join("models/m1/model.onnx"), vec![0u8; 100]).unwrap();
        let cfgdir = tempfile::tempdir().unwrap();
        std::fs::write(
            cfgdir.path().join("localdisk"),
            serde_json::json!({"type": "local", "root": store.path()}).to_string(),
        )
        .unwrap();
        let root = tempfile::tempdir().unwrap();
        let p = Puller::new(
            root.path(),
            cfgdir.path(),
            "/nonexistent",
            StoragePolicy {
                allow_local: true,
                allow_loopback: false,
            },
        );
        let key = ModelKey::parse(r#"{"storage_key":"localdisk","model_type":"onnx"}"#).unwrap();
        let got = p.pull("id1", "models/m1", &key).await.unwrap();
        assert_eq!(got.model_path, root.path().join("id1/m1"));
        assert_eq!(got.model_key.disk_size_bytes(), Some(100));
        assert!(got.model_key.str("storage_key").is_none());
        for bad in ["../x", "/etc", "models/../../x"] {
            let e = p.pull("id2", bad, &key).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}: {e}");
        }
        let e = p.pull("id3", "models/missing", &key).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
        assert!(p.pull("", "models/m1", &key).await.is_err());
        assert!(p.pull("../up", "models/m1", &key).await.is_err());
        // Without the operator's leave, a local directory is never read.
        let strict = Puller::new(
            root.path(),
            cfgdir.path(),
            "/nonexistent",
            StoragePolicy::default(),
        );
        let e = strict.pull("id4", "models/m1", &key).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        assert!(e.to_string().contains("'local'"), "{e}");
        p.cleanup("id1").unwrap();
        assert!(!root.path().join("id1").exists());
        assert!(
            store.path().join("models/m1/model.onnx").exists(),
            "cleanup must not follow links"
        );
    }
}
