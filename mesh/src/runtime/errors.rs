//! How to read a runtime's (or a peer's) failure where its gRPC code alone does not say: a
//! call whose connection broke carries no status of its own, and Triton and MLServer report a
//! model they no longer hold in words. Every such text is read here and nowhere else.

use crate::error::MeshError;
use tonic::{Code, Status};

/// Whether a call failed because the connection to the other side broke mid-call (the server
/// crashed or went away): such answers carry no gRPC status of their own.
pub fn connection_lost(s: &Status) -> bool {
    let m = s.message();
    (s.code() == Code::Unknown
        && (m.contains("transport error") || m.contains("h2 protocol error")))
        || (s.code() == Code::Cancelled && m == "operation was canceled")
}

/// Whether a runtime error means it no longer has the model (Triton's and MLServer's forms too).
pub fn model_vanished(s: &Status) -> bool {
    let m = s.message();
    match s.code() {
        Code::NotFound => true,
        Code::Unavailable => m.contains("Request for unknown model"),
        Code::InvalidArgument => m.starts_with("Model ") && m.contains("not found"),
        _ => false,
    }
}

/// KServe v2's streaming method, whose errors come as messages in the stream.
pub const STREAM_INFER: &str = "inference.GRPCInferenceService/ModelStreamInfer";

/// Whether a response on a `ModelStreamInfer` stream says the runtime no longer has the model:
/// Triton answers stream requests for an unknown model with a message whose `error_message`
/// (field 1) reads "Request for unknown model: ...", not with a status. Returns that text.
pub fn stream_reply_vanished(method: &str, reply: &[u8]) -> Option<String> {
    if method != STREAM_INFER {
        return None;
    }
    let text = crate::idpath::read_string(reply, &[1]).ok().flatten()?;
    text.starts_with("Request for unknown model")
        .then_some(text)
}

/// Whether an HTTP runtime's error answer says it does not hold the model: llama.cpp's router
/// answers 400 "model is not loaded" for a model whose process is gone (or was never started)
/// and 400 "model 'x' not found" for one it does not list.
pub fn http_model_vanished(status: u16, message: &str) -> bool {
    (status == 400 || status == 404)
        && (message == "model is not loaded"
            || (message.starts_with("model '") && message.ends_with("' not found")))
}

/// Whether an HTTP runtime's error answer means it could not reach the model's process (the
/// process is dying or its port is gone): the runtime is down for this model, not the request
/// wrong.
pub fn http_model_unreachable(status: u16, message: &str) -> bool {
    status >= 500 && message.starts_with("proxy error")
}

/// A failed SPI call as the mesh's error: a lost connection or UNAVAILABLE is the runtime being
/// down (retryable elsewhere), anything else the runtime's own answer.
pub fn runtime_err(what: &str, id: &str, s: tonic::Status) -> MeshError {
    // A runtime that died mid-call shows as a transport error with no status of its own.
    let lost = connection_lost(&s);
    match s.code() {
        _ if lost => MeshError::Unavailable(format!(
            "runtime connection lost during {what} of {id}: {}",
            s.message()
        )),
        Code::Unavailable => MeshError::Unavailable(format!(
            "runtime unavailable during {what} of {id}: {}",
            s.message()
        )),
        c => MeshError::Runtime(c, format!("{what} of {id} failed: {}", s.message())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_cpp_router_words() {
        assert!(http_model_vanished(400, "model is not loaded"));
        assert!(http_model_vanished(400, "model 'm-1' not found"));
        assert!(!http_model_vanished(400, "'messages' is required"));
        assert!(!http_model_vanished(500, "model is not loaded"));
        assert!(http_model_unreachable(
            500,
            "proxy error: Could not establish connection"
        ));
        assert!(!http_model_unreachable(400, "proxy error: x"));
    }

    #[test]
    fn a_lost_model_in_each_runtimes_words() {
        // modelmesh runtime
        assert!(model_vanished(&Status::not_found(
            "Request for unknown model: 'm-1' is not found"
        )));
        // Triton 2.x (UNAVAILABLE, "has no available versions" / "is not found")
        assert!(model_vanished(&Status::unavailable(
            "Request for unknown model: 'm-1' has no available versions"
        )));
        assert!(model_vanished(&Status::unavailable(
            "Request for unknown model: 'm-1' is not found"
        )));
        // MLServer (INVALID_ARGUMENT "Model m-1 with version  not found")
        assert!(model_vanished(&Status::invalid_argument(
            "Model m-1 with version  not found"
        )));
        // Not a lost model: the runtime is down, or the request is wrong.
        assert!(!model_vanished(&Status::unavailable("connection refused")));
        assert!(!model_vanished(&Status::invalid_argument(
            "unexpected inference input 'x' for model 'm-1'"
        )));
        assert!(!model_vanished(&Status::internal("x")));
    }

    #[test]
    fn a_lost_model_in_a_stream_reply() {
        // ModelStreamInferResponse { error_message: "..." }: field 1, length-delimited.
        let reply = |text: &str| {
            let mut m = vec![0x0a, text.len() as u8];
            m.extend_from_slice(text.as_bytes());
            m
        };
        let lost = reply("Request for unknown model: 'm-1' is not found");
        assert!(stream_reply_vanished(STREAM_INFER, &lost).is_some());
        assert!(stream_reply_vanished("other.Service/Method", &lost).is_none());
        assert!(stream_reply_vanished(STREAM_INFER, &reply("input 'x' is wrong")).is_none());
        // An answer (field 2, infer_response) and garbage are not lost models.
        assert!(stream_reply_vanished(STREAM_INFER, &[0x12, 0x00]).is_none());
        assert!(stream_reply_vanished(STREAM_INFER, &[0xff]).is_none());
    }

    #[test]
    fn a_broken_connection_is_recognised() {
        assert!(connection_lost(&Status::unknown(
            "transport error: connection reset"
        )));
        assert!(connection_lost(&Status::unknown(
            "h2 protocol error: error reading a body from connection"
        )));
        assert!(connection_lost(&Status::cancelled(
            "operation was canceled"
        )));
        assert!(!connection_lost(&Status::cancelled("the client went away")));
        assert!(!connection_lost(&Status::unknown(
            "model raised an exception"
        )));
        let e = runtime_err("load", "m", Status::unknown("transport error: eof"));
        assert!(matches!(e, MeshError::Unavailable(_)), "{e}");
        let e = runtime_err("load", "m", Status::invalid_argument("bad model"));
        assert!(
            matches!(e, MeshError::Runtime(Code::InvalidArgument, _)),
            "{e}"
        );
    }
}
