//! Cluster routing for a call that entered this pod from a client: serve a copy here, forward
//! to a pod holding one, or have one loaded (here or on the pod routing.rs picks), and on a
//! typed failure try the next choice while the call can be replayed. Every call, unary or
//! streaming, takes this path.

use super::here::Commit;
use super::outcome::Failure;
use super::request::{Req, Target};
use super::served::Served;
use super::{Call, Router};
use crate::error::MeshError;
use crate::hop::Hop;
use crate::routing::{Decision, FAIL_FAST_FAILURES, View, decide};
use tonic::Status;

/// Routing attempts per request (upstream's limit).
const MAX_ITERATIONS: usize = 8;
/// Load failures on different pods after which a request fails with the last error.
const MAX_LOAD_FAILURES: usize = 3;

/// What one request has tried so far.
#[derive(Default)]
struct Tried {
    /// Pods whose copy was tried.
    copies: Vec<String>,
    /// Pods asked to load.
    loads: Vec<String>,
    load_failures: usize,
    /// Set when a copy was full: the request then goes to another copy or fails with it,
    /// never to a new load (overload is not a reason to load more copies per request; the
    /// rate-based scale-up adds copies).
    exhausted: Option<Failure>,
    last: Option<Failure>,
    /// Whether the vmodel was read again after its model was gone.
    re_resolved: bool,
}

/// What to do after a failed attempt.
enum Next {
    Retry,
    Stop(Failure),
}

impl Tried {
    fn both(&mut self, pod: &str) {
        self.copies.push(pod.to_string());
        self.loads.push(pod.to_string());
    }

    /// Counts a failed load on `pod`; stops after [`MAX_LOAD_FAILURES`].
    fn load_failed(&mut self, pod: &str, f: Failure) -> Next {
        self.load_failures += 1;
        self.both(pod);
        if self.load_failures >= MAX_LOAD_FAILURES {
            return Next::Stop(f);
        }
        self.last = Some(f);
        Next::Retry
    }
}

