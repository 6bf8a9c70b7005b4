//! `inference.GRPCInferenceService`: the KServe v2 / Triton gRPC API, with the model-repository
//! extension. Extensions this server does not implement (shared memory, tracing, log settings)
//! answer UNIMPLEMENTED with a message saying so.

use crate::error::RuntimeError;
use crate::infer::infer;
use crate::manager::ModelManager;
use modelmesh_proto::inference::{self as pb, grpc_inference_service_server::GrpcInferenceService};
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// Server name reported by ServerMetadata.
pub const SERVER_NAME: &str = "modelmesh-runtime";

/// Protocol extensions this server implements.
pub const EXTENSIONS: &[&str] = &["model_repository", "model_configuration"];

/// The gRPC service over a shared [`ModelManager`].
#[derive(Debug, Clone)]
pub struct InferenceService {
    mgr: Arc<ModelManager>,
}

impl InferenceService {
    /// A service over `mgr`.
    pub fn new(mgr: Arc<ModelManager>) -> Self {
        InferenceService { mgr }
    }
}

fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("{what} is not supported by {SERVER_NAME}"))
}

type InferStream = Pin<Box<dyn Stream<Item = Result<pb::ModelStreamInferResponse, Status>> + Send>>;

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse { ready: true }))
    }

    async fn model_ready(
        &self,
        req: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(pb::ModelReadyResponse {
            ready: self.mgr.is_ready(&r.name, &r.version),
        }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: SERVER_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: EXTENSIONS.iter().map(|s| s.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let r = req.into_inner();
        let m = self.mgr.get(&r.name, &r.version)?;
        Ok(Response::new(crate::metadata::model_metadata(&m)))
    }

    async fn model_infer(
        &self,
        req: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        Ok(Response::new(infer(&self.mgr, req.into_inner()).await?))
    }

    type ModelStreamInferStream = InferStream;

    async fn model_stream_infer(
        &self,
        req: Request<Streaming<pb::ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let mgr = self.mgr.clone();
        let mut inbound = req.into_inner();
        let out = async_stream(move |tx| async move {
            while let Some(item) = inbound.next().await {
                let msg = match item {
                    Ok(r) => match infer(&mgr, r).await {
                        Ok(resp) => pb::ModelStreamInferResponse {
                            error_message: String::new(),
                            infer_response: Some(resp),
                        },
                        // Stream errors travel in-band so one bad request does not end the stream.
                        Err(e) => pb::ModelStreamInferResponse {
                            error_message: e.to_string(),
                            infer_response: None,
                        },
                    },
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(out))
    }

    async fn model_config(
        &self,
        req: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        let r = req.into_inner();
        let m = self.mgr.get(&r.name, &r.version)?;
        Ok(Response::new(pb::ModelConfigResponse {
            config: Some(m.config.clone()),
        }))
    }

    async fn model_statistics(
        &self,
        _: Request<pb::ModelStatisticsRequest>,
    ) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        Err(unimplemented("the statistics extension"))
    }

    async fn repository_index(
        &self,
        req: Request<pb::RepositoryIndexRequest>,
    ) -> Result<Response<pb::RepositoryIndexResponse>, Status> {
        let r = req.into_inner();
        let models = self.mgr.index(r.ready)?;
        Ok(Response::new(pb::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        req: Request<pb::RepositoryModelLoadRequest>,
    ) -> Result<Response<pb::RepositoryModelLoadResponse>, Status> {
        let r = req.into_inner();
        if let Some(k) = r.parameters.keys().next() {
            return Err(RuntimeError::Unsupported(format!(
                "load parameter '{k}' is not supported by {SERVER_NAME}: put config.pbtxt and the model file in the repository instead"
            ))
            .into());
        }
        self.mgr.load(&r.model_name).await?;
        Ok(Response::new(pb::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        req: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Result<Response<pb::RepositoryModelUnloadResponse>, Status> {
        self.mgr.unload(&req.into_inner().model_name).await?;
        Ok(Response::new(pb::RepositoryModelUnloadResponse {}))
    }

    async fn system_shared_memory_status(
        &self,
        _: Request<pb::SystemSharedMemoryStatusRequest>,
    ) -> Result<Response<pb::SystemSharedMemoryStatusResponse>, Status> {
        Err(unimplemented("system shared memory"))
    }

    async fn system_shared_memory_register(
        &self,
        _: Request<pb::SystemSharedMemoryRegisterRequest>,
    ) -> Result<Response<pb::SystemSharedMemoryRegisterResponse>, Status> {
        Err(unimplemented("system shared memory"))
    }

    async fn system_shared_memory_unregister(
        &self,
        _: Request<pb::SystemSharedMemoryUnregisterRequest>,
    ) -> Result<Response<pb::SystemSharedMemoryUnregisterResponse>, Status> {
        Err(unimplemented("system shared memory"))
    }

    async fn cuda_shared_memory_status(
        &self,
        _: Request<pb::CudaSharedMemoryStatusRequest>,
    ) -> Result<Response<pb::CudaSharedMemoryStatusResponse>, Status> {
        Err(unimplemented("CUDA shared memory"))
    }

    async fn cuda_shared_memory_register(
        &self,
        _: Request<pb::CudaSharedMemoryRegisterRequest>,
    ) -> Result<Response<pb::CudaSharedMemoryRegisterResponse>, Status> {
        Err(unimplemented("CUDA shared memory"))
    }

    async fn cuda_shared_memory_unregister(
        &self,
        _: Request<pb::CudaSharedMemoryUnregisterRequest>,
    ) -> Result<Response<pb::CudaSharedMemoryUnregisterResponse>, Status> {
        Err(unimplemented("CUDA shared memory"))
    }

    async fn trace_setting(
        &self,
        _: Request<pb::TraceSettingRequest>,
    ) -> Result<Response<pb::TraceSettingResponse>, Status> {
        Err(unimplemented("the trace extension"))
    }

    async fn log_settings(
        &self,
        _: Request<pb::LogSettingsRequest>,
    ) -> Result<Response<pb::LogSettingsResponse>, Status> {
        Err(unimplemented("the logging extension"))
    }
}

/// A response stream fed by a task through a bounded channel.
fn async_stream<F, Fut>(f: F) -> InferStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<pb::ModelStreamInferResponse, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
