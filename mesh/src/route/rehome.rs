//! Before this pod exits: each of its models that no other pod holds is loaded elsewhere (most
//! recently used first), so no request has to wait for a load after it is gone.

use super::Router;
use crate::placement::Placed;
use std::time::{Duration, Instant};

impl Router {
    /// Moves this pod's models to other pods within `budget`, waiting for each load.
    pub async fn rehome_all(&self, budget: Duration) {
        let started = Instant::now();
        let me = self.mesh.local.instance_id().to_string();
        let mut ids = self.mesh.local.ids_by_age();
        ids.reverse();
        for id in ids {
            let left = budget.saturating_sub(started.elapsed());
            if left.is_zero() {
                tracing::warn!(
                    "migration budget spent; remaining models will load on demand elsewhere"
                );
                return;
            }
            let Some((rec, _)) = self.mesh.registry.get(&id) else {
                continue;
            };
            let instances = self.mesh.placement.eligible_shared(&rec.model_type);
            let served_elsewhere = rec
                .instance_ids
                .keys()
                .any(|p| *p != me && instances.get(p).is_some_and(|i| !i.shutdown));
            if served_elsewhere {
                continue;
            }
            let call = self
                .mesh
                .placement
                .add_copy(&id, &rec, std::slice::from_ref(&me), true);
            match tokio::time::timeout(left, call).await {
                Ok(Ok(Placed::Peer(pod, _))) => {
                    tracing::info!(model = %id, pod = %pod, "moved model before shutdown")
                }
                Ok(Ok(Placed::Here)) => {}
                Ok(Err(e)) => tracing::warn!(model = %id, error = %e, "could not move model"),
                Err(_) => return,
            }
        }
    }
}
