//! Inference routing: any gRPC method other than the ModelMesh API is forwarded as raw bytes to
//! the runtime. The model id comes from the request field the dataplane config names, or from
//! `mm-model-id` / `mm-vmodel-id` (and `-bin`) headers; a vmodel resolves to its active model;
//! the concrete id is spliced into the field the runtime declared; the model is loaded here if
//! needed; a model the runtime lost is reloaded and the request retried once.

use crate::codec::RawCodec;
use crate::dataplane::DataplaneConfig;
use crate::error::MeshError;
use crate::idpath;
use crate::limits::{COPY_FULL, LimitConfig, Limits};
use crate::mesh::Mesh;
use crate::placement::Placed;
use crate::registry::records::{InstanceRecord, ModelRecord};
use crate::routing::{Decision, View, decide};
use bytes::Bytes;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;
use tonic::metadata::{AsciiMetadataValue, BinaryMetadataValue, KeyAndValueRef, MetadataMap};
use tonic::transport::Channel;
use tonic::{Code, Status};

mod request;
pub use crate::hop::{
    HOP, Hop, KNOWN_SIZE, NOT_HERE, ROOM_ONLY, known_size, refuse_hop_metadata, room,
};
pub use crate::runtime::errors::{connection_lost, model_vanished};
use request::runtime_headers;
pub use request::{Target, find_target, parse_timeout};

/// Routes inference requests for one mesh.
pub struct Router {
    mesh: Arc<Mesh>,
    data: Channel,
    dataplane: DataplaneConfig,
    scaling: std::sync::Mutex<std::collections::HashMap<String, RateWindow>>,
    scaleup_rpm: u64,
    limits: Arc<Limits>,
}

/// Requests seen for one model in the current window, and when a scale-up last started.
#[derive(Debug, Default, Clone, Copy)]
struct RateWindow {
    start_ms: u64,
    count: u64,
    last_scaleup_ms: u64,
}

/// Length of the request-rate window.
const RATE_WINDOW_MS: u64 = 10_000;

/// Default `MM_SCALEUP_RPM_THRESHOLD`.
pub const DEFAULT_SCALEUP_RPM: u64 = 2_000;
/// Routing attempts per request (upstream's limit).
const MAX_ITERATIONS: usize = 8;
/// Load failures on different pods after which a request fails with the last error.
const MAX_LOAD_FAILURES: usize = 3;

impl Router {
    /// A router sending inference to `data`.
    pub fn new(mesh: Arc<Mesh>, data: Channel, dataplane: DataplaneConfig) -> Self {
        Router {
            mesh,
            data,
            dataplane,
            scaling: Default::default(),
            scaleup_rpm: DEFAULT_SCALEUP_RPM,
            limits: Arc::new(Limits::new(LimitConfig::default())),
        }
    }

    /// Sets the request limits (in flight per pod and per copy).
    pub fn with_limits(mut self, cfg: LimitConfig) -> Self {
        self.limits = Arc::new(Limits::new(cfg));
        self
    }

    /// The live request limits.
    pub fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    /// The mesh behind this router.
    pub fn mesh(&self) -> &Arc<Mesh> {
        &self.mesh
    }

    async fn resolve(&self, t: &Target) -> Result<String, Status> {
        match t {
            Target::Model(m) => Ok(m.clone()),
            Target::VModel(v) => Ok(self.mesh.resolve_vmodel(v).await?),
        }
    }

    /// Routes one unary call; returns the runtime's response headers and body.
    pub async fn unary(
        &self,
        method: &str,
        md: MetadataMap,
        body: Bytes,
        hop: Hop,
    ) -> Result<(MetadataMap, Bytes), Status> {
        self.unary_counted(method, md, body, hop).await
    }

    /// Resolves the model a request names in its headers and checks it is registered, so that
    /// a body need not be read (REST reads bodies only for models that exist).
    pub async fn check_target(&self, md: &MetadataMap) -> Result<String, Status> {
        let id = self.resolve(&request::header_target(md)?).await?;
        if !self.mesh.is_registered(&id).await? {
            return Err(MeshError::ModelNotFound(id).into());
        }
        Ok(id)
    }

