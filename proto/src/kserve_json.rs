//! KServe v2 REST JSON ⇄ the gRPC messages: `{"inputs": [{"name", "shape", "datatype",
//! "data"}]}` to a `ModelInferRequest` with typed contents, and a `ModelInferResponse` (typed or
//! raw outputs) back to JSON. Shared by every REST endpoint so they accept and answer the same.

use crate::inference::{
    InferTensorContents, ModelInferRequest, ModelInferResponse, ModelMetadataResponse,
    model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Value, json};
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_too_large_to_count_are_refused() {
        let body = br#"{"inputs":[{"name":"b","datatype":"UINT32","shape":[90,7001242390990,702390,70401],"data":[7]}]}"#;
        let e = request_from_json("m", "", body).unwrap_err();
        assert!(e.contains("more elements than can be counted"), "{e}");
    }

    #[test]
    fn decoded_tensors_are_bounded() {
        // 8 bytes per element for each 2 bytes of "0,": refused before it is filled.
        let body =
            br#"{"inputs":[{"name":"x","shape":[100],"datatype":"INT64","data":[0,0,0,0]}]}"#;
        let e = request_from_json_within("m", "", body, 799).unwrap_err();
        assert!(
            e.contains("more than the request limit of 799 bytes"),
            "{e}"
        );
        // BYTES: every element's vector counts.
        let body = br#"{"inputs":[{"name":"b","shape":[40],"datatype":"BYTES","data":["","","","","","","","","","","","","","","","","","","","","","","","","","","","","","","","","","","","","","","",""]}]}"#;
        let e = request_from_json_within("m", "", body, 500).unwrap_err();
        assert!(e.contains("request limit"), "{e}");
        assert!(request_from_json_within("m", "", body, 10_000).is_ok());
    }

    #[test]
    fn json_round_trip_and_errors() {
        let r = request_from_json(
            "m",
            "",
            br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]]}]}"#,
        )
        .unwrap();
        assert_eq!(
            r.inputs[0].contents.as_ref().unwrap().fp32_contents,
            vec![1.0, 2.0, 3.0, 4.0]
        );
        let e = request_from_json(
            "m",
            "",
            br#"{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,2]}]}"#,
        )
        .unwrap_err();
        assert!(e.contains("'x'") && e.contains("needs 3"), "{e}");
        assert!(
            request_from_json("m", "", b"{")
                .unwrap_err()
                .contains("not a valid KServe v2")
        );
        assert!(
            request_from_json(
                "m",
                "",
                br#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT32","data":["a"]}]}"#
            )
            .is_err()
        );
        assert_eq!(raw_to_values("INT64", &5i64.to_le_bytes()), vec![json!(5)]);
        assert_eq!(
            raw_to_values("FP16", &0x3c00u16.to_le_bytes()),
            vec![json!(1.0)]
        );
    }
}
