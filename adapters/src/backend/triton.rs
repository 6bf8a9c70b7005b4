//! Triton (and `modelmesh runtime`) through `inference.GRPCInferenceService` and its
//! model-repository extension.

use super::ModelServer;
use modelmesh_proto::inference::{
    self as pb, grpc_inference_service_client::GrpcInferenceServiceClient,
};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// A Triton-protocol model server.
#[derive(Debug, Clone)]
pub struct Triton {
    client: GrpcInferenceServiceClient<Channel>,
}

impl Triton {
    /// A client over `channel`.
    pub fn new(channel: Channel) -> Self {
        Triton {
            client: GrpcInferenceServiceClient::new(channel).max_decoding_message_size(64 << 20),
        }
    }
}

#[tonic::async_trait]
impl ModelServer for Triton {
    async fn ready(&self) -> Result<bool, Status> {
        Ok(self
            .client
            .clone()
            .server_ready(pb::ServerReadyRequest {})
            .await?
            .into_inner()
            .ready)
    }

    async fn version(&self) -> Result<String, Status> {
        Ok(self
            .client
            .clone()
            .server_metadata(pb::ServerMetadataRequest {})
            .await?
            .into_inner()
            .version)
    }

    async fn load(&self, model_id: &str) -> Result<(), Status> {
        let req = pb::RepositoryModelLoadRequest {
            model_name: model_id.into(),
            ..Default::default()
        };
        self.client.clone().repository_model_load(req).await?;
        Ok(())
    }

    async fn unload(&self, model_id: &str) -> Result<(), Status> {
        let req = pb::RepositoryModelUnloadRequest {
            model_name: model_id.into(),
            ..Default::default()
        };
        self.client.clone().repository_model_unload(req).await?;
        Ok(())
    }

    async fn loaded_models(&self) -> Result<Vec<String>, Status> {
        let req = pb::RepositoryIndexRequest {
            ready: true,
            ..Default::default()
        };
        let idx = self
            .client
            .clone()
            .repository_index(req)
            .await?
            .into_inner();
        Ok(idx.models.into_iter().map(|m| m.name).collect())
    }

    fn unload_means_absent(&self, code: Code) -> bool {
        code == Code::NotFound
    }
}
