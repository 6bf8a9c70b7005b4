//! Building KServe v2 requests from the examples' JSON and reading responses back as JSON.
#![allow(dead_code)]

use modelmesh_proto::inference::{
    InferTensorContents, ModelInferRequest, ModelInferResponse,
    model_infer_request::InferInputTensor,
};
use serde_json::{Value, json};

/// A request with typed `contents` for the JSON inputs of an example.
pub fn typed_request(model: &str, inputs: &Value) -> ModelInferRequest {
    let mut req = ModelInferRequest {
        model_name: model.into(),
        ..Default::default()
    };
    for i in inputs.as_array().expect("inputs") {
        let dt = i["datatype"].as_str().expect("datatype");
        let data = i["data"].as_array().expect("data");
        let mut c = InferTensorContents::default();
        match dt {
            "FP32" => {
                c.fp32_contents = data.iter().map(|v| v.as_f64().expect("f") as f32).collect()
            }
            "FP64" => c.fp64_contents = data.iter().map(|v| v.as_f64().expect("f")).collect(),
            "INT32" => {
                c.int_contents = data.iter().map(|v| v.as_i64().expect("i") as i32).collect()
            }
            "INT64" => c.int64_contents = data.iter().map(|v| v.as_i64().expect("i")).collect(),
            "BOOL" => c.bool_contents = data.iter().map(|v| v.as_bool().expect("b")).collect(),
            other => panic!("unsupported datatype {other} in example"),
        }
        req.inputs.push(InferInputTensor {
            name: i["name"].as_str().expect("name").into(),
            datatype: dt.into(),
            shape: i["shape"]
                .as_array()
                .expect("shape")
                .iter()
                .map(|v| v.as_i64().expect("dim"))
                .collect(),
            contents: Some(c),
            ..Default::default()
        });
    }
    req
}

/// The same request with `raw_input_contents` instead of typed contents.
pub fn raw_request(model: &str, inputs: &Value) -> ModelInferRequest {
    let mut req = typed_request(model, inputs);
    for t in req.inputs.iter_mut() {
        let c = t.contents.take().expect("contents");
        let mut bytes = Vec::new();
        c.fp32_contents
            .iter()
            .for_each(|v| bytes.extend(v.to_le_bytes()));
        c.fp64_contents
            .iter()
            .for_each(|v| bytes.extend(v.to_le_bytes()));
        c.int_contents
            .iter()
            .for_each(|v| bytes.extend(v.to_le_bytes()));
        c.int64_contents
            .iter()
            .for_each(|v| bytes.extend(v.to_le_bytes()));
        c.bool_contents.iter().for_each(|v| bytes.push(*v as u8));
        req.raw_input_contents.push(bytes);
    }
    req
}

/// Decodes a response's raw outputs into `[{name, datatype, shape, data}]`.
pub fn response_json(resp: &ModelInferResponse) -> Value {
    let mut out = Vec::new();
    for (o, raw) in resp.outputs.iter().zip(&resp.raw_output_contents) {
        let data: Vec<Value> = match o.datatype.as_str() {
            "FP32" => raw
                .chunks_exact(4)
                .map(|c| json!(f32::from_le_bytes(c.try_into().expect("4"))))
                .collect(),
            "FP64" => raw
                .chunks_exact(8)
                .map(|c| json!(f64::from_le_bytes(c.try_into().expect("8"))))
                .collect(),
            "INT32" => raw
                .chunks_exact(4)
                .map(|c| json!(i32::from_le_bytes(c.try_into().expect("4"))))
                .collect(),
            "INT64" => raw
                .chunks_exact(8)
                .map(|c| json!(i64::from_le_bytes(c.try_into().expect("8"))))
                .collect(),
            "BOOL" => raw.iter().map(|b| json!(*b != 0)).collect(),
            other => panic!("unexpected output datatype {other}"),
        };
        out.push(json!({"name": o.name, "datatype": o.datatype, "shape": o.shape, "data": data}));
    }
    Value::Array(out)
}

/// Asserts that outputs match the expected ones (floats within a relative 1e-5).
pub fn assert_outputs_match(got: &Value, want: &Value) {
    let (g, w) = (got.as_array().expect("got"), want.as_array().expect("want"));
    assert_eq!(g.len(), w.len(), "output count: got {got}, want {want}");
    for (go, wo) in g.iter().zip(w) {
        assert_eq!(go["name"], wo["name"]);
        assert_eq!(go["datatype"], wo["datatype"]);
        assert_eq!(go["shape"], wo["shape"], "shape of {}", wo["name"]);
        let (gd, wd) = (
            go["data"].as_array().expect("data"),
            wo["data"].as_array().expect("data"),
        );
        assert_eq!(gd.len(), wd.len());
        for (a, b) in gd.iter().zip(wd) {
            match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) if a.is_f64() || b.is_f64() => {
                    assert!(
                        (x - y).abs() <= 1e-5 * y.abs().max(1e-3),
                        "{}: {x} vs {y}",
                        wo["name"]
                    )
                }
                _ => assert_eq!(a, b, "{}", wo["name"]),
            }
        }
    }
}