    /// Routes one unary call, counting it against this pod's in-flight limit and in the
    /// request metrics.
    async fn unary_counted(
        &self,
        method: &str,
        md: MetadataMap,
        body: Bytes,
        hop: Hop,
    ) -> Result<(MetadataMap, Bytes), Status> {
        let started = Instant::now();
        let result = match self.limits.enter_pod() {
            Ok(_permit) => self.unary_inner(method, &md, body, hop).await,
            Err(s) => Err(s),
        };
        let code = crate::metrics::code_label(result.as_ref().err().map(Status::code));
        metrics::histogram!("modelmesh_api_request_milliseconds", "method" => crate::metrics::method_label(method), "code" => code)
            .record(started.elapsed().as_secs_f64() * 1e3);
        result
    }

    async fn unary_inner(
        &self,
        method: &str,
        md: &MetadataMap,
        body: Bytes,
        hop: Hop,
    ) -> Result<(MetadataMap, Bytes), Status> {
        if method.starts_with("mmesh.ModelRuntime/") {
            return Err(Status::unimplemented(format!(
                "Method not found or not permitted: {method}"
            )));
        }
        let info = self.mesh.local.runtime_info();
        if !info.method_infos.is_empty()
            && !info.allow_any_method
            && !info.method_infos.contains_key(method)
        {
            return Err(Status::unimplemented(format!(
                "Method not found or not permitted: {method}"
            )));
        }
        if hop == Hop::External {
            refuse_hop_metadata(md)?;
        }
        let deadline = request_deadline(md)?;
        let target = find_target(method, md, &body, &self.dataplane)?;
        let id = self.resolve(&target).await?;
        match hop {
            Hop::HitOnly => {
                // A copy still loading here is waited for: the sender chose this pod because
                // the registry lists the copy, and turning it away would load a duplicate.
                let here = self.mesh.local.try_hit(&id)
                    || self.mesh.local.status(&id) == Some(crate::local::CopyStatus::Loading);
                if !here {
                    let mut s = Status::not_found(format!(
                        "model {id} is not loaded on instance {}",
                        self.mesh.local.instance_id()
                    ));
                    s.metadata_mut()
                        .insert(NOT_HERE, AsciiMetadataValue::from_static("1"));
                    return Err(s);
                }
                self.serve_local(method, md, &body, &target, id, deadline)
                    .await
            }
            Hop::LoadHere => {
                if let Some(bytes) = known_size(md)? {
                    self.mesh.local.hint_size(&id, bytes);
                }
                self.serve_local(method, md, &body, &target, id, deadline)
                    .await
            }
            Hop::External => self.route(method, md, body, &target, id, deadline).await,
        }
    }

    /// Live instances whose labels meet the model type's requirements (a shared snapshot: this
    /// runs on every request).
    fn eligible_instances(&self, model_type: &str) -> crate::eligible::Pods {
        self.mesh.placement.eligible_shared(model_type)
    }

    /// Sets `MM_SCALEUP_RPM_THRESHOLD`: requests per minute per copy above which a copy is added.
    pub fn with_scaleup_rpm(mut self, rpm: u64) -> Self {
        self.scaleup_rpm = rpm.max(1);
        self
    }

    /// Counts a request; returns how many copies to add now: none unless the model is busy
    /// enough per copy and no scale-up of it started in the last window.
    fn note_request(&self, id: &str, rec: &ModelRecord, copies: usize, pods: usize) -> usize {
        let now = crate::clock::now_ms();
        let mut m = self.scaling.lock().unwrap_or_else(|e| e.into_inner());
        let w = m.entry(id.to_string()).or_default();
        if now.saturating_sub(w.start_ms) > RATE_WINDOW_MS {
            w.start_ms = now;
            w.count = 0;
        }
        w.count += 1;
        if copies == 0 || now.saturating_sub(w.last_scaleup_ms) <= RATE_WINDOW_MS {
            return 0;
        }
        let elapsed = now.saturating_sub(w.start_ms).max(1_000);
        let per_copy = w.count * 60_000 / elapsed / copies as u64;
        let n =
            crate::scaling::copies_to_add(per_copy, self.scaleup_rpm, copies, pods, rec.max_copies);
        if n > 0 {
            w.last_scaleup_ms = now;
        }
        n
    }

