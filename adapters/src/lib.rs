//! `modelmesh adapter`: implements the `mmesh.ModelRuntime` SPI in front of a Triton-protocol
//! server (Triton or `modelmesh runtime`) or MLServer, and the storage puller that fetches
//! models from S3, GCS, Azure Blob, HTTP(S), PVC mounts or a local directory.

pub mod backend;
pub mod config;
pub mod error;
pub mod layout;
pub mod model_key;
pub mod puller;
pub mod server;

pub use config::{AdapterConfig, ServerType};
pub use error::AdapterError;
pub use server::Adapter;

use std::sync::Arc;

/// Builds an adapter for `cfg`, connecting (lazily) to its model server.
pub fn build(cfg: AdapterConfig) -> Result<Adapter, String> {
    cfg.validate()?;
    let channel = backend::channel(&cfg.runtime_host, cfg.runtime_port)?;
    let server: Arc<dyn backend::ModelServer> = match cfg.server_type {
        ServerType::Triton => Arc::new(backend::triton::Triton::new(channel)),
        ServerType::Mlserver => Arc::new(backend::mlserver::MlServer::new(channel)),
    };
    Ok(Adapter::new(cfg, server))
}
