//! Inference routing: any gRPC method other than the ModelMesh API is forwarded as raw bytes to
//! a runtime. Unary and streaming calls take one path: the model id comes from the request
//! field the dataplane config names (the first message of a stream) or from `mm-model-id` /
//! `mm-vmodel-id` (and `-bin`) headers; a vmodel resolves to its active model; cluster.rs picks
//! a copy anywhere in the cluster (here.rs serves one on this pod, forward.rs sends to a
//! peer), retrying on typed failures (outcome.rs) while the call can be replayed (inbound.rs).

use crate::dataplane::DataplaneConfig;
use crate::hop::{Hop, refuse_hop_metadata};
use crate::limits::{LimitConfig, Limits};
use crate::mesh::Mesh;
use bytes::Bytes;
use futures::StreamExt;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Code, Status};

mod cluster;
mod forward;
mod here;
mod http;
mod inbound;
mod outcome;
mod rehome;
mod request;
mod scaleup;
mod served;

use here::Commit;
pub use http::{HttpRuntime, with_model};
use inbound::Inbound;
pub use outcome::Failure;
use request::Req;
pub use request::{Target, find_target, parse_timeout};
pub use scaleup::DEFAULT_SCALEUP_RPM;
pub use served::{Held, Served};

/// How long a new stream may wait before its first message.
pub const FIRST_MESSAGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Methods proxied as streams by default (`MM_STREAMING_METHODS` adds more): KServe v2's, and
/// the OpenAI routes (their answers are streams of bytes, server-sent events or one JSON).
pub const DEFAULT_STREAMING_METHODS: &[&str] = &[
    crate::runtime::errors::STREAM_INFER,
    modelmesh_proto::openai::CHAT_COMPLETIONS,
    modelmesh_proto::openai::COMPLETIONS,
    modelmesh_proto::openai::EMBEDDINGS,
];

/// One call: a unary request, or a stream of them.
pub(crate) enum Call {
    /// The request message.
    Unary(Bytes),
    /// The client's stream.
    Stream(Inbound),
}

impl Call {
    /// The message that names the model (a stream's first).
    fn first(&self) -> &Bytes {
        match self {
            Call::Unary(b) => b,
            Call::Stream(s) => s.first(),
        }
    }

    /// Whether another attempt would send everything the client sent.
    fn replayable(&self) -> bool {
        match self {
            Call::Unary(_) => true,
            Call::Stream(s) => s.replayable(),
        }
    }
}

/// Routes inference requests for one mesh.
pub struct Router {
    mesh: Arc<Mesh>,
    data: Channel,
    dataplane: DataplaneConfig,
    rates: scaleup::Rates,
    scaleup_rpm: u64,
    limits: Arc<Limits>,
    streaming: HashSet<String>,
    http_runtime: Option<HttpRuntime>,
}

impl Router {
    /// A router sending inference to `data`.
    pub fn new(mesh: Arc<Mesh>, data: Channel, dataplane: DataplaneConfig) -> Self {
        Router {
            mesh,
            data,
            dataplane,
            rates: Default::default(),
            scaleup_rpm: DEFAULT_SCALEUP_RPM,
            limits: Arc::new(Limits::new(LimitConfig::default())),
            streaming: DEFAULT_STREAMING_METHODS
                .iter()
                .map(|m| m.to_string())
                .collect(),
            http_runtime: None,
        }
    }

    /// Sends OpenAI calls served here to the runtime's HTTP API (an LLM runtime).
    pub fn with_http_runtime(mut self, rt: HttpRuntime) -> Self {
        self.http_runtime = Some(rt);
        self
    }

    /// Sets the request limits (in flight per pod and per copy).
    pub fn with_limits(mut self, cfg: LimitConfig) -> Self {
        self.limits = Arc::new(Limits::new(cfg));
        self
    }