    /// Adds `n` copies of a busy model, one after another on the best pods that have none, in
    /// the background.
    fn spawn_scaleup(&self, id: &str, rec: &ModelRecord, n: usize) {
        let (placement, id, rec) = (self.mesh.placement.clone(), id.to_string(), rec.clone());
        tokio::spawn(async move {
            let mut placed: Vec<String> = Vec::new();
            for _ in 0..n {
                match placement.add_copy(&id, &rec, &placed, false).await {
                    Ok(Placed::Here) => {
                        tracing::info!(model = %id, "busy model: adding a copy here");
                        placed.push(placement.me().to_string());
                    }
                    Ok(Placed::Peer(pod, _)) => {
                        tracing::info!(model = %id, pod = %pod, "busy model: adding a copy on another pod");
                        placed.push(pod);
                    }
                    Err(e) => {
                        tracing::debug!(model = %id, error = %e, "busy model: no pod for another copy");
                        return;
                    }
                }
            }
        });
    }

    /// Before this pod exits: loads each of its models (most recently used first) on another
    /// pod, waiting for each, so no request has to wait for a load after it is gone.
    pub async fn rehome_all(&self, budget: std::time::Duration) {
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
            let instances = self.eligible_instances(&rec.model_type);
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

    /// Cluster routing for a request that entered this pod from a client.
    async fn route(
        &self,
        method: &str,
        md: &MetadataMap,
        body: Bytes,
        target: &Target,
        mut id: String,
        deadline: Option<Instant>,
    ) -> Result<(MetadataMap, Bytes), Status> {
        let me = self.mesh.local.instance_id().to_string();
        let mut re_resolved = false;
        let balanced = md.get("mm-balanced").and_then(|v| v.to_str().ok()) == Some("true");
        let (mut tried_copies, mut tried_loads) = (Vec::new(), Vec::new());
        let mut load_failures = 0;
        // Set when a copy was full: the request then goes to another copy or fails with it,
        // never to a new load (overload is not a reason to load more copies per request; the
        // rate-based scale-up above adds copies).
        let mut exhausted: Option<Status> = None;
        // Copy scaling: a model busy enough per copy gets another copy on a pod without one.
        if let Some((rec, _)) = self.mesh.registry.get(&id) {
            let instances = self.eligible_instances(&rec.model_type);
            let live = |p: &String| instances.get(p).is_some_and(|i| !i.shutdown);
            let copies = rec.instance_ids.keys().filter(|p| live(p)).count();
            let pods = instances.values().filter(|i| !i.shutdown).count();
            let n = self.note_request(&id, &rec, copies, pods);
            if n > 0 {
                self.spawn_scaleup(&id, &rec, n);
            }
        }
        let mut last: Option<Status> = None;
        for _ in 0..MAX_ITERATIONS {
            // A copy here already tried (full) is left to the routing decision below.
            let loaded_here = !tried_copies.contains(&me) && self.mesh.local.try_hit(&id);
            let clustered = self.mesh.instances.len() > 1;
            if loaded_here {
                match self
                    .serve_local(method, md, &body, target, id.clone(), deadline)
                    .await
                {
                    // This pod's runtime is down: drop the copy and serve from another pod.
                    Err(s) if s.code() == Code::Unavailable && clustered => {
                        self.mesh.local.forget(&id).await;
                        tried_copies.push(me.clone());
                        tried_loads.push(me.clone());
                        last = Some(s);
                        continue;
                    }
                    // This copy is at its in-flight limit: another copy may have room.
                    Err(s) if s.metadata().get(COPY_FULL).is_some() && clustered => {
                        tried_copies.push(me.clone());
                        tried_loads.push(me.clone());
                        exhausted = Some(s);
                        continue;
                    }
                    r => return r,
                }
            }
            // The local copy first; the store only when the model is not there (a strong read
            // on every request would cost a round trip and fail while the store is down).
            let found = match self.mesh.registry.get(&id) {
                Some(r) => Some(r),
                None => self
                    .mesh
                    .registry
                    .get_strong(&id)
                    .await
                    .map_err(MeshError::from)?,
            };
            let Some((rec, _)) = found else {
                // The vmodel may have moved on (its old model deleted): re-read it once.
                if let (Target::VModel(v), false) = (target, re_resolved) {
                    re_resolved = true;
                    if let Ok(Some((vm, _))) = self.mesh.vmodels.get_strong(v).await {
                        id = if vm.active != id {
                            vm.active
                        } else {
                            vm.target
                        };
                        continue;
                    }
                }
                return Err(MeshError::ModelNotFound(id).into());
            };
            let instances = self.eligible_instances(&rec.model_type);
            if !self.mesh.placement.published() {
                // This pod is not published yet (single-pod start-up): it is the only choice.
                if !self.mesh.placement.eligible_here(&rec.model_type) {
                    return Err(self.mesh.placement.no_instance(&rec.model_type).into());
                }
                return self
                    .serve_local(method, md, &body, target, id, deadline)
                    .await;
            }
            if instances.is_empty() {
                return Err(self.mesh.placement.no_instance(&rec.model_type).into());
            }
            let units = self.mesh.local.predicted_units(&rec);
            let tie = self.mesh.placement.next_tie();
            let view = View {
                me: &me,
                loaded_here,
                record: &rec,
                instances: &instances,
                units,
                tried_copies: &tried_copies,
                tried_loads: &tried_loads,
                balanced,
                tie,
                now_ms: crate::clock::now_ms(),
                failure_expiry_ms: self.mesh.local.failure_expiry_ms(),
            };
            if view.recent_failures() >= crate::routing::FAIL_FAST_FAILURES {
                // Fail fast with the load's own error until the failures expire.
                let msg = rec
                    .fails
                    .values()
                    .map(|f| f.msg.clone())
                    .find(|m| !m.is_empty())
                    .unwrap_or_default();
                return Err(Status::internal(format!(
                    "failed to load model {id}: {msg}"
                )));
            }
            let decision = decide(&view);
            if let (Some(s), Decision::LoadHere | Decision::ForwardLoad(_)) =
                (&exhausted, &decision)
            {
                return Err(s.clone());
            }
            match decision {
                Decision::ServeHere => {
                    return self
                        .serve_local(method, md, &body, target, id, deadline)
                        .await;
                }
                Decision::LoadHere => match self
                    .serve_local(method, md, &body, target, id.clone(), deadline)
                    .await
                {
                    // This pod's runtime is down: try another pod.
                    Err(s) if s.code() == Code::Unavailable && clustered => {
                        tried_loads.push(me.clone());
                        last = Some(s);
                    }
                    // A failed load here is retried on another pod, as a failed remote load is.
                    Err(s) if s.message().starts_with("failed to load model") => {
                        load_failures += 1;
                        tried_loads.push(me.clone());
                        if load_failures >= MAX_LOAD_FAILURES {
                            return Err(s);
                        }
                        last = Some(s);
                    }
                    r => return r,
                },
                Decision::ForwardHit(peer) => match self
                    .forward(method, md, &body, &id, &peer, &instances, "hit", deadline)
                    .await
                {
                    Ok(r) => return Ok(r),
                    Err(s)
                        if s.metadata().get(NOT_HERE).is_some()
                            || s.code() == Code::Unavailable =>
                    {
                        tried_copies.push(peer);
                        last = Some(s);
                    }
                    // That pod or its copy is at a limit: try another copy.
                    Err(s) if s.code() == Code::ResourceExhausted => {
                        tried_copies.push(peer.clone());
                        tried_loads.push(peer);
                        exhausted = Some(s);
                    }
                    Err(s) => return Err(s),
                },
                Decision::ForwardLoad(peer) => match self
                    .forward(method, md, &body, &id, &peer, &instances, "load", deadline)
                    .await
                {
                    Ok(r) => return Ok(r),
                    Err(s)
                        if s.code() == Code::Unavailable
                            || s.message().starts_with("failed to load model") =>
                    {
                        if s.code() != Code::Unavailable {
                            load_failures += 1;
                        }
                        tried_loads.push(peer);
                        if load_failures >= MAX_LOAD_FAILURES {
                            return Err(s);
                        }
                        last = Some(s);
                    }
                    Err(s) => return Err(s),
                },
                Decision::NoCandidate => break,
            }
        }
        Err(exhausted.or(last).unwrap_or_else(|| {
            Status::unavailable(format!("no instance could serve model {id}; retry later"))
        }))
    }

    /// Sends the request to a peer's internal port with a hop instruction.
    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        method: &str,
        md: &MetadataMap,
        body: &Bytes,
        id: &str,
        peer: &str,
        instances: &std::collections::BTreeMap<String, InstanceRecord>,
        hop: &'static str,
        deadline: Option<Instant>,
    ) -> Result<(MetadataMap, Bytes), Status> {
        let Some(addr) = instances
            .get(peer)
            .map(|i| i.internal_address.clone())
            .filter(|a| !a.is_empty())
        else {
            return Err(Status::unavailable(format!(
                "instance {peer} has no internal address"
            )));
        };
        let channel = self.peer(&addr)?;
        let mut headers = MetadataMap::new();
        for kv in md.iter() {
            match kv {
                KeyAndValueRef::Ascii(k, v) => {
                    let n = k.as_str();
                    if n.starts_with("grpc-")
                        || n.starts_with("mm-")
                        || matches!(n, "content-type" | "te" | "user-agent")
                    {
                        continue;
                    }
                    headers.append(k.clone(), v.clone());
                }
                KeyAndValueRef::Binary(k, v) => {
                    if !k.as_str().starts_with("mm-") {
                        headers.append_bin(k.clone(), v.clone());
                    }
                }
            }
        }
        headers.insert_bin(
            "mm-model-id-bin",
            BinaryMetadataValue::from_bytes(id.as_bytes()),
        );
        headers.insert(HOP, AsciiMetadataValue::from_static(hop));
        if hop == "load"
            && let Some(bytes) = self.mesh.local.known_size(id)
        {
            headers.insert(KNOWN_SIZE, AsciiMetadataValue::from(bytes));
        }
        let mut req =
            tonic::Request::from_parts(headers, tonic::Extensions::default(), body.clone());
        if let Some(d) = deadline {
            req.set_timeout(d.saturating_duration_since(Instant::now()));
        }
        let path = http::uri::PathAndQuery::from_str(&format!("/{method}"))
            .map_err(|_| Status::invalid_argument(format!("invalid method path /{method}")))?;
        let mut grpc = tonic::client::Grpc::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("instance {peer} not reachable: {e}")))?;
        metrics::counter!("modelmesh_forwarded_requests", "hop" => hop).increment(1);
        let resp = grpc.unary(req, path, RawCodec).await.map_err(|s| {
            // A peer that died mid-call surfaces as a transport error with no gRPC status:
            // that is the peer being unavailable, which the caller retries elsewhere.
            if connection_lost(&s) {
                Status::unavailable(format!(
                    "instance {peer} failed during the call: {}",
                    s.message()
                ))
            } else {
                s
            }
        })?;
        let (md, body, _) = resp.into_parts();
        Ok((md, body))
    }

    /// A pooled channel to a peer's internal port.
    pub(crate) fn peer(&self, addr: &str) -> Result<Channel, Status> {
        Ok(self.mesh.placement.peer(addr)?)
    }

    /// Loads the model here if needed and calls the local runtime; reloads once if the runtime
    /// lost the model.
    async fn serve_local(
        &self,
        method: &str,
        md: &MetadataMap,
        body: &Bytes,
        target: &Target,
        mut id: String,
        deadline: Option<Instant>,
    ) -> Result<(MetadataMap, Bytes), Status> {
        let info = self.mesh.local.runtime_info();
        // Two independent one-time retries: re-reading a moved vmodel, and reloading a model
        // the runtime lost.
        let (mut re_resolved, mut reloaded) = (false, false);
        loop {
            // The client's deadline bounds the wait for a load (the load itself goes on, so a
            // retry finds the model loaded).
            let ensured = match deadline {
                Some(d) => tokio::time::timeout_at(d.into(), self.mesh.ensure_for_request(&id))
                    .await
                    .unwrap_or_else(|_| {
                        Err(MeshError::DeadlineExceeded(format!(
                            "deadline expired while model {id} was loading on instance {}; retry (the load continues)",
                            self.mesh.local.instance_id()
                        )))
                    }),
                None => self.mesh.ensure_for_request(&id).await,
            };
            match ensured {
                Ok(()) => {}
                Err(MeshError::ModelNotFound(_))
                    if matches!(target, Target::VModel(_)) && !re_resolved =>
                {
                    // The vmodel may have moved on: re-read it once.
                    re_resolved = true;
                    if let Target::VModel(v) = target
                        && let Ok(Some((vm, _))) = self.mesh.vmodels.get_strong(v).await
                    {
                        id = if vm.active != id {
                            vm.active
                        } else {
                            vm.target
                        };
                        continue;
                    }
                    return Err(MeshError::ModelNotFound(id).into());
                }
                Err(e) => return Err(e.into()),
            }
            let payload = match info.method_infos.get(method) {
                // Splice only when the field does not already hold the id (saves a copy).
                Some(path)
                    if !path.is_empty()
                        && idpath::read_string(body, path).ok().flatten().as_deref()
                            != Some(id.as_str()) =>
                {
                    Bytes::from(
                        idpath::write_string(body, path, &id)
                            .map_err(|e| Status::invalid_argument(e.to_string()))?,
                    )
                }
                _ => body.clone(),
            };
            let mut req = tonic::Request::from_parts(
                runtime_headers(md, &id),
                tonic::Extensions::default(),
                payload,
            );
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Status::deadline_exceeded(
                        "deadline expired before the request reached the runtime",
                    ));
                }
                req.set_timeout(left);
            }
            let copy_permit = self.limits.enter_copy(&id)?;
            let t = Instant::now();
            let result = self.call(method, req).await;
            drop(copy_permit);
            metrics::histogram!("modelmesh_invoke_model_milliseconds", "method" => crate::metrics::method_label(method))
                .record(t.elapsed().as_secs_f64() * 1e3);
            match result {
                Ok(resp) => {
                    self.mesh.local.touch(&id);
                    let (md, body, _) = resp.into_parts();
                    return Ok((md, body));
                }
                Err(s) if model_vanished(&s) && !reloaded => {
                    reloaded = true;
                    self.mesh.local.forget(&id).await;
                    continue;
                }
                Err(s) if s.code() == Code::Unavailable || connection_lost(&s) => {
                    return Err(Status::unavailable(format!(
                        "runtime unavailable for model {id}: {}",
                        s.message()
                    )));
                }
                Err(s) => return Err(s),
            }
        }
    }

    /// A ready client to the runtime's data endpoint, and the method's path.
    async fn client(
        &self,
        method: &str,
    ) -> Result<(tonic::client::Grpc<Channel>, http::uri::PathAndQuery), Status> {
        let path = http::uri::PathAndQuery::from_str(&format!("/{method}"))
            .map_err(|_| Status::invalid_argument(format!("invalid method path /{method}")))?;
        let mut grpc = tonic::client::Grpc::new(self.data.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("runtime connection not ready: {e}")))?;
        Ok((grpc, path))
    }

    async fn call(
        &self,
        method: &str,
        req: tonic::Request<Bytes>,
    ) -> Result<tonic::Response<Bytes>, Status> {
        let (mut grpc, path) = self.client(method).await?;
        grpc.unary(req, path, RawCodec).await
    }
}

