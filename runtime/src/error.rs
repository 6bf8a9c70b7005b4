//! Errors of the runtime and the gRPC / HTTP status each one maps to.

use tonic::Code;

/// Everything that can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Inference or metadata for a model that is not loaded.
    #[error("Request for unknown model: '{0}' is not found")]
    UnknownModel(String),
    /// The model is known to the repository but no version is loaded.
    #[error("Request for unknown model: '{0}' has no available versions")]
    NoAvailableVersions(String),
    /// The requested version is not the loaded one.
    #[error("Request for unknown model: '{model}' version {version} is not found")]
    UnknownVersion {
        /// Model name.
        model: String,
        /// Version asked for.
        version: String,
    },
    /// A load for a model with no directory in the repository.
    #[error(
        "failed to load '{0}': no model directory named '{0}' in the model repository (expected <repository>/{0}/<version>/model.onnx)"
    )]
    NotInRepository(String),
    /// The model's files are missing, corrupt or inconsistent.
    #[error("failed to load '{model}': {reason}")]
    BadModel {
        /// Model name.
        model: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The request itself is malformed (names, shapes, types, sizes).
    #[error("{0}")]
    InvalidRequest(String),
    /// A file-system error that is not the request's fault.
    #[error("{0}")]
    Io(String),
    /// The model failed while running.
    #[error("inference failed for model '{model}': {reason}")]
    Execution {
        /// Model name.
        model: String,
        /// The engine's message.
        reason: String,
    },
    /// The server cannot do this (a Triton extension it does not implement).
    #[error("{0}")]
    Unsupported(String),
}

impl RuntimeError {
    /// The gRPC code for this error, following Triton where Triton is specific.
    pub fn code(&self) -> Code {
        match self {
            RuntimeError::UnknownModel(_)
            | RuntimeError::NoAvailableVersions(_)
            | RuntimeError::UnknownVersion { .. }
            | RuntimeError::NotInRepository(_) => Code::NotFound,
            RuntimeError::BadModel { .. } | RuntimeError::InvalidRequest(_) => {
                Code::InvalidArgument
            }
            RuntimeError::Io(_) | RuntimeError::Execution { .. } => Code::Internal,
            RuntimeError::Unsupported(_) => Code::Unimplemented,
        }
    }

    /// The HTTP status for the REST endpoint.
    pub fn http_status(&self) -> u16 {
        match self.code() {
            Code::NotFound => 404,
            Code::InvalidArgument => 400,
            Code::Unimplemented => 501,
            _ => 500,
        }
    }

    /// Shorthand for [`RuntimeError::InvalidRequest`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        RuntimeError::InvalidRequest(msg.into())
    }
}

impl From<RuntimeError> for tonic::Status {
    fn from(e: RuntimeError) -> Self {
        tonic::Status::new(e.code(), e.to_string())
    }
}
