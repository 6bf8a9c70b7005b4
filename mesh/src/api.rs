//! The `mmesh.ModelMesh` management API.

use crate::hop::Hop;
use crate::mesh::Mesh;
use modelmesh_proto::mmesh::{self as pb, model_mesh_server::ModelMesh};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Which calls a port serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiMode {
    /// Every method (the gRPC port by default, or the management port).
    Full,
    /// Status reads and ensureLoaded only: the gRPC port when the management API has a port of
    /// its own (`MM_MANAGEMENT_PORT`, `MM_MANAGEMENT_ON_GRPC_PORT=false`).
    ReadOnly,
    /// The pod-to-pod port: ensureLoaded (a peer may ask this pod to load a copy itself, hop
    /// `load`) and status reads.
    Peers,
}

/// The service over a mesh.
pub struct MeshApi {
    mesh: Arc<Mesh>,
    mode: ApiMode,
    internal: bool,
}

impl MeshApi {
    /// A service over `mesh` serving what `mode` allows.
    pub fn new(mesh: Arc<Mesh>, mode: ApiMode) -> Self {
        MeshApi {
            mesh,
            mode,
            internal: mode == ApiMode::Peers,
        }
    }
}

impl MeshApi {
    /// Refuses a call that changes what the mesh serves where this port does not take them:
    /// peers only ask for loads, and with a management port of its own the gRPC port serves
    /// inference (reachable by every client) but not changes.
    fn changes_allowed(&self, method: &str) -> Result<(), Status> {
        match self.mode {
            ApiMode::Full => Ok(()),
            ApiMode::Peers => Err(Status::permission_denied(format!(
                "{method} is not served on the internal port (peers use it for ensureLoaded only); call the mesh's management API"
            ))),
            ApiMode::ReadOnly => Err(Status::permission_denied(format!(
                "{method} is served on the management port (MM_MANAGEMENT_PORT), not on the inference port"
            ))),
        }
    }
}

fn balanced(md: &tonic::metadata::MetadataMap) -> bool {
    md.get("mm-balanced").and_then(|v| v.to_str().ok()) == Some("true")
}

#[tonic::async_trait]
impl ModelMesh for MeshApi {
    async fn register_model(
        &self,
        r: Request<pb::RegisterModelRequest>,
    ) -> Result<Response<pb::ModelStatusInfo>, Status> {
        self.changes_allowed("registerModel")?;
        Ok(Response::new(
            self.mesh.register_model(r.into_inner()).await?,
        ))
    }

    async fn unregister_model(
        &self,
        r: Request<pb::UnregisterModelRequest>,
    ) -> Result<Response<pb::UnregisterModelResponse>, Status> {
        self.changes_allowed("unregisterModel")?;
        self.mesh.unregister_model(&r.into_inner().model_id).await?;
        Ok(Response::new(pb::UnregisterModelResponse {}))
    }

    async fn get_model_status(
        &self,
        r: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::ModelStatusInfo>, Status> {
        Ok(Response::new(
            self.mesh.model_status(&r.into_inner().model_id).await?,
        ))
    }

    async fn ensure_loaded(
        &self,
        r: Request<pb::EnsureLoadedRequest>,
    ) -> Result<Response<pb::ModelStatusInfo>, Status> {
        if !self.internal {
            crate::hop::refuse_hop_metadata(r.metadata())?;
        }
        let here = self.internal && Hop::from_header(r.metadata())? == Hop::LoadHere;
        let balanced = balanced(r.metadata());
        let size = crate::hop::known_size(r.metadata())?;
        let room = crate::hop::room(r.metadata())?;
        let r = r.into_inner();
        if let (true, Some(bytes)) = (here, size) {
            self.mesh.local.hint_size(&r.model_id, bytes);
        }
        let status = if here {
            self.mesh.ensure_here(&r.model_id, r.sync, room).await?
        } else {
            self.mesh
                .ensure_loaded(&r.model_id, r.sync, balanced)
                .await?
        };
        Ok(Response::new(status))
    }

    async fn set_v_model(
        &self,
        r: Request<pb::SetVModelRequest>,
    ) -> Result<Response<pb::VModelStatusInfo>, Status> {
        self.changes_allowed("setVModel")?;
        Ok(Response::new(self.mesh.set_vmodel(r.into_inner()).await?))
    }

    async fn delete_v_model(
        &self,
        r: Request<pb::DeleteVModelRequest>,
    ) -> Result<Response<pb::DeleteVModelResponse>, Status> {
        self.changes_allowed("deleteVModel")?;
        let r = r.into_inner();
        self.mesh.delete_vmodel(&r.v_model_id, &r.owner).await?;
        Ok(Response::new(pb::DeleteVModelResponse {}))
    }

    async fn get_v_model_status(
        &self,
        r: Request<pb::GetVModelStatusRequest>,
    ) -> Result<Response<pb::VModelStatusInfo>, Status> {
        let r = r.into_inner();
        Ok(Response::new(
            self.mesh.vmodel_status(&r.v_model_id, &r.owner).await?,
        ))
    }
}
