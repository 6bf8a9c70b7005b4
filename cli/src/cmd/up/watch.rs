//! Keeps the mesh in step with a directory of Predictor YAML files: new or changed files are
//! applied with setVModel, removed ones with deleteVModel; a bad file is reported and skipped.

use super::predictor::{Registration, parse_file, registration};
use modelmesh_mesh::mesh::Mesh;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Owner of vmodels created from Predictors (as upstream's controller).
pub const OWNER: &str = modelmesh_controller::registration::OWNER_PREDICTOR;

/// What the watcher knows, for `modelmesh status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WatchState {
    /// File → the predictors it declares (vmodel → model id).
    pub applied: BTreeMap<String, Vec<(String, String)>>,
    /// File → why it was skipped.
    pub errors: BTreeMap<String, String>,
}

/// Shared watcher state.
pub type Shared = Arc<Mutex<WatchState>>;

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn read(path: &Path) -> Result<Vec<Registration>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    parse_file(&text)?.iter().map(registration).collect()
}

/// One pass: applies every change since the last pass. Returns whether anything changed.
pub async fn sync(
    dir: &Path,
    mesh: &Arc<Mesh>,
    state: &Shared,
    last: &mut BTreeMap<String, Vec<Registration>>,
) -> bool {
    let mut now: BTreeMap<String, Vec<Registration>> = BTreeMap::new();
    let mut errors = BTreeMap::new();
    for f in files(dir) {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match read(&f) {
            Ok(regs) => {
                now.insert(name, regs);
            }
            Err(e) => {
                if state
                    .lock()
                    .map(|s| s.errors.get(&name) != Some(&e))
                    .unwrap_or(true)
                {
                    tracing::error!(file = %name, error = %e, "skipping invalid predictor file");
                }
                // Keep serving what the file declared before it broke.
                if let Some(prev) = last.get(&name) {
                    now.insert(name.clone(), prev.clone());
                }
                errors.insert(name, e);
            }
        }
    }
    let mut changed = false;
    let wanted: BTreeMap<&str, &Registration> = now
        .values()
        .flatten()
        .map(|r| (r.vmodel_id.as_str(), r))
        .collect();
    let had: BTreeMap<&str, &Registration> = last
        .values()
        .flatten()
        .map(|r| (r.vmodel_id.as_str(), r))
        .collect();
    for (vid, reg) in &wanted {
        if had.get(vid).is_some_and(|h| *h == *reg) {
            continue;
        }
        changed = true;
        let req = reg.set_vmodel_request(true);
        match mesh.set_vmodel(req).await {
            Ok(_) => {
                tracing::info!(predictor = %vid, model = %reg.model_id, path = %reg.path, "predictor applied")
            }
            Err(e) => {
                tracing::error!(predictor = %vid, error = %e, "cannot apply predictor");
                errors.insert(format!("predictor {vid}"), e.to_string());
            }
        }
    }
    for vid in had.keys() {
        if !wanted.contains_key(vid) {
            changed = true;
            match mesh.delete_vmodel(vid, OWNER).await {
                Ok(()) => tracing::info!(predictor = %vid, "predictor removed"),
                Err(e) => tracing::error!(predictor = %vid, error = %e, "cannot remove predictor"),
            }
        }
    }
    if let Ok(mut s) = state.lock() {
        s.applied = now
            .iter()
            .map(|(f, regs)| {
                (
                    f.clone(),
                    regs.iter()
                        .map(|r| (r.vmodel_id.clone(), r.model_id.clone()))
                        .collect(),
                )
            })
            .collect();
        s.errors = errors;
    }
    *last = now;
    changed
}
