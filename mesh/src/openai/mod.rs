//! The OpenAI-compatible API on the REST port: `POST /v1/chat/completions`, `/v1/completions`,
//! `/v1/embeddings` and `GET /v1/models`. The body's `model` names the vmodel (or, with an
//! `mm-model-id` header, the header names the model); the call is routed as every other call
//! (route/), to a copy anywhere in the cluster, and the runtime's answer is relayed as it comes.

pub mod error;
pub mod relay;
pub mod request;

use crate::http_request::{BodyLimit, body_budget, budget_full, read_body};
use crate::route::Router;
use axum::Json;
use axum::extract::{FromRef, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use modelmesh_proto::openai;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;
use tonic::Status;

/// Model types the OpenAI API lists (`GET /v1/models`): the LLM formats a runtime serves.
pub const LLM_MODEL_TYPES: &[&str] = &["gguf"];

/// The OpenAI routes, for a state that holds the router and the body limit.
pub fn routes<S>() -> axum::Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<Router>: FromRef<S>,
    BodyLimit: FromRef<S>,
{
    axum::Router::new()
        .route(
            "/v1/chat/completions",
            post(
                |State(r): State<Arc<Router>>, State(l): State<BodyLimit>, h: HeaderMap, b| async move {
                    call(&r, openai::CHAT_COMPLETIONS, &h, b, &l).await
                },
            ),
        )
        .route(
            "/v1/completions",
            post(
                |State(r): State<Arc<Router>>, State(l): State<BodyLimit>, h: HeaderMap, b| async move {
                    call(&r, openai::COMPLETIONS, &h, b, &l).await
                },
            ),
        )
        .route(
            "/v1/embeddings",
            post(
                |State(r): State<Arc<Router>>, State(l): State<BodyLimit>, h: HeaderMap, b| async move {
                    call(&r, openai::EMBEDDINGS, &h, b, &l).await
                },
            ),
        )
        .route("/v1/models", get(list_models))
        .route("/v1/models/{model}", get(get_model))
}

/// One OpenAI call: the body read within the pod's limits, its `model` and `stream` read, the
/// call routed, the answer relayed.
async fn call(
    router: &Router,
    method: &str,
    headers: &HeaderMap,
    body: axum::body::Body,
    limit: &BodyLimit,
) -> Response {
    let started = Instant::now();
    let Some(budget) = body_budget(headers, limit) else {
        crate::http_request::drain(body);
        return error::response(&budget_full(limit), None);
    };
    let body = match read_body(body, headers, limit.limit).await {
        Ok(b) => b,
        Err((code, text)) => return error::with_status(code, &text),
    };
    drop(budget);
    let header_model = headers.contains_key("mm-model-id");
    let head = match request::parse(&body, header_model) {
        Ok(h) => h,
        Err(e) => return error::response(&Status::invalid_argument(e.message), e.param),
    };
    let md = match crate::http_request::metadata(headers, &head.model) {
        Ok(m) => m,
        Err(s) => return error::response(&s, None),
    };
    if let Err(s) = crate::hop::refuse_hop_metadata(&md) {
        return error::response(&s, None);
    }
    let label = if header_model {
        headers
            .get("mm-model-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    } else {
        head.model.clone()
    };
    let resp = match router.openai(method, md, body).await {
        Ok(r) => r,
        Err(s) => {
            let param = (s.code() == tonic::Code::NotFound).then_some("model");
            return error::response(&s, param);
        }
    };
    let (md, held, _) = resp.into_parts();
    let status = md
        .get(openai::STATUS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::OK);
    let content_type = md
        .get(openai::CONTENT_TYPE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let sse = status.is_success() && content_type.starts_with("text/event-stream");
    let mut out = Response::new(axum::body::Body::from_stream(relay::Relay::new(
        held, sse, label, started,
    )));
    *out.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(&content_type) {
        out.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    if sse {
        // Proxies in front must pass each event on as it comes.
        out.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        out.headers_mut()
            .insert("x-accel-buffering", HeaderValue::from_static("no"));
    }
    out
}

/// A vmodel as an OpenAI model object.
fn model_object(id: &str, owner: &str) -> serde_json::Value {
    json!({
        "id": id,
        "object": "model",
        "created": 0,
        "owned_by": if owner.is_empty() { "modelmesh" } else { owner },
    })
}

/// The model format of a registered type: `mt:gguf:1|pv:...` (as the controller and `up`
/// register) or a bare `gguf` (through the API).
pub fn model_format(model_type: &str) -> &str {
    let t = model_type.strip_prefix("mt:").unwrap_or(model_type);
    let t = t.split('|').next().unwrap_or(t);
    t.split(':').next().unwrap_or(t)
}

/// Whether the vmodel's active model is an LLM.
fn is_llm(router: &Router, active: &str) -> bool {
    router
        .mesh()
        .registry
        .get(active)
        .is_some_and(|(r, _)| LLM_MODEL_TYPES.contains(&model_format(&r.model_type)))
}

/// `GET /v1/models`: the vmodels whose active model is an LLM, in OpenAI's list shape.
async fn list_models(State(r): State<Arc<Router>>) -> Response {
    let mut data: Vec<serde_json::Value> = r
        .mesh()
        .vmodels
        .list()
        .into_iter()
        .filter(|(_, vm)| is_llm(&r, &vm.active))
        .map(|(id, vm)| model_object(&id, &vm.owner))
        .collect();
    data.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    Json(json!({ "object": "list", "data": data })).into_response()
}

/// `GET /v1/models/{model}`: one vmodel.
async fn get_model(State(r): State<Arc<Router>>, Path(model): Path<String>) -> Response {
    match r.mesh().vmodels.get(&model) {
        Some((vm, _)) if is_llm(&r, &vm.active) => {
            Json(model_object(&model, &vm.owner)).into_response()
        }
        _ => error::response(
            &Status::not_found(format!("The model '{model}' does not exist")),
            Some("model"),
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn model_formats() {
        for (t, f) in [
            ("mt:gguf", "gguf"),
            ("mt:gguf:1", "gguf"),
            ("mt:gguf:1|pv:openai", "gguf"),
            ("gguf", "gguf"),
            ("mt:onnx", "onnx"),
        ] {
            assert_eq!(super::model_format(t), f, "{t}");
        }
    }
}
