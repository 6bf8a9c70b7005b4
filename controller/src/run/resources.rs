//! The Predictor and InferenceService controllers: each reconciles the resources of served
//! namespaces (and finalizes deleted ones anywhere), woken by mesh changes and, when a
//! namespace starts being served, all at once.

use super::counted;
use super::triggers::Served;
use crate::crd::{InferenceService, Predictor};
use crate::mesh_client::GrpcMesh;
use crate::mesh_watch::receiver_stream;
use crate::reconcile::predictor::{reconcile_isvc, reconcile_predictor};
use crate::reconcile::{Ctx, ReconcileError, error_policy};
use futures::StreamExt;
use kube::Resource;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedReceiver;

/// Whether `ns` is served now.
fn served(set: &Served, ns: Option<String>) -> bool {
    ns.is_some_and(|ns| set.read().unwrap_or_else(|p| p.into_inner()).contains(&ns))
}

/// Runs the Predictor controller until shutdown.
pub async fn predictors(
    api: Api<Predictor>,
    gate: Served,
    woken: UnboundedReceiver<ObjectRef<Predictor>>,
    all: UnboundedReceiver<()>,
    ctx: Arc<Ctx<GrpcMesh>>,
) {
    Controller::new(api, watcher::Config::default())
        .reconcile_on(receiver_stream(woken))
        .reconcile_all_on(receiver_stream(all))
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
            ctx,
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "predictor reconcile");
            }
        })
        .await;
}

/// Runs the InferenceService controller until shutdown.
pub async fn inference_services(
    api: Api<InferenceService>,
    gate: Served,
    woken: UnboundedReceiver<ObjectRef<InferenceService>>,
    all: UnboundedReceiver<()>,
    ctx: Arc<Ctx<GrpcMesh>>,
) {
    Controller::new(api, watcher::Config::default())
        .reconcile_on(receiver_stream(woken))
        .reconcile_all_on(receiver_stream(all))
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
}
