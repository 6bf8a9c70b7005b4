//! Serving an OpenAI call on this pod: the runtime speaks HTTP (llama.cpp's router), so the call
//! is posted there with the concrete model id in the body's `model` field, and the answer's
//! bytes come back as a stream as they arrive (server-sent events stay events, never buffered).
//! The answer's HTTP status and content type travel as response metadata, across the internal
//! hop too. An error answer that says the runtime lost the model is a vanished model (reloaded
//! here, as for gRPC runtimes); one that cannot reach the model's process is the runtime down.

use super::Router;
use super::here::RuntimeFailure;
use super::request::Req;
use super::served::{Held, Served};
use crate::limits::CopyPermit;
use crate::runtime::errors::{http_model_unreachable, http_model_vanished};
use crate::runtime::http::{BodyError, ExchangeError, HttpApi};
use bytes::Bytes;
use futures::StreamExt;
use modelmesh_proto::openai;
use std::time::Instant;
use tonic::Status;
use tonic::metadata::MetadataMap;

/// The most of an error answer read from the runtime (its message is all that is kept).
const MAX_ERROR_BODY: usize = 1 << 20;

/// A runtime's HTTP endpoint for OpenAI calls.
#[derive(Debug, Clone)]
pub struct HttpRuntime {
    api: HttpApi,
}

impl HttpRuntime {
    /// The runtime at `addr` (`host:port`).
    pub fn new(addr: &str) -> Result<Self, String> {
        Ok(HttpRuntime {
            api: HttpApi::new(addr)?,
        })
    }
}

/// The `model` field of a JSON object body replaced by `id`, the rest as it was (each other
/// field is kept as its raw text, unvalidated beyond JSON's grammar: a lone `\ud800` escape or
/// nesting deeper than serde_json's tree limit passes through as the client sent it, for the
/// runtime to judge). `None`: the body is not a JSON object.
pub fn with_model(body: &[u8], id: &str) -> Option<Vec<u8>> {
    let mut fields: Vec<(String, &serde_json::value::RawValue)> =
        serde_json::from_slice::<fields::Fields<'_>>(body).ok()?.0;
    let model = serde_json::value::to_raw_value(id).ok()?;
    fields.retain(|(k, _)| k != "model");
    let mut out = Vec::with_capacity(body.len() + id.len() + 16);
    out.extend_from_slice(b"{\"model\":");
    out.extend_from_slice(model.get().as_bytes());
    for (k, v) in fields {
        out.push(b',');
        out.extend_from_slice(serde_json::to_string(&k).ok()?.as_bytes());
        out.push(b':');
        out.extend_from_slice(v.get().as_bytes());
    }
    out.push(b'}');
    Some(out)
}

mod fields {
    //! An object's fields in order, values unparsed.
    use serde::de::{Deserializer, MapAccess, Visitor};
    use serde_json::value::RawValue;

    pub struct Fields<'a>(pub Vec<(String, &'a RawValue)>);

    impl<'de: 'a, 'a> serde::Deserialize<'de> for Fields<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Fields<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                    let mut v = Vec::new();
                    while let Some((k, val)) = m.next_entry::<String, &'de RawValue>()? {
                        v.push((k, val));
                    }
                    Ok(Fields(v))
                }
            }
            d.deserialize_map(V)
        }
    }
}

/// The error text of a runtime's error answer (`{"error": {"message": ...}}`, else the text).
fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Answer {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        message: String,
    }
    match serde_json::from_slice::<Answer>(body) {
        Ok(a) => a.error.message,
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(300)])
            .trim()
            .to_string(),
    }
}

/// Response metadata saying what the runtime answered.
fn answer_metadata(status: u16, content_type: Option<&str>) -> MetadataMap {
    let mut md = MetadataMap::new();
    if let Ok(v) = status.to_string().parse() {
        md.insert(openai::STATUS_HEADER, v);
    }
    if let Some(v) = content_type.and_then(|c| c.parse().ok()) {
        md.insert(openai::CONTENT_TYPE_HEADER, v);
    }
    md
}

