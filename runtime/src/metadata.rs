//! ModelMetadata as KServe v2 defines it, from a loaded model's signature.

use crate::manager::LoadedModel;
use crate::signature::TensorSpec;
use modelmesh_proto::inference::{ModelMetadataResponse, model_metadata_response::TensorMetadata};

fn tensor(t: &TensorSpec) -> TensorMetadata {
    TensorMetadata {
        name: t.name.clone(),
        datatype: t.datatype.name().into(),
        shape: t.shape.clone(),
    }
}

/// The metadata response for a loaded model.
pub fn model_metadata(m: &LoadedModel) -> ModelMetadataResponse {
    ModelMetadataResponse {
        name: m.name.clone(),
        versions: vec![m.version.clone()],
        platform: m.config.platform.clone(),
        inputs: m.signature.inputs.iter().map(tensor).collect(),
        outputs: m.signature.outputs.iter().map(tensor).collect(),
    }
}
