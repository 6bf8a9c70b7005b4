//! Where copies go outside the request path: which pods a model type may use (labels and type
//! constraints), pooled channels to peers' internal ports, and the two load operations every
//! background task shares: "make sure a copy exists somewhere" (ensureLoaded, loadNow) and "add
//! one more copy on a pod without one" (scale-up, minimum copies, migration, proactive loads).
//! The choice itself is `routing::decide`; this module only does the I/O around it.

use crate::clock::now_ms;
use crate::constraints::TypeConstraints;
use crate::error::MeshError;
use crate::hop::{HOP, KNOWN_SIZE, ROOM_ONLY};
use crate::load_queue::Priority;
use crate::local::{LocalModels, Room};
use crate::registry::records::{InstanceRecord, ModelRecord};
use crate::registry::table::Table;
use crate::routing::{Decision, View, decide};
use modelmesh_proto::mmesh::model_mesh_client::ModelMeshClient;
use modelmesh_proto::mmesh::model_status_info::ModelStatus;
use modelmesh_proto::mmesh::{EnsureLoadedRequest, ModelStatusInfo};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

/// Pods tried for one placement before giving up (upstream's load-failure limit).
const ATTEMPTS: usize = 3;
/// Deadline of an internal ensureLoaded: a sync one waits for the load, an async one only for
/// the load to be queued (upstream: 600 s and 3 s).
const SYNC_CALL: Duration = Duration::from_secs(600);
const ASYNC_CALL: Duration = Duration::from_secs(3);

/// Where a copy was asked for, and what the pod said.
#[derive(Debug, Clone, PartialEq)]
pub enum Placed {
    /// On this pod (its state is in `LocalModels`).
    Here,
    /// On a peer, which answered this status.
    Peer(String, ModelStatusInfo),
}

/// Placement of copies across the live, eligible pods.
pub struct Placement {
    local: Arc<LocalModels>,
    instances: Arc<Table<InstanceRecord>>,
    constraints: TypeConstraints,
    labels: Vec<String>,
    peers: Mutex<HashMap<String, Channel>>,
    peer_tls: std::sync::OnceLock<tonic::transport::ClientTlsConfig>,
    tie: AtomicU64,
    shared: crate::eligible::EligibleCache,
}

impl Placement {
    /// Placement for this pod (`local`) among `instances`, with its labels and the constraints.
    pub fn new(
        local: Arc<LocalModels>,
        instances: Arc<Table<InstanceRecord>>,
        constraints: TypeConstraints,
        labels: Vec<String>,
    ) -> Self {
        Placement {
            local,
            instances,
            constraints,
            labels,
            peers: Default::default(),
            peer_tls: std::sync::OnceLock::new(),
            tie: AtomicU64::new(0),
            shared: crate::eligible::EligibleCache::new(crate::eligible::MAX_AGE),
        }
    }

    /// This pod's instance id.
    pub fn me(&self) -> &str {
        self.local.instance_id()
    }

    /// A number that changes on every call, so equally good pods take turns.
    pub fn next_tie(&self) -> u64 {
        self.tie.fetch_add(1, Ordering::Relaxed)
    }

    /// Live instances whose labels meet the model type's requirements.
    pub fn eligible_instances(&self, model_type: &str) -> BTreeMap<String, InstanceRecord> {
        self.instances
            .list()
            .into_iter()
            .filter(|(_, i)| self.may_hold(model_type, i))
            .collect()
    }

    /// The request path's view of [`Placement::eligible_instances`]: a shared snapshot, at most
    /// `eligible::MAX_AGE` old and rebuilt at once when pods join or leave.
    pub fn eligible_shared(&self, model_type: &str) -> crate::eligible::Pods {
        self.shared.get(
            model_type,
            std::time::Instant::now(),
            self.instances.len(),
            || self.eligible_instances(model_type),
        )
    }

    /// Whether `pod`'s labels allow the model type.
    pub fn may_hold(&self, model_type: &str, pod: &InstanceRecord) -> bool {
        self.constraints.eligible(model_type, &pod.labels)
    }

    /// Whether this pod's labels allow the model type.
    pub fn eligible_here(&self, model_type: &str) -> bool {
        self.constraints.eligible(model_type, &self.labels)
    }

    /// Upstream's error when no pod may hold the model type.
    pub fn no_instance(&self, model_type: &str) -> MeshError {
        MeshError::FailedPrecondition(self.constraints.no_instance_message(model_type))
    }

    /// Whether this pod is in the instance table yet (a lone pod starting up is not).
    pub fn published(&self) -> bool {
        self.instances.get(self.local.instance_id()).is_some()
    }

    /// Calls to peers' internal ports use TLS from now on (set once, at start-up).
    pub fn use_tls(&self, cfg: tonic::transport::ClientTlsConfig) {
        let _ = self.peer_tls.set(cfg);
    }

