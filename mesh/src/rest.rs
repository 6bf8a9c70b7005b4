//! KServe v2 REST (port 8008) translated to the runtime's gRPC through the same routing as the
//! gRPC port: `{name}` is a vmodel id, or a model id when the `mm-model-id` header is set;
//! other `mm-*` headers become gRPC metadata.

use crate::http_request::{
    BodyLimit, body_budget, budget_full, drain, http_code, metadata, read_body,
};
use crate::route::Router;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRef, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use modelmesh_proto::inference::{ModelInferResponse, ModelMetadataRequest, ModelMetadataResponse};
use modelmesh_proto::kserve_json;
use prost::Message;
use serde_json::json;
use std::sync::Arc;
use tonic::Status;

const INFER: &str = "inference.GRPCInferenceService/ModelInfer";
const METADATA: &str = "inference.GRPCInferenceService/ModelMetadata";

fn error(s: Status) -> Response {
    (http_code(s.code()), Json(json!({ "error": s.message() }))).into_response()
}

/// One KServe v2 inference over REST. The model is resolved from the URL and headers and this
/// pod's permit taken before the body is read: a body for a model that does not exist is never
/// read, and bodies being read count against the pod's in-flight limit.
async fn infer(
    router: &Router,
    headers: &HeaderMap,
    name: &str,
    version: &str,
    body: axum::body::Body,
    limit: &BodyLimit,
) -> Response {
    // Anything refused before the body is read: answered at once, the body thrown away.
    let refused = |s: Status, body: axum::body::Body| {
        drain(body);
        error(s)
    };
    let md = match metadata(headers, name) {
        Ok(m) => m,
        Err(s) => return refused(s, body),
    };
    if let Err(s) = crate::hop::refuse_hop_metadata(&md) {
        return refused(s, body);
    }
    if let Err(s) = router.check_target(&md).await {
        return refused(s, body);
    }
    // Bodies being read hold their size of the pod's body budget (not its request permits:
    // a slow sender must not lock out requests); a body over the budget's room waits nowhere.
    let Some(_budget) = body_budget(headers, limit) else {
        return refused(budget_full(limit), body);
    };
    let body = match read_body(body, headers, limit.limit).await {
        Ok(b) => b,
        Err((code, text)) => return (code, Json(json!({ "error": text }))).into_response(),
    };
    let mut req =
        match kserve_json::request_from_json_within(name, version, &body, limit.max_decoded) {
            Ok(r) => r,
            Err(e) => return error(Status::invalid_argument(e)),
        };
    drop(body);
    // The id travels in headers; the runtime's id field is filled in by injection.
    req.model_name.clear();
    let encoded = Bytes::from(req.encode_to_vec());
    drop(req);
    match router
        .unary(INFER, md, encoded, crate::hop::Hop::External)
        .await
    {
        Ok((_, bytes)) => match ModelInferResponse::decode(bytes.as_ref()) {
            Ok(resp) => Json(kserve_json::ResponseJson(&resp)).into_response(),
            Err(e) => error(Status::internal(format!(
                "runtime answered an invalid ModelInferResponse: {e}"
            ))),
        },
        Err(s) => error(s),
    }
}

/// What the REST handlers share: the router and the body limit.
#[derive(Clone)]
struct RestState {
    router: Arc<Router>,
    body_limit: BodyLimit,
}

impl FromRef<RestState> for Arc<Router> {
    fn from_ref(s: &RestState) -> Self {
        s.router.clone()
    }
}

impl FromRef<RestState> for BodyLimit {
    fn from_ref(s: &RestState) -> Self {
        s.body_limit.clone()
    }
}

async fn model_infer(
    State(r): State<Arc<Router>>,
    State(limit): State<BodyLimit>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Body,
) -> Response {
    infer(&r, &headers, &name, "", body, &limit).await
}

async fn model_infer_version(
    State(r): State<Arc<Router>>,
    State(limit): State<BodyLimit>,
    headers: HeaderMap,
    Path((name, version)): Path<(String, String)>,
    body: axum::body::Body,
) -> Response {
    infer(&r, &headers, &name, &version, body, &limit).await
}

