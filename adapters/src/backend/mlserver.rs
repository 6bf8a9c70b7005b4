//! MLServer through its repository API. The dataplane's repository methods are tried first;
//! older servers that lack them get the (deprecated) `ModelRepositoryService` instead.

use super::ModelServer;
use modelmesh_proto::inference::{
    self as pb,
    grpc_inference_service_client::GrpcInferenceServiceClient,
    model_repository::{self as mr, model_repository_service_client::ModelRepositoryServiceClient},
};
use std::sync::atomic::{AtomicBool, Ordering};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// An MLServer model server.
#[derive(Debug)]
pub struct MlServer {
    dataplane: GrpcInferenceServiceClient<Channel>,
    repository: ModelRepositoryServiceClient<Channel>,
    legacy: AtomicBool,
}

impl MlServer {
    /// A client over `channel`.
    pub fn new(channel: Channel) -> Self {
        MlServer {
            dataplane: GrpcInferenceServiceClient::new(channel.clone()),
            repository: ModelRepositoryServiceClient::new(channel),
            legacy: AtomicBool::new(false),
        }
    }

    fn use_legacy(&self, s: &Status) -> bool {
        if s.code() == Code::Unimplemented && !self.legacy.swap(true, Ordering::Relaxed) {
            tracing::info!(
                "MLServer lacks dataplane repository methods; using ModelRepositoryService"
            );
        }
        self.legacy.load(Ordering::Relaxed)
    }
}

#[tonic::async_trait]
impl ModelServer for MlServer {
    async fn ready(&self) -> Result<bool, Status> {
        Ok(self
            .dataplane
            .clone()
            .server_ready(pb::ServerReadyRequest {})
            .await?
            .into_inner()
            .ready)
    }

    async fn version(&self) -> Result<String, Status> {
        Ok(self
            .dataplane
            .clone()
            .server_metadata(pb::ServerMetadataRequest {})
            .await?
            .into_inner()
            .version)
    }

    async fn load(&self, model_id: &str) -> Result<(), Status> {
        if !self.legacy.load(Ordering::Relaxed) {
            let req = pb::RepositoryModelLoadRequest {
                model_name: model_id.into(),
                ..Default::default()
            };
            match self.dataplane.clone().repository_model_load(req).await {
                Ok(_) => return Ok(()),
                Err(s) if !self.use_legacy(&s) => return Err(s),
                Err(_) => {}
            }
        }
        let req = mr::RepositoryModelLoadRequest {
            model_name: model_id.into(),
            ..Default::default()
        };
        self.repository.clone().repository_model_load(req).await?;
        Ok(())
    }

    async fn unload(&self, model_id: &str) -> Result<(), Status> {
        if !self.legacy.load(Ordering::Relaxed) {
            let req = pb::RepositoryModelUnloadRequest {
                model_name: model_id.into(),
                ..Default::default()
            };
            match self.dataplane.clone().repository_model_unload(req).await {
                Ok(_) => return Ok(()),
                Err(s) if !self.use_legacy(&s) => return Err(s),
                Err(_) => {}
            }
        }
        let req = mr::RepositoryModelUnloadRequest {
            model_name: model_id.into(),
            ..Default::default()
        };
        self.repository.clone().repository_model_unload(req).await?;
        Ok(())
    }

    async fn loaded_models(&self) -> Result<Vec<String>, Status> {
        if !self.legacy.load(Ordering::Relaxed) {
            let req = pb::RepositoryIndexRequest {
                ready: true,
                ..Default::default()
            };
            match self.dataplane.clone().repository_index(req).await {
                Ok(r) => return Ok(r.into_inner().models.into_iter().map(|m| m.name).collect()),
                Err(s) if !self.use_legacy(&s) => return Err(s),
                Err(_) => {}
            }
        }
        let req = mr::RepositoryIndexRequest {
            ready: true,
            ..Default::default()
        };
        let idx = self
            .repository
            .clone()
            .repository_index(req)
            .await?
            .into_inner();
        Ok(idx.models.into_iter().map(|m| m.name).collect())
    }

    fn unload_means_absent(&self, code: Code) -> bool {
        // MLServer answers NOT_FOUND (and older versions INVALID_ARGUMENT) for unknown models.
        matches!(code, Code::NotFound | Code::InvalidArgument)
    }
}
