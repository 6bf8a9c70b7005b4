//! One mesh instance: the registry and vmodel tables, this pod's copies, and the management
//! operations of the `mmesh.ModelMesh` API with upstream's semantics.

use crate::error::MeshError;
use crate::kv::{Compare, KvStore, Op, Revision};
use crate::load_queue::Priority;
use crate::local::{CopyStatus, LocalModels, Room, now_ms};
use crate::placement::{Placed, Placement};
use crate::registry::Layout;
use crate::registry::records::{ModelRecord, VModelRecord};
use crate::registry::table::{Change, Table, Update};
use crate::status;
use modelmesh_proto::mmesh::model_status_info::ModelStatus;
use modelmesh_proto::mmesh::{self as pb, ModelStatusInfo, VModelStatusInfo};
use std::sync::Arc;
use std::time::Duration;

/// Age given to a new registration's last-used time: 1 h (loadNow) or 6 h, as upstream.
const AGE_LOAD_NOW_MS: u64 = 3_600_000;
const AGE_DEFAULT_MS: u64 = 6 * 3_600_000;
/// Longest a sync setVModel waits for its transition.
const SYNC_TRANSITION_WAIT: Duration = Duration::from_secs(240);
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
    default_owner: String,
    /// Whether this instance leads the cluster (runs transitions and the reaper). True until an
    /// election says otherwise, so a single pod does everything itself.
    pub leader: Arc<std::sync::atomic::AtomicBool>,
    /// VModels whose transition task is running.
    transitions: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Removes a vmodel from the running-transitions set when its task ends.
struct TransitionGuard(Arc<Mesh>, String);

impl Drop for TransitionGuard {
    fn drop(&mut self) {
        self.0
            .transitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.1);
    }
}

