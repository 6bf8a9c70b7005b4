//! `modelmesh runtime`: a Triton-compatible multi-model inference server for ONNX models,
//! running them with tract (pure Rust, no native runtime). It speaks KServe v2 gRPC (with the
//! model-repository extension) and REST, so the Triton adapter and Triton clients drive it as
//! they would drive Triton.

pub mod datatype;
pub mod error;
pub mod faults;
pub mod grpc;
pub mod http;
pub mod infer;
pub mod manager;
pub mod metadata;
pub mod onnx;
pub mod repository;
pub mod server;
pub mod signature;
pub mod tensor;

pub use error::RuntimeError;
pub use server::{BoundRuntime, RuntimeConfig, ServeError};
