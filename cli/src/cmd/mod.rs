//! One module per subcommand.

pub mod adapter;
pub mod bench;
pub mod runtime;
pub mod sidecar;
pub mod signal;
pub mod spi;
