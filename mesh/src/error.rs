//! Mesh errors and the gRPC status each maps to (upstream's mapping, except that exhausted
//! retries and an unavailable runtime or store are UNAVAILABLE, which clients may retry).

use crate::kv::KvError;
use tonic::{Code, Status};

/// Everything the mesh can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MeshError {
    /// No such registered model.
    #[error("model {0} not found")]
    ModelNotFound(String),
    /// No such vmodel.
    #[error("vmodel {0} not found")]
    VModelNotFound(String),
    /// Bad request.
    #[error("{0}")]
    InvalidArgument(String),
    /// Conflicting existing state.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request conflicts with the current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The model failed to load.
    #[error("failed to load model {id}: {message}")]
    LoadFailed {
        /// Model id.
        id: String,
        /// The runtime's message.
        message: String,
    },
    /// The runtime answered an error; its code is kept.
    #[error("{1}")]
    Runtime(Code, String),
    /// Temporarily unable to serve (runtime down, store down, retries exhausted).
    #[error("{0}")]
    Unavailable(String),
    /// The deadline passed.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// A configured limit was reached (retry later).
    #[error("{0}")]
    ResourceExhausted(String),
}

impl From<KvError> for MeshError {
    fn from(e: KvError) -> Self {
        MeshError::Unavailable(e.to_string())
    }
}

impl From<MeshError> for Status {
    fn from(e: MeshError) -> Status {
        let code = match &e {
            MeshError::ModelNotFound(_) | MeshError::VModelNotFound(_) => Code::NotFound,
            MeshError::InvalidArgument(_) => Code::InvalidArgument,
            MeshError::AlreadyExists(_) => Code::AlreadyExists,
            MeshError::FailedPrecondition(_) => Code::FailedPrecondition,
            MeshError::LoadFailed { .. } => Code::Internal,
            MeshError::Runtime(c, _) => *c,
            MeshError::Unavailable(_) => Code::Unavailable,
            MeshError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            MeshError::ResourceExhausted(_) => Code::ResourceExhausted,
        };
        Status::new(code, e.to_string())
    }
}
