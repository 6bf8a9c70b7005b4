//! The runtime seam over gRPC: `mmesh.ModelRuntime` (the adapter, or a runtime that speaks the
//! SPI itself) through tonic.

use super::Runtime;
use super::errors::runtime_err;
use crate::error::MeshError;
use modelmesh_proto::mmesh::{self as pb, model_runtime_client::ModelRuntimeClient};
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;

/// A ModelRuntime client.
#[derive(Debug, Clone)]
pub struct RuntimeClient {
    client: ModelRuntimeClient<Channel>,
}

impl RuntimeClient {
    /// A client over `channel`.
    pub fn new(channel: Channel) -> Self {
        RuntimeClient {
            client: ModelRuntimeClient::new(channel),
        }
    }
}

#[tonic::async_trait]
impl Runtime for RuntimeClient {
    async fn status(&self) -> Result<pb::RuntimeStatusResponse, tonic::Status> {
        self.client
            .clone()
            .runtime_status(pb::RuntimeStatusRequest {})
            .await
            .map(tonic::Response::into_inner)
    }

    /// Loads a model; returns its size in bytes (asking modelSize when the load reports 0).
    async fn load(
        &self,
        id: &str,
        model_type: &str,
        path: &str,
        key: &str,
    ) -> Result<u64, MeshError> {
        let req = pb::LoadModelRequest {
            model_id: id.into(),
            model_type: model_type.into(),
            model_path: path.into(),
            model_key: key.into(),
        };
        let r = self
            .client
            .clone()
            .load_model(req)
            .await
            .map_err(|s| runtime_err("load", id, s))?
            .into_inner();
        if r.size_in_bytes > 0 {
            return Ok(r.size_in_bytes);
        }
        let s = self
            .client
            .clone()
            .model_size(pb::ModelSizeRequest {
                model_id: id.into(),
            })
            .await;
        Ok(s.map(|s| s.into_inner().size_in_bytes).unwrap_or(0))
    }

    /// A fast size estimate, if the runtime offers one.
    async fn predict_size(&self, id: &str, model_type: &str, path: &str, key: &str) -> Option<u64> {
        let req = pb::PredictModelSizeRequest {
            model_id: id.into(),
            model_type: model_type.into(),
            model_path: path.into(),
            model_key: key.into(),
        };
        let mut req = tonic::Request::new(req);
        req.set_timeout(Duration::from_millis(500));
        self.client
            .clone()
            .predict_model_size(req)
            .await
            .ok()
            .map(|r| r.into_inner().size_in_bytes)
            .filter(|s| *s > 0)
    }

    /// Unloads a model; NOT_FOUND counts as done.
    async fn unload(&self, id: &str) -> Result<(), MeshError> {
        match self
            .client
            .clone()
            .unload_model(pb::UnloadModelRequest {
                model_id: id.into(),
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(runtime_err("unload", id, s)),
        }
    }
}
