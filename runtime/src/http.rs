//! KServe v2 REST (HTTP/JSON): health, server and model metadata, readiness, inference with JSON
//! `data`, and Triton's repository endpoints. JSON tensors are converted to and from the same
//! protobuf messages the gRPC API uses, so both share one code path.

use crate::error::RuntimeError;
use crate::infer::infer;
use crate::manager::ModelManager;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use modelmesh_proto::kserve_json;
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

async fn run_json(
    mgr: &ModelManager,
    model: &str,
    version: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let req = kserve_json::request_from_json(model, version, body)
        .map_err(RuntimeError::InvalidRequest)?;
    let resp = infer(mgr, req).await?;
    Ok(Json(kserve_json::ResponseJson(&resp)).into_response())
}

async fn model_infer(
    State(mgr): State<Shared>,
    Path(model): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    run_json(&mgr, &model, "", &body).await
}

async fn model_infer_version(
    State(mgr): State<Shared>,
    Path((model, version)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
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