async fn model_metadata(
    State(r): State<Arc<Router>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let md = match metadata(&headers, &name) {
        Ok(m) => m,
        Err(s) => return error(s),
    };
    let req = ModelMetadataRequest::default().encode_to_vec();
    match r
        .unary(METADATA, md, req.into(), crate::hop::Hop::External)
        .await
    {
        Ok((_, bytes)) => match ModelMetadataResponse::decode(bytes.as_ref()) {
            Ok(mut m) => {
                // Clients know the model by the name they asked for.
                m.name = name;
                Json(kserve_json::metadata_to_json(&m)).into_response()
            }
            Err(e) => error(Status::internal(format!(
                "runtime answered invalid metadata: {e}"
            ))),
        },
        Err(s) => error(s),
    }
}

async fn model_ready(
    State(r): State<Arc<Router>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let id = match headers.get("mm-model-id").and_then(|v| v.to_str().ok()) {
        Some(id) => id.to_string(),
        None => match r.mesh().resolve_vmodel(&name).await {
            Ok(id) => id,
            Err(e) => return error(e.into()),
        },
    };
    let loaded = r.mesh().local.status(&id) == Some(crate::local::CopyStatus::Loaded);
    let code = if loaded {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    (code, Json(json!({ "name": name, "ready": loaded }))).into_response()
}

/// What REST bodies may take on this pod.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// The largest body, in bytes (larger: 413).
    pub body_limit: usize,
    /// The most a body's tensors may take decoded, in bytes.
    pub max_decoded: u64,
    /// KiB of bodies being read at once (more: 429).
    pub budget_kib: usize,
}

impl BodyLimits {
    /// Limits for a sidecar with gRPC message limit `max_message` and, if known, a container
    /// memory limit: bodies of 4x the message limit but at most an eighth of the memory, and a
    /// quarter of the memory for all bodies being read (16 bodies of the limit without one).
    pub fn for_sidecar(max_message: usize, memory_limit: Option<u64>) -> Self {
        let body_limit = crate::message_limit::rest_body_limit(max_message, memory_limit);
        let budget = match memory_limit {
            Some(m) => (m / 4).max(body_limit as u64),
            None => (body_limit as u64).saturating_mul(16),
        };
        BodyLimits {
            body_limit,
            max_decoded: max_message as u64,
            budget_kib: usize::try_from(budget / 1024)
                .unwrap_or(usize::MAX)
                .min(tokio::sync::Semaphore::MAX_PERMITS),
        }
    }
}

/// The REST router; `extra` routes (e.g. `modelmesh up`'s status page) are merged in. Bodies
/// over `limits.body_limit` bytes are answered 413.
pub fn router(r: Arc<Router>, extra: Option<axum::Router>, limits: BodyLimits) -> axum::Router {
    let app = axum::Router::new()
        .route(
            "/v2/health/live",
            get(|| async { Json(json!({ "live": true })) }),
        )
        .route(
            "/v2/health/ready",
            get(|| async { Json(json!({ "ready": true })) }),
        )
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/infer", post(model_infer))
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(model_infer_version),
        )
        .merge(crate::openai::routes())
        .with_state(RestState {
            router: r,
            body_limit: BodyLimit {
                limit: limits.body_limit,
                max_decoded: limits.max_decoded,
                budget: Arc::new(tokio::sync::Semaphore::new(limits.budget_kib)),
                budget_kib: limits.budget_kib,
            },
        });
    let app = match extra {
        Some(e) => app.merge(e),
        None => app,
    };
    // Handlers read bodies themselves, with `body_limit`.
    app.layer(axum::extract::DefaultBodyLimit::disable())
}

/// Serves REST on `listener` (plain TCP or [`crate::tls::TlsListener`]) until `shutdown`
/// resolves, with the connection limits of [`crate::server_limits`].
pub async fn serve<L>(
    listener: L,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
{
    crate::server_limits::serve_http(listener, app, shutdown).await
}
