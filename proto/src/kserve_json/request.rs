//! A KServe v2 JSON request body read straight into a `ModelInferRequest`.

use crate::inference::{
    InferTensorContents, ModelInferRequest,
    model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;

// The body is read into typed structures directly: `data` stays a borrowed slice of the body
// until the tensor's datatype is known, then its numbers go straight into the typed vector.
// (Parsing into a `serde_json::Value` tree first cost about 14 bytes of memory per byte of body:
// one 16 MB request raised a sidecar's RSS by 360 MB.)
#[derive(Debug, Deserialize)]
struct JsonInferRequest<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(borrow)]
    inputs: Vec<JsonInput<'a>>,
    #[serde(default)]
    outputs: Vec<JsonOutput>,
}

#[derive(Debug, Deserialize)]
struct JsonInput<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Debug, Deserialize)]
struct JsonOutput {
    name: String,
}

/// The element types JSON inputs may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dt {
    Bool,
    Int32,
    Int64,
    Uint32,
    Uint64,
    Fp32,
    Fp64,
    Bytes,
}

impl Dt {
    fn of(datatype: &str) -> Option<Dt> {
        Some(match datatype {
            "BOOL" => Dt::Bool,
            "INT8" | "INT16" | "INT32" => Dt::Int32,
            "INT64" => Dt::Int64,
            "UINT8" | "UINT16" | "UINT32" => Dt::Uint32,
            "UINT64" => Dt::Uint64,
            "FP32" => Dt::Fp32,
            "FP64" => Dt::Fp64,
            "BYTES" => Dt::Bytes,
            _ => return None,
        })
    }
}

impl Dt {
    /// Bytes one element takes once decoded (a BYTES element: its vector's header; its
    /// content is counted as it is read).
    fn element_bytes(self) -> u64 {
        match self {
            Dt::Bool => 1,
            Dt::Int32 | Dt::Uint32 | Dt::Fp32 => 4,
            Dt::Int64 | Dt::Uint64 | Dt::Fp64 => 8,
            Dt::Bytes => std::mem::size_of::<Vec<u8>>() as u64,
        }
    }
}

/// Where one tensor's values go: nested arrays are flattened as they are read.
struct Fill<'c> {
    dt: Dt,
    datatype: &'c str,
    out: &'c mut InferTensorContents,
    count: &'c mut u64,
    /// The element count the shape needs; more is refused as soon as it is seen.
    need: u64,
    /// Decoded bytes so far (all inputs of the request), and the most allowed.
    decoded: &'c mut u64,
    max_decoded: u64,
}

impl Fill<'_> {
    fn reborrow(&mut self) -> Fill<'_> {
        Fill {
            dt: self.dt,
            datatype: self.datatype,
            out: self.out,
            count: self.count,
            need: self.need,
            decoded: self.decoded,
            max_decoded: self.max_decoded,
        }
    }

    /// Counts `bytes` more decoded, refusing the request past its limit.
    fn spend<E: de::Error>(&mut self, bytes: u64) -> Result<(), E> {
        *self.decoded += bytes;
        if *self.decoded > self.max_decoded {
            return Err(E::custom(format_args!(
                "the decoded tensors take more than the request limit of {} bytes",
                self.max_decoded
            )));
        }
        Ok(())
    }

    fn bad<E: de::Error>(&self, what: fmt::Arguments<'_>) -> E {
        E::custom(format_args!(
            "{what} is not a valid {} value",
            self.datatype
        ))
    }

    fn counted<E: de::Error>(&mut self) -> Result<(), E> {
        *self.count += 1;
        if *self.count > self.need {
            return Err(E::custom(format_args!(
                "more values than the shape needs ({})",
                self.need
            )));
        }
        Ok(())
    }

    fn int<E: de::Error>(&mut self, v: i128) -> Result<(), E> {
        self.counted()?;
        let c = &mut *self.out;
        let ok = match self.dt {
            Dt::Bool if v == 0 || v == 1 => {
                c.bool_contents.push(v == 1);
                true
            }
            Dt::Int32 => i32::try_from(v).map(|x| c.int_contents.push(x)).is_ok(),
            Dt::Int64 => i64::try_from(v).map(|x| c.int64_contents.push(x)).is_ok(),
            Dt::Uint32 => u32::try_from(v).map(|x| c.uint_contents.push(x)).is_ok(),
            Dt::Uint64 => u64::try_from(v).map(|x| c.uint64_contents.push(x)).is_ok(),
            Dt::Fp32 => {
                c.fp32_contents.push(v as f32);
                true
            }
            Dt::Fp64 => {
                c.fp64_contents.push(v as f64);
                true
            }
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(self.bad(format_args!("{v}")))
        }
    }
}

