//! `modelmesh controller run`: connects to the cluster, loads (and follows) the
//! `model-serving-config` ConfigMap, tracks which namespaces are served, runs the Predictor and
//! InferenceService reconcilers and the per-namespace runtime reconciler (triggered by changes
//! to runtimes, predictors, namespaces and the config), and serves `/healthz` and `/readyz`.

use crate::config::Config;
use crate::crd::{InferenceService, Predictor};
use crate::mesh_client::GrpcMesh;
use crate::mesh_watch::receiver_stream;
use crate::reconcile::predictor::{reconcile_isvc, reconcile_predictor};
use crate::reconcile::{Ctx, ReconcileError, error_policy};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

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

/// Runs until SIGTERM.
pub async fn run(rc: RunConfig) -> Result<(), RunError> {
    let client = kube::Client::try_default().await?;
    // Health first: a standby replica waiting for the lease is alive (its liveness probe must
    // pass while it waits).
    if let Some(addr) = rc.health_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| RunError::Listen(addr, e))?;
        let app = axum::Router::new()
            .route("/healthz", axum::routing::get(|| async { "ok" }))
            .route("/readyz", axum::routing::get(|| async { "ok" }));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
    }
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), &rc.namespace);
    if let Some(me) = &rc.leader_identity {
        tracing::info!(identity = %me, lease = crate::leader::LEASE_NAME, "waiting to lead");
        loop {
            match crate::leader::try_acquire(&leases, me, crate::reconcile::wall_clock_ms()).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read or take the leader lease; retrying")
                }
            }
            tokio::time::sleep(crate::leader::RETRY).await;
        }
        tracing::info!(identity = %me, "leading");
    }
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &rc.namespace);
    let cfg = config_from(cms.get_opt(&rc.config_map).await?.as_ref())?;
    tracing::info!(namespace = %rc.namespace, scope = if rc.namespace_scope { "namespace" } else { "cluster" }, "controller starting");
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
    let ctx = Arc::new(Ctx::new(
        client.clone(),
        mesh,
        cfg,
        &rc.namespace,
        &etcd_secret,
    ));

    // Runtime-side reconciles are per namespace; watchers name the namespaces to look at
    // (None: every served one).
    let (trigger, triggers) = tokio::sync::mpsc::unbounded_channel::<Option<String>>();
    // When a namespace starts being served, its existing resources are reconciled.
    let (served_changed, predictors_all) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (isvc_served_changed, isvcs_all) = tokio::sync::mpsc::unbounded_channel::<()>();

    // Follow the config.
    {
        let ctx = ctx.clone();
        let config_trigger = trigger.clone();
        let wc = watcher::Config::default().fields(&format!("metadata.name={}", rc.config_map));
        tokio::spawn(async move {
            let mut events = watcher(cms, wc).boxed();
            while let Some(ev) = events.next().await {
                let new = match ev {
                    Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => {
                        config_from(Some(&cm))
                    }
                    Ok(watcher::Event::Delete(_)) => Ok(Config::default()),
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "watching the config failed; retrying");
                        continue;
                    }
                };
                match new {
                    Ok(c) => {
                        *ctx.config.write().unwrap_or_else(|p| p.into_inner()) = c;
                        tracing::info!("configuration reloaded");
                        let _ = config_trigger.send(None);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "configuration change rejected; keeping the previous one")
                    }
                }
            }
        });
    }

    // Served namespaces.
    let enabled: Arc<RwLock<HashSet<String>>> =
        Arc::new(RwLock::new(HashSet::from([rc.namespace.clone()])));
    if !rc.namespace_scope {
        let enabled = enabled.clone();
        let own = rc.namespace.clone();
        let nss: Api<Namespace> = Api::all(client.clone());
        let trigger = trigger.clone();
        let (served_changed, isvc_served_changed) =
            (served_changed.clone(), isvc_served_changed.clone());
        tokio::spawn(async move {
            let mut events = watcher(nss, watcher::Config::default()).boxed();
            while let Some(ev) = events.next().await {
                let changed = {
                    let mut set = enabled.write().unwrap_or_else(|p| p.into_inner());
                    match ev {
                        Ok(watcher::Event::Apply(ns) | watcher::Event::InitApply(ns)) => {
                            let name = ns.name_any();
                            let was = set.contains(&name);
                            let now = namespace_enabled(&ns, &own);
                            if now {
                                set.insert(name.clone());
                            } else {
                                set.remove(&name);
                            }
                            (was != now).then_some(name)
                        }
                        Ok(watcher::Event::Delete(ns)) => {
                            set.remove(&ns.name_any());
                            None
                        }
                        Ok(_) => None,
                        Err(e) => {
                            tracing::warn!(error = %e, "watching namespaces failed; retrying");
                            None
                        }
                    }
                };
                if let Some(name) = changed {
                    let _ = trigger.send(Some(name));
                    let _ = served_changed.send(());
                    let _ = isvc_served_changed.send(());
                }
            }
        });
    }
    let scoped = |c: &kube::Client| rc.namespace_scope.then(|| c.clone());
    spawn_trigger(
        match scoped(&client) {
            Some(c) => Api::<crate::crd::ServingRuntime>::namespaced(c, &rc.namespace),
            None => Api::all(client.clone()),
        },
        trigger.clone(),
        false,
    );
    spawn_trigger(
        match scoped(&client) {
            Some(c) => Api::<Predictor>::namespaced(c, &rc.namespace),
            None => Api::all(client.clone()),
        },
        trigger.clone(),
        false,
    );
    if !rc.namespace_scope {
        spawn_trigger(
            Api::<crate::crd::ClusterServingRuntime>::all(client.clone()),
            trigger.clone(),
            true,
        );
    }
    let runtime_loop = runtime_loop(ctx.clone(), enabled.clone(), triggers, trigger.clone());

    if let Some(addr) = rc.metrics_addr {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .map_err(|e| RunError::Listen(addr, std::io::Error::other(e)))?;
    }

    // Mesh changes (vmodel transitions, load results) wake the resource they concern.
    let (predictor_wake, predictor_woken) = tokio::sync::mpsc::unbounded_channel();
    let (isvc_wake, isvc_woken) = tokio::sync::mpsc::unbounded_channel();
    {
        // In the background: connecting to etcd may take its full timeout.
        let (client, ctx) = (client.clone(), ctx.clone());
        tokio::spawn(async move {
            spawn_mesh_watch(&client, &ctx, predictor_wake, isvc_wake).await;
        });
    }

    let served = move |set: &Arc<RwLock<HashSet<String>>>, ns: Option<String>| {
        ns.is_some_and(|ns| set.read().unwrap_or_else(|p| p.into_inner()).contains(&ns))
    };
    let predictors: Api<Predictor> = if rc.namespace_scope {
        Api::namespaced(client.clone(), &rc.namespace)
    } else {
        Api::all(client.clone())
    };
    let gate = enabled.clone();
    let predictor_loop = Controller::new(predictors, watcher::Config::default())
        .reconcile_on(receiver_stream(predictor_woken))
        .reconcile_all_on(receiver_stream(predictors_all))
        .shutdown_on_signal()
        .run(
            move |p: Arc<Predictor>, ctx| {
                // A resource being deleted is finalized even where the namespace is no longer
                // served (a namespace being deleted must not hang on our finalizer).
                let on = served(&gate, p.meta().namespace.clone())
                    || p.meta().deletion_timestamp.is_some();
                async move {
                    if on {
                        counted("predictor", reconcile_predictor(p, ctx).await)
                    } else {
                        Ok::<_, ReconcileError>(Action::await_change())
                    }
                }
            },
            error_policy,
            ctx.clone(),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "predictor reconcile");
            }
        });

    let isvcs: Api<InferenceService> = if rc.namespace_scope {
        Api::namespaced(client.clone(), &rc.namespace)
    } else {
        Api::all(client.clone())
    };
    let isvc_available = rc.watch_isvc && isvcs.list(&ListParams::default().limit(1)).await.is_ok();
    if rc.watch_isvc && !isvc_available {
        tracing::warn!(
            "the InferenceService CRD is not installed or not readable; InferenceServices are not reconciled"
        );
    }
    let gate = enabled.clone();
    let isvc_loop = async move {
        if !isvc_available {
            return;
        }
        Controller::new(isvcs, watcher::Config::default())
            .reconcile_on(receiver_stream(isvc_woken))
            .reconcile_all_on(receiver_stream(isvcs_all))
            .shutdown_on_signal()
            .run(
                move |i: Arc<InferenceService>, ctx| {
                    let on = served(&gate, i.meta().namespace.clone())
                        || i.meta().deletion_timestamp.is_some();
                    async move {
                        if on {
                            counted("inferenceservice", reconcile_isvc(i, ctx).await)
                        } else {
                            Ok::<_, ReconcileError>(Action::await_change())
                        }
                    }
                },
                error_policy,
                ctx,
            )
            .for_each(|r| async move {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "inference service reconcile");
                }
            })
            .await;
    };
    let _ = trigger.send(None);
    let identity = rc.leader_identity.clone();
    let keep_lease = async move {
        let Some(me) = identity else {
            return std::future::pending::<()>().await;
        };
        // Renew; give up once renewals have failed for longer than the lease lasts.
        let mut last_ok = std::time::Instant::now();
        loop {
            tokio::time::sleep(crate::leader::RETRY).await;
            match crate::leader::try_acquire(&leases, &me, crate::reconcile::wall_clock_ms()).await
            {
                Ok(true) => last_ok = std::time::Instant::now(),
                Ok(false) => return,
                Err(e) => tracing::warn!(error = %e, "cannot renew the leader lease"),
            }
            if last_ok.elapsed()
                > std::time::Duration::from_secs(crate::leader::LEASE_SECONDS as u64)
            {
                return;
            }
        }
    };
    tokio::select! {
        _ = async { futures::join!(predictor_loop, isvc_loop) } => {}
        _ = runtime_loop => {}
        _ = keep_lease => return Err(RunError::LostLeadership(crate::leader::LEASE_NAME)),
    }
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

