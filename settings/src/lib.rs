//! Settings as people write them: sizes with units (`512Mi`, `1GiB`) and JSON documents whose
//! errors name the field at fault. Shared by every crate that reads a flag, an environment
//! value or a settings file.

pub mod json;
pub mod size;

pub use size::{ByteSize, SizeError};