impl<'de> DeserializeSeed<'de> for Fill<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Fill<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} values, or nested arrays of them", self.datatype)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self.reborrow())?.is_some() {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(mut self, v: bool) -> Result<(), E> {
        if self.dt != Dt::Bool {
            return Err(self.bad(format_args!("{v}")));
        }
        self.counted()?;
        self.out.bool_contents.push(v);
        Ok(())
    }

    fn visit_i64<E: de::Error>(mut self, v: i64) -> Result<(), E> {
        self.int(i128::from(v))
    }

    fn visit_u64<E: de::Error>(mut self, v: u64) -> Result<(), E> {
        self.int(i128::from(v))
    }

    fn visit_f64<E: de::Error>(mut self, v: f64) -> Result<(), E> {
        match self.dt {
            Dt::Fp32 => {
                self.counted()?;
                self.out.fp32_contents.push(v as f32);
                Ok(())
            }
            Dt::Fp64 => {
                self.counted()?;
                self.out.fp64_contents.push(v);
                Ok(())
            }
            _ => Err(self.bad(format_args!("{v}"))),
        }
    }

    fn visit_str<E: de::Error>(mut self, v: &str) -> Result<(), E> {
        if self.dt != Dt::Bytes {
            return Err(self.bad(format_args!("{v:?}")));
        }
        self.counted()?;
        self.spend(v.len() as u64 + self.dt.element_bytes())?;
        self.out.bytes_contents.push(v.as_bytes().to_vec());
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(self.bad(format_args!("null")))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.bad(format_args!("an object")))
    }
}

fn contents(
    input: &JsonInput<'_>,
    decoded: &mut u64,
    max_decoded: u64,
) -> Result<InferTensorContents, String> {
    // Checked: found by fuzzing, a huge shape overflowed the product (a panic in debug builds,
    // a wrong element count in release ones).
    let Some(need) = input.shape.iter().try_fold(1i64, |a, d| a.checked_mul(*d)) else {
        return Err(format!(
            "input '{}': shape {:?} has more elements than can be counted",
            input.name, input.shape
        ));
    };
    if input.shape.iter().any(|d| *d < 0) {
        return Err(format!(
            "input '{}': shape {:?} has a negative dimension",
            input.name, input.shape
        ));
    }
    let dt = Dt::of(&input.datatype).ok_or_else(|| {
        format!(
            "input '{}' has unsupported datatype '{}' for JSON",
            input.name, input.datatype
        )
    })?;
    let need = u64::try_from(need).unwrap_or(0);
    // Fixed-size elements: the whole tensor is known before one is read.
    if dt != Dt::Bytes {
        let bytes = need.saturating_mul(dt.element_bytes());
        if decoded.saturating_add(bytes) > max_decoded {
            return Err(format!(
                "input '{}': shape {:?} of {} takes {bytes} bytes decoded, more than the request limit of {max_decoded} bytes",
                input.name, input.shape, input.datatype
            ));
        }
        *decoded += bytes;
    }
    let mut c = InferTensorContents::default();
    // Exact room, no doubling: the count is bounded by the check above (or, for BYTES, by
    // the body that must hold at least two bytes per element).
    let room = usize::try_from(need.min(input.data.get().len() as u64)).unwrap_or(0);
    match dt {
        Dt::Bool => c.bool_contents.reserve_exact(room),
        Dt::Int32 => c.int_contents.reserve_exact(room),
        Dt::Int64 => c.int64_contents.reserve_exact(room),
        Dt::Uint32 => c.uint_contents.reserve_exact(room),
        Dt::Uint64 => c.uint64_contents.reserve_exact(room),
        Dt::Fp32 => c.fp32_contents.reserve_exact(room),
        Dt::Fp64 => c.fp64_contents.reserve_exact(room),
        Dt::Bytes => c.bytes_contents.reserve_exact(room / 2),
    }
    let mut count = 0u64;
    let fill = Fill {
        dt,
        datatype: &input.datatype,
        out: &mut c,
        count: &mut count,
        need,
        decoded,
        max_decoded,
    };
    let mut d = serde_json::Deserializer::from_str(input.data.get());
    fill.deserialize(&mut d)
        .map_err(|e| format!("input '{}': {e}", input.name))?;
    if count != need {
        return Err(format!(
            "input '{}' has {count} values but its shape {:?} needs {need}",
            input.name, input.shape
        ));
    }
    Ok(c)
}

/// Parses a KServe v2 JSON inference body into a request for `model` (and `version`).
pub fn request_from_json(
    model: &str,
    version: &str,
    body: &[u8],
) -> Result<ModelInferRequest, String> {
    request_from_json_within(model, version, body, u64::MAX)
}

/// [`request_from_json`], refusing a body whose tensors would take more than `max_decoded`
/// bytes once decoded (a short JSON number or string can stand for many more bytes).
pub fn request_from_json_within(
    model: &str,
    version: &str,
    body: &[u8],
    max_decoded: u64,
) -> Result<ModelInferRequest, String> {
    let parsed: JsonInferRequest<'_> = serde_json::from_slice(body).map_err(|e| {
        format!(
            "request body is not a valid KServe v2 inference request: {e} (expected {{\"inputs\": [{{\"name\", \"shape\", \"datatype\", \"data\"}}]}})"
        )
    })?;
    let mut decoded = 0u64;
    let inputs = parsed
        .inputs
        .iter()
        .map(|i| {
            Ok(InferInputTensor {
                name: i.name.clone(),
                datatype: i.datatype.clone(),
                shape: i.shape.clone(),
                contents: Some(contents(i, &mut decoded, max_decoded)?),
                ..Default::default()
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(ModelInferRequest {
        model_name: model.to_string(),
        model_version: version.to_string(),
        id: parsed.id.unwrap_or_default(),
        inputs,
        outputs: parsed
            .outputs
            .into_iter()
            .map(|o| InferRequestedOutputTensor {
                name: o.name,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
}
