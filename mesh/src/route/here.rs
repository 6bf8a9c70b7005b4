//! Serving a request on this pod: the copy loaded (or loaded now, within the client's
//! deadline), the copy's permit taken, the concrete id spliced into the request, the runtime
//! called. A model the runtime lost is reloaded and the call replayed once, while the call can
//! still be replayed.

use super::inbound::{Inbound, Splice};
use super::outcome::Failure;
use super::request::{Req, runtime_headers, set_deadline};
use super::served::{Held, Served};
use super::{Call, Router};
use crate::codec::{RawCodec, StreamCodec};
use crate::error::MeshError;
use crate::idpath;
use crate::limits::CopyPermit;
use crate::runtime::errors::{connection_lost, model_vanished, stream_reply_vanished};
use bytes::Bytes;
use futures::StreamExt;
use modelmesh_proto::openai;
use std::sync::Arc;
use std::time::Instant;
use tonic::{Code, Status};

/// When a stream served here is handed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// After the runtime's first answer: this pod routes for the client, and a failure before
    /// that answer can still be retried on another copy.
    FirstAnswer,
    /// As soon as the runtime accepted the call: a peer routes for the client and decides on
    /// the first answer; a first answer saying the model is gone is marked for it.
    Accepted,
}

/// How a runtime call failed.
pub(super) enum RuntimeFailure {
    /// The runtime no longer has the model.
    Vanished(Status),
    /// The runtime is down or unreachable.
    Down(Status),
    /// The runtime's own answer.
    Other(Status),
}

fn classify(s: Status) -> RuntimeFailure {
    if model_vanished(&s) {
        RuntimeFailure::Vanished(s)
    } else if s.code() == Code::Unavailable || connection_lost(&s) {
        RuntimeFailure::Down(s)
    } else {
        RuntimeFailure::Other(s)
    }
}

/// Records a runtime call's time in `modelmesh_invoke_model_milliseconds` when its stream ends.
pub(super) fn invoke_recorder(
    method: &str,
    started: Instant,
) -> impl FnOnce(Code) + Send + 'static {
    let label = crate::metrics::method_label(method);
    move |_| {
        metrics::histogram!("modelmesh_invoke_model_milliseconds", "method" => label)
            .record(started.elapsed().as_secs_f64() * 1e3);
    }
}

fn runtime_down(id: &str, s: &Status) -> Failure {
    Failure::RuntimeDown(Status::unavailable(format!(
        "runtime unavailable for model {id}: {}",
        s.message()
    )))
}

impl Router {
    /// Serves the call from this pod's copy of `id`; `hit` says the caller found it loaded
    /// (and marked it used), so nothing is looked up again.
    pub(super) async fn serve_here(
        &self,
        req: &Req<'_>,
        call: &Call,
        id: &str,
        hit: bool,
        commit: Commit,
    ) -> Result<Served, Failure> {
        let (mut loaded, mut reloaded) = (hit, false);
        loop {
            if !loaded {
                self.load_for(req, id).await?;
            }
            loaded = false;
            let permit = self.limits.enter_copy(id).map_err(Failure::CopyFull)?;
            let result = match call {
                _ if openai::is_openai(req.method) => {
                    if !self
                        .mesh
                        .local
                        .runtime_info()
                        .method_infos
                        .contains_key(req.method)
                    {
                        return Err(Failure::Fatal(Status::unimplemented(format!(
                            "model {id} is not served by an LLM runtime: its runtime has no OpenAI API"
                        ))));
                    }
                    self.runtime_http(req, call.first(), id, permit).await
                }
                Call::Unary(body) => self.runtime_unary(req, body, id, permit).await,
                Call::Stream(inbound) => {
                    self.runtime_stream(req, inbound, id, permit, commit).await
                }
            };
            match result {
                Ok(served) => return Ok(served),
                Err(RuntimeFailure::Vanished(_)) if !reloaded && call.replayable() => {
                    tracing::info!(model = %id, "the runtime lost the model: reloading it");
                    reloaded = true;
                    self.mesh.local.forget(id).await;
                }
                Err(RuntimeFailure::Vanished(s) | RuntimeFailure::Down(s))
                    if s.code() == Code::Unavailable || connection_lost(&s) =>
                {
                    return Err(runtime_down(id, &s));
                }
                Err(RuntimeFailure::Down(s)) => return Err(runtime_down(id, &s)),
                Err(RuntimeFailure::Vanished(s) | RuntimeFailure::Other(s)) => {
                    return Err(Failure::Fatal(s));
                }
            }
        }
    }

    /// Loads the model here if needed; the client's deadline bounds the wait (the load itself
    /// goes on, so a retry finds it loaded).
    async fn load_for(&self, req: &Req<'_>, id: &str) -> Result<(), Failure> {
        let ensured = match req.deadline {
            Some(d) => tokio::time::timeout_at(d.into(), self.mesh.ensure_for_request(id))
                .await
                .unwrap_or_else(|_| {
                    Err(MeshError::DeadlineExceeded(format!(
                        "deadline expired while model {id} was loading on instance {}; retry (the load continues)",
                        self.mesh.local.instance_id()
                    )))
                }),
            None => self.mesh.ensure_for_request(id).await,
        };
        ensured.map_err(Failure::from)
    }

