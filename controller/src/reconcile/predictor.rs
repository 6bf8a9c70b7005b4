//! Reconciling Predictors and ModelMesh-mode InferenceServices: a finalizer; setVModel with the
//! registration (loadNow by upstream's rules); the mesh's answer mapped to status and written
//! back only when it changed; deleteVModel when the resource goes. Requeues poll a model that
//! is loading (the mesh sends no event when a load completes) and a runtime not yet up.

use super::{Ctx, ReconcileError};
use crate::crd::inference_service::InferenceServiceStatus;
use crate::crd::predictor::{
    FailureInfo, FailureReason, ModelState, PredictorSpec, PredictorStatus, TransitionStatus,
};
use crate::crd::{InferenceService, Predictor};
use crate::mesh_client::MeshApi;
use crate::registration::{InvalidSpec, OWNER_ISVC, OWNER_PREDICTOR, registration};
use crate::status::{Endpoints, invalid_status, isvc_status, predictor_status, time_ms};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

/// Finalizer that makes sure the mesh forgets the vmodel before the resource goes.
pub const FINALIZER: &str = "modelmesh.io/vmodel";
/// Poll interval while a model loads.
const LOADING_POLL: Duration = Duration::from_secs(1);
/// Retry interval while no runtime pod answers.
const RUNTIME_WAIT: Duration = Duration::from_secs(3);
/// Resync of settled resources (the etcd watch wakes them earlier on mesh changes).
const RESYNC: Duration = Duration::from_secs(300);

/// Where clients reach the models of `namespace`.
pub fn endpoints(cfg: &crate::config::Config, namespace: &str) -> Endpoints {
    let host = format!("{}.{namespace}", cfg.inference_service_name);
    Endpoints {
        grpc: format!("grpc://{host}:{}", cfg.inference_service_port),
        http: cfg
            .rest_proxy
            .enabled
            .then(|| format!("http://{host}:{}", cfg.rest_proxy.port)),
    }
}

/// Whether setVModel should load the target now (upstream's rule): the resource is new or its
/// model failed, a transition is pending, or it waits for a runtime.
fn load_now(prev: &PredictorStatus) -> bool {
    matches!(
        prev.active_model_state,
        ModelState::Pending | ModelState::FailedToLoad
    ) || prev.target_model_state != ModelState::None
        || (prev.active_model_state == ModelState::Loading
            && prev.last_failure_info.as_ref().and_then(|f| f.reason)
                == Some(FailureReason::RuntimeUnhealthy))
}

fn requeue_for(st: &PredictorStatus) -> Action {
    let reason = st.last_failure_info.as_ref().and_then(|f| f.reason);
    if reason == Some(FailureReason::RuntimeUnhealthy) {
        Action::requeue(RUNTIME_WAIT)
    } else if st.active_model_state == ModelState::Loading
        || st.target_model_state == ModelState::Loading
    {
        Action::requeue(LOADING_POLL)
    } else {
        Action::requeue(RESYNC)
    }
}