/// The deadline a client set (`grpc-timeout`); a value that is not a gRPC timeout is refused
/// rather than silently dropped.
fn request_deadline(md: &MetadataMap) -> Result<Option<Instant>, Status> {
    let Some(v) = md.get("grpc-timeout") else {
        return Ok(None);
    };
    match v.to_str().ok().and_then(parse_timeout) {
        // A timeout too far away to represent is no deadline (never a panic).
        Some(d) => Ok(Instant::now().checked_add(d)),
        None => Err(Status::invalid_argument(format!(
            "grpc-timeout {v:?} is not a gRPC timeout (digits and a unit of H, M, S, m, u or n, e.g. 500m)"
        ))),
    }
}

/// How long a new stream may wait before its first message.
pub const FIRST_MESSAGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Methods proxied as bidirectional streams (everything else is unary).
pub const STREAMING_METHODS: &[&str] = &["inference.GRPCInferenceService/ModelStreamInfer"];

impl Router {
    /// Routes a streaming call: the model is resolved from the headers or the first message,
    /// loaded here if needed, and every message is forwarded (with the id spliced in) on one
    /// runtime stream; responses flow back as they come.
    /// The returned permit counts the stream against this pod's in-flight limit until the
    /// caller drops it with the stream.
    pub async fn streaming(
        &self,
        method: &str,
        md: MetadataMap,
        mut inbound: tonic::Streaming<Bytes>,
    ) -> Result<
        (
            tonic::Response<tonic::Streaming<Bytes>>,
            crate::limits::PodPermit,
        ),
        Status,
    > {
        use futures::StreamExt;
        // The pod's permit is taken once the first message is here: idle streams hold none, and
        // one that never sends is closed after FIRST_MESSAGE_TIMEOUT.
        let first = match tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, inbound.next()).await {
            Err(_) => {
                return Err(Status::deadline_exceeded(format!(
                    "no first message on the stream within {} s",
                    FIRST_MESSAGE_TIMEOUT.as_secs()
                )));
            }
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(s))) => return Err(s),
            Ok(None) => {
                return Err(Status::invalid_argument(
                    "stream closed before its first message",
                ));
            }
        };
        let permit = self.limits.enter_pod()?;
        refuse_hop_metadata(&md)?;
        let target = find_target(method, &md, &first, &self.dataplane)?;
        let id = self.resolve(&target).await?;
        self.mesh.ensure_for_request(&id).await?;
        let path_spec = self
            .mesh
            .local
            .runtime_info()
            .method_infos
            .get(method)
            .cloned()
            .unwrap_or_default();
        let splice = move |m: Bytes, id: &str| -> Bytes {
            if path_spec.is_empty() {
                return m;
            }
            match idpath::write_string(&m, &path_spec, id) {
                Ok(v) => Bytes::from(v),
                // A malformed message is passed through; the runtime answers it.
                Err(_) => m,
            }
        };
        let first = splice(first, &id);
        let rest_id = id.clone();
        let outbound =
            futures::stream::once(async move { first }).chain(inbound.filter_map(move |m| {
                let out = m.ok().map(|m| splice(m, &rest_id));
                async move { out }
            }));
        let req = tonic::Request::from_parts(
            runtime_headers(&md, &id),
            tonic::Extensions::default(),
            outbound,
        );
        let (mut grpc, path) = self.client(method).await?;
        self.mesh.local.touch(&id);
        Ok((grpc.streaming(req, path, RawCodec).await?, permit))
    }
}
