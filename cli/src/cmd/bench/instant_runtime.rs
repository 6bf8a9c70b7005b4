//! A model runtime whose loads finish at once (a ModelRuntime SPI server in the bench
//! process), so a sidecar can be filled with thousands of loaded copies to measure what it
//! holds per copy, without a real runtime's memory and load time in the way.

use modelmesh_proto::mmesh::model_runtime_server::{ModelRuntime, ModelRuntimeServer};
use modelmesh_proto::mmesh::runtime_status_response::Status as RuntimeState;
use modelmesh_proto::mmesh::{self as pb};
use tonic::{Request, Response, Status};

/// What every copy weighs (one cache unit).
const COPY_BYTES: u64 = 8 * 1024;

struct Instant {
    capacity: u64,
}

#[tonic::async_trait]
impl ModelRuntime for Instant {
    async fn load_model(
        &self,
        _: Request<pb::LoadModelRequest>,
    ) -> Result<Response<pb::LoadModelResponse>, Status> {
        Ok(Response::new(pb::LoadModelResponse {
            size_in_bytes: COPY_BYTES,
            max_concurrency: 0,
        }))
    }

    async fn unload_model(
        &self,
        _: Request<pb::UnloadModelRequest>,
    ) -> Result<Response<pb::UnloadModelResponse>, Status> {
        Ok(Response::new(pb::UnloadModelResponse {}))
    }

    async fn predict_model_size(
        &self,
        _: Request<pb::PredictModelSizeRequest>,
    ) -> Result<Response<pb::PredictModelSizeResponse>, Status> {
        Ok(Response::new(pb::PredictModelSizeResponse {
            size_in_bytes: COPY_BYTES,
        }))
    }

    async fn model_size(
        &self,
        _: Request<pb::ModelSizeRequest>,
    ) -> Result<Response<pb::ModelSizeResponse>, Status> {
        Ok(Response::new(pb::ModelSizeResponse {
            size_in_bytes: COPY_BYTES,
        }))
    }

    async fn runtime_status(
        &self,
        _: Request<pb::RuntimeStatusRequest>,
    ) -> Result<Response<pb::RuntimeStatusResponse>, Status> {
        Ok(Response::new(pb::RuntimeStatusResponse {
            status: RuntimeState::Ready as i32,
            capacity_in_bytes: self.capacity,
            max_loading_concurrency: 16,
            model_loading_timeout_ms: 30_000,
            default_model_size_in_bytes: COPY_BYTES,
            runtime_version: "instant".into(),
            ..Default::default()
        }))
    }
}

/// Serves an instant runtime with room for `copies` copies on `port`, until the task is
/// dropped or aborted.
pub fn serve(
    port: u16,
    copies: u64,
) -> tokio::task::JoinHandle<Result<(), tonic::transport::Error>> {
    let svc = ModelRuntimeServer::new(Instant {
        capacity: copies.saturating_mul(COPY_BYTES),
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
    )
}
