//! KServe v2 REST JSON ⇄ the gRPC messages: `{"inputs": [{"name", "shape", "datatype",
//! "data"}]}` to a `ModelInferRequest` with typed contents, and a `ModelInferResponse` (typed or
//! raw outputs) back to JSON. Shared by every REST endpoint so they accept and answer the same.

use crate::inference::{
    InferTensorContents, ModelInferRequest, ModelInferResponse, ModelMetadataResponse,
    model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
struct JsonInferRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<JsonInput>,
    #[serde(default)]
    outputs: Vec<JsonOutput>,
}

#[derive(Debug, Deserialize)]
struct JsonInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    data: Value,
}

#[derive(Debug, Deserialize)]
struct JsonOutput {
    name: String,
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

fn contents(input: &JsonInput) -> Result<InferTensorContents, String> {
    let mut flat = Vec::new();
    flatten(&input.data, &mut flat);
    // Checked: found by fuzzing, a huge shape overflowed the product (a panic in debug builds,
    // a wrong element count in release ones).
    let Some(need) = input.shape.iter().try_fold(1i64, |a, d| a.checked_mul(*d)) else {
        return Err(format!(
            "input '{}': shape {:?} has more elements than can be counted",
            input.name, input.shape
        ));
    };
    if input.shape.iter().any(|d| *d < 0) || need != flat.len() as i64 {
        return Err(format!(
            "input '{}' has {} values but its shape {:?} needs {need}",
            input.name,
            flat.len(),
            input.shape
        ));
    }
    let dt = input.datatype.as_str();
    let bad = |v: &Value| format!("input '{}': {v} is not a valid {dt} value", input.name);
    let mut c = InferTensorContents::default();
    for v in flat {
        match dt {
            "BOOL" => c.bool_contents.push(match v {
                Value::Bool(b) => *b,
                Value::Number(n) if n.as_u64() == Some(0) => false,
                Value::Number(n) if n.as_u64() == Some(1) => true,
                _ => return Err(bad(v)),
            }),
            "INT8" | "INT16" | "INT32" => c.int_contents.push(
                v.as_i64()
                    .and_then(|x| i32::try_from(x).ok())
                    .ok_or_else(|| bad(v))?,
            ),
            "INT64" => c.int64_contents.push(v.as_i64().ok_or_else(|| bad(v))?),
            "UINT8" | "UINT16" | "UINT32" => c.uint_contents.push(
                v.as_u64()
                    .and_then(|x| u32::try_from(x).ok())
                    .ok_or_else(|| bad(v))?,
            ),
            "UINT64" => c.uint64_contents.push(v.as_u64().ok_or_else(|| bad(v))?),
            "FP32" => c
                .fp32_contents
                .push(v.as_f64().ok_or_else(|| bad(v))? as f32),
            "FP64" => c.fp64_contents.push(v.as_f64().ok_or_else(|| bad(v))?),
            "BYTES" => c
                .bytes_contents
                .push(v.as_str().ok_or_else(|| bad(v))?.as_bytes().to_vec()),
            other => {
                return Err(format!(
                    "input '{}' has unsupported datatype '{other}' for JSON",
                    input.name
                ));
            }
        }
    }
    Ok(c)
}

/// Parses a KServe v2 JSON inference body into a request for `model` (and `version`).
pub fn request_from_json(
    model: &str,
    version: &str,
    body: &[u8],
) -> Result<ModelInferRequest, String> {
    let parsed: JsonInferRequest = serde_json::from_slice(body).map_err(|e| {
        format!(
            "request body is not a valid KServe v2 inference request: {e} (expected {{\"inputs\": [{{\"name\", \"shape\", \"datatype\", \"data\"}}]}})"
        )
    })?;
    let inputs = parsed
        .inputs
        .iter()
        .map(|i| {
            Ok(InferInputTensor {
                name: i.name.clone(),
                datatype: i.datatype.clone(),
                shape: i.shape.clone(),
                contents: Some(contents(i)?),
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

fn typed_values(c: &InferTensorContents) -> Vec<Value> {
    let mut v: Vec<Value> = Vec::new();
    v.extend(c.bool_contents.iter().map(|x| json!(x)));
    v.extend(c.int_contents.iter().map(|x| json!(x)));
    v.extend(c.int64_contents.iter().map(|x| json!(x)));
    v.extend(c.uint_contents.iter().map(|x| json!(x)));
    v.extend(c.uint64_contents.iter().map(|x| json!(x)));
    v.extend(c.fp32_contents.iter().map(|x| json!(x)));
    v.extend(c.fp64_contents.iter().map(|x| json!(x)));
    v.extend(
        c.bytes_contents
            .iter()
            .map(|x| json!(String::from_utf8_lossy(x))),
    );
    v
}

/// Renders a response as KServe v2 JSON (raw or typed outputs).
pub fn response_to_json(resp: &ModelInferResponse) -> Value {
    let outputs: Vec<Value> = resp
        .outputs
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let data = match resp.raw_output_contents.get(i) {
                Some(raw) => raw_to_values(&o.datatype, raw),
                None => o.contents.as_ref().map(typed_values).unwrap_or_default(),
            };
            json!({ "name": o.name, "datatype": o.datatype, "shape": o.shape, "data": data })
        })
        .collect();
    let mut v = json!({ "model_name": resp.model_name, "model_version": resp.model_version, "outputs": outputs });
    if !resp.id.is_empty() {
        v["id"] = json!(resp.id);
    }
    v
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
