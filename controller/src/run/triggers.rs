//! What wakes the per-namespace runtime reconciler: changes to the config, to the set of served
//! namespaces, and to runtimes and predictors. Each watcher sends the namespace concerned (None:
//! every served one).

use super::{config_from, namespace_enabled};
use crate::config::Config;
use crate::mesh_client::MeshApi;
use crate::reconcile::Ctx;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::watcher;
use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc::UnboundedSender;

/// Namespaces that are served now.
pub type Served = Arc<RwLock<HashSet<String>>>;

/// Follows the config ConfigMap: a valid change replaces the config and wakes every namespace;
/// an invalid one is refused and the previous config kept.
pub fn follow_config<M: MeshApi>(
    cms: Api<ConfigMap>,
    name: &str,
    ctx: Arc<Ctx<M>>,
    trigger: UnboundedSender<Option<String>>,
) {
    let wc = watcher::Config::default().fields(&format!("metadata.name={name}"));
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
                    let _ = trigger.send(None);
                }
                Err(e) => {
                    tracing::error!(error = %e, "configuration change rejected; keeping the previous one")
                }
            }
        }
    });
}

/// Follows the cluster's namespaces (cluster scope): keeps `served` current, and when a
/// namespace starts or stops being served wakes it and tells `changed` (so its existing
/// resources are reconciled).
pub fn follow_namespaces(
    client: kube::Client,
    own: String,
    served: Served,
    trigger: UnboundedSender<Option<String>>,
    changed: Vec<UnboundedSender<()>>,
) {
    let nss: Api<Namespace> = Api::all(client);
    tokio::spawn(async move {
        let mut events = watcher(nss, watcher::Config::default()).boxed();
        while let Some(ev) = events.next().await {
            let flipped = {
                let mut set = served.write().unwrap_or_else(|p| p.into_inner());
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
            if let Some(name) = flipped {
                let _ = trigger.send(Some(name));
                for c in &changed {
                    let _ = c.send(());
                }
            }
        }
    });
}

/// Sends the namespace of every change to `K` (or None, for everything, when `everywhere`).
pub fn spawn_trigger<K>(
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