    /// Puts the concrete id into each message where the runtime reads it (a message that does
    /// not parse is passed on as it is; the runtime answers it).
    fn splicer(&self, method: &str, id: &str) -> Splice {
        match self.mesh.local.runtime_info().method_infos.get(method) {
            Some(path) if !path.is_empty() => {
                let (path, id) = (path.clone(), id.to_string());
                Arc::new(move |m: Bytes| match idpath::write_string(&m, &path, &id) {
                    Ok(v) => Bytes::from(v),
                    Err(_) => m,
                })
            }
            _ => Arc::new(|m| m),
        }
    }

    async fn runtime_client(
        &self,
    ) -> Result<tonic::client::Grpc<tonic::transport::Channel>, Status> {
        let mut grpc = tonic::client::Grpc::new(self.data.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("runtime connection not ready: {e}")))?;
        Ok(grpc)
    }

    async fn runtime_unary(
        &self,
        req: &Req<'_>,
        body: &Bytes,
        id: &str,
        permit: CopyPermit,
    ) -> Result<Served, RuntimeFailure> {
        let payload = match self.mesh.local.runtime_info().method_infos.get(req.method) {
            // Splice only when the field does not already hold the id (saves a copy).
            Some(path)
                if !path.is_empty()
                    && idpath::read_string(body, path).ok().flatten().as_deref() != Some(id) =>
            {
                Bytes::from(
                    idpath::write_string(body, path, id).map_err(|e| {
                        RuntimeFailure::Other(Status::invalid_argument(e.to_string()))
                    })?,
                )
            }
            _ => body.clone(),
        };
        let mut r = tonic::Request::from_parts(
            runtime_headers(req.md, id),
            tonic::Extensions::default(),
            payload,
        );
        set_deadline(&mut r, req.deadline, "the runtime").map_err(RuntimeFailure::Other)?;
        let mut grpc = self.runtime_client().await.map_err(RuntimeFailure::Down)?;
        let t = Instant::now();
        let result = grpc.unary(r, req.path.clone(), RawCodec).await;
        drop(permit);
        metrics::histogram!("modelmesh_invoke_model_milliseconds", "method" => crate::metrics::method_label(req.method))
            .record(t.elapsed().as_secs_f64() * 1e3);
        match result {
            Ok(resp) => {
                let (md, body, _) = resp.into_parts();
                Ok(Served::Unary(md, body))
            }
            Err(s) => Err(classify(s)),
        }
    }

    async fn runtime_stream(
        &self,
        req: &Req<'_>,
        inbound: &Inbound,
        id: &str,
        permit: CopyPermit,
        commit: Commit,
    ) -> Result<Served, RuntimeFailure> {
        let (gate, outbound) = inbound.attempt(self.splicer(req.method, id));
        let mut r = tonic::Request::from_parts(
            runtime_headers(req.md, id),
            tonic::Extensions::default(),
            outbound,
        );
        set_deadline(&mut r, req.deadline, "the runtime").map_err(RuntimeFailure::Other)?;
        let mut grpc = self.runtime_client().await.map_err(RuntimeFailure::Down)?;
        let started = Instant::now();
        let resp = grpc
            .streaming(r, req.path.clone(), StreamCodec)
            .await
            .map_err(classify)?;
        gate.accepted();
        let (md, mut answers, _) = resp.into_parts();
        let record = invoke_recorder(req.method, started);
        let stream = match commit {
            Commit::FirstAnswer => {
                let first = match answers.next().await {
                    Some(Err(s)) => return Err(classify(s)),
                    Some(Ok(m)) => {
                        if inbound.replayable()
                            && let Some(text) = stream_reply_vanished(req.method, &m)
                        {
                            return Err(RuntimeFailure::Vanished(Status::not_found(text)));
                        }
                        Some(Ok(m))
                    }
                    None => None,
                };
                gate.open();
                futures::stream::iter(first).chain(answers).boxed()
            }
            Commit::Accepted => {
                let (local, id, method) = (
                    self.mesh.local.clone(),
                    id.to_string(),
                    req.method.to_string(),
                );
                let first = async move {
                    let item = match answers.next().await {
                        Some(Err(s)) => Some(Err(match classify(s) {
                            RuntimeFailure::Vanished(s) => {
                                local.forget(&id).await;
                                Failure::NotHere(s).into_wire_status()
                            }
                            RuntimeFailure::Down(s) => runtime_down(&id, &s).into_wire_status(),
                            RuntimeFailure::Other(s) => s,
                        })),
                        Some(Ok(m)) => match stream_reply_vanished(&method, &m) {
                            Some(text) => {
                                local.forget(&id).await;
                                Some(Err(
                                    Failure::NotHere(Status::not_found(text)).into_wire_status()
                                ))
                            }
                            None => Some(Ok(m)),
                        },
                        None => None,
                    };
                    let rest = match item {
                        Some(Ok(_)) => {
                            gate.open();
                            Some(answers)
                        }
                        _ => None,
                    };
                    futures::stream::iter(item).chain(futures::stream::iter(rest).flatten())
                };
                futures::stream::once(first).flatten().boxed()
            }
        };
        Ok(Served::Stream(
            md,
            Held::new(stream).hold(permit).on_end(record),
        ))
    }
}
