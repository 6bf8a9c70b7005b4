//! The vmodels of the ModelMesh API: setVModel (its decision is `vmodel_decision::decide`;
//! this writes what it decided, in one transaction with the models' references),
//! deleteVModel, getVModelStatus, resolving a vmodel to its active model, and the transitions
//! that switch a vmodel once its new target has loaded.

use super::vmodel_decision::{Ask, Decision, Now, Refusal, TargetState, decide};
use super::{
    AGE_DEFAULT_MS, AGE_LOAD_NOW_MS, Mesh, SYNC_TRANSITION_WAIT, TransitionGuard, Write, encode,
    info_matches, new_record, nonempty, valid_id, valid_info,
};
use crate::clock::now_ms;
use crate::error::MeshError;
use crate::local::CopyStatus;
use crate::registry::records::VModelRecord;
use crate::registry::table::Update;
use crate::status;
use modelmesh_proto::mmesh::model_status_info::ModelStatus;
use modelmesh_proto::mmesh::{self as pb, ModelStatusInfo, VModelStatusInfo};
use std::sync::Arc;
use std::time::Duration;

/// A refused setVModel as upstream words and codes it.
fn refusal(r: Refusal, vid: &str, tid: &str, expected: &str) -> MeshError {
    match r {
        Refusal::ExpectedTargetMismatch => MeshError::FailedPrecondition(format!(
            "vmodel {vid} target is not the expected {expected}"
        )),
        Refusal::TargetNotFound => MeshError::ModelNotFound(format!("Target model {tid}")),
        Refusal::TargetDiffers => MeshError::AlreadyExists(format!(
            "Model already exists with different attribute values (target model {tid}: its type, path or key differ)"
        )),
        Refusal::OwnerMismatch(owner) => MeshError::AlreadyExists(format!(
            "vmodel {vid} already exists with different owner \"{owner}\""
        )),
        Refusal::VModelNotFound => MeshError::VModelNotFound(vid.to_string()),
    }
}

impl Mesh {
    /// Resolves a vmodel to its active model id.
    pub async fn resolve_vmodel(&self, vmodel: &str) -> Result<String, MeshError> {
        if let Some((vm, _)) = self.vmodels.get(vmodel) {
            return Ok(vm.active);
        }
        // Not in the local copy (yet): a strong read, as upstream does.
        let _turn = self.strong_read_turn().await;
        self.vmodels
            .get_strong(vmodel)
            .await?
            .map(|(vm, _)| vm.active)
            .ok_or_else(|| MeshError::VModelNotFound(vmodel.to_string()))
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
        let owner = self.effective_owner(&req.owner).to_string();
        let mut transition = false;
        let mut needs_copy = req.load_now;
        let mut written = false;
        for _attempt in 0..50 {
            let vm = self.vmodels.get_strong(&vid).await?;
            let target = self.registry.get_strong(&tid).await?;
            let target_state = match (&target, &req.model_info) {
                (None, _) => TargetState::Absent,
                (Some((r, _)), Some(info)) if !info_matches(r, info) => TargetState::Differs,
                (Some(_), _) => TargetState::Matches,
            };
            let active = match &vm {
                Some((v, _)) if v.target != tid => self.registry.get_strong(&v.active).await?,
                _ => None,
            };
            // The active model is in use if any pod holds it (this one or another).
            let active_held = vm.as_ref().is_some_and(|(v, _)| {
                matches!(
                    self.local.status(&v.active),
                    Some(CopyStatus::Loaded | CopyStatus::Loading)
                ) || active
                    .as_ref()
                    .is_some_and(|(r, _)| !r.instance_ids.is_empty())
            });
            let ask = Ask {
                target: &tid,
                expected_target: &req.expected_target_model_id,
                owner: &owner,
                update_only: req.update_only,
                force: req.force,
                has_model_info: req.model_info.is_some(),
            };
            let now = Now {
                vmodel: vm.as_ref().map(|(v, _)| v),
                target: target_state,
                active_held,
                target_loaded: self.local.status(&tid) == Some(CopyStatus::Loaded),
            };
            let mut writes = Vec::new();
            // The last-used time the target inherits (from the model it replaces).
            let decision = decide(&ask, &now);
            let switch = matches!(decision, Decision::SwitchNow { .. });
            let inherited_lu = match decision {
                Decision::Refuse(r) => {
                    return Err(refusal(r, &vid, &tid, &req.expected_target_model_id));
                }
                Decision::Unchanged => {
                    transition = vm.as_ref().is_some_and(|(v, _)| v.in_transition());
                    written = true;
                    break;
                }
                Decision::Create => {
                    let nv = VModelRecord {
                        owner: owner.clone(),
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
                Decision::SwitchNow { release_pending }
                | Decision::Transition { release_pending } => {
                    let Some((v, rev)) = &vm else {
                        return Err(MeshError::VModelNotFound(vid));
                    };
                    needs_copy |= active_held;
                    // A previous pending target loses its reference.
                    if release_pending
                        && let Some((pr, prev)) = self.registry.get_strong(&v.target).await?
                    {
                        writes.push(self.ref_write(&v.target, &pr, prev, -1)?);
                    }
                    let mut nv = v.clone();
                    nv.target = tid.clone();
                    nv.failed = false;
                    if switch && tid != v.active {
                        if let Some((ar, arev)) = &active {
                            writes.push(self.ref_write(&v.active, ar, *arev, -1)?);
                        }
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
            };
            let now_ms = now_ms();
            let lu = inherited_lu.unwrap_or(
                now_ms
                    - if req.load_now {
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
    pub(super) fn spawn_transition(self: &Arc<Self>, vid: String) {
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
