//! `modelmesh adapter`: implements the `mmesh.ModelRuntime` SPI in front of a Triton-protocol
//! server (Triton or `modelmesh runtime`), MLServer or llama.cpp's `llama-server` router, and the storage puller that fetches
//! models from S3, GCS, Azure Blob, HTTP(S), PVC mounts or a local directory.

pub mod backend;
pub mod config;
pub mod error;
pub mod gguf;
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
    let server: Arc<dyn backend::ModelServer> = match cfg.server_type {
        ServerType::Triton => Arc::new(backend::triton::Triton::new(backend::channel(
            &cfg.runtime_host,
            cfg.runtime_port,
        )?)),
        ServerType::Mlserver => Arc::new(backend::mlserver::MlServer::new(backend::channel(
            &cfg.runtime_host,
            cfg.runtime_port,
        )?)),
        ServerType::Llamacpp => Arc::new(backend::llamacpp::LlamaCpp::new(
            &cfg.runtime_host,
            cfg.runtime_port,
            std::time::Duration::from_millis(u64::from(cfg.loadtime_timeout_ms)),
        )?),
    };
    Ok(Adapter::new(cfg, server))
}
