//! One ONNX model compiled by tract: its graph signature and a runnable plan that many requests
//! share (tract plans are immutable; each run gets its own state).

use crate::datatype::DataType;
use crate::signature::{Signature, TensorSpec};
use std::sync::Arc;
use tract_onnx::prelude::*;

/// A compiled ONNX model ready to run.
pub struct OnnxModel {
    plan: Arc<TypedRunnableModel>,
    graph: Signature,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel")
            .field("graph", &self.graph)
            .finish()
    }
}

fn spec_of(name: String, fact: &TypedFact, kind: &str) -> Result<TensorSpec, String> {
    let datatype = DataType::from_datum_type(fact.datum_type).ok_or_else(|| {
        format!(
            "{kind} '{name}' has element type {:?}, which this runtime does not support",
            fact.datum_type
        )
    })?;
    let shape = fact
        .shape
        .iter()
        .map(|d| d.to_i64().unwrap_or(-1))
        .collect();
    Ok(TensorSpec {
        name,
        datatype,
        shape,
    })
}

impl OnnxModel {
    /// Parses, type-checks and optimises an ONNX model. The error says what is wrong with it.
    pub fn load(bytes: &[u8]) -> Result<OnnxModel, String> {
        let model = tract_onnx::onnx()
            .model_for_read(&mut &bytes[..])
            .map_err(|e| format!("not a valid ONNX model: {e:#}"))?;
        let input_names: Vec<String> = model
            .input_outlets()
            .map_err(|e| e.to_string())?
            .iter()
            .map(|o| model.node(o.node).name.clone())
            .collect();
        let output_names: Vec<String> = model
            .output_outlets()
            .map_err(|e| e.to_string())?
            .iter()
            .map(|o| {
                model
                    .outlet_label(*o)
                    .map(str::to_string)
                    .unwrap_or_else(|| model.node(o.node).name.clone())
            })
            .collect();
        let typed = model.into_typed().map_err(|e| {
            format!(
                "ONNX graph could not be typed (are all input types and ranks declared?): {e:#}"
            )
        })?;
        let mut graph = Signature::default();
        for (ix, name) in input_names.into_iter().enumerate() {
            let fact = typed.input_fact(ix).map_err(|e| e.to_string())?;
            graph.inputs.push(spec_of(name, fact, "input")?);
        }
        for (ix, name) in output_names.into_iter().enumerate() {
            let fact = typed.output_fact(ix).map_err(|e| e.to_string())?;
            graph.outputs.push(spec_of(name, fact, "output")?);
        }
        let plan = typed
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| format!("ONNX graph could not be compiled: {e:#}"))?;
        Ok(OnnxModel { plan, graph })
    }

    /// Inputs and outputs as the ONNX graph declares them.
    pub fn graph_signature(&self) -> &Signature {
        &self.graph
    }

    /// Runs the model on inputs given in graph order; outputs come back in graph order.
    pub fn run(&self, inputs: TVec<TValue>) -> Result<TVec<TValue>, String> {
        self.plan.run(inputs).map_err(|e| format!("{e:#}"))
    }
}
