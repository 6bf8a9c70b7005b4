//! `modelmesh controller run`: connects to the cluster, loads (and follows) the
//! `model-serving-config` ConfigMap, tracks which namespaces are served, runs the Predictor and
//! InferenceService reconcilers and the per-namespace runtime reconciler (triggered by changes
//! to runtimes, predictors, namespaces and the config), and serves `/healthz` and `/readyz`.
//! What wakes the runtime reconciler is in triggers.rs, its loop in runtime_loop.rs, the
//! Predictor and InferenceService controllers in resources.rs, mesh changes in mesh_events.rs,
//! the leader Lease in leadership.rs.

mod leadership;
mod mesh_events;
mod resources;
mod runtime_loop;
#[cfg(test)]
mod tests;
mod triggers;

use crate::config::Config;
use crate::crd::{InferenceService, Predictor};
use crate::mesh_client::GrpcMesh;
use crate::reconcile::{Ctx, ReconcileError};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc::unbounded_channel;

/// Label that opts a namespace in (cluster scope).
pub const ENABLED_LABEL: &str = "modelmesh-enabled";

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The controller's own namespace (holds the config and the etcd secret).
    pub namespace: String,
    /// Serve only the controller's namespace.
    pub namespace_scope: bool,
    /// Name of the config ConfigMap.
    pub config_map: String,
    /// Development: call this mesh endpoint instead of each namespace's Service.
    pub mesh_endpoint: Option<String>,
    /// `/healthz` and `/readyz`.
    pub health_addr: Option<SocketAddr>,
    /// Prometheus `/metrics`.
    pub metrics_addr: Option<SocketAddr>,
    /// Reconcile InferenceServices (when the CRD is installed).
    pub watch_isvc: bool,
    /// Take the leader Lease before reconciling (several replicas), as this identity.
    pub leader_identity: Option<String>,
}

/// Why the controller could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No cluster to talk to, or it refused.
    #[error("Kubernetes API (run in a pod, or set KUBECONFIG): {0}")]
    Kube(kube::Error),
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The health port could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    /// Another replica took the lease (this one must stop reconciling).
    #[error("lost the leader lease {0}; exiting so a fresh start can stand again")]
    LostLeadership(&'static str),
}

// By hand rather than `#[from]`, so the message carries kube's error once, not again as a
// source chain.
impl From<kube::Error> for RunError {
    fn from(e: kube::Error) -> Self {
        RunError::Kube(e)
    }
}

/// Whether a namespace is served (cluster scope): labelled `modelmesh-enabled=true` and not
/// terminating; the controller's own namespace unless labelled otherwise.
pub fn namespace_enabled(ns: &Namespace, own: &str) -> bool {
    let terminating = ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    let label = ns.labels().get(ENABLED_LABEL).map(String::as_str);
    !terminating && (label == Some("true") || (ns.name_any() == own && label.is_none()))
}

fn config_from(cm: Option<&ConfigMap>) -> Result<Config, crate::config::ConfigError> {
    match cm {
        None => Ok(Config::default()),
        Some(cm) => match cm.data.as_ref().and_then(|d| d.get("config.yaml")) {
            Some(text) => Config::parse(text),
            None => Err(crate::config::ConfigError(format!(
                "ConfigMap {} has no config.yaml key",
                cm.name_any()
            ))),
        },
    }
}

/// Serves `/healthz` and `/readyz` on `addr`.
async fn serve_health(addr: SocketAddr) -> Result<(), RunError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| RunError::Listen(addr, e))?;
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route("/readyz", axum::routing::get(|| async { "ok" }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(())
}

/// The reconcilers' shared context: the config, the client to each namespace's mesh, the
/// etcd secret's name.
fn context(client: &kube::Client, rc: &RunConfig, cfg: Config) -> Ctx<GrpcMesh> {
    // The management API's own port when it has one (the NetworkPolicy admits us there).
    let mesh_port = match cfg.management_port {
        0 => cfg.inference_service_port,
        p => p,
    };
    let mesh = GrpcMesh::new(
        &cfg.inference_service_name,
        mesh_port,
        rc.mesh_endpoint.clone().or(cfg.model_mesh_endpoint.clone()),
    )
    // Pods rendered before the management port (an upgrade rolling out) serve it on 8033.
    .with_fallback_port(cfg.inference_service_port);
    let etcd_secret = std::env::var("ETCD_SECRET_NAME")
        .ok()
        .or(cfg.etcd_secret_name.clone())
        .unwrap_or_else(|| "model-serving-etcd".into());
    Ctx::new(client.clone(), mesh, cfg, &rc.namespace, &etcd_secret)
}

/// `Api` of a kind in the controller's namespace (namespace scope) or everywhere.
fn scoped<K>(client: &kube::Client, rc: &RunConfig) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    if rc.namespace_scope {
        Api::namespaced(client.clone(), &rc.namespace)
    } else {
        Api::all(client.clone())
    }
}

