//! What every HTTP route of the mesh shares (KServe v2 REST and the OpenAI API): `mm-*`
//! headers as gRPC metadata, bodies read within a size and a time, the pod's budget for bodies
//! being read, and gRPC codes as HTTP statuses.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use std::sync::Arc;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

/// The HTTP status for a gRPC code.
pub(crate) fn http_code(c: Code) -> StatusCode {
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

/// gRPC metadata for a REST call: `mm-*` headers, and the name as a vmodel id unless a model id
/// header was given.
pub(crate) fn metadata(headers: &HeaderMap, name: &str) -> Result<MetadataMap, Status> {
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

/// How long a client has to send a whole body (a slow body holds one of the pod's permits).
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The most of an unwanted body read and thrown away after answering, so that a client still
/// sending it reads our answer instead of a reset connection.
const DRAIN_MAX_BYTES: u64 = 64 << 20;

/// Reads and discards what is left of `body` in the background (up to [`DRAIN_MAX_BYTES`]
/// within [`BODY_READ_TIMEOUT`]), keeping nothing: the answer goes out at once, and the client
/// that is still sending receives it.
pub(crate) fn drain(body: axum::body::Body) {
    use http_body_util::BodyExt;
    tokio::spawn(async move {
        let mut body = body;
        let mut seen = 0u64;
        let deadline = tokio::time::Instant::now() + BODY_READ_TIMEOUT;
        while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, body.frame()).await {
            seen += frame.data_ref().map_or(0, |d| d.len() as u64);
            if seen > DRAIN_MAX_BYTES {
                break;
            }
        }
    });
}

/// Reads a body up to `limit` bytes within [`BODY_READ_TIMEOUT`]; a refusal is its HTTP status
/// and the text saying why.
pub(crate) async fn read_body(
    body: axum::body::Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, (StatusCode, String)> {
    let size = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        let text = crate::message_limit::too_large_text(
            &format!(
                "REST body (up to {}x the gRPC message limit)",
                crate::message_limit::REST_BODY_FACTOR
            ),
            size,
            limit,
        );
        (StatusCode::PAYLOAD_TOO_LARGE, text)
    };
    // Refused before a byte is kept when the client says how large it is.
    if size.is_some_and(|n| n > limit as u64) {
        drain(body);
        return Err(too_large());
    }
    match tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err((
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ),
        )),
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => {
            // axum reports a body over the limit as a length-limit error in its source chain.
            let over = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if over {
                Err(too_large())
            } else {
                Err((
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request body: {e}"),
                ))
            }
        }
    }
}

/// The share of the pod's REST body budget a body of `headers`' declared size takes while it
/// is read; `None`: the budget has no room now (answer 429).
pub(crate) fn body_budget(
    headers: &HeaderMap,
    limit: &BodyLimit,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let kib = declared
        .unwrap_or(limit.limit as u64)
        .min(limit.limit as u64)
        .div_ceil(1024)
        .max(1);
    let permit = limit
        .budget
        .clone()
        .try_acquire_many_owned(u32::try_from(kib).unwrap_or(u32::MAX))
        .ok();
    if permit.is_none() {
        metrics::counter!("modelmesh_requests_refused", "limit" => "rest_bodies").increment(1);
    }
    permit
}

/// Why [`body_budget`] refused.
pub(crate) fn budget_full(limit: &BodyLimit) -> Status {
    Status::resource_exhausted(format!(
        "request bodies being read on this pod already take its REST body budget ({} MiB); retry later",
        limit.budget_kib / 1024
    ))
}

/// What REST bodies may take.
#[derive(Clone)]
pub struct BodyLimit {
    /// The largest body, in bytes.
    pub(crate) limit: usize,
    /// The most its tensors may take decoded (the gRPC message limit: the request must be
    /// sent to the runtime as one message).
    pub(crate) max_decoded: u64,
    /// KiB of bodies being read at once on this pod.
    pub(crate) budget: Arc<tokio::sync::Semaphore>,
    pub(crate) budget_kib: usize,
}
