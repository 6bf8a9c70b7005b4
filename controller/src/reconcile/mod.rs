//! Reconcilers: what the controller does for each resource, over the Kubernetes API and the
//! mesh. The decisions they apply live in the pure modules (registration, status, labels,
//! deployment); these only read, call and write.

pub mod namespace;
pub mod predictor;

use crate::config::Config;
use crate::mesh_client::MeshApi;
use kube::runtime::controller::Action;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// What every reconcile needs.
pub struct Ctx<M> {
    /// The Kubernetes client.
    pub client: kube::Client,
    /// The mesh.
    pub mesh: M,
    /// The current `model-serving-config` (replaced when the ConfigMap changes).
    pub config: RwLock<Config>,
    /// Now, in ms since the epoch (a parameter so tests control time).
    pub now_ms: fn() -> i64,
    /// The controller's namespace (config, etcd secret).
    pub controller_namespace: String,
    /// The etcd secret's name (`ETCD_SECRET_NAME`).
    pub etcd_secret_name: String,
    /// Scale-to-zero bookkeeping per namespace.
    pub runtime_state: Mutex<HashMap<String, crate::plan::ScaleState>>,
    /// Events about the resources (deduplicated into series).
    pub recorder: kube::runtime::events::Recorder,
    /// The `Valid` condition last written on each runtime ((kind, namespace, name) → valid).
    pub runtime_validity: Mutex<HashMap<(String, String, String), bool>>,
}

/// The event recorder of the controller.
pub fn recorder(client: &kube::Client) -> kube::runtime::events::Recorder {
    kube::runtime::events::Recorder::new(
        client.clone(),
        kube::runtime::events::Reporter {
            controller: "modelmesh-controller".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    )
}

impl<M: MeshApi> Ctx<M> {
    /// A context with the wall clock.
    pub fn new(
        client: kube::Client,
        mesh: M,
        config: Config,
        controller_namespace: &str,
        etcd_secret_name: &str,
    ) -> Self {
        Ctx {
            mesh,
            config: RwLock::new(config),
            now_ms: wall_clock_ms,
            controller_namespace: controller_namespace.to_string(),
            etcd_secret_name: etcd_secret_name.to_string(),
            runtime_state: Default::default(),
            recorder: recorder(&client),
            runtime_validity: Default::default(),
            client,
        }
    }

    /// A snapshot of the config.
    pub fn config(&self) -> Config {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Milliseconds since the epoch.
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Why a reconcile failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The Kubernetes API refused or failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The mesh refused or failed.
    #[error("mesh: {0}")]
    Mesh(String),
}

/// Retry after a failed reconcile (upstream's constant 5 s).
pub fn error_policy<K, M>(_obj: Arc<K>, err: &ReconcileError, _ctx: Arc<Ctx<M>>) -> Action {
    tracing::warn!(error = %err, "reconcile failed; retrying in 5 s");
    Action::requeue(Duration::from_secs(5))
}
