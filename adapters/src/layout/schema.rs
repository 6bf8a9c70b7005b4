//! The KServe-v2-style model schema (`{"inputs": [{name, datatype, shape}], "outputs": [...]}`)
//! a predictor may attach, read from the file the puller fetched.

use crate::error::AdapterError;
use serde::Deserialize;
use std::path::Path;

/// One tensor of a schema.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
pub struct SchemaTensor {
    /// Tensor name.
    pub name: String,
    /// KServe v2 datatype, e.g. `FP32`.
    pub datatype: String,
    /// Shape; `-1` for variable dims.
    #[serde(default)]
    pub shape: Vec<i64>,
}

/// A model's declared inputs and outputs.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Default)]
pub struct Schema {
    /// Inputs.
    #[serde(default)]
    pub inputs: Vec<SchemaTensor>,
    /// Outputs.
    #[serde(default)]
    pub outputs: Vec<SchemaTensor>,
}

/// Reads a schema file.
pub fn read(path: &Path) -> Result<Schema, AdapterError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        AdapterError::NotFound(format!("cannot read model schema {}: {e}", path.display()))
    })?;
    serde_json::from_str(&text).map_err(|e| {
        AdapterError::invalid(format!("model schema {} is not valid: {e}", path.display()))
    })
}
