//! Failures as OpenAI clients expect them: `{"error": {"message", "type", "param", "code"}}`
//! with the HTTP status OpenAI uses for the same case, and `Retry-After` where waiting helps.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tonic::{Code, Status};

/// Seconds a client is told to wait before retrying a model that is loading or has no healthy
/// copy now.
pub const RETRY_AFTER_SECS: u64 = 1;

/// The HTTP status, OpenAI error type and code for a gRPC code.
pub fn classify(code: Code) -> (StatusCode, &'static str, Option<&'static str>) {
    match code {
        Code::NotFound => (
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("model_not_found"),
        ),
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
            (StatusCode::BAD_REQUEST, "invalid_request_error", None)
        }
        Code::ResourceExhausted => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            Some("rate_limit_exceeded"),
        ),
        Code::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            Some("model_unavailable"),
        ),
        Code::DeadlineExceeded => (
            StatusCode::GATEWAY_TIMEOUT,
            "timeout_error",
            Some("timeout"),
        ),
        Code::Unimplemented => (
            StatusCode::NOT_IMPLEMENTED,
            "invalid_request_error",
            Some("not_supported"),
        ),
        Code::PermissionDenied => (StatusCode::FORBIDDEN, "permission_error", None),
        Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "authentication_error", None),
        Code::Cancelled => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("cancelled"),
        ),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None),
    }
}

/// The error object (the body of an error answer, or of a stream's error event).
pub fn body(s: &Status, param: Option<&str>) -> serde_json::Value {
    let (_, kind, code) = classify(s.code());
    json!({ "error": { "message": s.message(), "type": kind, "param": param, "code": code } })
}

/// The answer for a failed call.
pub fn response(s: &Status, param: Option<&str>) -> Response {
    let (status, _, _) = classify(s.code());
    let mut resp = (status, Json(body(s, param))).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    resp
}

/// An answer with an HTTP status of its own (body limits: 413, 408).
pub fn with_status(status: StatusCode, message: &str) -> Response {
    let kind = if status.is_server_error() {
        "server_error"
    } else {
        "invalid_request_error"
    };
    (
        status,
        Json(json!({ "error": { "message": message, "type": kind, "param": null, "code": null } })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_statuses_and_codes() {
        assert_eq!(classify(Code::NotFound).0, StatusCode::NOT_FOUND);
        assert_eq!(classify(Code::NotFound).2, Some("model_not_found"));
        assert_eq!(classify(Code::InvalidArgument).0, StatusCode::BAD_REQUEST);
        assert_eq!(
            classify(Code::ResourceExhausted).0,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            classify(Code::Unavailable).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            classify(Code::DeadlineExceeded).0,
            StatusCode::GATEWAY_TIMEOUT
        );
        let r = response(&Status::unavailable("loading"), None);
        assert_eq!(r.headers().get(header::RETRY_AFTER).unwrap(), "1");
        let b = body(&Status::not_found("model x not found"), Some("model"));
        assert_eq!(b["error"]["code"], "model_not_found");
        assert_eq!(b["error"]["param"], "model");
        assert_eq!(b["error"]["type"], "invalid_request_error");
    }
}
