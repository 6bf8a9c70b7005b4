//! One mesh instance: the registry and vmodel tables, this pod's copies, and the management
//! operations of the `mmesh.ModelMesh` API with upstream's semantics: models here, vmodels in
//! `vmodel.rs` (what setVModel does is decided in `vmodel_decision.rs`).

mod vmodel;
pub mod vmodel_decision;

use crate::clock::now_ms;
use crate::error::MeshError;
use crate::kv::{Compare, KvStore, Op, Revision};
use crate::load_queue::Priority;
use crate::local::{CopyStatus, LocalModels, Room};
use crate::placement::{Placed, Placement};
use crate::registry::Layout;
use crate::registry::records::{ModelRecord, VModelRecord};
use crate::registry::table::{Change, Table, Update};
use crate::status;
use modelmesh_proto::mmesh::{self as pb, ModelStatusInfo};
use std::sync::Arc;
use std::time::Duration;

/// Age given to a new registration's last-used time: 1 h (loadNow) or 6 h, as upstream.
const AGE_LOAD_NOW_MS: u64 = 3_600_000;
const AGE_DEFAULT_MS: u64 = 6 * 3_600_000;
/// Longest a sync setVModel waits for its transition.
const SYNC_TRANSITION_WAIT: Duration = Duration::from_secs(240);
/// Reads from the store on a miss of the local copy, at once, per pod.
const STRONG_READS: usize = 32;
/// How often vmodels still in transition are retried.
const TRANSITION_SWEEP: Duration = Duration::from_secs(30);

/// The mesh.
pub struct Mesh {
    store: Arc<dyn KvStore>,
    layout: Layout,
    /// Registered models.
    pub registry: Arc<Table<ModelRecord>>,
    /// VModels.
    pub vmodels: Arc<Table<VModelRecord>>,
    /// Live instances (pods) of this mesh.
    pub instances: Arc<Table<crate::registry::records::InstanceRecord>>,
    /// This pod's copies.
    pub local: Arc<LocalModels>,
    /// Where copies go (eligible pods, peers, placing loads).
    pub placement: Arc<Placement>,
    pub(super) default_owner: String,
    /// Whether this instance leads the cluster (runs transitions and the reaper). True until an
    /// election says otherwise, so a single pod does everything itself.
    pub leader: Arc<std::sync::atomic::AtomicBool>,
    /// VModels whose transition task is running.
    pub(super) transitions: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Turns for reads from the store on misses of the local copies.
    strong_reads: tokio::sync::Semaphore,
}

/// Removes a vmodel from the running-transitions set when its task ends.
pub(super) struct TransitionGuard(pub(super) Arc<Mesh>, pub(super) String);

impl Drop for TransitionGuard {
    fn drop(&mut self) {
        self.0
            .transitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.1);
    }
}

pub(super) fn nonempty(what: &str, v: &str) -> Result<(), MeshError> {
    if v.is_empty() {
        Err(MeshError::InvalidArgument(format!(
            "must provide non-empty {what}"
        )))
    } else {
        Ok(())
    }
}

/// The longest model or vmodel id (ids are KV keys, directory names and metric labels).
pub const MAX_ID_BYTES: usize = 512;
/// The longest `modelInfo.path` and `modelInfo.type`.
pub const MAX_PATH_BYTES: usize = 4096;
/// The longest `modelInfo.key` (the storage JSON).
pub const MAX_KEY_BYTES: usize = 16 * 1024;

/// A field over its length cap: INVALID_ARGUMENT naming it (one registration must not be able
/// to fill etcd's request limit or every sidecar's memory).
fn capped(what: &str, v: &str, max: usize) -> Result<(), MeshError> {
    if v.len() > max {
        return Err(MeshError::InvalidArgument(format!(
            "{what} is {} bytes; the most is {max}",
            v.len()
        )));
    }
    Ok(())
}

