//! The on-disk model repository, in Triton's layout:
//! `<repo>/<name>/config.pbtxt` (optional) and `<repo>/<name>/<version>/model.onnx`.

use crate::error::RuntimeError;
use modelmesh_proto::inference::ModelConfig;
use std::path::{Path, PathBuf};

/// Default model file name inside a version directory.
pub const DEFAULT_MODEL_FILE: &str = "model.onnx";

/// Where a model's files are, as found in the repository.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// The chosen version directory's name (the largest numeric one).
    pub version: String,
    /// The ONNX file to load.
    pub model_path: PathBuf,
    /// The parsed `config.pbtxt`, if there is one.
    pub config: Option<ModelConfig>,
}

/// A model repository rooted at a directory.
#[derive(Debug, Clone)]
pub struct Repository {
    root: PathBuf,
}

/// Refuses names that could reach outside the repository or that no directory can have.
pub fn validate_name(name: &str) -> Result<(), RuntimeError> {
    if name.is_empty() {
        return Err(RuntimeError::invalid("model name must not be empty"));
    }
    if name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        return Err(RuntimeError::invalid(format!(
            "model name '{}' is not a valid directory name (no '/', '\\', '.' or '..')",
            name.escape_debug()
        )));
    }
    Ok(())
}

impl Repository {
    /// A repository at `root` (the directory need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Repository { root: root.into() }
    }

    /// The repository directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Names of the model directories in the repository, sorted.
    pub fn list(&self) -> Result<Vec<String>, RuntimeError> {
        let rd = match std::fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(RuntimeError::Io(format!(
                    "cannot read model repository {}: {e}",
                    self.root.display()
                )));
            }
        };
        let mut names: Vec<String> = rd
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Finds a model's files: the config (if any) and the latest version's ONNX file.
    pub fn locate(&self, name: &str) -> Result<ModelFiles, RuntimeError> {
        validate_name(name)?;
        let dir = self.root.join(name);
        if !dir.is_dir() {
            return Err(RuntimeError::NotInRepository(name.to_string()));
        }
        let bad = |reason: String| RuntimeError::BadModel {
            model: name.to_string(),
            reason,
        };
        let config_path = dir.join("config.pbtxt");
        let config = match std::fs::read_to_string(&config_path) {
            Ok(text) => Some(
                modelmesh_proto::text_format::parse_model_config(&text).map_err(|e| {
                    bad(format!(
                        "config.pbtxt is not a valid Triton model config: {e}"
                    ))
                })?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(bad(format!("cannot read {}: {e}", config_path.display()))),
        };
        if let Some(cfg) = &config {
            let known = ["", "onnxruntime_onnx"];
            let backends = ["", "onnxruntime", "onnx"];
            if !known.contains(&cfg.platform.as_str()) || !backends.contains(&cfg.backend.as_str())
            {
                return Err(bad(format!(
                    "config.pbtxt asks for platform '{}' / backend '{}', but this runtime only serves ONNX models (platform onnxruntime_onnx, backend onnxruntime)",
                    cfg.platform, cfg.backend
                )));
            }
        }
        let file_name = config
            .as_ref()
            .map(|c| c.default_model_filename.as_str())
            .filter(|f| !f.is_empty())
            .unwrap_or(DEFAULT_MODEL_FILE)
            .to_string();
        if file_name.contains(['/', '\\']) || file_name == ".." {
            return Err(bad(format!(
                "default_model_filename '{file_name}' must be a plain file name"
            )));
        }
        let versions = std::fs::read_dir(&dir)
            .map_err(|e| bad(format!("cannot read {}: {e}", dir.display())))?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let n = e.file_name().into_string().ok()?;
                let v: u64 = n.parse().ok()?;
                e.path().join(&file_name).is_file().then_some((v, n))
            })
            .max();
        let Some((_, version)) = versions else {
            return Err(bad(format!(
                "no version directory with a {file_name} (expected {}/<version>/{file_name})",
                dir.display()
            )));
        };
        Ok(ModelFiles {
            model_path: dir.join(&version).join(&file_name),
            version,
            config,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_names_that_escape() {
        for n in ["", ".", "..", "a/b", "../x", "a\\b"] {
            assert!(validate_name(n).is_err(), "{n:?}");
        }
        assert!(validate_name("mnist-v1.2_x").is_ok());
    }

    #[test]
    fn picks_the_largest_numeric_version_with_a_model() {
        let d = tempfile::tempdir().unwrap();
        for v in ["1", "3", "10"] {
            std::fs::create_dir_all(d.path().join("m").join(v)).unwrap();
        }
        std::fs::write(d.path().join("m/1/model.onnx"), b"x").unwrap();
        std::fs::write(d.path().join("m/3/model.onnx"), b"x").unwrap();
        let repo = Repository::new(d.path());
        let f = repo.locate("m").unwrap();
        assert_eq!(f.version, "3");
        assert!(f.config.is_none());
        assert!(matches!(
            repo.locate("nope"),
            Err(RuntimeError::NotInRepository(_))
        ));
        assert_eq!(repo.list().unwrap(), vec!["m".to_string()]);
    }

    #[test]
    fn bad_config_is_reported() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("m/1")).unwrap();
        std::fs::write(d.path().join("m/1/model.onnx"), b"x").unwrap();
        std::fs::write(d.path().join("m/config.pbtxt"), "input [ { nme: \"x\" } ]").unwrap();
        let e = Repository::new(d.path()).locate("m").unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.to_string().contains("config.pbtxt"), "{e}");
    }
}