impl Router {
    /// Routes a client's call for model `id` across the cluster.
    pub(super) async fn route(
        &self,
        req: &Req<'_>,
        call: &Call,
        mut id: String,
    ) -> Result<Served, Failure> {
        let me = self.mesh.local.instance_id().to_string();
        let balanced = req.md.get("mm-balanced").and_then(|v| v.to_str().ok()) == Some("true");
        let mut tried = Tried::default();
        // The load failure that ruled out the pods that recently failed, if any.
        let mut recent_failure = None;
        // The registry is read once here; a retry reads it again (its state has changed).
        let mut record = self.mesh.registry.get(&id);
        if let Some((rec, _)) = &record {
            let instances = self.mesh.placement.eligible_shared(&rec.model_type);
            let live = |p: &String| instances.get(p).is_some_and(|i| !i.shutdown);
            let copies = rec.instance_ids.keys().filter(|p| live(p)).count();
            let pods = instances.values().filter(|i| !i.shutdown).count();
            self.count_request(&id, rec, copies, pods);
        }
        for _ in 0..MAX_ITERATIONS {
            // A stream whose later messages went to a failed attempt cannot be sent again.
            if !call.replayable() {
                break;
            }
            // A copy here already tried (full) is left to the routing decision below.
            let loaded_here = !tried.copies.contains(&me) && self.mesh.local.try_hit(&id);
            let clustered = self.mesh.instances.len() > 1;
            if loaded_here {
                match self
                    .serve_here(req, call, &id, true, Commit::FirstAnswer)
                    .await
                {
                    // This pod's runtime is down: drop the copy and serve from another pod.
                    Err(f @ Failure::RuntimeDown(_)) if clustered => {
                        self.mesh.local.forget(&id).await;
                        tried.both(&me);
                        tried.last = Some(f);
                    }
                    // This copy is at its in-flight limit: another copy may have room.
                    Err(f @ Failure::CopyFull(_)) if clustered => {
                        tried.both(&me);
                        tried.exhausted = Some(f);
                    }
                    Err(Failure::Gone(s)) => {
                        id = self.moved_on(req.target, &mut tried, &id, s).await?
                    }
                    r => return r,
                }
                record = None;
                continue;
            }
            // The record read above, or the store when the model is not known here (a strong
            // read on every request would cost a round trip and fail while the store is down).
            let found = match record.take() {
                Some(r) => Some(r),
                None => match self.mesh.registry.get(&id) {
                    Some(r) => Some(r),
                    None => self
                        .mesh
                        .registry
                        .get_strong(&id)
                        .await
                        .map_err(|e| Failure::from(MeshError::from(e)))?,
                },
            };
            let Some((rec, _)) = found else {
                let gone = MeshError::ModelNotFound(id.clone()).into();
                id = self.moved_on(req.target, &mut tried, &id, gone).await?;
                continue;
            };
            let instances = self.mesh.placement.eligible_shared(&rec.model_type);
            if !self.mesh.placement.published() {
                // This pod is not published yet (single-pod start-up): it is the only choice.
                if !self.mesh.placement.eligible_here(&rec.model_type) {
                    return Err(self.mesh.placement.no_instance(&rec.model_type).into());
                }
                return self
                    .serve_here(req, call, &id, false, Commit::FirstAnswer)
                    .await;
            }
            if instances.is_empty() {
                return Err(self.mesh.placement.no_instance(&rec.model_type).into());
            }
            let view = View {
                me: &me,
                loaded_here,
                record: &rec,
                instances: &instances,
                units: self.mesh.local.predicted_units(&rec),
                tried_copies: &tried.copies,
                tried_loads: &tried.loads,
                balanced,
                tie: self.mesh.placement.next_tie(),
                now_ms: crate::clock::now_ms(),
                failure_expiry_ms: self.mesh.local.failure_expiry_ms(),
            };
            let recent = view.recent_failures();
            if recent > 0 {
                let msg = rec
                    .fails
                    .values()
                    .map(|f| f.msg.clone())
                    .find(|m| !m.is_empty())
                    .unwrap_or_default();
                let failed = Failure::LoadFailed(Status::internal(format!(
                    "failed to load model {id}: {msg}"
                )));
                if recent >= FAIL_FAST_FAILURES {
                    // Fail fast with the load's own error until the failures expire.
                    return Err(failed);
                }
                // Said if no pod is left to try (the pods that failed are skipped).
                recent_failure = Some(failed);
            }
            let decision = decide(&view);
            if let (Some(f), Decision::LoadHere | Decision::ForwardLoad(_)) =
                (&tried.exhausted, &decision)
            {
                return Err(f.clone());
            }
            let next = match decision {
                Decision::ServeHere => {
                    return self
                        .serve_here(req, call, &id, false, Commit::FirstAnswer)
                        .await;
                }
                Decision::LoadHere => {
                    match self
                        .serve_here(req, call, &id, false, Commit::FirstAnswer)
                        .await
                    {
                        // This pod's runtime is down: try another pod.
                        Err(f @ Failure::RuntimeDown(_)) if clustered => {
                            tried.loads.push(me.clone());
                            tried.last = Some(f);
                            Next::Retry
                        }
                        // A failed load here is retried on another pod, as a remote one is.
                        Err(f @ Failure::LoadFailed(_)) => tried.load_failed(&me, f),
                        Err(Failure::Gone(s)) => {
                            id = self.moved_on(req.target, &mut tried, &id, s).await?;
                            Next::Retry
                        }
                        r => return r,
                    }
                }
                Decision::ForwardHit(peer) => {
                    match self
                        .forward(req, call, &id, &peer, &instances, Hop::HitOnly)
                        .await
                    {
                        Ok(r) => return Ok(r),
                        Err(
                            f @ (Failure::NotHere(_)
                            | Failure::PeerDown(_)
                            | Failure::RuntimeDown(_)),
                        ) => {
                            tried.copies.push(peer);
                            tried.last = Some(f);
                            Next::Retry
                        }
                        // That pod or its copy is at a limit: try another copy.
                        Err(f @ (Failure::CopyFull(_) | Failure::PodFull(_))) => {
                            tried.both(&peer);
                            tried.exhausted = Some(f);
                            Next::Retry
                        }
                        Err(f @ Failure::LoadFailed(_)) => tried.load_failed(&peer, f),
                        Err(Failure::Gone(s)) => {
                            id = self.moved_on(req.target, &mut tried, &id, s).await?;
                            Next::Retry
                        }
                        Err(f) => Next::Stop(f),
                    }
                }
                Decision::ForwardLoad(peer) => {
                    match self
                        .forward(req, call, &id, &peer, &instances, Hop::LoadHere)
                        .await
                    {
                        Ok(r) => return Ok(r),
                        Err(f @ (Failure::PeerDown(_) | Failure::RuntimeDown(_))) => {
                            tried.loads.push(peer);
                            tried.last = Some(f);
                            Next::Retry
                        }
                        Err(f @ Failure::LoadFailed(_)) => tried.load_failed(&peer, f),
                        Err(Failure::Gone(s)) => {
                            id = self.moved_on(req.target, &mut tried, &id, s).await?;
                            Next::Retry
                        }
                        Err(f) => Next::Stop(f),
                    }
                }
                Decision::NoCandidate => break,
            };
            if let Next::Stop(f) = next {
                return Err(f);
            }
        }
        Err(tried
            .exhausted
            .or(tried.last)
            .or(recent_failure)
            .unwrap_or_else(|| {
                Failure::RuntimeDown(Status::unavailable(format!(
                    "no instance could serve model {id}; retry later"
                )))
            }))
    }

    /// The model a vmodel names once its old model is gone (read again from the store, once
    /// per request); otherwise the model's NOT_FOUND.
    async fn moved_on(
        &self,
        target: &Target,
        tried: &mut Tried,
        id: &str,
        gone: Status,
    ) -> Result<String, Failure> {
        if let (Target::VModel(v), false) = (target, tried.re_resolved) {
            tried.re_resolved = true;
            if let Ok(Some((vm, _))) = self.mesh.vmodels.get_strong(v).await {
                // The active model if it changed, else the one it is moving to.
                return Ok(if vm.active != id {
                    vm.active
                } else {
                    vm.target
                });
            }
        }
        Err(Failure::Gone(gone))
    }
}