/// Runs until SIGTERM.
pub async fn run(rc: RunConfig) -> Result<(), RunError> {
    let client = kube::Client::try_default().await?;
    // Health first: a standby replica waiting for the lease is alive (its liveness probe must
    // pass while it waits).
    if let Some(addr) = rc.health_addr {
        serve_health(addr).await?;
    }
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), &rc.namespace);
    if let Some(me) = &rc.leader_identity {
        leadership::wait_to_lead(&leases, me).await;
    }
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &rc.namespace);
    let cfg = config_from(cms.get_opt(&rc.config_map).await?.as_ref())?;
    tracing::info!(namespace = %rc.namespace, scope = if rc.namespace_scope { "namespace" } else { "cluster" }, "controller starting");
    let ctx = Arc::new(context(&client, &rc, cfg));

    // Runtime-side reconciles are per namespace; watchers name the namespaces to look at
    // (None: every served one). When a namespace starts being served, its existing resources
    // are reconciled.
    let (trigger, woken_namespaces) = unbounded_channel::<Option<String>>();
    let (predictors_served, predictors_all) = unbounded_channel::<()>();
    let (isvcs_served, isvcs_all) = unbounded_channel::<()>();
    triggers::follow_config(cms, &rc.config_map, ctx.clone(), trigger.clone());
    let served: triggers::Served = Arc::new(RwLock::new(HashSet::from([rc.namespace.clone()])));
    if !rc.namespace_scope {
        triggers::follow_namespaces(
            client.clone(),
            rc.namespace.clone(),
            served.clone(),
            trigger.clone(),
            vec![predictors_served.clone(), isvcs_served.clone()],
        );
    }
    triggers::spawn_trigger(
        scoped::<crate::crd::ServingRuntime>(&client, &rc),
        trigger.clone(),
        false,
    );
    triggers::spawn_trigger(scoped::<Predictor>(&client, &rc), trigger.clone(), false);
    if !rc.namespace_scope {
        triggers::spawn_trigger(
            Api::<crate::crd::ClusterServingRuntime>::all(client.clone()),
            trigger.clone(),
            true,
        );
    }
    let runtimes = runtime_loop::runtime_loop(
        ctx.clone(),
        served.clone(),
        woken_namespaces,
        trigger.clone(),
    );

    if let Some(addr) = rc.metrics_addr {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .map_err(|e| RunError::Listen(addr, std::io::Error::other(e)))?;
    }

    // Mesh changes (vmodel transitions, load results) wake the resource they concern.
    let (predictor_wake, predictor_woken) = unbounded_channel();
    let (isvc_wake, isvc_woken) = unbounded_channel();
    {
        // In the background: connecting to etcd may take its full timeout.
        let (client, ctx) = (client.clone(), ctx.clone());
        tokio::spawn(async move {
            mesh_events::spawn_mesh_watch(&client, &ctx, predictor_wake, isvc_wake).await;
        });
    }

    let predictors = resources::predictors(
        scoped(&client, &rc),
        served.clone(),
        predictor_woken,
        predictors_all,
        ctx.clone(),
    );
    let isvcs: Api<InferenceService> = scoped(&client, &rc);
    let isvc_available = rc.watch_isvc && isvcs.list(&ListParams::default().limit(1)).await.is_ok();
    if rc.watch_isvc && !isvc_available {
        tracing::warn!(
            "the InferenceService CRD is not installed or not readable; InferenceServices are not reconciled"
        );
    }
    let gate = served.clone();
    let isvc_loop = async move {
        if isvc_available {
            resources::inference_services(isvcs, gate, isvc_woken, isvcs_all, ctx).await;
        }
    };
    let _ = trigger.send(None);
    let keep_lease = leadership::keep(leases, rc.leader_identity.clone());
    tokio::select! {
        _ = async { futures::join!(predictors, isvc_loop) } => {}
        _ = runtimes => {}
        _ = keep_lease => return Err(RunError::LostLeadership(crate::leader::LEASE_NAME)),
    }
    // Held until here: the namespace watcher's senders keep the controllers' streams open.
    drop((predictors_served, isvcs_served));
    tracing::info!("controller stopped");
    Ok(())
}

/// Counts a reconcile's outcome (`modelmesh_controller_reconcile_total{kind, result}`).
fn counted<T>(kind: &'static str, r: Result<T, ReconcileError>) -> Result<T, ReconcileError> {
    let result = if r.is_ok() { "ok" } else { "error" };
    metrics::counter!("modelmesh_controller_reconcile_total", "kind" => kind, "result" => result)
        .increment(1);
    r
}
