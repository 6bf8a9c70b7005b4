//! The external gRPC port (8033): the ModelMesh API, and every other method routed to the
//! runtime as raw bytes.

use crate::api::MeshApi;
use crate::codec::RawCodec;
use crate::proxy::Router;
use axum::body::Body;
use bytes::Bytes;
use modelmesh_proto::mmesh::model_mesh_server::ModelMeshServer;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tonic::server::{Grpc, UnaryService};
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
            let (resp, permit) = router.streaming(&method, md, inbound).await?;
            let (rmd, stream, _) = resp.into_parts();
            // The permit lives as long as the response stream.
            let stream = futures::StreamExt::map(stream, move |m| {
                let _held = &permit;
                m
            });
            let mut out = Response::new(Box::pin(stream) as RawStream);
            *out.metadata_mut() = rmd;
            Ok(out)
        })
    }
}

struct ProxyCall {
    router: Arc<Router>,
    method: String,
    internal: bool,
}

impl UnaryService<Bytes> for ProxyCall {
    type Response = Bytes;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Bytes>, Status>> + Send>>;

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let (router, method, internal) = (self.router.clone(), self.method.clone(), self.internal);
        Box::pin(async move {
            let (md, _, body) = req.into_parts();
            let hop = if internal {
                crate::proxy::Hop::from_header(&md)?
            } else {
                crate::proxy::Hop::External
            };
            let (rmd, rbody) = router.unary(&method, md, body, hop).await?;
            let mut resp = Response::new(rbody);
            *resp.metadata_mut() = rmd;
            Ok(resp)
        })
    }
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
                let mut grpc = Grpc::new(RawCodec)
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(usize::MAX);
                if crate::proxy::STREAMING_METHODS.contains(&method.as_str()) {
                    return grpc
                        .streaming(ProxyStream { router, method }, req)
                        .await
                        .map(Body::new);
                }
                let resp = grpc
                    .unary(
                        ProxyCall {
                            router,
                            method,
                            internal,
                        },
                        req,
                    )
                    .await;
                resp.map(Body::new)
            }
        })
        // Before tonic's own limit (OUT_OF_RANGE): RESOURCE_EXHAUSTED naming the setting.
        .layer(tower::util::MapRequestLayer::new(
            move |req: http::Request<Body>| {
                req.map(|b| Body::new(crate::message_limit::LimitedFrames::new(b, max_message)))
            },
        ))
}
