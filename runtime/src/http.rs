//! KServe v2 REST (HTTP/JSON): health, server and model metadata, readiness, inference with JSON
//! `data`, and Triton's repository endpoints. JSON tensors are converted to and from the same
//! protobuf messages the gRPC API uses, so both share one code path.

use crate::datatype::DataType;
use crate::error::RuntimeError;
use crate::infer::infer;
use crate::manager::ModelManager;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use modelmesh_proto::inference::{
    InferTensorContents, ModelInferRequest, ModelInferResponse,
    model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

type Shared = Arc<ModelManager>;

/// An error rendered as KServe's `{"error": "..."}` body.
struct ApiError(RuntimeError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code =
            StatusCode::from_u16(self.0.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, Json(json!({ "error": self.0.to_string() }))).into_response()
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        ApiError(e)
    }
}

/// The REST router over a shared model manager.
pub fn router(mgr: Arc<ModelManager>) -> Router {
    Router::new()
        .route("/v2", get(server_metadata))
        .route(
            "/v2/health/live",
            get(|| async { Json(json!({ "live": true })) }),
        )
        .route(
            "/v2/health/ready",
            get(|| async { Json(json!({ "ready": true })) }),
        )
        .route("/v2/models/{model}", get(model_metadata))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(model_metadata_version),
        )
        .route("/v2/models/{model}/ready", get(model_ready))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(model_ready_version),
        )
        .route("/v2/models/{model}/infer", post(model_infer))
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(model_infer_version),
        )
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/repository/models/{model}/load", post(repository_load))
        .route(
            "/v2/repository/models/{model}/unload",
            post(repository_unload),
        )
        .with_state(mgr)
}

async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": crate::grpc::SERVER_NAME,
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": crate::grpc::EXTENSIONS,
    }))
}

fn metadata_json(mgr: &ModelManager, model: &str, version: &str) -> Result<Json<Value>, ApiError> {
    let m = mgr.get(model, version)?;
    let md = crate::metadata::model_metadata(&m);
    let t =
        |ts: &[modelmesh_proto::inference::model_metadata_response::TensorMetadata]| -> Vec<Value> {
            ts.iter()
                .map(|t| json!({ "name": t.name, "datatype": t.datatype, "shape": t.shape }))
                .collect()
        };
    Ok(Json(json!({
        "name": md.name, "versions": md.versions, "platform": md.platform,
        "inputs": t(&md.inputs), "outputs": t(&md.outputs),
    })))
}

async fn model_metadata(
    State(mgr): State<Shared>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    metadata_json(&mgr, &model, "")
}

async fn model_metadata_version(
    State(mgr): State<Shared>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    metadata_json(&mgr, &model, &version)
}

fn ready_response(mgr: &ModelManager, model: &str, version: &str) -> Response {
    let ready = mgr.is_ready(model, version);
    // KServe v2: the status code carries the answer (200 ready, 4xx not ready).
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    (code, Json(json!({ "name": model, "ready": ready }))).into_response()
}

async fn model_ready(State(mgr): State<Shared>, Path(model): Path<String>) -> Response {
    ready_response(&mgr, &model, "")
}

async fn model_ready_version(
    State(mgr): State<Shared>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    ready_response(&mgr, &model, &version)
}

/// KServe v2 JSON inference request.
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

/// Converts JSON `data` to typed contents for the declared datatype.
fn contents_from_json(input: &JsonInput) -> Result<InferTensorContents, RuntimeError> {
    let dt = DataType::from_name(&input.datatype).ok_or_else(|| {
        RuntimeError::invalid(format!(
            "input '{}' has unsupported datatype '{}'",
            input.name, input.datatype
        ))
    })?;
    let mut flat = Vec::new();
    flatten(&input.data, &mut flat);
    let bad = |v: &Value| {
        RuntimeError::invalid(format!(
            "input '{}': {v} is not a valid {dt} value",
            input.name
        ))
    };
    let mut c = InferTensorContents::default();
    for v in flat {
        match dt {
            DataType::Bool => c.bool_contents.push(match v {
                Value::Bool(b) => *b,
                Value::Number(n) if n.as_u64() == Some(0) => false,
                Value::Number(n) if n.as_u64() == Some(1) => true,
                _ => return Err(bad(v)),
            }),
            DataType::Int8 | DataType::Int16 | DataType::Int32 => {
                let x = v
                    .as_i64()
                    .and_then(|x| i32::try_from(x).ok())
                    .ok_or_else(|| bad(v))?;
                c.int_contents.push(x)
            }
            DataType::Int64 => c.int64_contents.push(v.as_i64().ok_or_else(|| bad(v))?),
            DataType::Uint8 | DataType::Uint16 | DataType::Uint32 => {
                let x = v
                    .as_u64()
                    .and_then(|x| u32::try_from(x).ok())
                    .ok_or_else(|| bad(v))?;
                c.uint_contents.push(x)
            }
            DataType::Uint64 => c.uint64_contents.push(v.as_u64().ok_or_else(|| bad(v))?),
            DataType::Fp32 => c
                .fp32_contents
                .push(v.as_f64().ok_or_else(|| bad(v))? as f32),
            DataType::Fp64 => c.fp64_contents.push(v.as_f64().ok_or_else(|| bad(v))?),
            DataType::Fp16 => {
                return Err(RuntimeError::invalid(format!(
                    "input '{}': FP16 is not supported over JSON; use gRPC raw_input_contents",
                    input.name
                )));
            }
        }
    }
    Ok(c)
}