/// Registers (or re-registers) one source with the mesh and returns its new status.
async fn sync<M: MeshApi>(
    ctx: &Ctx<M>,
    namespace: &str,
    name: &str,
    owner: &str,
    spec: Result<PredictorSpec, InvalidSpec>,
    annotations: &BTreeMap<String, String>,
    prev: &PredictorStatus,
) -> Result<PredictorStatus, ReconcileError> {
    let cfg = ctx.config();
    let ep = endpoints(&cfg, namespace);
    let now = (ctx.now_ms)();
    let reg = spec.and_then(|s| registration(name, owner, &s, annotations).map(|r| (s, r)));
    let (spec, reg) = match reg {
        Ok(x) => x,
        Err(InvalidSpec(msg)) => {
            let vm = ctx.mesh.vmodel_status(namespace, name, owner).await.ok();
            return Ok(invalid_status(vm.as_ref(), "", &msg, prev, &ep, now));
        }
    };
    let label = crate::registration::type_label(&spec);
    let req = reg.set_vmodel_request(load_now(prev));
    match ctx.mesh.set_vmodel(namespace, req).await {
        Ok(vm) => Ok(predictor_status(Some(&vm), &label, prev, &ep, now)),
        Err(s) if s.code() == Code::AlreadyExists => Ok(invalid_status(
            None,
            &label,
            "Predictor already exists with the same name from a different source",
            prev,
            &ep,
            now,
        )),
        Err(s) if matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded) => {
            tracing::info!(%namespace, %name, error = %s.message(), "mesh not reachable; waiting for the runtime");
            let mut st = prev.clone();
            st.available = false;
            st.grpc_endpoint = Some(ep.grpc.clone());
            st.http_endpoint = ep.http.clone();
            if st.active_model_state == ModelState::Pending {
                st.active_model_state = ModelState::Loading;
            }
            let time = prev
                .last_failure_info
                .as_ref()
                .filter(|f| f.reason == Some(FailureReason::RuntimeUnhealthy))
                .and_then(|f| f.time.clone())
                .or_else(|| time_ms(now));
            st.last_failure_info = Some(FailureInfo {
                location: None,
                reason: Some(FailureReason::RuntimeUnhealthy),
                message: Some("Waiting for runtime Pod to become available".into()),
                model_id: Some(reg.model_id),
                time,
            });
            Ok(st)
        }
        Err(s) => Err(ReconcileError::Mesh(format!(
            "setVModel {namespace}/{name}: {:?}: {}",
            s.code(),
            s.message()
        ))),
    }
}

/// How long a deletion waits for a mesh to answer deleteVModel before letting go.
const FINALIZE_GRACE_MS: i64 = 60_000;

fn deleting_for_ms<K: Resource>(obj: &K, now_ms: i64) -> i64 {
    obj.meta()
        .deletion_timestamp
        .as_ref()
        .map(|t| now_ms - t.0.as_millisecond())
        .unwrap_or(0)
}

/// A status as a merge patch: fields that are now absent are sent as null, so they are removed
/// (a plain serialization would leave the previous values in place).
fn status_patch(status: serde_json::Value, clearable: &[&str]) -> serde_json::Value {
    let mut status = status;
    if let Some(m) = status.as_object_mut() {
        for k in clearable {
            m.entry(k.to_string()).or_insert(serde_json::Value::Null);
        }
    }
    json!({ "status": status })
}

