//! Running one inference request end to end: look up, validate, execute, encode.

use crate::error::RuntimeError;
use crate::manager::ModelManager;
use crate::tensor;
use modelmesh_proto::inference::{ModelInferRequest, ModelInferResponse};

/// Runs a request on a loaded model. Decoding, execution and encoding happen on the blocking
/// pool so large tensors or slow models never stall the async workers.
pub async fn infer(
    mgr: &ModelManager,
    req: ModelInferRequest,
) -> Result<ModelInferResponse, RuntimeError> {
    let model = mgr.get(&req.model_name, &req.model_version)?;
    let name = model.name.clone();
    tokio::task::spawn_blocking(move || {
        let inputs = tensor::decode_inputs(&model.name, &model.signature, &req)?;
        let outputs = model
            .model
            .run(inputs)
            .map_err(|reason| RuntimeError::Execution {
                model: model.name.clone(),
                reason,
            })?;
        tensor::encode_outputs(&model.name, &model.version, &model.signature, &req, outputs)
    })
    .await
    .unwrap_or_else(|e| {
        Err(RuntimeError::Execution {
            model: name,
            reason: format!("the model crashed: {e}"),
        })
    })
}
