//! The modelmesh sidecar: shared state in a KV store, the model registry, the model cache and
//! inference routing.

pub mod api;
pub mod cache;
pub mod clock;
pub mod codec;
pub mod constraints;
pub mod dataplane;
pub mod eligible;
pub mod error;
pub mod hop;
pub mod http_request;
pub mod idpath;
pub mod instance;
pub mod janitor;
pub mod leader;
pub mod limits;
pub mod load_queue;
pub mod local;
pub mod mesh;
pub mod message_limit;
pub mod metrics;
pub mod openai;
pub mod placement;
pub mod registry;
pub mod rest;
pub mod route;
pub mod routing;
pub mod runtime;
pub mod scaling;
pub mod server;
pub mod server_limits;
pub mod sidecar;
pub mod status;
mod task;
pub mod tls;

/// The KV store and the key layout (the `modelmesh-kv` crate, shared with the controller).
pub use modelmesh_kv as kv;
