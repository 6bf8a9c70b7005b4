//! The `mmesh.ModelMesh` management API.

use crate::mesh::Mesh;
use crate::proxy::Hop;
use modelmesh_proto::mmesh::{self as pb, model_mesh_server::ModelMesh};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The service over a mesh.
pub struct MeshApi {
    mesh: Arc<Mesh>,
    internal: bool,
}

impl MeshApi {
    /// A service over `mesh`; `internal` marks the pod-to-pod port, where a peer may ask this
    /// pod to load a copy itself (hop `load`).
    pub fn new(mesh: Arc<Mesh>, internal: bool) -> Self {
        MeshApi { mesh, internal }
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
        Ok(Response::new(
            self.mesh.register_model(r.into_inner()).await?,
        ))
    }

    async fn unregister_model(
        &self,
        r: Request<pb::UnregisterModelRequest>,
    ) -> Result<Response<pb::UnregisterModelResponse>, Status> {
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
            crate::proxy::refuse_hop_metadata(r.metadata())?;
        }
        let here = self.internal && Hop::from_header(r.metadata())? == Hop::LoadHere;
        let balanced = balanced(r.metadata());
        let size = crate::proxy::known_size(r.metadata())?;
        let room = crate::proxy::room(r.metadata())?;
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
        Ok(Response::new(self.mesh.set_vmodel(r.into_inner()).await?))
    }

    async fn delete_v_model(
        &self,
        r: Request<pb::DeleteVModelRequest>,
    ) -> Result<Response<pb::DeleteVModelResponse>, Status> {
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
