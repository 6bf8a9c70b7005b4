//! The modelmesh sidecar: shared state in a KV store, the model registry, the model cache and
//! inference routing.

pub mod cache;
pub mod kv;
pub mod registry;
