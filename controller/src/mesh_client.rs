//! The three mesh calls the controller makes (setVModel, deleteVModel, getVModelStatus), behind
//! a trait so reconcilers are tested against a scripted mesh; the real one dials each
//! namespace's `modelmesh-serving` Service over gRPC and keeps one channel per namespace.

use modelmesh_proto::mmesh::model_mesh_client::ModelMeshClient;
use modelmesh_proto::mmesh::{
    DeleteVModelRequest, GetVModelStatusRequest, SetVModelRequest, VModelStatusInfo,
};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use tonic::Status;
use tonic::transport::Channel;

/// Upstream's deadline for each mesh call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The mesh of a namespace, as the controller uses it.
pub trait MeshApi: Send + Sync + 'static {
    /// setVModel.
    fn set_vmodel(
        &self,
        namespace: &str,
        req: SetVModelRequest,
    ) -> impl Future<Output = Result<VModelStatusInfo, Status>> + Send;
    /// deleteVModel (absent is success).
    fn delete_vmodel(
        &self,
        namespace: &str,
        vmodel: &str,
        owner: &str,
    ) -> impl Future<Output = Result<(), Status>> + Send;
    /// getVModelStatus.
    fn vmodel_status(
        &self,
        namespace: &str,
        vmodel: &str,
        owner: &str,
    ) -> impl Future<Output = Result<VModelStatusInfo, Status>> + Send;
}

/// The mesh over gRPC: `http://<service>.<namespace>:<port>`, or one fixed endpoint (for
/// development, `modelMeshEndpoint`).
pub struct GrpcMesh {
    service: String,
    port: u16,
    /// The port to fall back to while pods from before the management port roll out.
    fallback_port: Option<u16>,
    fixed: Option<String>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl GrpcMesh {
    /// A client for the Service `service` on `port` in each namespace, or `fixed` for all.
    pub fn new(service: &str, port: u16, fixed: Option<String>) -> Self {
        GrpcMesh {
            service: service.to_string(),
            port,
            fallback_port: None,
            fixed,
            channels: Default::default(),
        }
    }

    /// Falls back to `port` when nothing answers on the first one.
    pub fn with_fallback_port(mut self, port: u16) -> Self {
        self.fallback_port = Some(port).filter(|p| *p != self.port);
        self
    }

    /// A client of the mesh Service of `namespace` on `port` (or the fixed endpoint).
    fn client_on(&self, namespace: &str, port: u16) -> Result<ModelMeshClient<Channel>, Status> {
        let url = match &self.fixed {
            Some(f) if f.contains("://") => f.clone(),
            Some(f) => format!("http://{f}"),
            None => format!("http://{}.{namespace}:{port}", self.service),
        };
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let ch = match channels.get(&url) {
            Some(c) => c.clone(),
            None => {
                let c = tonic::transport::Endpoint::from_shared(url.clone())
                    .map_err(|e| Status::invalid_argument(format!("bad mesh address {url}: {e}")))?
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(CALL_TIMEOUT)
                    .connect_lazy();
                channels.insert(url, c.clone());
                c
            }
        };
        Ok(ModelMeshClient::new(ch))
    }

    /// Calls `f` on the management port; if no pod answers there (pods rendered before it
    /// existed are still running during an upgrade), once more on the inference port.
    async fn call<T, F, Fut>(&self, namespace: &str, f: F) -> Result<T, Status>
    where
        F: Fn(ModelMeshClient<Channel>) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let first = f(self.client_on(namespace, self.port)?).await;
        match (first, self.fallback_port) {
            (Err(s), Some(p)) if s.code() == tonic::Code::Unavailable && self.fixed.is_none() => {
                f(self.client_on(namespace, p)?).await
            }
            (r, _) => r,
        }
    }
}

impl MeshApi for GrpcMesh {
    async fn set_vmodel(
        &self,
        namespace: &str,
        req: SetVModelRequest,
    ) -> Result<VModelStatusInfo, Status> {
        self.call(namespace, |mut c| {
            let req = req.clone();
            async move { Ok(c.set_v_model(req).await?.into_inner()) }
        })
        .await
    }

    async fn delete_vmodel(
        &self,
        namespace: &str,
        vmodel: &str,
        owner: &str,
    ) -> Result<(), Status> {
        self.call(namespace, |mut c| async move {
            c.delete_v_model(DeleteVModelRequest {
                v_model_id: vmodel.into(),
                owner: owner.into(),
            })
            .await?;
            Ok(())
        })
        .await
    }

    async fn vmodel_status(
        &self,
        namespace: &str,
        vmodel: &str,
        owner: &str,
    ) -> Result<VModelStatusInfo, Status> {
        self.call(namespace, |mut c| async move {
            Ok(c.get_v_model_status(GetVModelStatusRequest {
                v_model_id: vmodel.into(),
                owner: owner.into(),
            })
            .await?
            .into_inner())
        })
        .await
    }
}
