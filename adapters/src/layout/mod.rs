//! Rewriting a pulled model into the directory layout each model server expects. Files are
//! symlinked, never copied; the layout dir is always rebuilt from scratch.

pub mod llamacpp;
pub mod mlserver;
pub mod schema;
pub mod triton;

use crate::error::AdapterError;
use crate::puller::{providers::symlink, remove_all};
use std::path::Path;

/// Removes and recreates a directory.
pub(crate) fn fresh_dir(dir: &Path) -> Result<(), AdapterError> {
    remove_all(dir)?;
    std::fs::create_dir_all(dir)
        .map_err(|e| AdapterError::io(format!("creating {}", dir.display()), e))
}

/// Symlinks `target` at `link`, creating parent directories.
pub(crate) fn link(target: &Path, link: &Path) -> Result<(), AdapterError> {
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| AdapterError::io(format!("creating {}", parent.display()), e))?;
    }
    let abs = if target.is_absolute() {
        target.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| AdapterError::io("reading the working directory", e))?
            .join(target)
    };
    symlink(&abs, link)
}

/// The entries of a directory, sorted by name.
pub(crate) fn entries(dir: &Path) -> Result<Vec<std::fs::DirEntry>, AdapterError> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| AdapterError::io(format!("reading {}", dir.display()), e))?
        .filter_map(Result::ok)
        .collect();
    v.sort_by_key(|e| e.file_name());
    Ok(v)
}