    /// Sets `MM_SCALEUP_RPM_THRESHOLD`: requests per minute per copy above which a copy is added.
    pub fn with_scaleup_rpm(mut self, rpm: u64) -> Self {
        self.scaleup_rpm = rpm.max(1);
        self
    }

    /// Adds methods proxied as streams (`MM_STREAMING_METHODS`: `package.Service/Method`).
    pub fn with_streaming_methods(mut self, methods: impl IntoIterator<Item = String>) -> Self {
        self.streaming.extend(methods);
        self
    }

    /// Whether `method` is proxied as a stream.
    pub fn is_streaming(&self, method: &str) -> bool {
        self.streaming.contains(method)
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

    /// Resolves the model a request names in its headers and checks it is registered, so that
    /// a body need not be read (REST reads bodies only for models that exist).
    pub async fn check_target(&self, md: &MetadataMap) -> Result<String, Status> {
        let id = self.resolve(&request::header_target(md)?).await?;
        // A copy loaded here is registered (unregistering removes it): the registry is then
        // read once per request, by the routing.
        let loaded = self.mesh.local.status(&id) == Some(crate::local::CopyStatus::Loaded);
        if !loaded && !self.mesh.is_registered(&id).await? {
            return Err(crate::error::MeshError::ModelNotFound(id).into());
        }
        Ok(id)
    }

    /// Routes one unary call; returns the runtime's response headers and body. The call counts
    /// against this pod's in-flight limit and in the request metrics.
    pub async fn unary(
        &self,
        method: &str,
        md: MetadataMap,
        body: Bytes,
        hop: Hop,
    ) -> Result<(MetadataMap, Bytes), Status> {
        let started = Instant::now();
        let result = match self.limits.enter_pod() {
            Ok(_permit) => match self.serve(method, &md, &Call::Unary(body), hop).await {
                Ok(Served::Unary(md, body)) => Ok((md, body)),
                Ok(Served::Stream(..)) => {
                    Err(Status::internal("a unary call was answered as a stream"))
                }
                Err(f) => Err(answer(f, hop)),
            },
            Err(s) => Err(answer(Failure::PodFull(s), hop)),
        };
        let code = crate::metrics::code_label(result.as_ref().err().map(Status::code));
        metrics::histogram!("modelmesh_api_request_milliseconds", "method" => crate::metrics::method_label(method), "code" => code)
            .record(started.elapsed().as_secs_f64() * 1e3);
        result
    }

    /// Routes a streaming call (client-, server- or bidirectional) as a unary one is routed:
    /// the model is resolved from the headers or the first message, and the stream goes to a
    /// copy anywhere in the cluster. The pod's permit is taken once the first message is here
    /// (an idle stream holds none, and one that sends nothing is closed after
    /// [`FIRST_MESSAGE_TIMEOUT`]) and held, like the copy's, until the response stream ends.
    pub async fn streaming(
        &self,
        method: &str,
        md: MetadataMap,
        mut inbound: tonic::Streaming<Bytes>,
        hop: Hop,
    ) -> Result<tonic::Response<Held>, Status> {
        let started = Instant::now();
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
        self.stream_call(method, md, Inbound::new(first, inbound), hop, started)
            .await
    }

    /// Routes one OpenAI call (`mmesh.OpenAI/...`, its JSON body) entering this pod: the answer
    /// comes back as the runtime's bytes as they arrive, its HTTP status and content type in
    /// the metadata ([`modelmesh_proto::openai::STATUS_HEADER`]).
    pub async fn openai(
        &self,
        method: &str,
        md: MetadataMap,
        body: Bytes,
    ) -> Result<tonic::Response<Held>, Status> {
        let started = Instant::now();
        let inbound = Inbound::new(body, futures::stream::empty());
        self.stream_call(method, md, inbound, Hop::External, started)
            .await
    }

    /// A stream's routing once its first message is here: the pod's permit, then the copy.
    async fn stream_call(
        &self,
        method: &str,
        md: MetadataMap,
        inbound: Inbound,
        hop: Hop,
        started: Instant,
    ) -> Result<tonic::Response<Held>, Status> {
        let label = crate::metrics::method_label(method);
        let record = move |code: Code| {
            metrics::histogram!("modelmesh_api_request_milliseconds", "method" => label, "code" => crate::metrics::code_label((code != Code::Ok).then_some(code)))
                .record(started.elapsed().as_secs_f64() * 1e3);
        };
        let permit = match self.limits.enter_pod() {
            Ok(p) => p,
            Err(s) => {
                record(s.code());
                return Err(answer(Failure::PodFull(s), hop));
            }
        };
        let call = Call::Stream(inbound);
        match self.serve(method, &md, &call, hop).await {
            Ok(Served::Stream(rmd, held)) => {
                let mut resp = tonic::Response::new(held.hold(permit).on_end(record));
                *resp.metadata_mut() = rmd;
                Ok(resp)
            }
            Ok(Served::Unary(..)) => Err(Status::internal("a stream was answered as a unary call")),
            Err(f) => {
                let s = answer(f, hop);
                record(s.code());
                Err(s)
            }
        }
    }

    /// Checks the call is one this mesh serves, finds its model and serves it as the hop says.
    async fn serve(
        &self,
        method: &str,
        md: &MetadataMap,
        call: &Call,
        hop: Hop,
    ) -> Result<Served, Failure> {
        let fatal = Failure::Fatal;
        let not_permitted = || {
            fatal(Status::unimplemented(format!(
                "Method not found or not permitted: {method}"
            )))
        };
        if method.starts_with("mmesh.ModelRuntime/") {
            return Err(not_permitted());
        }
        let info = self.mesh.local.runtime_info();
        // An OpenAI call may enter any pod; the one serving it checks its runtime has the API.
        let routed_on = hop == Hop::External && modelmesh_proto::openai::is_openai(method);
        if !routed_on
            && !info.method_infos.is_empty()
            && !info.allow_any_method
            && !info.method_infos.contains_key(method)
        {
            return Err(not_permitted());
        }
        if hop == Hop::External {
            refuse_hop_metadata(md).map_err(fatal)?;
        }
        let target = find_target(method, md, call.first(), &self.dataplane).map_err(fatal)?;
        let req = Req {
            method,
            path: request::method_path(method).map_err(fatal)?,
            md,
            target: &target,
            deadline: request::request_deadline(md).map_err(fatal)?,
        };
        let id = match self.resolve(&target).await {
            Ok(id) => id,
            Err(s) if s.code() == Code::NotFound => return Err(Failure::Gone(s)),
            Err(s) => return Err(fatal(s)),
        };
        match hop {
            Hop::HitOnly => {
                // A copy still loading here is waited for: the sender chose this pod because
                // the registry lists the copy, and turning it away would load a duplicate.
                let hit = self.mesh.local.try_hit(&id);
                let loading =
                    !hit && self.mesh.local.status(&id) == Some(crate::local::CopyStatus::Loading);
                if !hit && !loading {
                    return Err(Failure::NotHere(Status::not_found(format!(
                        "model {id} is not loaded on instance {}",
                        self.mesh.local.instance_id()
                    ))));
                }
                self.serve_here(&req, call, &id, hit, Commit::Accepted)
                    .await
            }
            Hop::LoadHere => {
                if let Some(bytes) = crate::hop::known_size(md).map_err(fatal)? {
                    self.mesh.local.hint_size(&id, bytes);
                }
                self.serve_here(&req, call, &id, false, Commit::Accepted)
                    .await
            }
            Hop::External => self.route(&req, call, id).await,
        }
    }
}

/// The status for whoever sent the call: a client gets it plain, a peer with its kind marked.
fn answer(f: Failure, hop: Hop) -> Status {
    match hop {
        Hop::External => f.into_client_status(),
        Hop::HitOnly | Hop::LoadHere => f.into_wire_status(),
    }
}
