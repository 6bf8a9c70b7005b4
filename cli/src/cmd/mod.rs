//! One module per subcommand.

pub mod adapter;
pub mod runtime;
pub mod signal;
