//! `modelmesh controller run`: connects to the cluster, loads (and follows) the
//! `model-serving-config` ConfigMap, tracks which namespaces are served, runs the Predictor and
//! InferenceService reconcilers, and serves `/healthz` and `/readyz`.

use crate::config::Config;
use crate::crd::{InferenceService, Predictor};
use crate::mesh_client::GrpcMesh;
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
    /// Reconcile InferenceServices (when the CRD is installed).
    pub watch_isvc: bool,
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
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &rc.namespace);
    let cfg = config_from(cms.get_opt(&rc.config_map).await?.as_ref())?;
    tracing::info!(namespace = %rc.namespace, scope = if rc.namespace_scope { "namespace" } else { "cluster" }, "controller starting");
    let mesh = GrpcMesh::new(
        &cfg.inference_service_name,
        cfg.inference_service_port,
        rc.mesh_endpoint.clone().or(cfg.model_mesh_endpoint.clone()),
    );
    let ctx = Arc::new(Ctx::new(client.clone(), mesh, cfg));

    // Follow the config.
    {
        let ctx = ctx.clone();
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
        tokio::spawn(async move {
            let mut events = watcher(nss, watcher::Config::default()).boxed();
            while let Some(ev) = events.next().await {
                let mut set = enabled.write().unwrap_or_else(|p| p.into_inner());
                match ev {
                    Ok(watcher::Event::Apply(ns) | watcher::Event::InitApply(ns)) => {
                        if namespace_enabled(&ns, &own) {
                            set.insert(ns.name_any());
                        } else {
                            set.remove(&ns.name_any());
                        }
                    }
                    Ok(watcher::Event::Delete(ns)) => {
                        set.remove(&ns.name_any());
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "watching namespaces failed; retrying"),
                }
            }
        });
    }

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
        .shutdown_on_signal()
        .run(
            move |p: Arc<Predictor>, ctx| {
                let on = served(&gate, p.meta().namespace.clone());
                async move {
                    if on {
                        reconcile_predictor(p, ctx).await
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
            .shutdown_on_signal()
            .run(
                move |i: Arc<InferenceService>, ctx| {
                    let on = served(&gate, i.meta().namespace.clone());
                    async move {
                        if on {
                            reconcile_isvc(i, ctx).await
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
    futures::join!(predictor_loop, isvc_loop);
    tracing::info!("controller stopped");
    Ok(())
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
