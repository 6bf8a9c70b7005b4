//! Joining untrusted relative paths (model paths, object keys) under a root so that nothing can
//! read or write outside it: no `..`, no absolute paths, no symlink that leads out.

use crate::error::AdapterError;
use std::path::{Component, Path, PathBuf};

/// Splits an untrusted relative path into plain components, refusing `..`, absolute paths,
/// drive prefixes and NUL bytes. Empty and `.` components are dropped.
pub fn clean_relative(path: &str) -> Result<PathBuf, AdapterError> {
    if path.contains('\0') {
        return Err(AdapterError::invalid(format!(
            "path {path:?} contains a NUL byte"
        )));
    }
    if path.starts_with('/') || path.starts_with('\\') {
        return Err(AdapterError::invalid(format!(
            "path '{path}' is absolute: model paths must be relative to the storage root"
        )));
    }
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(AdapterError::invalid(format!(
                    "path '{path}' contains '..': model paths may not leave the storage root"
                )));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(AdapterError::invalid(format!("path '{path}' is absolute")));
            }
        }
    }
    Ok(out)
}

/// `root/rel` for an untrusted `rel`, refusing escapes.
pub fn join(root: &Path, rel: &str) -> Result<PathBuf, AdapterError> {
    Ok(root.join(clean_relative(rel)?))
}

/// Resolves symlinks in `path` and checks that the result is still inside `root` (also resolved).
/// Returns the canonical path.
pub fn check_inside(root: &Path, path: &Path) -> Result<PathBuf, AdapterError> {
    let root_c = root.canonicalize().map_err(|e| {
        AdapterError::NotFound(format!(
            "storage root {} is not accessible: {e}",
            root.display()
        ))
    })?;
    let p = path.canonicalize().map_err(|e| {
        AdapterError::NotFound(format!("model path {} does not exist: {e}", path.display()))
    })?;
    if !p.starts_with(&root_c) {
        return Err(AdapterError::invalid(format!(
            "model path {} resolves to {}, outside its storage root {}: symlinks may not leave the root",
            path.display(),
            p.display(),
            root_c.display()
        )));
    }
    Ok(p)
}

/// Checks every entry under `dir` (recursively) stays inside `root` once symlinks are resolved.
pub fn check_tree_inside(root: &Path, dir: &Path) -> Result<(), AdapterError> {
    let canonical = check_inside(root, dir)?;
    if canonical.is_dir() {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| AdapterError::io(format!("reading {}", dir.display()), e))?;
        for e in entries {
            let e = e.map_err(|e| AdapterError::io(format!("reading {}", dir.display()), e))?;
            check_tree_inside(root, &e.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_escapes() {
        for bad in ["../x", "a/../../b", "/etc/passwd", "a/..", "\\x", "a\0b"] {
            assert!(clean_relative(bad).is_err(), "{bad:?}");
        }
        assert_eq!(clean_relative("./a//b/").unwrap(), PathBuf::from("a/b"));
        assert_eq!(clean_relative("").unwrap(), PathBuf::new());
    }

    #[cfg(unix)]
    #[test]
    fn symlink_out_of_root_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("link"))
            .unwrap();
        std::fs::write(root.path().join("ok"), b"o").unwrap();
        assert!(check_inside(root.path(), &root.path().join("ok")).is_ok());
        let e = check_inside(root.path(), &root.path().join("link")).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        std::fs::create_dir(root.path().join("d")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("d/escape")).unwrap();
        assert!(check_tree_inside(root.path(), &root.path().join("d")).is_err());
    }

    proptest::proptest! {
        #[test]
        fn joined_paths_never_leave_the_root(s in "[a-z./\\\\]{0,24}") {
            if let Ok(p) = join(Path::new("/root"), &s) {
                proptest::prop_assert!(p.starts_with("/root"));
                proptest::prop_assert!(!p.components().any(|c| c == Component::ParentDir));
            }
        }
    }
}
