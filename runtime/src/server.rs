//! Binding the gRPC and HTTP ports and serving until shutdown.

use crate::grpc::InferenceService;
use crate::manager::ModelManager;
use crate::repository::Repository;
use axum::serve::ListenerExt;
use modelmesh_proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

/// Largest gRPC message accepted or sent (requests carry whole tensors).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// HTTP/2 flow-control windows: large enough that tensors do not stall on window updates.
const WINDOW_BYTES: u32 = 4 * 1024 * 1024;

/// How long in-flight requests may run after a shutdown signal.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Settings of one runtime server.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Triton-layout model repository.
    pub model_repository: PathBuf,
    /// gRPC listen address.
    pub grpc_addr: SocketAddr,
    /// HTTP (KServe v2 REST) listen address; `None` disables REST.
    pub http_addr: Option<SocketAddr>,
    /// Models to load at start-up.
    pub load_models: Vec<String>,
    /// Also serve gRPC on this Unix-domain socket (a pod's sidecar skips TCP with it).
    pub grpc_socket: Option<PathBuf>,
    /// Injected delays (tests and chaos drills); none by default.
    pub faults: crate::faults::Faults,
}

/// A runtime whose ports are bound (so callers learn the real ports before serving).
pub struct BoundRuntime {
    mgr: Arc<ModelManager>,
    grpc: TcpListener,
    http: Option<TcpListener>,
    socket: Option<tokio::net::UnixListener>,
    load_models: Vec<String>,
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address tried.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The Unix socket could not be bound.
    #[error("cannot listen on unix socket {}: {source}", path.display())]
    BindSocket {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A start-up model failed to load.
    #[error("start-up model failed to load: {0}")]
    StartupLoad(#[from] crate::error::RuntimeError),
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
}

impl BoundRuntime {
    /// Binds the configured ports.
    pub async fn bind(cfg: RuntimeConfig) -> Result<BoundRuntime, ServeError> {
        let grpc = TcpListener::bind(cfg.grpc_addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr: cfg.grpc_addr,
                source,
            })?;
        let http = match cfg.http_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServeError::Bind { addr, source })?,
            ),
            None => None,
        };
        let socket = match &cfg.grpc_socket {
            Some(path) => {
                // A socket file left by a previous run would make bind fail.
                let _ = std::fs::remove_file(path);
                Some(tokio::net::UnixListener::bind(path).map_err(|source| {
                    ServeError::BindSocket {
                        path: path.clone(),
                        source,
                    }
                })?)
            }
            None => None,
        };
        let mgr = Arc::new(
            ModelManager::new(Repository::new(cfg.model_repository)).with_faults(cfg.faults),
        );
        Ok(BoundRuntime {
            mgr,
            grpc,
            http,
            socket,
            load_models: cfg.load_models,
        })
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.local_addr().ok()
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The model manager (shared with the servers).
    pub fn manager(&self) -> Arc<ModelManager> {
        self.mgr.clone()
    }

    /// Loads the start-up models, then serves both ports until `shutdown` resolves.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        for m in &self.load_models {
            self.mgr.load(m).await?;
        }
        let (tx, rx) = tokio::sync::watch::channel(false);
        let grpc_addr = self.grpc_addr();
        let http_addr = self.http_addr();
        tracing::info!(grpc = ?grpc_addr, http = ?http_addr, repository = %self.mgr.repository().root().display(), "modelmesh runtime serving");
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<GrpcInferenceServiceServer<InferenceService>>()
            .await;
        let svc = GrpcInferenceServiceServer::new(InferenceService::new(self.mgr.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let mut grpc_rx = rx.clone();
        let routes = tonic::service::Routes::new(health_service).add_service(svc);
        let builder = || {
            tonic::transport::Server::builder()
                .initial_connection_window_size(WINDOW_BYTES)
                .initial_stream_window_size(WINDOW_BYTES)
        };
        let uds = self.socket.map(|listener| {
            let mut uds_rx = rx.clone();
            builder()
                .add_routes(routes.clone())
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::UnixListenerStream::new(listener),
                    async move {
                        let _ = uds_rx.wait_for(|v| *v).await;
                    },
                )
        });
        let tcp = builder()
            .add_routes(routes)
            // TCP_NODELAY: without it small responses can wait for delayed ACKs.
            .serve_with_incoming_shutdown(
                TcpIncoming::from(self.grpc).with_nodelay(Some(true)),
                async move {
                    let _ = grpc_rx.wait_for(|v| *v).await;
                },
            );
        let grpc = async move {
            match uds {
                Some(uds) => {
                    let (t, u) = tokio::join!(tcp, uds);
                    t.and(u)
                }
                None => tcp.await,
            }
        };
        let http = self.http.map(|listener| {
            let mut http_rx = rx.clone();
            let app = crate::http::router(self.mgr.clone());
            async move {
                let listener = listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = http_rx.wait_for(|v| *v).await;
                    })
                    .await
                    .map_err(ServeError::Http)
            }
        });
        let mut grace_rx = rx.clone();
        tokio::spawn(async move {
            shutdown.await;
            let _ = tx.send(true);
        });
        let servers = async move {
            match http {
                Some(http) => {
                    let (g, h) = tokio::join!(grpc, http);
                    g?;
                    h
                }
                None => Ok(grpc.await?),
            }
        };
        // In-flight requests get SHUTDOWN_GRACE to finish; idle client connections must not
        // keep the process alive past that.
        let deadline = async move {
            let _ = grace_rx.wait_for(|v| *v).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::select! {
            r = servers => r?,
            _ = deadline => tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; exiting anyway"),
        }
        tracing::info!("modelmesh runtime stopped");
        Ok(())
    }
}
