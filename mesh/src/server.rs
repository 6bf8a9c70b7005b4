//! The external gRPC port (8033): the ModelMesh API, and every other method routed to the
//! runtime as raw bytes.

use crate::api::{ApiMode, MeshApi};
use crate::codec::RawCodec;
use crate::hop::Hop;
use crate::route::{Held, Router};
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
    internal: bool,
}

impl tonic::server::StreamingService<Bytes> for ProxyStream {
    type Response = Bytes;
    type ResponseStream = Held;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Held>, Status>> + Send>>;

    fn call(&mut self, req: Request<tonic::Streaming<Bytes>>) -> Self::Future {
        let (router, method, internal) = (self.router.clone(), self.method.clone(), self.internal);
        Box::pin(async move {
            let (md, _, inbound) = req.into_parts();
            let hop = if internal {
                Hop::from_header(&md)?
            } else {
                Hop::External
            };
            router.streaming(&method, md, inbound, hop).await
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
                Hop::from_header(&md)?
            } else {
                Hop::External
            };
            let (rmd, rbody) = router.unary(&method, md, body, hop).await?;
            let mut resp = Response::new(rbody);
            *resp.metadata_mut() = rmd;
            Ok(resp)
        })
    }
}

/// Whether the TLS client of `req` presented a certificate naming `peer_name` among its DNS
/// names: a certificate the serving CA issued to some other workload is not a mesh peer.
fn is_mesh_peer(req: &http::Request<Body>, peer_name: &str) -> Result<(), String> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let certs = req
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|i| i.peer_certs())
        .ok_or("no client certificate")?;
    let leaf = certs.first().ok_or("no client certificate")?;
    let cert = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| format!("the client certificate does not parse: {e:?}"))?;
    if cert
        .valid_dns_names()
        .any(|n| n.eq_ignore_ascii_case(peer_name))
    {
        Ok(())
    } else {
        Err(format!(
            "the client certificate does not name {peer_name} (MM_TLS_INTERNAL_SERVER_NAME): it is not a mesh peer"
        ))
    }
}

/// The ports that serve gRPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// 8033: inference for clients, and the ModelMesh API unless it has a port of its own.
    Grpc {
        /// Whether the ModelMesh API's changes are served here too.
        management: bool,
    },
    /// The ModelMesh API alone (`MM_MANAGEMENT_PORT`), for the controller.
    Management,
    /// 8080: between the mesh's pods.
    Internal,
}

/// The axum router serving one gRPC port. On the internal port with TLS only clients whose
/// certificate names `peer_name` are served.
pub fn routes(
    router: Arc<Router>,
    max_message: usize,
    port: Port,
    peer_name: Option<String>,
) -> axum::Router {
    let internal = port == Port::Internal;
    let mode = match port {
        Port::Grpc { management: true } | Port::Management => ApiMode::Full,
        Port::Grpc { management: false } => ApiMode::ReadOnly,
        Port::Internal => ApiMode::Peers,
    };
    let inference = port != Port::Management;
    let api = ModelMeshServer::new(MeshApi::new(router.mesh().clone(), mode))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let routes = tonic::service::Routes::new(api)
        .prepare()
        .into_axum_router()
        .fallback(move |req: http::Request<Body>| {
            let router = router.clone();
            async move {
                if !inference {
                    return Status::unimplemented(
                        "the management port serves the mmesh.ModelMesh API only; send inference to the gRPC port",
                    )
                    .into_http::<Body>();
                }
                let method = req.uri().path().trim_start_matches('/').to_string();
                let mut grpc = Grpc::new(RawCodec)
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(usize::MAX);
                if router.is_streaming(&method) {
                    let svc = ProxyStream {
                        router,
                        method,
                        internal,
                    };
                    return grpc
                        .streaming(svc, req)
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
        ));
    match peer_name {
        Some(name) => routes.layer(axum::middleware::from_fn(
            move |req: http::Request<Body>, next: axum::middleware::Next| {
                let name = name.clone();
                async move {
                    match is_mesh_peer(&req, &name) {
                        Ok(()) => next.run(req).await,
                        Err(why) => {
                            tracing::warn!(reason = %why, "internal port: caller refused");
                            Status::permission_denied(why).into_http::<Body>()
                        }
                    }
                }
            },
        )),
        None => routes,
    }
}
