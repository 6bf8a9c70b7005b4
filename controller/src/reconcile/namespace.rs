//! Reconciling one served namespace's runtime side: read its runtimes (namespace ones over
//! cluster ones of the same name), its predictors' placement labels, the etcd and storage
//! secrets and the existing runtime Deployments; plan (`plan::plan`); apply with server-side
//! apply; delete what the plan drops; report invalid runtimes.

use super::{Ctx, ReconcileError};
use crate::crd::{ClusterServingRuntime, InferenceService, Predictor, ServingRuntime};
use crate::mesh_client::MeshApi;
use crate::plan::{ETCD_KEY, Inputs, Plan, Runtime, plan};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;
use std::time::Duration;

/// Field manager of everything the controller applies.
pub const MANAGER: &str = "modelmesh-controller";
/// Resync of a settled namespace.
const RESYNC: Duration = Duration::from_secs(300);

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

fn forbidden_or_missing(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404 || s.code == 403)
}

/// PVC names of `type: pvc` entries in the storage-config secret, sorted.
pub fn storage_pvcs(secret: Option<&Secret>) -> Vec<String> {
    let mut out: Vec<String> = secret
        .and_then(|s| s.data.as_ref())
        .map(|d| {
            d.values()
                .filter_map(|v| serde_json::from_slice::<serde_json::Value>(&v.0).ok())
                .filter(|v| v["type"] == "pvc")
                .filter_map(|v| v["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out.dedup();
    out
}

async fn delete_ignoring_absent<K>(api: &Api<K>, name: &str) -> Result<(), ReconcileError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(e) if not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Reconciles namespace `ns`; a namespace no longer `served` loses everything the controller
/// made there. Returns when to look again.
pub async fn reconcile_namespace<M: MeshApi>(
    ns: &str,
    served: bool,
    ctx: &Ctx<M>,
) -> Result<Duration, ReconcileError> {
    let cfg = ctx.config();
    let client = ctx.client.clone();
    // Runtimes: cluster ones first, then the namespace's own override them by name.
    let mut runtimes: BTreeMap<String, Runtime> = BTreeMap::new();
    let mut refs: BTreeMap<String, k8s_openapi::api::core::v1::ObjectReference> = BTreeMap::new();
    match Api::<ClusterServingRuntime>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => {
            for c in list {
                refs.insert(c.name_any(), c.object_ref(&()));
                runtimes.insert(
                    c.name_any(),
                    Runtime {
                        name: c.name_any(),
                        annotations: c.annotations().clone(),
                        spec: c.spec.runtime,
                    },
                );
            }
        }
        Err(e) if forbidden_or_missing(&e) => {}
        Err(e) => return Err(e.into()),
    }
    for s in Api::<ServingRuntime>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
    {
        refs.insert(s.name_any(), s.object_ref(&()));
        runtimes.insert(
            s.name_any(),
            Runtime {
                name: s.name_any(),
                annotations: s.annotations().clone(),
                spec: s.spec,
            },
        );
    }
    let runtimes: Vec<Runtime> = if served {
        runtimes.into_values().collect()
    } else {
        Vec::new()
    };
    // What the namespace's predictors need.
    let mut labels: Vec<String> = Api::<Predictor>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| crate::registration::type_label(&p.spec))
        .collect();
    if let Ok(list) = Api::<InferenceService>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
    {
        for i in list {
            let ann = i.annotations().clone();
            if i.metadata.deletion_timestamp.is_none()
                && crate::isvc::is_modelmesh(&ann)
                && let Ok(spec) = crate::isvc::predictor_spec(&i.spec, &ann)
            {
                labels.push(crate::registration::type_label(&spec));
            }
        }
    }
    let selector = format!(
        "app.kubernetes.io/managed-by={MANAGER},modelmesh-service={}",
        cfg.inference_service_name
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let existing: Vec<String> = deployments
        .list(&ListParams::default().labels(&selector))
        .await?
        .into_iter()
        .map(|d| d.name_any())
        .collect();
    let etcd_secret_name = ctx.etcd_secret_name.clone();
    let etcd_connection = if ns == ctx.controller_namespace {
        None
    } else {
        Api::<Secret>::namespaced(client.clone(), &ctx.controller_namespace)
            .get_opt(&etcd_secret_name)
            .await?
            .and_then(|s| s.data)
            .and_then(|d| d.get(ETCD_KEY).cloned())
            .and_then(|b| String::from_utf8(b.0).ok())
    };
    let storage = Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(&cfg.storage_secret_name)
        .await?;
    let pvcs = storage_pvcs(storage.as_ref());
    let p: Plan = {
        let mut states = ctx.runtime_state.lock().unwrap_or_else(|e| e.into_inner());
        let state = states.entry(ns.to_string()).or_default();
        plan(
            &Inputs {
                namespace: ns,
                controller_namespace: &ctx.controller_namespace,
                config: &cfg,
                etcd_secret_name: &etcd_secret_name,
                etcd_connection: etcd_connection.as_deref(),
                runtimes: &runtimes,
                predictor_labels: &labels,
                pvcs: &pvcs,
                existing_deployments: &existing,
                now_ms: (ctx.now_ms)(),
            },
            state,
        )
    };
    // One event per invalid runtime, naming every problem.
    let mut by_runtime: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for problem in &p.problems {
        tracing::warn!(namespace = %ns, runtime = %problem.runtime, "invalid ServingRuntime: {}", problem.message);
        by_runtime
            .entry(problem.runtime.as_str())
            .or_default()
            .push(problem.message.as_str());
    }
    for (runtime, messages) in &by_runtime {
        let Some(r) = refs.get(*runtime) else {
            continue;
        };
        let ev = Event {
            type_: EventType::Warning,
            reason: "InvalidSpec".into(),
            note: Some(format!(
                "not deployed in namespace {ns}: {}",
                messages.join("; ")
            )),
            action: "Deploy".into(),
            secondary: None,
        };
        // An event that cannot be written must not stop the namespace's reconcile.
        if let Err(e) = ctx.recorder.publish(&ev, r).await {
            tracing::debug!(error = %e, "cannot record an event");
        }
    }
    // A `Valid` condition on each runtime, written when it changes (and once per start).
    for (name, r) in &refs {
        let problems = by_runtime.get(name.as_str());
        let key = (
            r.kind.clone().unwrap_or_default(),
            r.namespace.clone().unwrap_or_default(),
            name.clone(),
        );
        let valid = problems.is_none();
        let known = ctx
            .runtime_validity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .copied();
        if known == Some(valid) {
            continue;
        }
        let condition = match problems {
            None => serde_json::json!({"type": "Valid", "status": "True", "reason": "Valid"}),
            Some(m) => serde_json::json!({
                "type": "Valid", "status": "False", "reason": "InvalidSpec", "message": m.join("; ")
            }),
        };
        let patch = serde_json::json!({"status": {"conditions": [condition]}});
        let written = if r.kind.as_deref() == Some("ClusterServingRuntime") {
            Api::<ClusterServingRuntime>::all(client.clone())
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
        } else {
            Api::<ServingRuntime>::namespaced(client.clone(), ns)
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
        };
        match written {
            Ok(()) => {
                ctx.runtime_validity
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, valid);
            }
            Err(e) => {
                tracing::debug!(runtime = %name, error = %e, "cannot write the runtime's condition")
            }
        }
    }
    let apply = PatchParams::apply(MANAGER).force();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    match &p.tc_config {
        Some(cm) => {
            cms.patch("tc-config", &apply, &Patch::Apply(cm)).await?;
        }
        None if p.keep_shared => {}
        None => delete_ignoring_absent(&cms, "tc-config").await?,
    }
    if let Some(svc) = &p.service {
        Api::<Service>::namespaced(client.clone(), ns)
            .patch(&cfg.inference_service_name, &apply, &Patch::Apply(svc))
            .await?;
    }
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), ns);
    match &p.network_policy {
        Some(np) => {
            policies
                .patch(&cfg.inference_service_name, &apply, &Patch::Apply(np))
                .await?;
        }
        None if p.keep_shared => {}
        None => delete_ignoring_absent(&policies, &cfg.inference_service_name).await?,
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    if let Some(s) = &p.etcd_secret {
        secrets
            .patch(&etcd_secret_name, &apply, &Patch::Apply(s))
            .await?;
    } else if p.delete_etcd_secret {
        delete_ignoring_absent(&secrets, &etcd_secret_name).await?;
    }
    for d in &p.deployments {
        let name = d.name_any();
        deployments.patch(&name, &apply, &Patch::Apply(d)).await?;
    }
    for name in &p.delete_deployments {
        tracing::info!(namespace = %ns, deployment = %name, "removing the Deployment of a runtime that is gone or disabled");
        delete_ignoring_absent(&deployments, name).await?;
    }
    Ok(p.requeue_after.unwrap_or(RESYNC))
}