    /// A pooled channel to a peer's internal port.
    pub fn peer(&self, addr: &str) -> Result<Channel, MeshError> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = peers.get(addr) {
            return Ok(c.clone());
        }
        let tls = self.peer_tls.get();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| MeshError::Unavailable(format!("bad peer address {addr}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        if let Some(t) = tls {
            endpoint = endpoint.tls_config(t.clone()).map_err(|e| {
                MeshError::Unavailable(format!("TLS to peer {addr} cannot be set up: {e}"))
            })?;
        }
        let c = endpoint.connect_lazy();
        peers.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// Makes sure a copy of `id` exists somewhere, as ensureLoaded and loadNow do: an existing
    /// copy is asked to finish (and, with `sync`, waited for); otherwise one is placed by the
    /// request path's rules. `balanced` favours this pod, as `mm-balanced` does for requests.
    pub async fn ensure(
        &self,
        id: &str,
        rec: &ModelRecord,
        sync: bool,
        balanced: bool,
    ) -> Result<Placed, MeshError> {
        self.place(id, rec, &[], sync, balanced, Room::MayEvict)
            .await
    }

    /// Loads one more copy of `id` on a pod that holds none and is not in `exclude`. Background
    /// work (scale-up, minimum copies, migration), so it is never favoured to land here.
    pub async fn add_copy(
        &self,
        id: &str,
        rec: &ModelRecord,
        exclude: &[String],
        sync: bool,
    ) -> Result<Placed, MeshError> {
        self.add_copy_in(id, rec, exclude, sync, Room::MayEvict)
            .await
    }

    /// [`Self::add_copy`] where the new copy may only take `room` on the pod it lands on.
    pub async fn add_copy_in(
        &self,
        id: &str,
        rec: &ModelRecord,
        exclude: &[String],
        sync: bool,
        room: Room,
    ) -> Result<Placed, MeshError> {
        let mut fresh = rec.clone();
        fresh.instance_ids.clear();
        let mut tried: Vec<String> = rec.instance_ids.keys().cloned().collect();
        tried.extend(exclude.iter().cloned());
        self.place(id, &fresh, &tried, sync, false, room).await
    }

    async fn place(
        &self,
        id: &str,
        rec: &ModelRecord,
        tried: &[String],
        sync: bool,
        balanced: bool,
        room: Room,
    ) -> Result<Placed, MeshError> {
        let me = self.local.instance_id().to_string();
        if !self.published() {
            // Alone and not yet published: this pod is the only choice, unless it is excluded
            // (a copy moving away from here must not come straight back).
            if !self.eligible_here(&rec.model_type) {
                return Err(self.no_instance(&rec.model_type));
            }
            if tried.contains(&me) {
                return Err(MeshError::Unavailable(format!(
                    "no other instance can take model {id} yet"
                )));
            }
            self.load_here(id, rec, sync, room).await?;
            return Ok(Placed::Here);
        }
        let instances = self.eligible_instances(&rec.model_type);
        if instances.is_empty() {
            return Err(self.no_instance(&rec.model_type));
        }
        let (mut copies, mut loads) = (tried.to_vec(), tried.to_vec());
        let mut last: Option<MeshError> = None;
        for _ in 0..ATTEMPTS {
            let view = View {
                me: &me,
                loaded_here: false,
                record: rec,
                instances: &instances,
                units: self.local.predicted_units(rec),
                tried_copies: &copies,
                tried_loads: &loads,
                balanced,
                tie: self.next_tie(),
                now_ms: now_ms(),
                failure_expiry_ms: self.local.failure_expiry_ms(),
            };
            let (pod, is_copy) = match decide(&view) {
                Decision::ServeHere | Decision::LoadHere => {
                    match self.load_here(id, rec, sync, room).await {
                        Ok(()) => return Ok(Placed::Here),
                        Err(e) => {
                            loads.push(me.clone());
                            last = Some(e);
                            continue;
                        }
                    }
                }
                Decision::ForwardHit(p) => (p, true),
                Decision::ForwardLoad(p) => (p, false),
                Decision::NoCandidate => break,
            };
            match self.ensure_on(&pod, &instances, id, sync, room).await {
                Ok(s) if s.status == ModelStatus::LoadingFailed as i32 => {
                    loads.push(pod.clone());
                    copies.push(pod.clone());
                    last = Some(MeshError::LoadFailed {
                        id: id.to_string(),
                        message: s.errors.first().cloned().unwrap_or_default(),
                    });
                }
                Ok(s) => return Ok(Placed::Peer(pod, s)),
                Err(e) => {
                    if is_copy {
                        copies.push(pod.clone());
                    } else {
                        loads.push(pod.clone());
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            MeshError::Unavailable(format!(
                "no instance has room for model {id} or could load it; retry later"
            ))
        }))
    }

    /// Loads `id` on this pod; with `sync`, waits for the load.
    pub async fn load_here(
        &self,
        id: &str,
        rec: &ModelRecord,
        sync: bool,
        room: Room,
    ) -> Result<(), MeshError> {
        if sync {
            self.local
                .ensure_in(id, rec, Priority::Background, room)
                .await
        } else {
            self.local.start(id, rec, room).await
        }
    }

    /// Asks `pod` over its internal port to load `id` itself (hop `load`).
    async fn ensure_on(
        &self,
        pod: &str,
        instances: &BTreeMap<String, InstanceRecord>,
        id: &str,
        sync: bool,
        room: Room,
    ) -> Result<ModelStatusInfo, MeshError> {
        let addr = instances
            .get(pod)
            .map(|i| i.internal_address.clone())
            .filter(|a| !a.is_empty())
            .ok_or_else(|| {
                MeshError::Unavailable(format!("instance {pod} has no internal address"))
            })?;
        let mut req = tonic::Request::new(EnsureLoadedRequest {
            model_id: id.to_string(),
            sync,
            ..Default::default()
        });
        req.metadata_mut()
            .insert(HOP, AsciiMetadataValue::from_static("load"));
        if room == Room::FreeOnly {
            req.metadata_mut()
                .insert(ROOM_ONLY, AsciiMetadataValue::from_static("free"));
        }
        if let Some(bytes) = self.local.known_size(id) {
            req.metadata_mut()
                .insert(KNOWN_SIZE, AsciiMetadataValue::from(bytes));
        }
        req.set_timeout(if sync { SYNC_CALL } else { ASYNC_CALL });
        let mut client = ModelMeshClient::new(self.peer(&addr)?);
        match client.ensure_loaded(req).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(MeshError::Unavailable(format!(
                "instance {pod} could not load model {id}: {}",
                s.message()
            ))),
        }
    }
}