/// Connects to the etcd the meshes share (the controller namespace's etcd secret) and forwards
/// mesh changes to the Predictor and InferenceService controllers. Without it, status is still
/// polled while models load and resynced every few minutes, so a failure here only warns.
async fn spawn_mesh_watch<M: crate::mesh_client::MeshApi>(
    client: &kube::Client,
    ctx: &Arc<Ctx<M>>,
    predictors: tokio::sync::mpsc::UnboundedSender<kube::runtime::reflector::ObjectRef<Predictor>>,
    isvcs: tokio::sync::mpsc::UnboundedSender<
        kube::runtime::reflector::ObjectRef<InferenceService>,
    >,
) {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), &ctx.controller_namespace);
    let data = match secrets.get_opt(&ctx.etcd_secret_name).await {
        Ok(Some(s)) => s.data.unwrap_or_default(),
        Ok(None) => Default::default(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the etcd secret; mesh changes will not wake resources");
            return;
        }
    };
    let json = data
        .get(crate::plan::ETCD_KEY)
        .and_then(|b| String::from_utf8(b.0.clone()).ok());
    // `*_file` fields of the connection name other keys of the same secret.
    let read = |name: &str| -> Result<Vec<u8>, String> {
        data.get(name)
            .map(|b| b.0.clone())
            .ok_or_else(|| format!("the etcd secret has no key '{name}'"))
    };
    let parsed = json.map(|j| modelmesh_kv::config::KvConfig::from_connection_json_with(&j, &read));
    let kv = match parsed {
        Some(Ok(kv)) => kv,
        Some(Err(e)) => {
            tracing::warn!(secret = %ctx.etcd_secret_name, error = %e, "invalid etcd_connection; mesh changes will not wake resources");
            return;
        }
        None => {
            tracing::warn!(secret = %ctx.etcd_secret_name, "no etcd_connection; mesh changes will not wake resources");
            return;
        }
    };
    let root = kv.root_prefix().to_string();
    let store = match modelmesh_kv::connect::connect(&kv).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot reach etcd; mesh changes will not wake resources");
            return;
        }
    };
    let service = ctx.config().inference_service_name;
    let mut changes = Box::pin(crate::mesh_watch::watch(
        store,
        root,
        ctx.controller_namespace.clone(),
        service,
    ));
    tokio::spawn(async move {
        while let Some(t) = changes.next().await {
            let sent = match t.owner.as_str() {
                crate::registration::OWNER_PREDICTOR => predictors
                    .send(kube::runtime::reflector::ObjectRef::new(&t.name).within(&t.namespace))
                    .is_ok(),
                crate::registration::OWNER_ISVC => isvcs
                    .send(kube::runtime::reflector::ObjectRef::new(&t.name).within(&t.namespace))
                    .is_ok(),
                _ => true,
            };
            if !sent {
                return;
            }
        }
    });
}

