//! The ModelMesh management API as the benchmarks use it: waiting for a sidecar to answer and
//! registering models.

use super::procs::channel;
use anyhow::bail;
use modelmesh_proto::mmesh::{
    self as mm, model_mesh_client::ModelMeshClient, model_status_info::ModelStatus,
};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// A management client, once the sidecar on `port` answers (it has found its runtime).
pub async fn wait_mesh(port: u16, timeout: Duration) -> anyhow::Result<ModelMeshClient<Channel>> {
    let mut mgmt = ModelMeshClient::new(channel(port)?);
    let deadline = Instant::now() + timeout;
    loop {
        let probe = mm::GetStatusRequest {
            model_id: "probe".into(),
        };
        match mgmt.get_model_status(probe).await {
            Ok(_) => return Ok(mgmt),
            Err(e) if Instant::now() > deadline => {
                bail!("the sidecar did not answer in {timeout:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// Registers `id` as an ONNX model at `path` with model key `key` (JSON; `{}` for none); with
/// `load_now`, loads it and waits (`sync`).
pub async fn register(
    mgmt: &mut ModelMeshClient<Channel>,
    id: &str,
    path: &str,
    key: &str,
    load_now: bool,
) -> anyhow::Result<ModelStatus> {
    let r = mgmt
        .register_model(mm::RegisterModelRequest {
            model_id: id.into(),
            model_info: Some(mm::ModelInfo {
                r#type: "onnx".into(),
                path: path.into(),
                key: key.into(),
                ..Default::default()
            }),
            load_now,
            sync: load_now,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(ModelStatus::try_from(r.status).unwrap_or(ModelStatus::Unknown))
}

/// Registers `id` and loads it, failing unless it ends up loaded.
pub async fn register_loaded(
    mgmt: &mut ModelMeshClient<Channel>,
    id: &str,
    path: &str,
) -> anyhow::Result<()> {
    match register(mgmt, id, path, "{}", true).await? {
        ModelStatus::Loaded => Ok(()),
        s => bail!("model {id} ({path}) did not load: {s:?}"),
    }
}
