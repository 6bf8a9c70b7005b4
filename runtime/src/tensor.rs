//! Converting KServe v2 tensors (typed `contents` or `raw_*_contents`) to tract tensors and back.
//! Raw contents are little-endian, row-major, as the protocol specifies.

use crate::datatype::DataType;
use crate::error::RuntimeError;
use crate::signature::{Signature, TensorSpec, shape_str};
use modelmesh_proto::inference::{
    InferTensorContents, ModelInferRequest, ModelInferResponse,
    model_infer_response::InferOutputTensor,
};
use tract_onnx::prelude::*;

/// Number of elements of a shape, refusing negative dims and overflow.
fn element_count(name: &str, shape: &[i64]) -> Result<usize, RuntimeError> {
    shape.iter().try_fold(1usize, |acc, &d| {
        let d = usize::try_from(d).map_err(|_| {
            RuntimeError::invalid(format!(
                "input '{name}' has a negative dimension in shape {}",
                shape_str(shape)
            ))
        })?;
        acc.checked_mul(d).ok_or_else(|| {
            RuntimeError::invalid(format!(
                "input '{name}' shape {} is too large",
                shape_str(shape)
            ))
        })
    })
}

macro_rules! from_le {
    ($bytes:expr, $t:ty) => {
        $bytes
            .chunks_exact(std::mem::size_of::<$t>())
            .map(|c| {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(c);
                <$t>::from_le_bytes(a)
            })
            .collect::<Vec<$t>>()
    };
}

fn tensor<T: Datum + Copy>(shape: &[usize], data: &[T]) -> Result<Tensor, RuntimeError> {
    Tensor::from_shape(shape, data).map_err(|e| RuntimeError::invalid(e.to_string()))
}

/// Builds a tensor from little-endian raw bytes (length already checked).
fn from_raw(dt: DataType, shape: &[usize], bytes: &[u8]) -> Result<Tensor, RuntimeError> {
    match dt {
        DataType::Bool => {
            let v: Vec<bool> = bytes.iter().map(|&b| b != 0).collect();
            tensor(shape, &v)
        }
        DataType::Uint8 => tensor(shape, bytes),
        DataType::Int8 => tensor(shape, &bytes.iter().map(|&b| b as i8).collect::<Vec<_>>()),
        DataType::Uint16 => tensor(shape, &from_le!(bytes, u16)),
        DataType::Int16 => tensor(shape, &from_le!(bytes, i16)),
        DataType::Uint32 => tensor(shape, &from_le!(bytes, u32)),
        DataType::Int32 => tensor(shape, &from_le!(bytes, i32)),
        DataType::Uint64 => tensor(shape, &from_le!(bytes, u64)),
        DataType::Int64 => tensor(shape, &from_le!(bytes, i64)),
        DataType::Fp16 => {
            let v: Vec<f16> = from_le!(bytes, u16)
                .into_iter()
                .map(f16::from_bits)
                .collect();
            tensor(shape, &v)
        }
        DataType::Fp32 => tensor(shape, &from_le!(bytes, f32)),
        DataType::Fp64 => tensor(shape, &from_le!(bytes, f64)),
    }
}

/// Narrows typed 32-bit contents to a smaller integer type, naming the first value out of range.
fn narrow<S: Copy + std::fmt::Display, T: TryFrom<S>>(
    name: &str,
    dt: DataType,
    v: &[S],
) -> Result<Vec<T>, RuntimeError> {
    v.iter()
        .map(|&x| {
            T::try_from(x).map_err(|_| {
                RuntimeError::invalid(format!("input '{name}': value {x} does not fit in {dt}"))
            })
        })
        .collect()
}

