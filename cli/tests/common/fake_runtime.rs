//! A fake model runtime in the test process, for tests of the mesh's routing: the ModelRuntime
//! SPI (loads succeed at once and are counted; a model can be dropped behind the mesh's back)
//! and three streaming methods that record how each inbound stream ended:
//! - KServe's bidirectional `ModelStreamInfer`: three answers per request, and for a model it
//!   does not hold Triton's in-stream error ("Request for unknown model: ...");
//! - server-streaming `fake.Tokens/Generate`: five answers to one request;
//! - client-streaming `fake.Tokens/Collect`: one answer, the message count, after the stream
//!   ends.
//!
//! Included with `#[path]` by the tests that use it (not from `common/mod.rs`, so other tests do
//! not build it).

use bytes::Bytes;
use futures::StreamExt;
use modelmesh_mesh::codec::RawCodec;
use modelmesh_proto::inference::{ModelInferRequest, ModelInferResponse, ModelStreamInferResponse};
use modelmesh_proto::mmesh::{
    self as pb,
    model_runtime_server::{ModelRuntime, ModelRuntimeServer},
};
use prost::Message;
use std::collections::HashSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::{Code, Request, Response, Status};

pub const STREAM_INFER: &str = "inference.GRPCInferenceService/ModelStreamInfer";
pub const GENERATE: &str = "fake.Tokens/Generate";
pub const COLLECT: &str = "fake.Tokens/Collect";
/// Answers to each ModelStreamInfer request.
pub const ANSWERS_PER_REQUEST: usize = 3;
/// Answers to a Generate request.
pub const TOKENS: usize = 5;

/// How an inbound stream ended at the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum How {
    /// The client half-closed it.
    Clean,
    /// It broke (reset, connection lost).
    Error(Code),
}

/// One stream the runtime saw.
#[derive(Debug, Clone)]
pub struct End {
    pub method: String,
    pub model: String,
    pub messages: usize,
    pub how: How,
}

/// What the runtime saw.
#[derive(Default)]
pub struct State {
    loads: Mutex<Vec<String>>,
    loaded: Mutex<HashSet<String>>,
    ends: Mutex<Vec<End>>,
    open: Mutex<usize>,
}

impl State {
    pub fn loads(&self) -> Vec<String> {
        self.loads.lock().unwrap().clone()
    }
    pub fn ends(&self) -> Vec<End> {
        self.ends.lock().unwrap().clone()
    }
    pub fn open_streams(&self) -> usize {
        *self.open.lock().unwrap()
    }
    /// Drops a model without telling the mesh (as a restarted runtime would).
    pub fn lose(&self, id: &str) {
        self.loaded.lock().unwrap().remove(id);
    }
    fn holds(&self, id: &str) -> bool {
        self.loaded.lock().unwrap().contains(id)
    }
}

struct Spi(Arc<State>);

const MIB: u64 = 1 << 20;

#[tonic::async_trait]
impl ModelRuntime for Spi {
    async fn load_model(
        &self,
        r: Request<pb::LoadModelRequest>,
    ) -> Result<Response<pb::LoadModelResponse>, Status> {
        let id = r.into_inner().model_id;
        self.0.loads.lock().unwrap().push(id.clone());
        self.0.loaded.lock().unwrap().insert(id);
        Ok(Response::new(pb::LoadModelResponse {
            size_in_bytes: MIB,
            max_concurrency: 0,
        }))
    }
    async fn unload_model(
        &self,
        r: Request<pb::UnloadModelRequest>,
    ) -> Result<Response<pb::UnloadModelResponse>, Status> {
        self.0.lose(&r.into_inner().model_id);
        Ok(Response::new(pb::UnloadModelResponse {}))
    }
    async fn predict_model_size(
        &self,
        _: Request<pb::PredictModelSizeRequest>,
    ) -> Result<Response<pb::PredictModelSizeResponse>, Status> {
        Ok(Response::new(pb::PredictModelSizeResponse {
            size_in_bytes: MIB,
        }))
    }
    async fn model_size(
        &self,
        _: Request<pb::ModelSizeRequest>,
    ) -> Result<Response<pb::ModelSizeResponse>, Status> {
        Ok(Response::new(pb::ModelSizeResponse { size_in_bytes: MIB }))
    }
    async fn runtime_status(
        &self,
        _: Request<pb::RuntimeStatusRequest>,
    ) -> Result<Response<pb::RuntimeStatusResponse>, Status> {
        let infos = [(
            STREAM_INFER.to_string(),
            pb::runtime_status_response::MethodInfo {
                id_injection_path: vec![1],
            },
        )]
        .into();
        Ok(Response::new(pb::RuntimeStatusResponse {
            status: pb::runtime_status_response::Status::Ready as i32,
            capacity_in_bytes: 1 << 30,
            max_loading_concurrency: 1,
            model_loading_timeout_ms: 10_000,
            default_model_size_in_bytes: MIB,
            runtime_version: "fake".into(),
            method_infos: infos,
            allow_any_method: true,
            ..Default::default()
        }))
    }
}

