//! Model servers the adapter drives, behind one trait.

pub mod llamacpp;
pub mod mlserver;
pub mod triton;

use tonic::{Code, Status};

/// What the adapter needs from a model server.
#[tonic::async_trait]
pub trait ModelServer: Send + Sync + 'static {
    /// Whether the server is up and ready.
    async fn ready(&self) -> Result<bool, Status>;
    /// The server's version string.
    async fn version(&self) -> Result<String, Status>;
    /// Loads the adapted model named `model_id`; returns when it is loaded.
    async fn load(&self, model_id: &str) -> Result<(), Status>;
    /// Unloads `model_id`.
    async fn unload(&self, model_id: &str) -> Result<(), Status>;
    /// Names of the models the server has loaded.
    async fn loaded_models(&self) -> Result<Vec<String>, Status>;
    /// Whether an unload error means "already gone".
    fn unload_means_absent(&self, code: Code) -> bool;
    /// The context (tokens) a loaded LLM got, for servers that say (llama.cpp's router).
    async fn context_tokens(&self, _model_id: &str) -> Option<u64> {
        None
    }
}

/// A lazily-connecting channel to `host:port`.
pub fn channel(host: &str, port: u16) -> Result<tonic::transport::Channel, String> {
    let uri = format!("http://{host}:{port}");
    let ep = tonic::transport::Endpoint::from_shared(uri.clone())
        .map_err(|e| format!("invalid runtime address {uri}: {e}"))?;
    Ok(ep
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect_lazy())
}
