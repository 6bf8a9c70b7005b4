//! KServe v2 REST (port 8008) translated to the runtime's gRPC through the same routing as the
//! gRPC port: `{name}` is a vmodel id, or a model id when the `mm-model-id` header is set;
//! other `mm-*` headers become gRPC metadata.

use crate::proxy::Router;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRef, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use modelmesh_proto::inference::{ModelInferResponse, ModelMetadataRequest, ModelMetadataResponse};
use modelmesh_proto::kserve_json;
use prost::Message;
use serde_json::json;
use std::sync::Arc;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

const INFER: &str = "inference.GRPCInferenceService/ModelInfer";
const METADATA: &str = "inference.GRPCInferenceService/ModelMetadata";

fn http_code(c: Code) -> StatusCode {
    match c {
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::AlreadyExists => StatusCode::CONFLICT,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error(s: Status) -> Response {
    (http_code(s.code()), Json(json!({ "error": s.message() }))).into_response()
}

/// gRPC metadata for a REST call: `mm-*` headers, and the name as a vmodel id unless a model id
/// header was given.
fn metadata(headers: &HeaderMap, name: &str) -> Result<MetadataMap, Status> {
    let mut md = MetadataMap::new();
    for (k, v) in headers {
        let key = k.as_str();
        if !key.starts_with("mm-") || key.ends_with("-bin") {
            continue;
        }
        let val = v
            .to_str()
            .map_err(|_| Status::invalid_argument(format!("header {key} is not ASCII")))?;
        let key = tonic::metadata::AsciiMetadataKey::from_bytes(key.as_bytes()).map_err(|_| {
            Status::invalid_argument(format!("header {key} is not a valid metadata key"))
        })?;
        md.append(
            key,
            val.parse()
                .map_err(|_| Status::invalid_argument("invalid header value"))?,
        );
    }
    if md.get("mm-model-id").is_none() {
        md.insert(
            "mm-vmodel-id",
            name.parse().map_err(|_| {
                Status::invalid_argument(format!("model name '{name}' is not ASCII"))
            })?,
        );
    }
    Ok(md)
}

async fn infer(
    router: &Router,
    headers: &HeaderMap,
    name: &str,
    version: &str,
    body: &[u8],
) -> Response {
    let mut req = match kserve_json::request_from_json(name, version, body) {
        Ok(r) => r,
        Err(e) => return error(Status::invalid_argument(e)),
    };
    // The id travels in headers; the runtime's id field is filled in by injection.
    req.model_name.clear();
    let md = match metadata(headers, name) {
        Ok(m) => m,
        Err(s) => return error(s),
    };
    match router
        .unary(
            INFER,
            md,
            req.encode_to_vec().into(),
            crate::proxy::Hop::External,
        )
        .await
    {
        Ok((_, bytes)) => match ModelInferResponse::decode(bytes.as_ref()) {
            Ok(resp) => Json(kserve_json::response_to_json(&resp)).into_response(),
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

/// The largest REST body, in bytes.
#[derive(Clone, Copy)]
struct BodyLimit(usize);

impl FromRef<RestState> for Arc<Router> {
    fn from_ref(s: &RestState) -> Self {
        s.router.clone()
    }
}

impl FromRef<RestState> for BodyLimit {
    fn from_ref(s: &RestState) -> Self {
        s.body_limit
    }
}

/// The answer to a body that could not be read: 413 naming the limit and the setting that
/// raises it when it was too large.
fn body_error(rejection: BytesRejection, headers: &HeaderMap, limit: BodyLimit) -> Response {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        let size = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let text = crate::message_limit::too_large_text(
            &format!(
                "REST body (up to {}x the gRPC message limit)",
                crate::message_limit::REST_BODY_FACTOR
            ),
            size,
            limit.0,
        );
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            Json(json!({ "error": text })),
        )
            .into_response()
    } else {
        (
            rejection.status(),
            Json(json!({ "error": format!("cannot read the request body: {rejection}") })),
        )
            .into_response()
    }
}

async fn model_infer(
    State(r): State<Arc<Router>>,
    State(limit): State<BodyLimit>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match body {
        Ok(body) => infer(&r, &headers, &name, "", &body).await,
        Err(e) => body_error(e, &headers, limit),
    }
}

async fn model_infer_version(
    State(r): State<Arc<Router>>,
    State(limit): State<BodyLimit>,
    headers: HeaderMap,
    Path((name, version)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match body {
        Ok(body) => infer(&r, &headers, &name, &version, &body).await,
        Err(e) => body_error(e, &headers, limit),
    }
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
        .unary(METADATA, md, req.into(), crate::proxy::Hop::External)
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

/// The REST router; `extra` routes (e.g. `modelmesh up`'s status page) are merged in. Bodies
/// over `body_limit` bytes are answered 413.
pub fn router(r: Arc<Router>, extra: Option<axum::Router>, body_limit: usize) -> axum::Router {
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
        .with_state(RestState {
            router: r,
            body_limit: BodyLimit(body_limit),
        });
    let app = match extra {
        Some(e) => app.merge(e),
        None => app,
    };
    app.layer(axum::extract::DefaultBodyLimit::max(body_limit))
}

/// Serves REST on `listener` (plain TCP or [`crate::tls::TlsListener`]) until `shutdown`
/// resolves.
pub async fn serve<L>(
    listener: L,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
