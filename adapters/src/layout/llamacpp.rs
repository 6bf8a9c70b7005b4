//! llama.cpp router's layout: its `--models-dir` names a model after a top-level file
//! (`<modelId>.gguf`) or a directory (`<modelId>/` holding the model file, and any projector
//! or split files). A pulled model that is one `.gguf` file is linked as `<modelId>.gguf`; a
//! directory has its `.gguf` files linked into `<modelId>/`.

use super::{entries, fresh_dir, link};
use crate::error::AdapterError;
use crate::puller::remove_all;
use std::path::{Path, PathBuf};

fn is_gguf(p: &Path) -> bool {
    p.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// The file holding the model's own weights in a directory of GGUF files: not a projector or
/// draft model, and the first shard of a split model.
pub fn model_file(files: &[PathBuf]) -> Option<&PathBuf> {
    let name = |p: &PathBuf| {
        p.file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default()
    };
    let mut candidates: Vec<&PathBuf> = files
        .iter()
        .filter(|p| {
            let n = name(p);
            !n.contains("mmproj")
                && !n.starts_with("mtp-")
                && !n.starts_with("dspark-")
                && !n.starts_with("dflash-")
        })
        .collect();
    if let Some(first) = candidates.iter().find(|p| name(p).contains("-00001-of-")) {
        return Some(first);
    }
    candidates.sort();
    candidates.into_iter().next()
}

/// Where the model lives in the router's directory, and the file to read its metadata from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adapted {
    /// `<dir>/<id>.gguf` or `<dir>/<id>/`.
    pub path: PathBuf,
    /// The model's weights file (its GGUF header describes the model).
    pub model_file: PathBuf,
}

/// Links the pulled model at `src` into `dir` under `model_id`.
pub fn adapt(dir: &Path, model_id: &str, src: &Path) -> Result<Adapted, AdapterError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| AdapterError::io(format!("creating {}", dir.display()), e))?;
    let file_target = dir.join(format!("{model_id}.gguf"));
    let dir_target = dir.join(model_id);
    remove_all(&file_target)?;
    remove_all(&dir_target)?;
    if src.is_file() {
        if !is_gguf(src) {
            return Err(AdapterError::invalid(format!(
                "model file {} is not a .gguf file (llama.cpp serves GGUF models)",
                src.display()
            )));
        }
        link(src, &file_target)?;
        return Ok(Adapted {
            path: file_target,
            model_file: src.to_path_buf(),
        });
    }
    if !src.is_dir() {
        return Err(AdapterError::NotFound(format!(
            "model path {} does not exist",
            src.display()
        )));
    }
    let files: Vec<PathBuf> = entries(src)?
        .into_iter()
        .map(|e| e.path())
        .filter(|p| p.is_file() && is_gguf(p))
        .collect();
    let Some(model) = model_file(&files).cloned() else {
        return Err(AdapterError::invalid(format!(
            "model directory {} holds no .gguf model file",
            src.display()
        )));
    };
    if files.len() == 1 {
        link(&model, &file_target)?;
        return Ok(Adapted {
            path: file_target,
            model_file: model,
        });
    }
    fresh_dir(&dir_target)?;
    for f in &files {
        if let Some(name) = f.file_name() {
            link(f, &dir_target.join(name))?;
        }
    }
    Ok(Adapted {
        path: dir_target,
        model_file: model,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_or_a_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("multi")).unwrap();
        std::fs::write(src.join("m.gguf"), b"GGUF").unwrap();
        std::fs::write(src.join("multi/model.gguf"), b"GGUF").unwrap();
        std::fs::write(src.join("multi/mmproj-model.gguf"), b"GGUF").unwrap();
        std::fs::write(src.join("notes.txt"), b"x").unwrap();
        let dir = tmp.path().join("_llamacpp_models");
        let a = adapt(&dir, "alpha", &src.join("m.gguf")).unwrap();
        assert_eq!(a.path, dir.join("alpha.gguf"));
        assert!(a.path.exists());
        let b = adapt(&dir, "beta", &src.join("multi")).unwrap();
        assert_eq!(b.path, dir.join("beta"));
        assert_eq!(b.model_file, src.join("multi/model.gguf"));
        assert!(dir.join("beta/mmproj-model.gguf").exists());
        assert!(adapt(&dir, "bad", &src.join("notes.txt")).is_err());
        assert!(adapt(&dir, "gone", &src.join("missing")).is_err());
    }

    #[test]
    fn the_first_shard_is_the_model() {
        let files: Vec<PathBuf> = [
            "m-00002-of-00002.gguf",
            "m-00001-of-00002.gguf",
            "mmproj.gguf",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(model_file(&files), Some(&files[1]));
    }
}
