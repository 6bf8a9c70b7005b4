//! The OpenAI-compatible HTTP API as the mesh routes it. Each route is carried through the mesh
//! as a pseudo gRPC method (the JSON body as its one request message, the answer's bytes as
//! its response stream), so LLM calls take the same path as KServe calls: placement, copies,
//! limits, the internal hop between pods, failover. A runtime that serves them (llama.cpp's
//! router) lists these methods in its runtime status.

/// The pseudo-service's prefix: `mmesh.OpenAI/<Route>`.
pub const SERVICE_PREFIX: &str = "mmesh.OpenAI/";

/// `POST /v1/chat/completions`.
pub const CHAT_COMPLETIONS: &str = "mmesh.OpenAI/ChatCompletions";
/// `POST /v1/completions`.
pub const COMPLETIONS: &str = "mmesh.OpenAI/Completions";
/// `POST /v1/embeddings`.
pub const EMBEDDINGS: &str = "mmesh.OpenAI/Embeddings";

/// Every routed method with its HTTP path on the runtime.
pub const ROUTES: &[(&str, &str)] = &[
    (CHAT_COMPLETIONS, "/v1/chat/completions"),
    (COMPLETIONS, "/v1/completions"),
    (EMBEDDINGS, "/v1/embeddings"),
];

/// Whether `method` is one of the OpenAI routes.
pub fn is_openai(method: &str) -> bool {
    method.starts_with(SERVICE_PREFIX)
}

/// The runtime's HTTP path for `method`.
pub fn http_path(method: &str) -> Option<&'static str> {
    ROUTES.iter().find(|(m, _)| *m == method).map(|(_, p)| *p)
}

/// Response metadata carrying the runtime's HTTP status across the hop.
pub const STATUS_HEADER: &str = "mm-http-status";
/// Response metadata carrying the runtime's content type across the hop.
pub const CONTENT_TYPE_HEADER: &str = "mm-http-content-type";
