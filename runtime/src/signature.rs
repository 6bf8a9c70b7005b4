//! A model's inputs and outputs (names, types, shapes), from `config.pbtxt` or from the ONNX
//! graph, and the checks a request must pass against them.

use crate::datatype::DataType;
use modelmesh_proto::inference::{ModelConfig, ModelInput, ModelOutput};

/// One input or output tensor. `shape` is the full shape including any batch dimension;
/// `-1` means any size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Tensor name as clients use it.
    pub name: String,
    /// Element type.
    pub datatype: DataType,
    /// Full shape; `-1` for a variable dimension.
    pub shape: Vec<i64>,
}

impl TensorSpec {
    /// Whether a concrete shape is allowed by this spec.
    pub fn accepts(&self, shape: &[i64]) -> bool {
        shape.len() == self.shape.len()
            && shape
                .iter()
                .zip(&self.shape)
                .all(|(&got, &want)| want < 0 || got == want)
    }
}

/// All inputs and outputs of a model, in the order the model takes and returns them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Signature {
    /// Inputs, in graph order.
    pub inputs: Vec<TensorSpec>,
    /// Outputs, in graph order.
    pub outputs: Vec<TensorSpec>,
}

/// Formats a shape the way Triton prints it in errors: `[-1,784]`.
pub fn shape_str(shape: &[i64]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(","))
}

/// Reads the tensor specs a `config.pbtxt` declares. With `max_batch_size > 0` Triton's dims
/// exclude the batch dimension, so a leading `-1` is added.
pub fn from_config(cfg: &ModelConfig) -> Result<Signature, String> {
    let batch = cfg.max_batch_size > 0;
    let full = |dims: &[i64]| -> Vec<i64> {
        let mut s = Vec::with_capacity(dims.len() + 1);
        if batch {
            s.push(-1);
        }
        s.extend_from_slice(dims);
        s
    };
    let dtype = |name: &str, raw: i32| -> Result<DataType, String> {
        modelmesh_proto::inference::DataType::try_from(raw)
            .ok()
            .and_then(DataType::from_config_type)
            .ok_or_else(|| {
                format!(
                    "config.pbtxt: tensor '{name}' has a data_type this runtime does not support"
                )
            })
    };
    let inputs = cfg
        .input
        .iter()
        .map(|i| {
            Ok(TensorSpec {
                name: i.name.clone(),
                datatype: dtype(&i.name, i.data_type)?,
                shape: full(&i.dims),
            })
        })
        .collect::<Result<_, String>>()?;
    let outputs = cfg
        .output
        .iter()
        .map(|o| {
            Ok(TensorSpec {
                name: o.name.clone(),
                datatype: dtype(&o.name, o.data_type)?,
                shape: full(&o.dims),
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(Signature { inputs, outputs })
}

/// Checks a declared signature against the graph's and returns the one to validate requests
/// with: the declared tensors where the config lists them (they may be narrower), else the
/// graph's. Names and types must agree; ranks must agree.
pub fn reconcile(declared: &Signature, graph: &Signature) -> Result<Signature, String> {
    fn pick(
        kind: &str,
        declared: &[TensorSpec],
        graph: &[TensorSpec],
    ) -> Result<Vec<TensorSpec>, String> {
        if declared.is_empty() {
            return Ok(graph.to_vec());
        }
        let mut out = Vec::with_capacity(graph.len());
        for g in graph {
            let Some(d) = declared.iter().find(|d| d.name == g.name) else {
                // Outputs may be left out of the config; inputs may not.
                if kind == "input" {
                    return Err(format!(
                        "config.pbtxt does not declare input '{}' that the ONNX graph needs",
                        g.name
                    ));
                }
                out.push(g.clone());
                continue;
            };
            if d.datatype != g.datatype {
                return Err(format!(
                    "config.pbtxt declares {kind} '{}' as {} but the ONNX graph has {}",
                    g.name, d.datatype, g.datatype
                ));
            }
            if d.shape.len() != g.shape.len() {
                return Err(format!(
                    "config.pbtxt declares {kind} '{}' with shape {} but the ONNX graph has {}",
                    g.name,
                    shape_str(&d.shape),
                    shape_str(&g.shape)
                ));
            }
            out.push(d.clone());
        }
        if let Some(extra) = declared
            .iter()
            .find(|d| !graph.iter().any(|g| g.name == d.name))
        {
            return Err(format!(
                "config.pbtxt declares {kind} '{}' but the ONNX graph has no such {kind} (it has: {})",
                extra.name,
                graph
                    .iter()
                    .map(|g| g.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(out)
    }
    Ok(Signature {
        inputs: pick("input", &declared.inputs, &graph.inputs)?,
        outputs: pick("output", &declared.outputs, &graph.outputs)?,
    })
}

/// A Triton model configuration describing an ONNX model with this signature.
pub fn to_config(name: &str, sig: &Signature) -> ModelConfig {
    ModelConfig {
        name: name.to_string(),
        platform: "onnxruntime_onnx".to_string(),
        backend: "onnxruntime".to_string(),
        max_batch_size: 0,
        input: sig
            .inputs
            .iter()
            .map(|t| ModelInput {
                name: t.name.clone(),
                data_type: t.datatype.config_type() as i32,
                dims: t.shape.clone(),
                ..Default::default()
            })
            .collect(),
        output: sig
            .outputs
            .iter()
            .map(|t| ModelOutput {
                name: t.name.clone(),
                data_type: t.datatype.config_type() as i32,
                dims: t.shape.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, dt: DataType, shape: &[i64]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            datatype: dt,
            shape: shape.to_vec(),
        }
    }

    #[test]
    fn batch_dimension_is_added_when_batching() {
        let cfg = modelmesh_proto::text_format::parse_model_config(
            r#"max_batch_size: 8 input [{name: "x" data_type: TYPE_FP32 dims: [4]}]
               output [{name: "y" data_type: TYPE_FP32 dims: [3]}]"#,
        )
        .unwrap();
        let sig = from_config(&cfg).unwrap();
        assert_eq!(sig.inputs[0].shape, vec![-1, 4]);
        assert_eq!(sig.outputs[0].shape, vec![-1, 3]);
    }

    #[test]
    fn accepts_wildcards_only_where_declared() {
        let s = spec("x", DataType::Fp32, &[-1, 4]);
        assert!(s.accepts(&[1, 4]));
        assert!(s.accepts(&[7, 4]));
        assert!(!s.accepts(&[1, 3]));
        assert!(!s.accepts(&[4]));
    }

    #[test]
    fn reconcile_rejects_type_mismatch_and_unknown_names() {
        let graph = Signature {
            inputs: vec![spec("x", DataType::Fp32, &[-1, 4])],
            outputs: vec![spec("y", DataType::Fp32, &[-1, 3])],
        };
        let bad_type = Signature {
            inputs: vec![spec("x", DataType::Fp64, &[-1, 4])],
            outputs: vec![],
        };
        assert!(reconcile(&bad_type, &graph).unwrap_err().contains("FP64"));
        let unknown = Signature {
            inputs: vec![
                spec("x", DataType::Fp32, &[1, 4]),
                spec("z", DataType::Fp32, &[1]),
            ],
            outputs: vec![],
        };
        assert!(reconcile(&unknown, &graph).unwrap_err().contains("'z'"));
        let narrow = Signature {
            inputs: vec![spec("x", DataType::Fp32, &[1, 4])],
            outputs: vec![],
        };
        let got = reconcile(&narrow, &graph).unwrap();
        assert_eq!(got.inputs[0].shape, vec![1, 4]);
        assert_eq!(got.outputs, graph.outputs);
    }
}