impl Router {
    /// Posts the OpenAI call to the runtime's HTTP API and hands back its answer as a stream.
    pub(super) async fn runtime_http(
        &self,
        req: &Req<'_>,
        body: &Bytes,
        id: &str,
        permit: CopyPermit,
    ) -> Result<Served, RuntimeFailure> {
        let Some(rt) = &self.http_runtime else {
            return Err(RuntimeFailure::Other(Status::unimplemented(format!(
                "the runtime of instance {} serves no OpenAI API (it is not an LLM runtime)",
                self.mesh.local.instance_id()
            ))));
        };
        let Some(path) = openai::http_path(req.method) else {
            return Err(RuntimeFailure::Other(Status::unimplemented(format!(
                "unknown OpenAI route {}",
                req.method
            ))));
        };
        let payload = with_model(body, id).ok_or_else(|| {
            RuntimeFailure::Other(Status::invalid_argument("the body is not a JSON object"))
        })?;
        let started = Instant::now();
        let answer = match rt.api.post_json(path, payload, req.deadline).await {
            Ok(a) => a,
            Err(e @ ExchangeError::Deadline) => {
                return Err(RuntimeFailure::Other(Status::deadline_exceeded(
                    e.to_string(),
                )));
            }
            Err(e @ ExchangeError::Request(_)) => {
                return Err(RuntimeFailure::Other(Status::internal(e.to_string())));
            }
            Err(e @ ExchangeError::Unreachable { .. }) => {
                return Err(RuntimeFailure::Down(Status::unavailable(e.to_string())));
            }
        };
        let (status, content_type) = (answer.status, answer.content_type);
        if status >= 400 {
            let text = answer.body.read_up_to(MAX_ERROR_BODY).await;
            let message = error_message(&text);
            if http_model_vanished(status, &message) {
                return Err(RuntimeFailure::Vanished(Status::not_found(format!(
                    "the runtime does not hold model {id}: {message}"
                ))));
            }
            if http_model_unreachable(status, &message) {
                return Err(RuntimeFailure::Down(Status::unavailable(format!(
                    "the runtime cannot reach model {id}'s process: {message}"
                ))));
            }
            // The runtime's own answer to this request (a bad field, a too long prompt).
            drop(permit);
            let md = answer_metadata(status, content_type.as_deref());
            let once = futures::stream::iter([Ok(Bytes::from(text))]).boxed();
            return Ok(Served::Stream(md, Held::new(once)));
        }
        let record = super::here::invoke_recorder(req.method, started);
        let chunks = answer
            .body
            .map(|c| {
                c.map_err(|e| match e {
                    BodyError::Deadline => Status::deadline_exceeded(e.to_string()),
                    BodyError::Broken(_) => Status::unavailable(e.to_string()),
                })
            })
            .boxed();
        // Dropping the stream (the client went away) closes the runtime's connection, which
        // cancels its request and frees its slot.
        Ok(Served::Stream(
            answer_metadata(status, content_type.as_deref()),
            Held::new(chunks).hold(permit).on_end(record),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_field_is_replaced_and_the_rest_kept() {
        let out = with_model(
            br#"{"messages":[{"role":"user","content":"hi \"x\""}],"model":"vm","stream":true}"#,
            "m-1",
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "m-1");
        assert_eq!(v["stream"], true);
        assert_eq!(v["messages"][0]["content"], "hi \"x\"");
        let out = with_model(br#"{"prompt":"p"}"#, "a\"b").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "a\"b");
        assert!(with_model(b"[1,2]", "m").is_none());
        assert!(with_model(b"{", "m").is_none());
    }

    #[test]
    fn other_fields_pass_through_unjudged() {
        // Grammatical JSON that serde_json's tree refuses (a lone surrogate, deep nesting): the
        // splice keeps it byte for byte rather than deciding for the runtime (a fuzz find).
        let out = with_model(br#"{"model":"vm","s":"\ud800"}"#, "m").unwrap();
        assert_eq!(out, br#"{"model":"m","s":"\ud800"}"#);
        let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
        let body = format!(r#"{{"model":"vm","d":{deep}}}"#);
        let out = with_model(body.as_bytes(), "m").unwrap();
        assert_eq!(out, format!(r#"{{"model":"m","d":{deep}}}"#).into_bytes());
    }

    #[test]
    fn error_text_from_json_or_plain() {
        assert_eq!(
            error_message(br#"{"error":{"code":400,"message":"model is not loaded"}}"#),
            "model is not loaded"
        );
        assert_eq!(
            error_message(b"proxy error: Could not establish connection"),
            "proxy error: Could not establish connection"
        );
    }
}
