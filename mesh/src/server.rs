//! The external gRPC port (8033): the ModelMesh API, and every other method routed to the
//! runtime as raw bytes.

use crate::api::MeshApi;
use crate::codec::RawCodec;
use crate::proxy::{Router, frame};
use axum::body::Body;
use bytes::Bytes;
use modelmesh_proto::mmesh::model_mesh_server::ModelMeshServer;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tonic::server::Grpc;
use tonic::{Request, Response, Status};

/// Default largest request accepted (`MM_SVC_GRPC_MAX_MSG_SIZE`): 16 MiB, as upstream.
pub const DEFAULT_MAX_MESSAGE: usize = 16 * 1024 * 1024;

struct ProxyStream {
    router: Arc<Router>,
    method: String,
}

type RawStream = Pin<Box<dyn futures::Stream<Item = Result<Bytes, Status>> + Send>>;

impl tonic::server::StreamingService<Bytes> for ProxyStream {
    type Response = Bytes;
    type ResponseStream = RawStream;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RawStream>, Status>> + Send>>;

    fn call(&mut self, req: Request<tonic::Streaming<Bytes>>) -> Self::Future {
        let (router, method) = (self.router.clone(), self.method.clone());
        Box::pin(async move {
            let (md, _, inbound) = req.into_parts();
            let resp = router.streaming(&method, md, inbound).await?;
            let (rmd, stream, _) = resp.into_parts();
            let mut out = Response::new(Box::pin(stream) as RawStream);
            *out.metadata_mut() = rmd;
            Ok(out)
        })
    }
}

/// A unary call answered without tonic's server machinery: the request body is read whole, its
/// one message sliced out (no copy), routed, and the answer sent as prefix + message chunks with
/// `grpc-status: 0` in the trailers; errors are trailers-only answers, as tonic sends them.
async fn unary(
    router: Arc<Router>,
    method: String,
    internal: bool,
    max_message: usize,
    req: http::Request<Body>,
) -> http::Response<Body> {
    let (parts, body) = req.into_parts();
    let grpc = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if !grpc {
        // The gRPC-over-HTTP/2 spec's answer to a request that is not gRPC.
        let mut r = http::Response::new(Body::from(
            "this port speaks gRPC (content-type application/grpc)\n",
        ));
        *r.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return r;
    }
    let result = async {
        // Bounded: a body larger than one maximal message is refused as it arrives.
        let limited = http_body_util::Limited::new(body, max_message.saturating_add(5));
        let bytes = match http_body_util::BodyExt::collect(limited).await {
            Ok(c) => c.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(frame::too_large(None, max_message));
            }
            Err(e) => {
                return Err(Status::cancelled(format!(
                    "reading the request failed: {e}"
                )));
            }
        };
        let msg = frame::unframe(bytes, max_message)?;
        let md = tonic::metadata::MetadataMap::from_headers(parts.headers);
        let hop = if internal {
            crate::proxy::Hop::from_header(&md)
        } else {
            crate::proxy::Hop::External
        };
        let (rmd, rbody) = router.unary(&method, md, msg, hop).await?;
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let frames = frame::Frames::message(rbody, Some(trailers))?;
        let mut resp = http::Response::new(Body::new(frames));
        *resp.headers_mut() = frame::sanitized(rmd.into_headers());
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(frame::GRPC),
        );
        Ok::<_, Status>(resp)
    }
    .await;
    result.unwrap_or_else(|s| s.into_http())
}

/// The axum router serving port 8033.
pub fn routes(router: Arc<Router>, max_message: usize, internal: bool) -> axum::Router {
    let api = ModelMeshServer::new(MeshApi::new(router.mesh().clone(), internal))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    tonic::service::Routes::new(api)
        .prepare()
        .into_axum_router()
        .fallback(move |req: http::Request<Body>| {
            let router = router.clone();
            async move {
                let method = req.uri().path().trim_start_matches('/').to_string();
                if crate::proxy::STREAMING_METHODS.contains(&method.as_str()) {
                    let mut grpc = Grpc::new(RawCodec)
                        .max_decoding_message_size(max_message)
                        .max_encoding_message_size(usize::MAX);
                    return grpc
                        .streaming(ProxyStream { router, method }, req)
                        .await
                        .map(Body::new);
                }
                unary(router, method, internal, max_message, req).await
            }
        })
}