/// Converts a JSON request body into the protobuf request.
fn to_proto(
    model: &str,
    version: &str,
    body: JsonInferRequest,
) -> Result<ModelInferRequest, RuntimeError> {
    let inputs = body
        .inputs
        .iter()
        .map(|i| {
            Ok(InferInputTensor {
                name: i.name.clone(),
                datatype: i.datatype.clone(),
                shape: i.shape.clone(),
                contents: Some(contents_from_json(i)?),
                ..Default::default()
            })
        })
        .collect::<Result<_, RuntimeError>>()?;
    Ok(ModelInferRequest {
        model_name: model.to_string(),
        model_version: version.to_string(),
        id: body.id.unwrap_or_default(),
        inputs,
        outputs: body
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

macro_rules! le_values {
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

/// Decodes one raw output into JSON numbers.
fn raw_to_json(dt: DataType, bytes: &[u8]) -> Vec<Value> {
    match dt {
        DataType::Bool => bytes.iter().map(|&b| json!(b != 0)).collect(),
        DataType::Uint8 => bytes.iter().map(|&b| json!(b)).collect(),
        DataType::Int8 => bytes.iter().map(|&b| json!(b as i8)).collect(),
        DataType::Uint16 => le_values!(bytes, u16),
        DataType::Int16 => le_values!(bytes, i16),
        DataType::Uint32 => le_values!(bytes, u32),
        DataType::Int32 => le_values!(bytes, i32),
        DataType::Uint64 => le_values!(bytes, u64),
        DataType::Int64 => le_values!(bytes, i64),
        DataType::Fp16 => le_values!(bytes, u16)
            .into_iter()
            .map(|v| {
                json!(tract_onnx::prelude::f16::from_bits(v.as_u64().unwrap_or(0) as u16).to_f32())
            })
            .collect(),
        DataType::Fp32 => le_values!(bytes, f32),
        DataType::Fp64 => le_values!(bytes, f64),
    }
}

fn response_json(resp: ModelInferResponse) -> Value {
    let outputs: Vec<Value> = resp
        .outputs
        .iter()
        .zip(resp.raw_output_contents.iter())
        .map(|(o, raw)| {
            let data = DataType::from_name(&o.datatype)
                .map(|dt| raw_to_json(dt, raw))
                .unwrap_or_default();
            json!({ "name": o.name, "datatype": o.datatype, "shape": o.shape, "data": data })
        })
        .collect();
    let mut v = json!({ "model_name": resp.model_name, "model_version": resp.model_version, "outputs": outputs });
    if !resp.id.is_empty() {
        v["id"] = json!(resp.id);
    }
    v
}

async fn run_json(
    mgr: &ModelManager,
    model: &str,
    version: &str,
    body: &[u8],
) -> Result<Json<Value>, ApiError> {
    let parsed: JsonInferRequest = serde_json::from_slice(body).map_err(|e| {
        RuntimeError::invalid(format!(
            "request body is not a valid KServe v2 inference request: {e} (expected {{\"inputs\": [{{\"name\", \"shape\", \"datatype\", \"data\"}}]}})"
        ))
    })?;
    let req = to_proto(model, version, parsed)?;
    Ok(Json(response_json(infer(mgr, req).await?)))
}

async fn model_infer(
    State(mgr): State<Shared>,
    Path(model): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    run_json(&mgr, &model, "", &body).await
}

async fn model_infer_version(
    State(mgr): State<Shared>,
    Path((model, version)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    run_json(&mgr, &model, &version, &body).await
}

async fn repository_index(State(mgr): State<Shared>) -> Result<Json<Value>, ApiError> {
    let models: Vec<Value> = mgr
        .index(false)?
        .into_iter()
        .map(|m| {
            let mut v = json!({ "name": m.name });
            if !m.version.is_empty() {
                v["version"] = json!(m.version);
            }
            if !m.state.is_empty() {
                v["state"] = json!(m.state);
            }
            if !m.reason.is_empty() {
                v["reason"] = json!(m.reason);
            }
            v
        })
        .collect();
    Ok(Json(Value::Array(models)))
}

async fn repository_load(
    State(mgr): State<Shared>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    mgr.load(&model).await?;
    Ok(Json(json!({})))
}

async fn repository_unload(
    State(mgr): State<Shared>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    mgr.unload(&model).await?;
    Ok(Json(json!({})))
}