fn nonempty(what: &str, v: &str) -> Result<(), MeshError> {
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
fn valid_info(info: &pb::ModelInfo) -> Result<(), MeshError> {
    nonempty("modelInfo.type", &info.r#type)?;
    capped("modelInfo.type", &info.r#type, MAX_PATH_BYTES)?;
    capped("modelInfo.path", &info.path, MAX_PATH_BYTES)?;
    capped("modelInfo.key", &info.key, MAX_KEY_BYTES)
}

/// An id for a new model or vmodel: not empty, not over [`MAX_ID_BYTES`], and usable as a KV
/// key segment and a directory name in every runtime (adapters store a model's files under its
/// id).
fn valid_id(what: &str, v: &str) -> Result<(), MeshError> {
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

fn encode<R: serde::Serialize>(r: &R) -> Result<Vec<u8>, MeshError> {
    serde_json::to_vec(r).map_err(|e| MeshError::Unavailable(format!("cannot encode record: {e}")))
}

fn info_matches(rec: &ModelRecord, info: &pb::ModelInfo) -> bool {
    rec.model_type == info.r#type && rec.path == info.path && rec.key == info.key
}

fn new_record(info: &pb::ModelInfo, last_used: u64, auto_delete: bool) -> ModelRecord {
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
struct Write {
    key: String,
    expected: Revision,
    value: Option<Vec<u8>>,
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

    async fn txn(&self, writes: Vec<Write>) -> Result<bool, MeshError> {
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

    fn model_key(&self, id: &str) -> String {
        format!("{}{id}", self.layout.registry())
    }

    fn vmodel_key(&self, id: &str) -> String {
        format!("{}{id}", self.layout.vmodels())
    }

    /// A record, from the local copy or (if absent there) from the store.
    async fn model(&self, id: &str) -> Result<Option<(ModelRecord, Revision)>, MeshError> {
        match self.registry.get(id) {
            Some(r) => Ok(Some(r)),
            None => Ok(self.registry.get_strong(id).await?),
        }
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

    /// Resolves a vmodel to its active model id.
    pub async fn resolve_vmodel(&self, vmodel: &str) -> Result<String, MeshError> {
        if let Some((vm, _)) = self.vmodels.get(vmodel) {
            return Ok(vm.active);
        }
        // Not in the local copy (yet): a strong read, as upstream does.
        self.vmodels
            .get_strong(vmodel)
            .await?
            .map(|(vm, _)| vm.active)
            .ok_or_else(|| MeshError::VModelNotFound(vmodel.to_string()))
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

    /// getVModelStatus.
    pub async fn vmodel_status(
        &self,
        vmodel: &str,
        owner: &str,
    ) -> Result<VModelStatusInfo, MeshError> {
        nonempty("vModelId", vmodel)?;
        // A strong read: callers poll this right after changing the vmodel.
        let vm = self.vmodels.get_strong(vmodel).await?.map(|(vm, _)| vm);
        let Some(vm) = vm.filter(|vm| owner.is_empty() || vm.owner == owner) else {
            return Ok(status::vmodel_status(
                None,
                ModelStatusInfo::default(),
                None,
            ));
        };
        let active = self.model(&vm.active).await?;
        let active = self.status_of(&vm.active, active.as_ref().map(|(r, _)| r));
        let target = if vm.in_transition() {
            let t = self.model(&vm.target).await?;
            let mut s = self.status_of(&vm.target, t.as_ref().map(|(r, _)| r));
            if s.status != pb::model_status_info::ModelStatus::Loaded as i32 && !vm.failed {
                s.status = pb::model_status_info::ModelStatus::Loading as i32;
            }
            Some(s)
        } else {
            None
        };
        Ok(status::vmodel_status(Some(&vm), active, target))
    }

    /// Adds `delta` to a model's refs in a write list (deleting it when an auto-delete model's
    /// refs reach 0).
    fn ref_write(
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

    /// setVModel.
    pub async fn set_vmodel(
        self: &Arc<Self>,
        req: pb::SetVModelRequest,
    ) -> Result<VModelStatusInfo, MeshError> {
        valid_id("vModelId", &req.v_model_id)?;
        valid_id("targetModelId", &req.target_model_id)?;
        if let Some(info) = &req.model_info {
            valid_info(info)?;
        }
        let (vid, tid) = (req.v_model_id.clone(), req.target_model_id.clone());
        let mut transition = false;
        let mut needs_copy = req.load_now;
        let mut written = false;
        for _attempt in 0..50 {
            let vm = self.vmodels.get_strong(&vid).await?;
            let target = self.registry.get_strong(&tid).await?;
            if !req.expected_target_model_id.is_empty() {
                let ok = match &vm {
                    Some((v, _)) => v.target == req.expected_target_model_id || v.target == tid,
                    None => req.expected_target_model_id == tid,
                };
                if !ok {
                    return Err(MeshError::FailedPrecondition(format!(
                        "vmodel {vid} target is not the expected {}",
                        req.expected_target_model_id
                    )));
                }
            }
            match (&target, &req.model_info) {
                (None, None) => {
                    return Err(MeshError::ModelNotFound(format!("Target model {tid}")));
                }
                (Some((r, _)), Some(info)) if !info_matches(r, info) => {
                    return Err(MeshError::AlreadyExists(format!(
                        "Model already exists with different attribute values (target model {tid}: its type, path or key differ)"
                    )));
                }
                _ => {}
            }
            let mut writes = Vec::new();
            // The vmodel write is queued inside; the value is the last-used time to inherit.
            let new_vm = match &vm {
                Some((v, rev)) => {
                    // Re-pointing needs the owner: a request without one acts as the default
                    // owner (upstream let it re-point anyone's vmodel).
                    if v.owner != self.effective_owner(&req.owner) {
                        return Err(MeshError::AlreadyExists(format!(
                            "vmodel {vid} already exists with different owner \"{}\"",
                            v.owner
                        )));
                    }
                    if v.target == tid {
                        // Nothing to change.
                        transition = v.in_transition();
                        written = true;
                        break;
                    }
                    let mut nv = v.clone();
                    // A previous pending target loses its reference.
                    if v.in_transition()
                        && v.target != v.active
                        && let Some((pr, prev)) = self.registry.get_strong(&v.target).await?
                    {
                        writes.push(self.ref_write(&v.target, &pr, prev, -1)?);
                    }
                    let active = self.registry.get_strong(&v.active).await?;
                    // The active model is in use if any pod holds it (this one or another).
                    let active_held = matches!(
                        self.local.status(&v.active),
                        Some(CopyStatus::Loaded | CopyStatus::Loading)
                    ) || active
                        .as_ref()
                        .is_some_and(|(r, _)| !r.instance_ids.is_empty());
                    needs_copy |= active_held;
                    let target_loaded = self.local.status(&tid) == Some(CopyStatus::Loaded);
                    let switch_now = req.force || tid == v.active || !active_held || target_loaded;
                    nv.target = tid.clone();
                    nv.failed = false;
                    if switch_now && tid != v.active {
                        if let Some((ar, arev)) = &active {
                            writes.push(self.ref_write(&v.active, ar, *arev, -1)?);
                        }
                        nv.active = tid.clone();
                    } else if tid == v.active {
                        nv.active = tid.clone();
                    }
                    transition = nv.in_transition();
                    writes.push(Write {
                        key: self.vmodel_key(&vid),
                        expected: *rev,
                        value: Some(encode(&nv)?),
                    });
                    active.map(|(r, _)| r.last_used)
                }
                None => {
                    if req.update_only {
                        return Err(MeshError::VModelNotFound(vid));
                    }
                    let owner = if req.owner.is_empty() {
                        self.default_owner.clone()
                    } else {
                        req.owner.clone()
                    };
                    let nv = VModelRecord {
                        owner,
                        active: tid.clone(),
                        target: tid.clone(),
                        ..Default::default()
                    };
                    writes.push(Write {
                        key: self.vmodel_key(&vid),
                        expected: 0,
                        value: Some(encode(&nv)?),
                    });
                    None
                }
            };
            let inherited_lu = new_vm;
            let now = now_ms();
            let lu = inherited_lu.unwrap_or(
                now - if req.load_now {
                    AGE_LOAD_NOW_MS
                } else {
                    AGE_DEFAULT_MS
                },
            );
            // The target gains a reference (unless it already was the active model).
            let (mut trec, trev) = match (&target, &req.model_info) {
                (Some((r, rev)), _) => (r.clone(), *rev),
                (None, Some(info)) => (new_record(info, lu, req.auto_delete_target_model), 0),
                (None, None) => {
                    return Err(MeshError::ModelNotFound(format!("Target model {tid}")));
                }
            };
            let already_active = vm.as_ref().is_some_and(|(v, _)| v.active == tid);
            if !already_active {
                trec.refs += 1;
                trec.last_used = trec.last_used.max(lu);
                // The same key may already be in the list (pending target == new target cannot
                // happen: that case returned above).
                writes.push(Write {
                    key: self.model_key(&tid),
                    expected: trev,
                    value: Some(encode(&trec)?),
                });
            }
            if self.txn(writes).await? {
                tracing::info!(vmodel = %vid, target = %tid, transition, "vmodel set");
                written = true;
                break;
            }
        }
        if !written {
            return Err(MeshError::Unavailable(format!(
                "too many concurrent changes to vmodel {vid}; retry"
            )));
        }
        // Copy bounds are not part of a model's identity: a changed minimum or maximum updates
        // the target in place (a Predictor's annotations changed).
        if let Some(info) = &req.model_info {
            let (min, max) = (info.min_copies, info.max_copies);
            self.registry
                .update(&tid, |cur| match cur {
                    Some(r) if r.min_copies != min || r.max_copies != max => {
                        let mut r = r.clone();
                        r.min_copies = min;
                        r.max_copies = max;
                        Update::Put(r)
                    }
                    _ => Update::Keep,
                })
                .await?;
        }
        if transition {
            self.spawn_transition(vid.clone());
            if req.sync {
                self.wait_transition(&vid).await;
            }
        } else if needs_copy {
            if req.sync && req.model_info.is_some() {
                let _ = self.ensure_loaded(&tid, true, false).await;
            } else if let Ok(Some((rec, _))) = self.registry.get_strong(&tid).await {
                let _ = self.placement.ensure(&tid, &rec, false, false).await;
            }
        }
        self.vmodel_status(&vid, "").await
    }

    async fn wait_transition(&self, vid: &str) {
        let deadline = tokio::time::Instant::now() + SYNC_TRANSITION_WAIT;
        while tokio::time::Instant::now() < deadline {
            match self.vmodels.get_strong(vid).await {
                Ok(Some((vm, _))) if vm.in_transition() && !vm.failed => {}
                _ => return,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Loads the target of a vmodel in transition, then makes it active (single pod: this
    /// instance runs every transition).
    fn spawn_transition(self: &Arc<Self>, vid: String) {
        if !self
            .transitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(vid.clone())
        {
            return; // already running
        }
        let this = self.clone();
        tokio::spawn(async move {
            let _guard = TransitionGuard(this.clone(), vid.clone());
            // A strong read: the caller has usually just written the vmodel.
            let Ok(Some((vm, _))) = this.vmodels.get_strong(&vid).await else {
                return;
            };
            if !vm.in_transition() {
                return;
            }
            let target = vm.target.clone();
            // Loaded anywhere in the cluster counts (sync: waits for the copy).
            let loaded = match this.ensure_loaded(&target, true, false).await {
                Ok(s) if s.status == ModelStatus::Loaded as i32 => Ok(()),
                Ok(s) => Err(MeshError::LoadFailed {
                    id: target.clone(),
                    message: s.errors.first().cloned().unwrap_or_default(),
                }),
                Err(e) => Err(e),
            };
            for _ in 0..50 {
                let Ok(Some((vm, vrev))) = this.vmodels.get_strong(&vid).await else {
                    return;
                };
                if vm.target != target || !vm.in_transition() {
                    return;
                }
                let mut nv = vm.clone();
                let mut writes = Vec::new();
                if loaded.is_ok() {
                    if let Ok(Some((ar, arev))) = this.registry.get_strong(&vm.active).await {
                        match this.ref_write(&vm.active, &ar, arev, -1) {
                            Ok(w) => writes.push(w),
                            Err(_) => return,
                        }
                    }
                    nv.active = target.clone();
                    nv.failed = false;
                } else if vm.failed {
                    return; // already recorded; the sweep retries later
                } else {
                    nv.failed = true;
                }
                let Ok(value) = encode(&nv) else { return };
                writes.push(Write {
                    key: this.vmodel_key(&vid),
                    expected: vrev,
                    value: Some(value),
                });
                match this.txn(writes).await {
                    Ok(true) => {
                        if loaded.is_ok() {
                            tracing::info!(vmodel = %vid, active = %target, "vmodel completed transition");
                        } else {
                            tracing::warn!(vmodel = %vid, target = %target, "vmodel transition failed: target did not load");
                        }
                        return;
                    }
                    Ok(false) => continue,
                    Err(e) => {
                        tracing::warn!(vmodel = %vid, error = %e, "cannot record the transition; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
    }

    /// The owner a request acts as: its own, else `MM_DEFAULT_VMODEL_OWNER`.
    fn effective_owner<'a>(&'a self, owner: &'a str) -> &'a str {
        if owner.is_empty() {
            &self.default_owner
        } else {
            owner
        }
    }

    /// deleteVModel: absent or another owner's vmodel is a silent success, as upstream; a
    /// request without an owner acts as the default owner (upstream's empty owner deleted any
    /// vmodel).
    pub async fn delete_vmodel(&self, vid: &str, owner: &str) -> Result<(), MeshError> {
        nonempty("vModelId", vid)?;
        let owner = self.effective_owner(owner);
        for _ in 0..50 {
            let Some((vm, vrev)) = self.vmodels.get_strong(vid).await? else {
                return Ok(());
            };
            if vm.owner != owner {
                tracing::warn!(vmodel = vid, owner = %vm.owner, asked_by = owner, "deleteVModel by another owner ignored");
                return Ok(());
            }
            let mut writes = vec![Write {
                key: self.vmodel_key(vid),
                expected: vrev,
                value: None,
            }];
            if let Some((ar, arev)) = self.registry.get_strong(&vm.active).await? {
                writes.push(self.ref_write(&vm.active, &ar, arev, -1)?);
            }
            if vm.in_transition()
                && let Some((tr, trev)) = self.registry.get_strong(&vm.target).await?
            {
                writes.push(self.ref_write(&vm.target, &tr, trev, -1)?);
            }
            if self.txn(writes).await? {
                tracing::info!(vmodel = vid, "vmodel deleted");
                return Ok(());
            }
        }
        Err(MeshError::Unavailable(format!(
            "too many concurrent changes to vmodel {vid}"
        )))
    }
}
