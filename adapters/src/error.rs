//! Errors of the adapters and the puller, and the gRPC code each maps to.

use tonic::Code;

/// Everything that can fail while serving the ModelRuntime SPI.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// The request is malformed (empty id, bad modelKey JSON, path escape, unknown storage key).
    #[error("{0}")]
    InvalidArgument(String),
    /// The model's files or storage entry are missing.
    #[error("{0}")]
    NotFound(String),
    /// The storage provider failed (network, credentials, bucket).
    #[error("Failed to pull model from storage due to error: {0}")]
    Pull(String),
    /// The model server refused or failed the operation; its code is kept.
    #[error("{message}")]
    Runtime {
        /// The model server's gRPC code.
        code: Code,
        /// The model server's message, prefixed with what we asked.
        message: String,
    },
    /// A local file-system operation failed.
    #[error("{0}")]
    Io(String),
    /// The operation is not supported by this adapter.
    #[error("{0}")]
    Unimplemented(String),
}

impl AdapterError {
    /// The gRPC code for this error.
    pub fn code(&self) -> Code {
        match self {
            AdapterError::InvalidArgument(_) => Code::InvalidArgument,
            AdapterError::NotFound(_) => Code::NotFound,
            // Storage problems are usually transient or fixable by the user, and a retry
            // elsewhere may succeed: UNAVAILABLE rather than INTERNAL.
            AdapterError::Pull(_) => Code::Unavailable,
            AdapterError::Runtime { code, .. } => *code,
            AdapterError::Io(_) => Code::Internal,
            AdapterError::Unimplemented(_) => Code::Unimplemented,
        }
    }

    /// Shorthand for [`AdapterError::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        AdapterError::InvalidArgument(msg.into())
    }

    /// An I/O error with what we were doing.
    pub fn io(what: impl std::fmt::Display, e: std::io::Error) -> Self {
        AdapterError::Io(format!("{what}: {e}"))
    }

    /// A model-server error, keeping its code.
    pub fn runtime(what: impl std::fmt::Display, s: tonic::Status) -> Self {
        AdapterError::Runtime {
            code: s.code(),
            message: format!("{what}: {}", s.message()),
        }
    }
}

impl From<AdapterError> for tonic::Status {
    fn from(e: AdapterError) -> Self {
        tonic::Status::new(e.code(), e.to_string())
    }
}
