//! The modelmesh sidecar: shared state in a KV store, the model registry, the model cache and
//! inference routing.

pub mod api;
pub mod cache;
pub mod codec;
pub mod constraints;
pub mod dataplane;
pub mod error;
pub mod idpath;
pub mod instance;
pub mod janitor;
pub mod kv;
pub mod leader;
pub mod load_queue;
pub mod local;
pub mod mesh;
pub mod metrics;
pub mod placement;
pub mod proxy;
pub mod registry;
pub mod rest;
pub mod routing;
pub mod runtime_client;
pub mod scaling;
pub mod server;
pub mod sidecar;
pub mod status;
