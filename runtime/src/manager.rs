//! The set of models this server holds and their states: loading, ready, unloaded, failed.
//! Loads of one name are serialised; different names load in parallel. The state map is behind
//! a plain lock that is never held across an await.

use crate::error::RuntimeError;
use crate::onnx::OnnxModel;
use crate::repository::{Repository, validate_name};
use crate::signature::{self, Signature};
use modelmesh_proto::inference::{ModelConfig, repository_index_response::ModelIndex};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// A model that is loaded and ready to serve.
#[derive(Debug)]
pub struct LoadedModel {
    /// Model name (the repository directory name).
    pub name: String,
    /// Loaded version.
    pub version: String,
    /// Signature requests are validated against.
    pub signature: Signature,
    /// Model configuration as reported by ModelConfig.
    pub config: ModelConfig,
    /// Size of the model file on disk.
    pub file_size: u64,
    /// The compiled model.
    pub model: OnnxModel,
    /// Exponential moving average of run time, in nanoseconds.
    avg_run_ns: AtomicU64,
}

impl LoadedModel {
    /// Records one run's duration in the moving average (weight 1/8).
    pub fn record_run(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let old = self.avg_run_ns.load(Ordering::Relaxed);
        let new = if old == 0 { ns } else { old - old / 8 + ns / 8 };
        self.avg_run_ns.store(new, Ordering::Relaxed);
    }

    /// The moving average of run time (zero before the first run).
    pub fn average_run(&self) -> Duration {
        Duration::from_nanos(self.avg_run_ns.load(Ordering::Relaxed))
    }
}

#[derive(Debug, Clone)]
enum State {
    Loading,
    Ready(Arc<LoadedModel>),
    Unavailable { version: String, reason: String },
}

/// Holds every model of one server.
#[derive(Debug)]
pub struct ModelManager {
    repo: Repository,
    states: RwLock<HashMap<String, State>>,
    load_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    faults: crate::faults::Faults,
}

fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // A panic while holding the lock cannot leave the map half-updated (single inserts), so a
    // poisoned lock is still safe to use.
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write_lock<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl ModelManager {
    /// A manager serving models from `repo`.
    pub fn new(repo: Repository) -> Self {
        ModelManager {
            repo,
            states: RwLock::default(),
            load_locks: Mutex::default(),
            faults: Default::default(),
        }
    }

    /// The same manager with injected delays (tests and chaos drills).
    pub fn with_faults(mut self, faults: crate::faults::Faults) -> Self {
        self.faults = faults;
        self
    }

    /// The injected delays.
    pub fn faults(&self) -> &crate::faults::Faults {
        &self.faults
    }

    /// The repository models are loaded from.
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    fn load_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.load_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(name.to_string()).or_default().clone()
    }

    /// Loads (or reloads) a model from the repository; returns when it is ready or has failed.
    pub async fn load(&self, name: &str) -> Result<Arc<LoadedModel>, RuntimeError> {
        validate_name(name)?;
        let lock = self.load_lock(name);
        let _guard = lock.lock().await;
        let previous = read_lock(&self.states).get(name).cloned();
        write_lock(&self.states).insert(name.to_string(), State::Loading);
        self.faults.load_delay.wait().await;
        let repo = self.repo.clone();
        let owned = name.to_string();
        let result = tokio::task::spawn_blocking(move || load_blocking(&repo, &owned))
            .await
            .unwrap_or_else(|e| {
                Err(RuntimeError::BadModel {
                    model: name.to_string(),
                    reason: format!("loader crashed: {e}"),
                })
            });
        let mut states = write_lock(&self.states);
        match result {
            Ok(model) => {
                let model = Arc::new(model);
                states.insert(name.to_string(), State::Ready(model.clone()));
                tracing::info!(model = name, version = %model.version, "model loaded");
                Ok(model)
            }
            Err(e) => {
                // A failed reload leaves the previous version serving, as Triton does.
                match previous {
                    Some(State::Ready(m)) => {
                        states.insert(name.to_string(), State::Ready(m));
                    }
                    _ => {
                        states.insert(
                            name.to_string(),
                            State::Unavailable {
                                version: String::new(),
                                reason: e.to_string(),
                            },
                        );
                    }
                }
                tracing::warn!(model = name, error = %e, "model load failed");
                Err(e)
            }
        }
    }

    /// Unloads a model. Unknown models are not an error (Triton's behaviour).
    pub async fn unload(&self, name: &str) -> Result<(), RuntimeError> {
        validate_name(name)?;
        let lock = self.load_lock(name);
        let _guard = lock.lock().await;
        let mut states = write_lock(&self.states);
        if let Some(State::Ready(m)) = states.get(name) {
            let version = m.version.clone();
            states.insert(
                name.to_string(),
                State::Unavailable {
                    version,
                    reason: "unloaded".into(),
                },
            );
            tracing::info!(model = name, "model unloaded");
        }
        Ok(())
    }

    /// Unloads every model.
    pub async fn unload_all(&self) {
        let names: Vec<String> = read_lock(&self.states).keys().cloned().collect();
        for n in names {
            let _ = self.unload(&n).await;
        }
    }

    /// The ready model `name` (at `version` if not empty), or Triton's NOT_FOUND error.
    pub fn get(&self, name: &str, version: &str) -> Result<Arc<LoadedModel>, RuntimeError> {
        match read_lock(&self.states).get(name) {
            Some(State::Ready(m)) => {
                if version.is_empty() || version == m.version {
                    Ok(m.clone())
                } else {
                    Err(RuntimeError::UnknownVersion {
                        model: name.into(),
                        version: version.into(),
                    })
                }
            }
            Some(_) => Err(RuntimeError::NoAvailableVersions(name.to_string())),
            None if self.repo.locate(name).is_ok() => {
                Err(RuntimeError::NoAvailableVersions(name.to_string()))
            }
            None => Err(RuntimeError::UnknownModel(name.to_string())),
        }
    }

    /// Whether `name` is loaded (at `version` if not empty).
    pub fn is_ready(&self, name: &str, version: &str) -> bool {
        self.get(name, version).is_ok()
    }

    /// The repository index: every model directory plus every model with a state.
    pub fn index(&self, ready_only: bool) -> Result<Vec<ModelIndex>, RuntimeError> {
        let states = read_lock(&self.states).clone();
        let mut names = self.repo.list()?;
        for n in states.keys() {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let entry = match states.get(&name) {
                None => ModelIndex {
                    name,
                    ..Default::default()
                },
                Some(State::Loading) => ModelIndex {
                    name,
                    state: "LOADING".into(),
                    ..Default::default()
                },
                Some(State::Ready(m)) => ModelIndex {
                    name,
                    version: m.version.clone(),
                    state: "READY".into(),
                    reason: String::new(),
                },
                Some(State::Unavailable { version, reason }) => ModelIndex {
                    name,
                    version: version.clone(),
                    state: "UNAVAILABLE".into(),
                    reason: reason.clone(),
                },
            };
            if !ready_only || entry.state == "READY" {
                out.push(entry);
            }
        }
        Ok(out)
    }
}

fn load_blocking(repo: &Repository, name: &str) -> Result<LoadedModel, RuntimeError> {
    let files = repo.locate(name)?;
    let bad = |reason: String| RuntimeError::BadModel {
        model: name.to_string(),
        reason,
    };
    let bytes = std::fs::read(&files.model_path)
        .map_err(|e| bad(format!("cannot read {}: {e}", files.model_path.display())))?;
    let model =
        OnnxModel::load(&bytes).map_err(|e| bad(format!("{}: {e}", files.model_path.display())))?;
    let graph = model.graph_signature().clone();
    let (signature, config) = match files.config {
        Some(mut cfg) => {
            let declared = signature::from_config(&cfg).map_err(bad)?;
            let sig = signature::reconcile(&declared, &graph).map_err(bad)?;
            cfg.name = name.to_string();
            if cfg.platform.is_empty() {
                cfg.platform = "onnxruntime_onnx".into();
            }
            if cfg.backend.is_empty() {
                cfg.backend = "onnxruntime".into();
            }
            (sig, cfg)
        }
        None => {
            let cfg = signature::to_config(name, &graph);
            (graph, cfg)
        }
    };
    Ok(LoadedModel {
        name: name.to_string(),
        version: files.version,
        signature,
        config,
        file_size: bytes.len() as u64,
        model,
        avg_run_ns: AtomicU64::new(0),
    })
}
