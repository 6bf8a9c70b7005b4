//! This pod's copy housekeeping: dropping idle extra copies while the cluster is nearly full
//! (scale-down, decided by `scaling::scale_down`), and moving a model this pod evicted to a
//! pod with room when no other pod holds it.

use crate::local::Room;
use crate::mesh::Mesh;
use crate::placement::Placed;
use crate::registry::records::{InstanceRecord, ModelRecord};
use crate::scaling::{LocalCopy, Space, scale_down};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Runs scale-down every `every` and follows this pod's evictions; stops when the mesh is gone.
pub fn spawn(mesh: &Arc<Mesh>, every: Duration) -> tokio::task::JoinHandle<()> {
    let weak = Arc::downgrade(mesh);
    let mut evictions = mesh.local.evictions();
    let movers = tokio::spawn({
        let weak = weak.clone();
        async move {
            loop {
                let id = match evictions.recv().await {
                    Ok(id) => id,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                };
                let Some(mesh) = weak.upgrade() else { return };
                move_evicted(&mesh, &id).await;
            }
        }
    });
    tokio::spawn(async move {
        let _movers = crate::task::AbortOnDrop(movers);
        loop {
            tokio::time::sleep(every).await;
            let Some(mesh) = weak.upgrade() else { return };
            run_scale_down(&mesh).await;
        }
    })
}

/// One scale-down pass over this pod's loaded copies.
pub async fn run_scale_down(mesh: &Arc<Mesh>) {
    let me = mesh.local.instance_id().to_string();
    let copies: Vec<LocalCopy> = mesh
        .local
        .loaded_copies()
        .into_iter()
        .map(|(id, last_used, units)| LocalCopy {
            id,
            last_used,
            units: units as i64,
        })
        .collect();
    let records: BTreeMap<String, ModelRecord> = copies
        .iter()
        .filter_map(|c| mesh.registry.get(&c.id).map(|(r, _)| (c.id.clone(), r)))
        .collect();
    let instances: BTreeMap<String, InstanceRecord> = mesh.instances.list().into_iter().collect();
    let live: HashSet<String> = instances
        .iter()
        .filter(|(_, i)| !i.shutdown)
        .map(|(k, _)| k.clone())
        .collect();
    for id in scale_down(&me, &copies, &records, &instances, crate::clock::now_ms()) {
        mesh.local.scale_down(&id, &live).await;
    }
}

/// After an eviction: if no other pod that is up holds the model and the pods it may use have
/// room (5 % of their capacity, and at least its size), load it on one of them.
async fn move_evicted(mesh: &Arc<Mesh>, id: &str) {
    let me = mesh.local.instance_id().to_string();
    let Some((rec, _)) = mesh.registry.get(id) else {
        return;
    };
    let others: BTreeMap<String, InstanceRecord> = mesh
        .placement
        .eligible_instances(&rec.model_type)
        .into_iter()
        .filter(|(k, i)| *k != me && !i.shutdown)
        .collect();
    if rec.instance_ids.keys().any(|p| others.contains_key(p)) {
        return;
    }
    let space = Space::of(&others);
    let need = mesh.local.predicted_units(&rec);
    if space.free() < need || space.free() * 20 < space.capacity {
        return;
    }
    match mesh
        .placement
        .add_copy_in(id, &rec, std::slice::from_ref(&me), false, Room::FreeOnly)
        .await
    {
        Ok(Placed::Peer(pod, _)) => {
            tracing::info!(model = id, pod = %pod, "evicted here: moved to a pod with room")
        }
        Ok(Placed::Here) => {}
        Err(e) => tracing::debug!(model = id, error = %e, "evicted here: no pod with room took it"),
    }
}