/// Sends the namespace of every change to `K` (or None, for everything, when `everywhere`).
fn spawn_trigger<K>(
    api: Api<K>,
    trigger: tokio::sync::mpsc::UnboundedSender<Option<String>>,
    everywhere: bool,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default()).boxed();
        while let Some(ev) = events.next().await {
            let obj = match ev {
                Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => o,
                Ok(watcher::Event::InitDone) => {
                    let _ = trigger.send(None);
                    continue;
                }
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "watch failed; retrying");
                    continue;
                }
            };
            let target = if everywhere {
                None
            } else {
                obj.meta().namespace.clone()
            };
            if trigger.send(target).is_err() {
                return;
            }
        }
    });
}

/// Reconciles namespaces as triggers arrive (batched over 300 ms), and again when a plan asks
/// (a scale-to-zero grace period ending) or after the resync interval.
async fn runtime_loop<M: crate::mesh_client::MeshApi>(
    ctx: Arc<Ctx<M>>,
    enabled: Arc<RwLock<HashSet<String>>>,
    mut triggers: tokio::sync::mpsc::UnboundedReceiver<Option<String>>,
    trigger: tokio::sync::mpsc::UnboundedSender<Option<String>>,
) {
    // Namespaces reconciled once, so one that stops being served is cleaned up.
    let mut known: HashSet<String> = HashSet::new();
    // The next timed look at each namespace: a new timer only when it is due sooner, so
    // frequent triggers do not pile up timers.
    let mut scheduled: std::collections::HashMap<String, std::time::Instant> = Default::default();
    while let Some(first) = triggers.recv().await {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let mut all = first.is_none();
        let mut pending: HashSet<String> = first.into_iter().collect();
        while let Ok(t) = triggers.try_recv() {
            match t {
                Some(ns) => {
                    pending.insert(ns);
                }
                None => all = true,
            }
        }
        let served = enabled.read().unwrap_or_else(|p| p.into_inner()).clone();
        if all {
            pending.extend(served.iter().cloned());
            pending.extend(known.iter().cloned());
        }
        for ns in pending {
            let on = served.contains(&ns);
            if !on && !known.contains(&ns) {
                continue; // never ours
            }
            match counted(
                "namespace",
                crate::reconcile::namespace::reconcile_namespace(&ns, on, &ctx).await,
            ) {
                Ok(after) => {
                    if on {
                        known.insert(ns.clone());
                    } else {
                        known.remove(&ns);
                    }
                    let now = std::time::Instant::now();
                    let due = now + after;
                    if scheduled.get(&ns).is_some_and(|t| *t > now && *t <= due) {
                        continue;
                    }
                    scheduled.insert(ns.clone(), due);
                    let trigger = trigger.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        let _ = trigger.send(Some(ns));
                    });
                }
                Err(e) => {
                    tracing::warn!(namespace = %ns, error = %e, "namespace reconcile failed; retrying in 5 s");
                    let trigger = trigger.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                        let _ = trigger.send(Some(ns));
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NamespaceStatus;

    fn ns(name: &str, label: Option<&str>, terminating: bool) -> Namespace {
        let mut n = Namespace::default();
        n.metadata.name = Some(name.into());
        if let Some(l) = label {
            n.metadata.labels = Some([(ENABLED_LABEL.to_string(), l.to_string())].into());
        }
        if terminating {
            n.status = Some(NamespaceStatus {
                phase: Some("Terminating".into()),
                ..Default::default()
            });
        }
        n
    }

    #[test]
    fn which_namespaces_are_served() {
        assert!(namespace_enabled(&ns("team-a", Some("true"), false), "mm"));
        assert!(!namespace_enabled(&ns("team-a", None, false), "mm"));
        assert!(!namespace_enabled(
            &ns("team-a", Some("false"), false),
            "mm"
        ));
        assert!(!namespace_enabled(&ns("team-a", Some("true"), true), "mm"));
        assert!(
            namespace_enabled(&ns("mm", None, false), "mm"),
            "own namespace by default"
        );
        assert!(!namespace_enabled(&ns("mm", Some("false"), false), "mm"));
    }

    #[test]
    fn config_from_the_configmap() {
        assert_eq!(config_from(None).unwrap(), Config::default());
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some("model-serving-config".into());
        assert!(
            config_from(Some(&cm))
                .unwrap_err()
                .0
                .contains("config.yaml")
        );
        cm.data = Some([("config.yaml".to_string(), "podsPerRuntime: 1\n".to_string())].into());
        assert_eq!(config_from(Some(&cm)).unwrap().pods_per_runtime, 1);
    }
}