type Answers = Pin<Box<dyn futures::Stream<Item = Result<Bytes, Status>> + Send>>;

struct Streams {
    state: Arc<State>,
    method: String,
}

impl tonic::server::StreamingService<Bytes> for Streams {
    type Response = Bytes;
    type ResponseStream = Answers;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Answers>, Status>> + Send>>;

    fn call(&mut self, req: Request<tonic::Streaming<Bytes>>) -> Self::Future {
        let (state, method) = (self.state.clone(), self.method.clone());
        Box::pin(async move {
            let header_model = req
                .metadata()
                .get("mm-model-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let mut inbound = req.into_inner();
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Status>>(64);
            *state.open.lock().unwrap() += 1;
            tokio::spawn(async move {
                let (mut messages, mut model) = (0usize, header_model);
                let how = loop {
                    match inbound.next().await {
                        Some(Ok(m)) => {
                            messages += 1;
                            answer(&state, &method, &m, &mut model, &tx).await;
                        }
                        Some(Err(s)) => break How::Error(s.code()),
                        None => break How::Clean,
                    }
                };
                if method == COLLECT && how == How::Clean {
                    let _ = tx
                        .send(Ok(Bytes::from(format!("{messages} messages"))))
                        .await;
                }
                *state.open.lock().unwrap() -= 1;
                state.ends.lock().unwrap().push(End {
                    method,
                    model,
                    messages,
                    how,
                });
            });
            let answers = tokio_stream::wrappers::ReceiverStream::new(rx);
            Ok(Response::new(Box::pin(answers) as Answers))
        })
    }
}

async fn answer(
    state: &State,
    method: &str,
    m: &Bytes,
    model: &mut String,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, Status>>,
) {
    match method {
        STREAM_INFER => {
            let Ok(req) = ModelInferRequest::decode(m.as_ref()) else {
                let _ = tx
                    .send(Err(Status::invalid_argument("not a ModelInferRequest")))
                    .await;
                return;
            };
            *model = req.model_name.clone();
            if !state.holds(&req.model_name) {
                let lost = ModelStreamInferResponse {
                    error_message: format!(
                        "Request for unknown model: '{}' is not found",
                        req.model_name
                    ),
                    infer_response: None,
                };
                let _ = tx.send(Ok(Bytes::from(lost.encode_to_vec()))).await;
                return;
            }
            for k in 0..ANSWERS_PER_REQUEST {
                let a = ModelStreamInferResponse {
                    error_message: String::new(),
                    infer_response: Some(ModelInferResponse {
                        model_name: req.model_name.clone(),
                        id: format!("{}/{k}", req.id),
                        ..Default::default()
                    }),
                };
                let _ = tx.send(Ok(Bytes::from(a.encode_to_vec()))).await;
            }
        }
        GENERATE => {
            if !state.holds(model) {
                let _ = tx
                    .send(Err(Status::not_found(format!(
                        "Request for unknown model: '{model}' is not found"
                    ))))
                    .await;
                return;
            }
            for k in 0..TOKENS {
                let _ = tx.send(Ok(Bytes::from(format!("token-{k}")))).await;
            }
        }
        _ => {}
    }
}

/// A fake runtime on a free loopback port; stopped on drop.
pub struct FakeRuntime {
    pub port: u16,
    pub state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FakeRuntime {
    pub async fn start() -> FakeRuntime {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(State::default());
        let s = state.clone();
        let router = tonic::service::Routes::new(ModelRuntimeServer::new(Spi(state.clone())))
            .prepare()
            .into_axum_router()
            .fallback(move |req: http::Request<axum::body::Body>| {
                let state = s.clone();
                async move {
                    let method = req.uri().path().trim_start_matches('/').to_string();
                    let mut grpc = tonic::server::Grpc::new(RawCodec);
                    grpc.streaming(Streams { state, method }, req)
                        .await
                        .map(axum::body::Body::new)
                }
            });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_routes(tonic::service::Routes::from(router))
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stopped.await;
                })
                .await;
        });
        FakeRuntime {
            port,
            state,
            stop: Some(stop),
        }
    }

    /// Waits until the runtime saw `n` streams end (10 s deadline).
    pub async fn wait_ends(&self, n: usize) -> Vec<End> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let ends = self.state.ends();
            if ends.len() >= n {
                return ends;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the runtime saw {} stream ends, not {n}: {ends:?}",
                ends.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for FakeRuntime {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}