/// Builds a tensor from typed contents, checking the element count.
fn from_contents(
    spec: &TensorSpec,
    shape: &[usize],
    n: usize,
    c: &InferTensorContents,
) -> Result<Tensor, RuntimeError> {
    let name = spec.name.as_str();
    let dt = spec.datatype;
    let check = |got: usize, field: &str| -> Result<(), RuntimeError> {
        if got == n {
            Ok(())
        } else {
            Err(RuntimeError::invalid(format!(
                "input '{name}' has {got} values in contents.{field} but its shape {} needs {n}",
                shape_str(&shape.iter().map(|&d| d as i64).collect::<Vec<_>>())
            )))
        }
    };
    match dt {
        DataType::Bool => {
            check(c.bool_contents.len(), "bool_contents")?;
            tensor(shape, &c.bool_contents)
        }
        DataType::Int8 => {
            check(c.int_contents.len(), "int_contents")?;
            tensor(shape, &narrow::<i32, i8>(name, dt, &c.int_contents)?)
        }
        DataType::Int16 => {
            check(c.int_contents.len(), "int_contents")?;
            tensor(shape, &narrow::<i32, i16>(name, dt, &c.int_contents)?)
        }
        DataType::Int32 => {
            check(c.int_contents.len(), "int_contents")?;
            tensor(shape, &c.int_contents)
        }
        DataType::Int64 => {
            check(c.int64_contents.len(), "int64_contents")?;
            tensor(shape, &c.int64_contents)
        }
        DataType::Uint8 => {
            check(c.uint_contents.len(), "uint_contents")?;
            tensor(shape, &narrow::<u32, u8>(name, dt, &c.uint_contents)?)
        }
        DataType::Uint16 => {
            check(c.uint_contents.len(), "uint_contents")?;
            tensor(shape, &narrow::<u32, u16>(name, dt, &c.uint_contents)?)
        }
        DataType::Uint32 => {
            check(c.uint_contents.len(), "uint_contents")?;
            tensor(shape, &c.uint_contents)
        }
        DataType::Uint64 => {
            check(c.uint64_contents.len(), "uint64_contents")?;
            tensor(shape, &c.uint64_contents)
        }
        DataType::Fp32 => {
            check(c.fp32_contents.len(), "fp32_contents")?;
            tensor(shape, &c.fp32_contents)
        }
        DataType::Fp64 => {
            check(c.fp64_contents.len(), "fp64_contents")?;
            tensor(shape, &c.fp64_contents)
        }
        DataType::Fp16 => Err(RuntimeError::invalid(format!(
            "input '{name}' is FP16, which has no typed contents field: send it in raw_input_contents"
        ))),
    }
}

