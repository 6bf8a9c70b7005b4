//! Mesh changes (vmodel transitions, load results) read from the etcd the meshes share, sent
//! to the Predictor and InferenceService controllers as the resources they concern.

use crate::crd::{InferenceService, Predictor};
use crate::reconcile::Ctx;
use futures::StreamExt;
use kube::api::Api;
use std::sync::Arc;

/// Connects to the etcd the meshes share (the controller namespace's etcd secret) and forwards
/// mesh changes to the Predictor and InferenceService controllers. Without it, status is still
/// polled while models load and resynced every few minutes, so a failure here only warns.
pub async fn spawn_mesh_watch<M: crate::mesh_client::MeshApi>(
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