/// Adds the finalizer if missing.
async fn ensure_finalizer<K>(api: &Api<K>, obj: &K) -> Result<(), ReconcileError>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if obj.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let mut list = obj.finalizers().to_vec();
    list.push(FINALIZER.to_string());
    let patch =
        json!({"metadata": {"finalizers": list, "resourceVersion": obj.resource_version()}});
    api.patch(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// Deletes the vmodel and removes the finalizer.
async fn finalize<K, M>(
    ctx: &Ctx<M>,
    api: &Api<K>,
    obj: &K,
    owner: &str,
) -> Result<Action, ReconcileError>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    M: MeshApi,
{
    if !obj.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let (ns, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
    match ctx.mesh.delete_vmodel(&ns, &name, owner).await {
        Ok(()) => {}
        Err(s) if s.code() == Code::NotFound => {}
        // No runtime pod answers (scaled to zero, or the runtime is gone) for longer than the
        // grace: let the resource go; the registration stays in the store until a mesh of
        // this namespace runs again and its reaper or a new predictor replaces it.
        Err(s)
            if matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded)
                && deleting_for_ms(obj, (ctx.now_ms)()) > FINALIZE_GRACE_MS =>
        {
            tracing::warn!(namespace = %ns, %name, error = %s.message(), "no mesh answers; removing the finalizer without deleting the vmodel");
        }
        Err(s) => {
            return Err(ReconcileError::Mesh(format!(
                "deleteVModel {ns}/{name}: {:?}: {}",
                s.code(),
                s.message()
            )));
        }
    }
    let list: Vec<String> = obj
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    let patch =
        json!({"metadata": {"finalizers": list, "resourceVersion": obj.resource_version()}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    tracing::info!(namespace = %ns, %name, "vmodel deleted from the mesh");
    Ok(Action::await_change())
}

/// Reconciles one Predictor.
pub async fn reconcile_predictor<M: MeshApi>(
    p: Arc<Predictor>,
    ctx: Arc<Ctx<M>>,
) -> Result<Action, ReconcileError> {
    let ns = p.namespace().unwrap_or_default();
    let name = p.name_any();
    let api: Api<Predictor> = Api::namespaced(ctx.client.clone(), &ns);
    if p.meta().deletion_timestamp.is_some() {
        return finalize(&ctx, &api, p.as_ref(), OWNER_PREDICTOR).await;
    }
    ensure_finalizer(&api, p.as_ref()).await?;
    let prev = p.status.clone().unwrap_or_else(|| PredictorStatus {
        target_model_state: ModelState::None,
        ..Default::default()
    });
    let annotations = p.annotations().clone();
    let st = sync(
        &ctx,
        &ns,
        &name,
        OWNER_PREDICTOR,
        Ok(p.spec.clone()),
        &annotations,
        &prev,
    )
    .await?;
    if p.status.as_ref() != Some(&st) {
        let patch = status_patch(
            serde_json::to_value(&st).unwrap_or_default(),
            &["lastFailureInfo", "httpEndpoint", "grpcEndpoint"],
        );
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(requeue_for(&st))
}

/// The Predictor status an InferenceService's status stands for (to apply upstream's rules to
/// its previous state).
fn previous_of(isvc: &InferenceServiceStatus) -> PredictorStatus {
    let state = |s: &str| serde_json::from_value(json!(s)).unwrap_or(ModelState::None);
    let ms = isvc.model_status.clone().unwrap_or_default();
    let states = ms.states.unwrap_or_default();
    PredictorStatus {
        available: isvc
            .conditions
            .iter()
            .any(|c| c.type_ == "PredictorReady" && c.status == "True"),
        transition_status: ms
            .transition_status
            .and_then(|t| serde_json::from_value(json!(t)).ok())
            .unwrap_or(TransitionStatus::UpToDate),
        active_model_state: if states.active_model_state.is_empty() {
            ModelState::Pending
        } else {
            state(&states.active_model_state)
        },
        target_model_state: states
            .target_model_state
            .as_deref()
            .map(state)
            .unwrap_or(ModelState::None),
        last_failure_info: ms.last_failure_info.map(|f| FailureInfo {
            location: f.location,
            reason: f.reason.and_then(|r| serde_json::from_value(json!(r)).ok()),
            message: f.message,
            model_id: f.model_revision_name,
            time: f.time,
        }),
        failed_copies: ms.copies.as_ref().map(|c| c.failed_copies).unwrap_or(0),
        total_copies: ms.copies.and_then(|c| c.total_copies).unwrap_or(0),
        ..Default::default()
    }
}

/// Reconciles one InferenceService (only those in ModelMesh mode; others are KServe's).
pub async fn reconcile_isvc<M: MeshApi>(
    i: Arc<InferenceService>,
    ctx: Arc<Ctx<M>>,
) -> Result<Action, ReconcileError> {
    let ns = i.namespace().unwrap_or_default();
    let name = i.name_any();
    let api: Api<InferenceService> = Api::namespaced(ctx.client.clone(), &ns);
    let annotations = i.annotations().clone();
    let ours = crate::isvc::is_modelmesh(&annotations);
    if i.meta().deletion_timestamp.is_some() || !ours {
        // Not (or no longer) ModelMesh's: forget the vmodel if we registered one.
        return finalize(&ctx, &api, i.as_ref(), OWNER_ISVC).await;
    }
    ensure_finalizer(&api, i.as_ref()).await?;
    let prev_isvc = i.status.clone().unwrap_or_default();
    let prev = previous_of(&prev_isvc);
    let spec = crate::isvc::predictor_spec(&i.spec, &annotations);
    let st = sync(&ctx, &ns, &name, OWNER_ISVC, spec, &annotations, &prev).await?;
    let now = (ctx.now_ms)();
    let out = isvc_status(&st, &prev_isvc, now);
    if i.status.as_ref() != Some(&out) {
        let mut value = serde_json::to_value(&out).unwrap_or_default();
        // Nested: a cleared failure inside modelStatus must be removed too.
        if let Some(ms) = value.get_mut("modelStatus").and_then(|m| m.as_object_mut()) {
            ms.entry("lastFailureInfo".to_string())
                .or_insert(serde_json::Value::Null);
        }
        let patch = status_patch(value, &["url", "components"]);
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(requeue_for(&st))
}
