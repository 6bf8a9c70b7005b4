//! One module per subcommand.

pub mod adapter;
pub mod bench;
pub mod chat;
pub mod controller;
pub mod infer;
pub mod runtime;
pub mod sidecar;
pub mod signal;
pub mod spi;
pub mod status;
pub mod up;