/// The fields of a ModelInfo within their caps.
pub(super) fn valid_info(info: &pb::ModelInfo) -> Result<(), MeshError> {
    nonempty("modelInfo.type", &info.r#type)?;
    capped("modelInfo.type", &info.r#type, MAX_PATH_BYTES)?;
    capped("modelInfo.path", &info.path, MAX_PATH_BYTES)?;
    capped("modelInfo.key", &info.key, MAX_KEY_BYTES)
}

/// An id for a new model or vmodel: not empty, not over [`MAX_ID_BYTES`], and usable as a KV
/// key segment and a directory name in every runtime (adapters store a model's files under its
/// id).
pub(super) fn valid_id(what: &str, v: &str) -> Result<(), MeshError> {
    nonempty(what, v)?;
    capped(what, v, MAX_ID_BYTES)?;
    if v == "." || v == ".." || v.contains(['/', '\\']) || v.chars().any(char::is_control) {
        return Err(MeshError::InvalidArgument(format!(
            "{what} '{}' may not be '.' or '..' or contain '/', '\\' or control characters",
            v.escape_default()
        )));
    }
    Ok(())
}

pub(super) fn encode<R: serde::Serialize>(r: &R) -> Result<Vec<u8>, MeshError> {
    serde_json::to_vec(r).map_err(|e| MeshError::Unavailable(format!("cannot encode record: {e}")))
}

pub(super) fn info_matches(rec: &ModelRecord, info: &pb::ModelInfo) -> bool {
    rec.model_type == info.r#type && rec.path == info.path && rec.key == info.key
}

pub(super) fn new_record(info: &pb::ModelInfo, last_used: u64, auto_delete: bool) -> ModelRecord {
    ModelRecord {
        model_type: info.r#type.clone(),
        path: info.path.clone(),
        key: info.key.clone(),
        min_copies: info.min_copies,
        max_copies: info.max_copies,
        last_used,
        auto_delete,
        ..Default::default()
    }
}

/// One write of a multi-key transaction.
pub(super) struct Write {
    pub(super) key: String,
    pub(super) expected: Revision,
    pub(super) value: Option<Vec<u8>>,
}

impl Mesh {
    /// Starts the tables and follows deletions (an unregistered model's copy is unloaded).
    /// `constraints` and `labels` decide which pods may hold which model types.
    pub async fn start(
        store: Arc<dyn KvStore>,
        layout: Layout,
        registry: Arc<Table<ModelRecord>>,
        local: Arc<LocalModels>,
        default_owner: String,
        constraints: crate::constraints::TypeConstraints,
        labels: Vec<String>,
    ) -> Result<Arc<Mesh>, MeshError> {
        let vmodels = Table::start(store.clone(), layout.vmodels()).await?;
        let instances = Table::start(store.clone(), layout.instances()).await?;
        let placement = Arc::new(Placement::new(
            local.clone(),
            instances.clone(),
            constraints,
            labels,
        ));
        let mesh = Arc::new(Mesh {
            store,
            layout,
            registry,
            vmodels,
            instances,
            local,
            placement,
            default_owner,
            transitions: Default::default(),
            strong_reads: tokio::sync::Semaphore::new(STRONG_READS),
            leader: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        });
        let mut changes = mesh.registry.subscribe();
        let weak = Arc::downgrade(&mesh);
        tokio::spawn(async move {
            loop {
                let c = match changes.recv().await {
                    Ok(c) => c,
                    // Missed notices: drop every local copy whose model is gone.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let Some(m) = weak.upgrade() else { return };
                        for id in m.local.ids_by_age() {
                            if m.registry.get(&id).is_none() {
                                m.local.remove(&id, "unregistered");
                            }
                        }
                        continue;
                    }
                    Err(_) => return,
                };
                let Some(m) = weak.upgrade() else { return };
                if let Change::Delete(id) = c {
                    m.local.remove(&id, "unregistered");
                }
            }
        });
        // Finish transitions left in progress by a previous run, and retry stuck ones (a
        // failed target may load later, e.g. once its failure record expires).
        let weak = Arc::downgrade(&mesh);
        tokio::spawn(async move {
            loop {
                let Some(m) = weak.upgrade() else { return };
                let leading = m.leader.load(std::sync::atomic::Ordering::Relaxed);
                for (id, vm) in m.vmodels.list() {
                    if leading && vm.in_transition() {
                        m.spawn_transition(id);
                    }
                }
                drop(m);
                tokio::time::sleep(TRANSITION_SWEEP).await;
            }
        });
        Ok(mesh)
    }

    pub(super) async fn txn(&self, writes: Vec<Write>) -> Result<bool, MeshError> {
        let compares = writes
            .iter()
            .map(|w| Compare::ModRevision(w.key.clone(), w.expected))
            .collect();
        let ops = writes
            .into_iter()
            .map(|w| match w.value {
                Some(v) => Op::Put {
                    key: w.key,
                    value: v,
                    lease: 0,
                },
                None => Op::Delete(w.key),
            })
            .collect();
        Ok(self.store.txn(compares, ops).await?.succeeded)
    }

    pub(super) fn model_key(&self, id: &str) -> String {
        format!("{}{id}", self.layout.registry())
    }

    pub(super) fn vmodel_key(&self, id: &str) -> String {
        format!("{}{id}", self.layout.vmodels())
    }

    /// A record, from the local copy or (if absent there) from the store.
    pub(super) async fn model(
        &self,
        id: &str,
    ) -> Result<Option<(ModelRecord, Revision)>, MeshError> {
        match self.registry.get(id) {
            Some(r) => Ok(Some(r)),
            None => {
                let _turn = self.strong_read_turn().await;
                Ok(self.registry.get_strong(id).await?)
            }
        }
    }

    /// A turn for a read from the store on a miss of the local copy: misses are what a client
    /// sending made-up ids causes, and at most [`STRONG_READS`] of them reach the store at once
    /// from one pod (the others wait their turn).
    pub(super) async fn strong_read_turn(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.strong_reads.acquire().await.ok()
    }

    /// Whether a model is registered (the local copy, else the store).
    pub async fn is_registered(&self, id: &str) -> Result<bool, MeshError> {
        Ok(self.model(id).await?.is_some())
    }

    /// Status of a model as this pod sees it.
    pub fn status_of(&self, id: &str, rec: Option<&ModelRecord>) -> ModelStatusInfo {
        status::model_status(rec, self.local.status(id).as_ref())
    }

    /// registerModel.
    pub async fn register_model(
        self: &Arc<Self>,
        req: pb::RegisterModelRequest,
    ) -> Result<ModelStatusInfo, MeshError> {
        valid_id("modelId", &req.model_id)?;
        let info = req.model_info.unwrap_or_default();
        valid_info(&info)?;
        let now = now_ms();
        let last_used = match req.last_used_time {
            t if t >= now => now,
            t if t > 0 => t,
            _ => {
                now - if req.load_now {
                    AGE_LOAD_NOW_MS
                } else {
                    AGE_DEFAULT_MS
                }
            }
        };
        let mut conflict = false;
        let rec = self
            .registry
            .update(&req.model_id, |cur| match cur {
                Some(r) if !info_matches(r, &info) => {
                    conflict = true;
                    Update::Keep
                }
                Some(_) => Update::Keep,
                None => Update::Put(new_record(&info, last_used, false)),
            })
            .await?;
        if conflict {
            return Err(MeshError::AlreadyExists(format!(
                "Model already exists with different attribute values (model {}: its type, path or key differ; unregister it first or use another id)",
                req.model_id
            )));
        }
        tracing::info!(model = %req.model_id, "model registered");
        if req.load_now {
            return self.ensure_loaded(&req.model_id, req.sync, false).await;
        }
        Ok(self.status_of(&req.model_id, rec.as_ref()))
    }

    /// unregisterModel.
    pub async fn unregister_model(&self, id: &str) -> Result<(), MeshError> {
        nonempty("modelId", id)?;
        let mut referenced = false;
        self.registry
            .update(id, |cur| match cur {
                Some(r) if r.refs > 0 => {
                    referenced = true;
                    Update::Keep
                }
                Some(_) => Update::Delete,
                None => Update::Keep,
            })
            .await?;
        if referenced {
            return Err(MeshError::FailedPrecondition(format!(
                "Model {id} has referents"
            )));
        }
        self.local.remove(id, "unregistered");
        tracing::info!(model = id, "model unregistered");
        Ok(())
    }

    /// getModelStatus.
    pub async fn model_status(&self, id: &str) -> Result<ModelStatusInfo, MeshError> {
        nonempty("modelId", id)?;
        let rec = self.model(id).await?;
        Ok(self.status_of(id, rec.as_ref().map(|(r, _)| r)))
    }

    /// ensureLoaded from a client: makes sure a copy exists somewhere (this pod's, if it has
    /// one), placed as a request's would be; `balanced` favours this pod. With `sync`, waits
    /// for the load. A failed load is a status, not an error.
    pub async fn ensure_loaded(
        self: &Arc<Self>,
        id: &str,
        sync: bool,
        balanced: bool,
    ) -> Result<ModelStatusInfo, MeshError> {
        nonempty("modelId", id)?;
        let Some((rec, _)) = self.model(id).await? else {
            return Ok(self.status_of(id, None));
        };
        if matches!(
            self.local.status(id),
            Some(CopyStatus::Loaded | CopyStatus::Loading)
        ) {
            return self.ensure_here(id, sync, Room::MayEvict).await;
        }
        match self.placement.ensure(id, &rec, sync, balanced).await {
            Ok(Placed::Peer(_, status)) => Ok(status),
            Ok(Placed::Here) | Err(MeshError::LoadFailed { .. }) => {
                let rec = self.registry.get(id).map(|(r, _)| r).unwrap_or(rec);
                Ok(self.status_of(id, Some(&rec)))
            }
            Err(e) => Err(e),
        }
    }

    /// ensureLoaded that a peer addressed to this pod (hop `load`): loads a copy here.
    pub async fn ensure_here(
        self: &Arc<Self>,
        id: &str,
        sync: bool,
        room: Room,
    ) -> Result<ModelStatusInfo, MeshError> {
        nonempty("modelId", id)?;
        let Some((rec, _)) = self.model(id).await? else {
            return Ok(self.status_of(id, None));
        };
        match self.placement.load_here(id, &rec, sync, room).await {
            Ok(()) | Err(MeshError::LoadFailed { .. }) => {}
            Err(e) => return Err(e),
        }
        let rec = self.registry.get(id).map(|(r, _)| r).unwrap_or(rec);
        Ok(self.status_of(id, Some(&rec)))
    }

    /// Loads a model here for a request and returns its record (NOT_FOUND if unregistered).
    pub async fn ensure_for_request(self: &Arc<Self>, id: &str) -> Result<(), MeshError> {
        // A loaded copy is enough: unregistering a model removes its copy (registry watch).
        if self.local.try_hit(id) {
            return Ok(());
        }
        let Some((rec, _)) = self.model(id).await? else {
            return Err(MeshError::ModelNotFound(id.to_string()));
        };
        self.local.ensure(id, &rec, Priority::Urgent).await
    }

    /// Adds `delta` to a model's refs in a write list (deleting it when an auto-delete model's
    /// refs reach 0).
    pub(super) fn ref_write(
        &self,
        id: &str,
        rec: &ModelRecord,
        rev: Revision,
        delta: i64,
    ) -> Result<Write, MeshError> {
        let mut r = rec.clone();
        r.refs = (r.refs + delta).max(0);
        let value = if r.refs == 0 && r.auto_delete {
            None
        } else {
            Some(encode(&r)?)
        };
        Ok(Write {
            key: self.model_key(id),
            expected: rev,
            value,
        })
    }
}