/// Validates a request against the model's signature and returns its inputs in graph order.
pub fn decode_inputs(
    model: &str,
    sig: &Signature,
    req: &ModelInferRequest,
) -> Result<TVec<TValue>, RuntimeError> {
    if req.inputs.len() != sig.inputs.len() {
        let want: Vec<&str> = sig.inputs.iter().map(|s| s.name.as_str()).collect();
        return Err(RuntimeError::invalid(format!(
            "expected {} inputs but got {} inputs for model '{model}' (inputs: {})",
            sig.inputs.len(),
            req.inputs.len(),
            want.join(", ")
        )));
    }
    let raw = !req.raw_input_contents.is_empty();
    if raw && req.raw_input_contents.len() != req.inputs.len() {
        return Err(RuntimeError::invalid(format!(
            "raw_input_contents has {} entries but the request has {} inputs: send one raw entry per input, in input order",
            req.raw_input_contents.len(),
            req.inputs.len()
        )));
    }
    let mut slots: Vec<Option<TValue>> = vec![None; sig.inputs.len()];
    for (i, input) in req.inputs.iter().enumerate() {
        let Some(pos) = sig.inputs.iter().position(|s| s.name == input.name) else {
            return Err(RuntimeError::invalid(format!(
                "unexpected inference input '{}' for model '{model}' (inputs: {})",
                input.name,
                sig.inputs
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        if slots[pos].is_some() {
            return Err(RuntimeError::invalid(format!(
                "input '{}' appears twice in the request",
                input.name
            )));
        }
        let spec = &sig.inputs[pos];
        match DataType::from_name(&input.datatype) {
            Some(dt) if dt == spec.datatype => {}
            _ => {
                return Err(RuntimeError::invalid(format!(
                    "inference input '{}' data-type is '{}', but model '{model}' expects '{}'",
                    input.name, input.datatype, spec.datatype
                )));
            }
        }
        if !spec.accepts(&input.shape) {
            return Err(RuntimeError::invalid(format!(
                "unexpected shape for input '{}' for model '{model}'. Expected {}, got {}",
                input.name,
                shape_str(&spec.shape),
                shape_str(&input.shape)
            )));
        }
        let n = element_count(&input.name, &input.shape)?;
        let shape: Vec<usize> = input.shape.iter().map(|&d| d as usize).collect();
        let t = if raw {
            if input.contents.is_some() {
                return Err(RuntimeError::invalid(format!(
                    "input '{}' has both contents and raw_input_contents: use one or the other",
                    input.name
                )));
            }
            let bytes = &req.raw_input_contents[i];
            let need = n.saturating_mul(spec.datatype.size());
            if bytes.len() != need {
                return Err(RuntimeError::invalid(format!(
                    "input '{}' raw data has {} bytes but shape {} of {} needs {need}",
                    input.name,
                    bytes.len(),
                    shape_str(&input.shape),
                    spec.datatype
                )));
            }
            from_raw(spec.datatype, &shape, bytes)?
        } else {
            let Some(contents) = &input.contents else {
                return Err(RuntimeError::invalid(format!(
                    "input '{}' has no data: set contents or raw_input_contents",
                    input.name
                )));
            };
            from_contents(spec, &shape, n, contents)?
        };
        slots[pos] = Some(t.into_tvalue());
    }
    // Every slot is filled: counts matched and each name was placed once.
    Ok(slots.into_iter().flatten().collect())
}

/// Builds the response: outputs in graph order (or the requested subset), as raw contents, as
/// Triton answers.
pub fn encode_outputs(
    model: &str,
    version: &str,
    sig: &Signature,
    req: &ModelInferRequest,
    outputs: TVec<TValue>,
) -> Result<ModelInferResponse, RuntimeError> {
    let mut wanted: Vec<usize> = Vec::new();
    if req.outputs.is_empty() {
        wanted.extend(0..sig.outputs.len().min(outputs.len()));
    } else {
        for o in &req.outputs {
            let Some(pos) = sig.outputs.iter().position(|s| s.name == o.name) else {
                return Err(RuntimeError::invalid(format!(
                    "unexpected inference output '{}' for model '{model}' (outputs: {})",
                    o.name,
                    sig.outputs
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            wanted.push(pos);
        }
    }
    let mut resp = ModelInferResponse {
        model_name: model.to_string(),
        model_version: version.to_string(),
        id: req.id.clone(),
        ..Default::default()
    };
    for pos in wanted {
        let (Some(spec), Some(value)) = (sig.outputs.get(pos), outputs.get(pos)) else {
            continue;
        };
        let dt = DataType::from_datum_type(value.datum_type()).ok_or_else(|| {
            RuntimeError::Execution {
                model: model.to_string(),
                reason: format!(
                    "output '{}' has unsupported element type {:?}",
                    spec.name,
                    value.datum_type()
                ),
            }
        })?;
        resp.outputs.push(InferOutputTensor {
            name: spec.name.clone(),
            datatype: dt.name().to_string(),
            shape: value.shape().iter().map(|&d| d as i64).collect(),
            ..Default::default()
        });
        resp.raw_output_contents.push(le_bytes(value));
    }
    Ok(resp)
}

/// A tensor's elements as little-endian bytes.
fn le_bytes(t: &Tensor) -> Vec<u8> {
    // tract stores elements in native order; only big-endian hosts need a swap.
    #[cfg(target_endian = "little")]
    {
        t.as_bytes().to_vec()
    }
    #[cfg(target_endian = "big")]
    {
        let size = t.datum_type().size_of();
        let mut v = t.as_bytes().to_vec();
        for c in v.chunks_exact_mut(size) {
            c.reverse();
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelmesh_proto::inference::model_infer_request::InferInputTensor;

    fn sig() -> Signature {
        Signature {
            inputs: vec![TensorSpec {
                name: "x".into(),
                datatype: DataType::Fp32,
                shape: vec![-1, 2],
            }],
            outputs: vec![TensorSpec {
                name: "y".into(),
                datatype: DataType::Fp32,
                shape: vec![-1, 2],
            }],
        }
    }

    fn req(
        datatype: &str,
        shape: Vec<i64>,
        contents: Option<InferTensorContents>,
        raw: Vec<Vec<u8>>,
    ) -> ModelInferRequest {
        ModelInferRequest {
            model_name: "m".into(),
            inputs: vec![InferInputTensor {
                name: "x".into(),
                datatype: datatype.into(),
                shape,
                contents,
                ..Default::default()
            }],
            raw_input_contents: raw,
            ..Default::default()
        }
    }

    #[test]
    fn typed_and_raw_inputs_decode_to_the_same_tensor() {
        let typed = req(
            "FP32",
            vec![1, 2],
            Some(InferTensorContents {
                fp32_contents: vec![1.0, 2.5],
                ..Default::default()
            }),
            vec![],
        );
        let raw_bytes: Vec<u8> = [1.0f32, 2.5].iter().flat_map(|v| v.to_le_bytes()).collect();
        let raw = req("FP32", vec![1, 2], None, vec![raw_bytes]);
        let a = decode_inputs("m", &sig(), &typed).unwrap();
        let b = decode_inputs("m", &sig(), &raw).unwrap();
        assert_eq!(a[0], b[0]);
    }

    #[test]
    fn wrong_shape_names_the_input_and_the_expected_shape() {
        let r = req(
            "FP32",
            vec![1, 3],
            Some(InferTensorContents {
                fp32_contents: vec![1.0; 3],
                ..Default::default()
            }),
            vec![],
        );
        let e = decode_inputs("m", &sig(), &r).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.to_string().contains("'x'") && e.to_string().contains("[-1,2]"),
            "{e}"
        );
    }

    #[test]
    fn wrong_datatype_and_count_are_rejected() {
        let r = req(
            "FP64",
            vec![1, 2],
            Some(InferTensorContents {
                fp64_contents: vec![1.0; 2],
                ..Default::default()
            }),
            vec![],
        );
        assert!(
            decode_inputs("m", &sig(), &r)
                .unwrap_err()
                .to_string()
                .contains("expects 'FP32'")
        );
        let r = req(
            "FP32",
            vec![1, 2],
            Some(InferTensorContents {
                fp32_contents: vec![1.0; 3],
                ..Default::default()
            }),
            vec![],
        );
        assert!(
            decode_inputs("m", &sig(), &r)
                .unwrap_err()
                .to_string()
                .contains("needs 2")
        );
        let r = req("FP32", vec![1, 2], None, vec![vec![0; 7]]);
        assert!(
            decode_inputs("m", &sig(), &r)
                .unwrap_err()
                .to_string()
                .contains("needs 8")
        );
        let r = req("FP32", vec![-1, 2], None, vec![vec![0; 8]]);
        assert!(decode_inputs("m", &sig(), &r).is_err());
    }

    proptest::proptest! {
        #[test]
        fn decoding_never_panics(dt in "[A-Z0-9]{0,6}", shape in proptest::collection::vec(-3i64..5, 0..4),
                                 raw in proptest::collection::vec(proptest::collection::vec(0u8..255, 0..40), 0..3)) {
            let r = req(&dt, shape, None, raw);
            let _ = decode_inputs("m", &sig(), &r);
        }
    }
}
