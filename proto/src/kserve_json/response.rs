//! A `ModelInferResponse` and model metadata as KServe v2 JSON.

use crate::inference::{InferTensorContents, ModelInferResponse, ModelMetadataResponse};
use serde_json::{Value, json};

macro_rules! le {
    ($bytes:expr, $t:ty) => {
        $bytes
            .chunks_exact(std::mem::size_of::<$t>())
            .map(|c| {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(c);
                json!(<$t>::from_le_bytes(a))
            })
            .collect::<Vec<Value>>()
    };
}

fn f16_to_f32(bits: u16) -> f32 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((bits >> 10) & 0x1f);
    let frac = f32::from(bits & 0x3ff);
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        31 if frac == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f32.powi(e - 15),
    }
}

/// Decodes raw little-endian tensor bytes of a datatype into JSON values.
pub fn raw_to_values(datatype: &str, raw: &[u8]) -> Vec<Value> {
    match datatype {
        "BOOL" => raw.iter().map(|&b| json!(b != 0)).collect(),
        "UINT8" => raw.iter().map(|&b| json!(b)).collect(),
        "INT8" => raw.iter().map(|&b| json!(b as i8)).collect(),
        "UINT16" => le!(raw, u16),
        "INT16" => le!(raw, i16),
        "UINT32" => le!(raw, u32),
        "INT32" => le!(raw, i32),
        "UINT64" => le!(raw, u64),
        "INT64" => le!(raw, i64),
        "FP16" => raw
            .chunks_exact(2)
            .map(|c| json!(f16_to_f32(u16::from_le_bytes([c[0], c[1]]))))
            .collect(),
        "FP32" => le!(raw, f32),
        "FP64" => le!(raw, f64),
        _ => Vec::new(),
    }
}

/// A response as KServe v2 JSON, serialized straight from the tensors: a large output becomes
/// text without a `serde_json::Value` per element in between (about 40 bytes each, which made
/// a 4 MB answer cost 60 MB).
pub struct ResponseJson<'a>(pub &'a ModelInferResponse);

/// One output's values: raw little-endian bytes of a datatype, or typed contents.
enum Data<'a> {
    Raw(&'a str, &'a [u8]),
    Typed(&'a InferTensorContents),
    None,
}

/// Serializes each `$t` of little-endian `$bytes`.
macro_rules! le_seq {
    ($seq:expr, $bytes:expr, $t:ty) => {
        for c in $bytes.chunks_exact(std::mem::size_of::<$t>()) {
            let mut a = [0u8; std::mem::size_of::<$t>()];
            a.copy_from_slice(c);
            $seq.serialize_element(&<$t>::from_le_bytes(a))?;
        }
    };
}

impl serde::Serialize for Data<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(None)?;
        match self {
            Data::Raw(dt, raw) => match *dt {
                "BOOL" => {
                    for b in raw.iter() {
                        seq.serialize_element(&(*b != 0))?;
                    }
                }
                "UINT8" => {
                    for b in raw.iter() {
                        seq.serialize_element(b)?;
                    }
                }
                "INT8" => {
                    for b in raw.iter() {
                        seq.serialize_element(&(*b as i8))?;
                    }
                }
                "UINT16" => le_seq!(seq, raw, u16),
                "INT16" => le_seq!(seq, raw, i16),
                "UINT32" => le_seq!(seq, raw, u32),
                "INT32" => le_seq!(seq, raw, i32),
                "UINT64" => le_seq!(seq, raw, u64),
                "INT64" => le_seq!(seq, raw, i64),
                "FP16" => {
                    for c in raw.chunks_exact(2) {
                        seq.serialize_element(&f16_to_f32(u16::from_le_bytes([c[0], c[1]])))?;
                    }
                }
                "FP32" => le_seq!(seq, raw, f32),
                "FP64" => le_seq!(seq, raw, f64),
                _ => {}
            },
            Data::Typed(c) => {
                for x in &c.bool_contents {
                    seq.serialize_element(x)?;
                }
                for x in &c.int_contents {
                    seq.serialize_element(x)?;
                }
                for x in &c.int64_contents {
                    seq.serialize_element(x)?;
                }
                for x in &c.uint_contents {
                    seq.serialize_element(x)?;
                }
                for x in &c.uint64_contents {
                    seq.serialize_element(x)?;
                }
                for x in &c.fp32_contents {
                    seq.serialize_element(x)?;
                }
                for x in &c.fp64_contents {
                    seq.serialize_element(x)?;
                }
                for x in &c.bytes_contents {
                    seq.serialize_element(&String::from_utf8_lossy(x))?;
                }
            }
            Data::None => {}
        }
        seq.end()
    }
}

impl serde::Serialize for ResponseJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        struct Outputs<'a>(&'a ModelInferResponse);
        struct Output<'a> {
            name: &'a str,
            datatype: &'a str,
            shape: &'a [i64],
            data: Data<'a>,
        }
        impl serde::Serialize for Output<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(4))?;
                m.serialize_entry("name", self.name)?;
                m.serialize_entry("datatype", self.datatype)?;
                m.serialize_entry("shape", self.shape)?;
                m.serialize_entry("data", &self.data)?;
                m.end()
            }
        }
        impl serde::Serialize for Outputs<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let r = self.0;
                let mut seq = s.serialize_seq(Some(r.outputs.len()))?;
                for (i, o) in r.outputs.iter().enumerate() {
                    let data = match (r.raw_output_contents.get(i), &o.contents) {
                        (Some(raw), _) => Data::Raw(&o.datatype, raw),
                        (None, Some(c)) => Data::Typed(c),
                        (None, None) => Data::None,
                    };
                    seq.serialize_element(&Output {
                        name: &o.name,
                        datatype: &o.datatype,
                        shape: &o.shape,
                        data,
                    })?;
                }
                seq.end()
            }
        }
        let r = self.0;
        let mut m = s.serialize_map(None)?;
        if !r.id.is_empty() {
            m.serialize_entry("id", &r.id)?;
        }
        m.serialize_entry("model_name", &r.model_name)?;
        m.serialize_entry("model_version", &r.model_version)?;
        m.serialize_entry("outputs", &Outputs(r))?;
        m.end()
    }
}

/// Renders a response as KServe v2 JSON (raw or typed outputs), as a value.
pub fn response_to_json(resp: &ModelInferResponse) -> Value {
    serde_json::to_value(ResponseJson(resp)).unwrap_or(Value::Null)
}

/// Renders model metadata as KServe v2 JSON.
pub fn metadata_to_json(md: &ModelMetadataResponse) -> Value {
    let t = |ts: &[crate::inference::model_metadata_response::TensorMetadata]| -> Vec<Value> {
        ts.iter()
            .map(|t| json!({ "name": t.name, "datatype": t.datatype, "shape": t.shape }))
            .collect()
    };
    json!({ "name": md.name, "versions": md.versions, "platform": md.platform, "inputs": t(&md.inputs), "outputs": t(&md.outputs) })
}
