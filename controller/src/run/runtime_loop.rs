//! The per-namespace runtime reconciler's loop: triggers batched, each namespace reconciled,
//! and looked at again when its plan asks or a reconcile failed.

use super::counted;
use crate::reconcile::Ctx;
use std::collections::HashSet;
use std::sync::{Arc, RwLock};

/// Reconciles namespaces as triggers arrive (batched over 300 ms), and again when a plan asks
/// (a scale-to-zero grace period ending) or after the resync interval.
pub async fn runtime_loop<M: crate::mesh_client::MeshApi>(
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
