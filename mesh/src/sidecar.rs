//! Assembling and running one mesh sidecar: KV store, runtime bootstrap, tables, local cache,
//! the external gRPC port, and the probe and metrics ports.

use crate::dataplane::DataplaneConfig;
use crate::kv::KvStore;
use crate::kv::config::KvConfig;
use crate::local::{LocalConfig, LocalModels};
use crate::mesh::Mesh;
use crate::registry::Layout;
use crate::registry::table::Table;
use crate::route::Router;
use crate::runtime::grpc::RuntimeClient;
use crate::task::AbortOnDrop;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Everything a sidecar needs.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    /// `MM_SERVICE_NAME`.
    pub service_name: String,
    /// `KV_STORE`.
    pub kv: KvConfig,
    /// `MM_KVSTORE_PREFIX`.
    pub kv_prefix: String,
    /// This pod's id.
    pub instance_id: String,
    /// External gRPC address (`MM_SVC_GRPC_PORT`).
    pub grpc_addr: SocketAddr,
    /// The ModelMesh API on a port of its own (`MM_MANAGEMENT_PORT`), so a network policy can
    /// keep it to the controller while clients reach inference; `None`: none.
    pub management_addr: Option<SocketAddr>,
    /// Whether the gRPC port also serves the API's changes (`MM_MANAGEMENT_ON_GRPC_PORT`,
    /// upstream's behaviour); status reads are served there either way.
    pub management_on_grpc_port: bool,
    /// Runtime management endpoint (`INTERNAL_GRPC_PORT`), `host:port`.
    pub runtime_mgmt: String,
    /// Runtime inference endpoint (`INTERNAL_SERVING_GRPC_PORT`), defaults to the management one.
    pub runtime_data: Option<String>,
    /// The runtime's HTTP API for OpenAI calls (`INTERNAL_SERVING_HTTP_PORT`), `host:port`.
    pub runtime_http: Option<String>,
    /// `MM_DEFAULT_VMODEL_OWNER`.
    pub default_vmodel_owner: String,
    /// `MM_LOAD_FAILURE_EXPIRY_TIME_MS`.
    pub load_failure_expiry: Duration,
    /// Dataplane config.
    pub dataplane: DataplaneConfig,
    /// `MM_SVC_GRPC_MAX_MSG_SIZE`.
    pub max_message: usize,
    /// The sidecar container's memory limit (its cgroup's), which bounds REST bodies.
    pub memory_limit: Option<u64>,
    /// Requests in flight per pod and per copy, and queued loads.
    pub limits: crate::limits::LimitConfig,
    /// TLS for the external gRPC port, REST and the internal hop (`MM_TLS_*`); `None`: plaintext.
    pub tls: Option<crate::tls::TlsConfig>,
    /// KServe v2 REST address.
    pub rest_addr: Option<SocketAddr>,
    /// Internal hop port between pods (upstream's 8080); `None` = single pod.
    pub internal_addr: Option<SocketAddr>,
    /// Host peers use to reach this pod (`MM_LOCATION`, e.g. the pod IP).
    pub location: String,
    /// Requests per minute per copy above which a copy is added (`MM_SCALEUP_RPM_THRESHOLD`).
    pub scaleup_rpm: u64,
    /// Methods proxied as streams besides KServe v2's `ModelStreamInfer` (`MM_STREAMING_METHODS`).
    pub streaming_methods: Vec<String>,
    /// Lease TTL of this pod's instance record and leader candidacy, in seconds.
    pub instance_lease_ttl_secs: i64,
    /// How often the leader's reaper runs.
    pub reaper_every: Duration,
    /// How long a pod must be gone before the reaper drops its registrations.
    pub gone_after: Duration,
    /// How often the leader loads recently used unloaded models into free space (`None`: never).
    pub proactive_every: Option<Duration>,
    /// How often this pod drops idle extra copies while the cluster is nearly full.
    pub janitor_every: Duration,
    /// Time from SIGTERM to exit (`SHUTDOWN_TIMEOUT_MS`, the pod's grace period): moving
    /// models gets what is left after the drain.
    pub shutdown_timeout: Duration,
    /// This pod's labels (`MM_LABELS`).
    pub labels: Vec<String>,
    /// Type constraints (`MM_TYPE_CONSTRAINTS[_PATH]`).
    pub constraints: crate::constraints::TypeConstraints,
    /// `/prestop` address (`MM_PRESTOP_WAIT_PORT`): runtime containers' preStop hook waits
    /// here until this pod has moved its models.
    pub prestop_addr: Option<SocketAddr>,
    /// Probe port address (`/ready`, `/live`).
    pub probe_addr: Option<SocketAddr>,
    /// Prometheus address.
    pub metrics_addr: Option<SocketAddr>,
    /// How often runtimeStatus is polled at start-up, and for how long.
    pub runtime_poll: (Duration, Duration),
}

/// Why the sidecar could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    /// Configuration or start-up failure.
    #[error("{0}")]
    Startup(String),
    /// A server failed.
    #[error("{0}")]
    Serve(String),
}

fn channel(addr: &str) -> Result<tonic::transport::Channel, SidecarError> {
    if let Some(path) = addr.strip_prefix("unix:") {
        // The URI is required by the API but unused: every connection dials the socket.
        let path = std::path::PathBuf::from(path);
        let endpoint = tonic::transport::Endpoint::from_static("http://runtime.local")
            .connect_timeout(Duration::from_secs(5));
        return Ok(
            endpoint.connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            })),
        );
    }
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Ok(tonic::transport::Endpoint::from_shared(uri.clone())
        .map_err(|e| SidecarError::Startup(format!("invalid runtime address {uri}: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect_lazy())
}

/// Connects to the configured KV store.
pub async fn connect_kv(kv: &KvConfig) -> Result<Arc<dyn KvStore>, SidecarError> {
    modelmesh_kv::connect::connect(kv)
        .await
        .map_err(|e| match kv {
            KvConfig::Etcd { .. } => SidecarError::Startup(format!(
                "Service startup failed: Problem connecting to etcd: {e}"
            )),
            KvConfig::Memory(_) => SidecarError::Startup(e.to_string()),
        })
}

/// A started sidecar (ports bound, runtime ready).
pub struct Sidecar {
    /// The mesh.
    pub mesh: Arc<Mesh>,
    router: Arc<Router>,
    grpc: tokio::net::TcpListener,
    probe: Option<tokio::net::TcpListener>,
    rest: Option<tokio::net::TcpListener>,
    internal: Option<tokio::net::TcpListener>,
    management: Option<tokio::net::TcpListener>,
    management_on_grpc_port: bool,
    prestop: Option<tokio::net::TcpListener>,
    max_message: usize,
    rest_limits: crate::rest::BodyLimits,
    tls: Option<crate::tls::TlsConfig>,
    shutdown_timeout: Duration,
    ready: Arc<AtomicBool>,
    shutting_down: Arc<AtomicBool>,
    internal_enabled: bool,
    _publisher: AbortOnDrop,
    _leader: AbortOnDrop,
    _janitor: AbortOnDrop,
}

impl Sidecar {
    /// Connects to the store, waits for the runtime, loads the tables and binds the ports.
    pub async fn start(
        cfg: SidecarConfig,
        store: Option<Arc<dyn KvStore>>,
    ) -> Result<Sidecar, SidecarError> {
        let store = match store {
            Some(s) => s,
            None => connect_kv(&cfg.kv).await?,
        };
        let grpc = tokio::net::TcpListener::bind(cfg.grpc_addr)
            .await
            .map_err(|e| {
                SidecarError::Startup(format!("cannot listen on {}: {e}", cfg.grpc_addr))
            })?;
        let probe = match cfg.probe_addr {
            Some(a) => Some(
                tokio::net::TcpListener::bind(a)
                    .await
                    .map_err(|e| SidecarError::Startup(format!("cannot listen on {a}: {e}")))?,
            ),
            None => None,
        };
        let internal = match cfg.internal_addr {
            Some(a) => Some(
                tokio::net::TcpListener::bind(a)
                    .await
                    .map_err(|e| SidecarError::Startup(format!("cannot listen on {a}: {e}")))?,
            ),
            None => None,
        };
        let management = match cfg.management_addr {
            Some(a) => Some(
                tokio::net::TcpListener::bind(a)
                    .await
                    .map_err(|e| SidecarError::Startup(format!("cannot listen on {a}: {e}")))?,
            ),
            None => None,
        };
        let prestop = match cfg.prestop_addr {
            Some(a) => Some(
                tokio::net::TcpListener::bind(a)
                    .await
                    .map_err(|e| SidecarError::Startup(format!("cannot listen on {a}: {e}")))?,
            ),
            None => None,
        };
        let internal_is_some = internal.is_some();
        let internal_address = internal
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| format!("{}:{}", cfg.location, a.port()))
            .unwrap_or_default();
        let rest = match cfg.rest_addr {
            Some(a) => Some(
                tokio::net::TcpListener::bind(a)
                    .await
                    .map_err(|e| SidecarError::Startup(format!("cannot listen on {a}: {e}")))?,
            ),
            None => None,
        };
        if let Some(addr) = cfg.metrics_addr {
            crate::metrics::install(addr).map_err(SidecarError::Startup)?;
        }
        let runtime: Arc<dyn crate::runtime::Runtime> =
            Arc::new(RuntimeClient::new(channel(&cfg.runtime_mgmt)?));
        tracing::info!(runtime = %cfg.runtime_mgmt, "waiting for the runtime (runtimeStatus)");
        let info = crate::runtime::bootstrap(&*runtime, cfg.runtime_poll.0, cfg.runtime_poll.1)
            .await
            .map_err(|e| SidecarError::Startup(format!("runtime start-up failed: {e}")))?;
        tracing::info!(capacity = info.capacity_bytes, version = %info.version, loads = info.max_loading_concurrency, "runtime ready");
        let layout = Layout::new(cfg.kv.root_prefix(), &cfg.kv_prefix, &cfg.service_name);
        let registry = Table::start(store.clone(), layout.registry())
            .await
            .map_err(|e| SidecarError::Startup(format!("cannot read the model registry: {e}")))?;
        let mut lc = LocalConfig::new(cfg.instance_id.clone());
        lc.failure_expiry = cfg.load_failure_expiry;
        lc.max_queued_loads = cfg.limits.queued_loads;
        let local = LocalModels::new(lc, runtime, info, registry.clone());
        let (store_for_instances, instance_layout) = (store.clone(), layout.clone());
        let (store_for_leader, leader_layout) = (store.clone(), layout.clone());
        let mesh = Mesh::start(
            store,
            layout,
            registry,
            local,
            cfg.default_vmodel_owner.clone(),
            cfg.constraints.clone(),
            cfg.labels.clone(),
        )
        .await
        .map_err(|e| SidecarError::Startup(format!("cannot start the mesh: {e}")))?;
        let shutting_down = Arc::new(AtomicBool::new(false));
        let incarnation = crate::clock::now_ms();
        let publisher = crate::instance::spawn_publisher(
            store_for_instances,
            &instance_layout,
            mesh.local.clone(),
            shutting_down.clone(),
            Duration::from_secs(1),
            crate::instance::Identity {
                internal_address,
                labels: cfg.labels.clone(),
                lease_ttl_secs: cfg.instance_lease_ttl_secs,
            },
        );
        // Serve only once this incarnation's record is in the table: a restarted sidecar
        // otherwise routes by its predecessor's record (marked shutting down, or with copies it
        // no longer has) and finds no pod to place a load on.
        let me = mesh.local.instance_id().to_string();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !mesh
            .instances
            .get(&me)
            .is_some_and(|(r, _)| r.start_time >= incarnation && !r.shutdown)
        {
            if tokio::time::Instant::now() > deadline {
                tracing::warn!(instance = %me, "this pod's instance record is not visible yet; serving anyway");
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let leader = crate::leader::spawn(
            store_for_leader,
            &leader_layout,
            mesh.clone(),
            crate::leader::LeaderConfig {
                lease_ttl_secs: cfg.instance_lease_ttl_secs,
                reaper_every: cfg.reaper_every,
                gone_after: cfg.gone_after,
                proactive_every: cfg.proactive_every,
            },
            mesh.leader.clone(),
        );
        if let Some(tls) = &cfg.tls {
            mesh.placement.use_tls(tls.internal_client());
            tracing::info!(client_auth = ?tls.client_auth(), peer_name = %tls.internal_name(), "TLS on the gRPC, REST and internal ports");
        }
        let janitor = crate::janitor::spawn(&mesh, cfg.janitor_every);
        spawn_instance_gauge(mesh.instances.clone());
        let data = channel(cfg.runtime_data.as_deref().unwrap_or(&cfg.runtime_mgmt))?;
        let mut router = Router::new(mesh.clone(), data, cfg.dataplane.clone())
            .with_scaleup_rpm(cfg.scaleup_rpm)
            .with_streaming_methods(cfg.streaming_methods.iter().cloned())
            .with_limits(cfg.limits);
        if let Some(addr) = &cfg.runtime_http {
            router = router.with_http_runtime(
                crate::route::HttpRuntime::new(addr).map_err(SidecarError::Startup)?,
            );
        }
        let router = Arc::new(router);
        Ok(Sidecar {
            mesh,
            router,
            grpc,
            probe,
            rest,
            internal,
            management,
            management_on_grpc_port: cfg.management_on_grpc_port,
            prestop,
            max_message: cfg.max_message,
            rest_limits: crate::rest::BodyLimits::for_sidecar(cfg.max_message, cfg.memory_limit),
            tls: cfg.tls.clone(),
            shutdown_timeout: cfg.shutdown_timeout,
            ready: Arc::new(AtomicBool::new(true)),
            shutting_down,
            internal_enabled: internal_is_some,
            _publisher: AbortOnDrop(publisher),
            _leader: AbortOnDrop(leader),
            _janitor: AbortOnDrop(janitor),
        })
    }

    /// The bound external gRPC address.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.local_addr().ok()
    }

    /// The inference router (for REST).
    pub fn router(&self) -> Arc<Router> {
        self.router.clone()
    }

    /// The bound REST address.
    pub fn rest_addr(&self) -> Option<SocketAddr> {
        self.rest.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` resolves; in-flight requests then get a few seconds to finish.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), SidecarError> {
        self.serve_with(None, shutdown).await
    }

    /// [`Sidecar::serve`] with extra REST routes.
    pub async fn serve_with(
        self,
        extra_rest: Option<axum::Router>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), SidecarError> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        if let Some(rest) = self.rest {
            let app = crate::rest::router(self.router.clone(), extra_rest, self.rest_limits);
            let mut rrx = rx.clone();
            let acceptor = match &self.tls {
                Some(t) => Some(
                    t.rest_acceptor()
                        .map_err(|e| SidecarError::Startup(e.to_string()))?,
                ),
                None => None,
            };
            tokio::spawn(async move {
                let stop = async move {
                    let _ = rrx.wait_for(|v| *v).await;
                };
                let served = match acceptor {
                    Some(a) => {
                        crate::rest::serve(crate::tls::TlsListener::new(rest, a), app, stop).await
                    }
                    None => {
                        // Small writes (each server-sent event, short answers) go out at once
                        // instead of waiting for the client's ACK of the previous one (Nagle).
                        use axum::serve::ListenerExt;
                        let rest = rest.tap_io(|tcp| {
                            let _ = tcp.set_nodelay(true);
                        });
                        crate::rest::serve(rest, app, stop).await
                    }
                };
                if let Err(e) = served {
                    tracing::error!(error = %e, "REST server failed");
                }
            });
        }
        if let Some(probe) = self.probe {
            let ready = self.ready.clone();
            let app = axum::Router::new()
                .route("/live", axum::routing::get(|| async { "OK" }))
                .route(
                    "/ready",
                    axum::routing::get(move || {
                        let ready = ready.clone();
                        async move {
                            if ready.load(Ordering::Relaxed) {
                                (http::StatusCode::OK, "READY")
                            } else {
                                (http::StatusCode::SERVICE_UNAVAILABLE, "NOT READY")
                            }
                        }
                    }),
                );
            let mut prx = rx.clone();
            tokio::spawn(async move {
                let _ = axum::serve(probe, app)
                    .with_graceful_shutdown(async move {
                        let _ = prx.wait_for(|v| *v).await;
                    })
                    .await;
            });
        }
        if let Some(internal) = self.internal {
            // With TLS, only certificates naming the mesh's peer identity are served here.
            let peer_name = self.tls.as_ref().map(|t| t.internal_name().to_string());
            let routes = crate::server::routes(
                self.router.clone(),
                self.max_message,
                crate::server::Port::Internal,
                peer_name,
            );
            let incoming =
                tonic::transport::server::TcpIncoming::from(internal).with_nodelay(Some(true));
            let mut irx = rx.clone();
            let mut builder = crate::server_limits::harden(tonic::transport::Server::builder());
            if let Some(t) = &self.tls {
                builder = builder
                    .tls_config(t.internal_server())
                    .map_err(|e| SidecarError::Startup(format!("internal port TLS: {e}")))?;
            }
            tokio::spawn(async move {
                let r = builder
                    .initial_connection_window_size(4 << 20)
                    .initial_stream_window_size(4 << 20)
                    .add_routes(tonic::service::Routes::from(routes))
                    .serve_with_incoming_shutdown(incoming, async move {
                        let _ = irx.wait_for(|v| *v).await;
                    })
                    .await;
                if let Err(e) = r {
                    tracing::error!(error = %e, "internal gRPC server failed");
                }
            });
        }
        if let Some(listener) = self.management {
            let routes = crate::server::routes(
                self.router.clone(),
                self.max_message,
                crate::server::Port::Management,
                None,
            );
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            let mut mrx = rx.clone();
            let mut builder = crate::server_limits::harden(tonic::transport::Server::builder());
            if let Some(t) = &self.tls {
                builder = builder
                    .tls_config(t.grpc_server())
                    .map_err(|e| SidecarError::Startup(format!("management port TLS: {e}")))?;
            }
            tokio::spawn(async move {
                let r = builder
                    .add_routes(tonic::service::Routes::from(routes))
                    .serve_with_incoming_shutdown(incoming, async move {
                        let _ = mrx.wait_for(|v| *v).await;
                    })
                    .await;
                if let Err(e) = r {
                    tracing::error!(error = %e, "management gRPC server failed");
                }
            });
        }
        let routes = crate::server::routes(
            self.router.clone(),
            self.max_message,
            crate::server::Port::Grpc {
                management: self.management_on_grpc_port,
            },
            None,
        );
        let incoming =
            tonic::transport::server::TcpIncoming::from(self.grpc).with_nodelay(Some(true));
        let mut grx = rx.clone();
        let ready = self.ready.clone();
        let shutting_down = self.shutting_down.clone();
        let mut builder = crate::server_limits::harden(tonic::transport::Server::builder());
        if let Some(t) = &self.tls {
            builder = builder
                .tls_config(t.grpc_server())
                .map_err(|e| SidecarError::Startup(format!("gRPC port TLS: {e}")))?;
        }
        let grpc = builder
            .initial_connection_window_size(4 << 20)
            .initial_stream_window_size(4 << 20)
            .add_routes(tonic::service::Routes::from(routes))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = grx.wait_for(|v| *v).await;
            });
        // Set once this pod has moved its models away (or had nothing to move) at shutdown.
        let (drained_tx, drained_rx) = tokio::sync::watch::channel(false);
        if let Some(listener) = self.prestop {
            let app = axum::Router::new().route(
                "/prestop",
                axum::routing::get(move || {
                    let mut drained = drained_rx.clone();
                    async move {
                        let waited = tokio::time::timeout(
                            Duration::from_secs(120),
                            drained.wait_for(|v| *v),
                        )
                        .await;
                        if waited.is_ok() {
                            (http::StatusCode::OK, "moved")
                        } else {
                            (http::StatusCode::OK, "timed out")
                        }
                    }
                }),
            );
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
        }
        let mut grace = rx.clone();
        let router = self.router.clone();
        // Leave time for the drain (10 s) and the flag to reach peers.
        let migration = self
            .shutdown_timeout
            .saturating_sub(Duration::from_secs(15))
            .max(Duration::from_secs(5));
        let has_peers = self.internal_enabled;
        tokio::spawn(async move {
            shutdown.await;
            ready.store(false, Ordering::Relaxed);
            shutting_down.store(true, Ordering::Relaxed);
            if has_peers && router.mesh().instances.len() > 1 {
                // Let peers see the shutdown flag (republished within a second) so they stop
                // sending new work here, then move this pod's models.
                tracing::info!("shutting down: moving this pod's models to other pods");
                tokio::time::sleep(Duration::from_millis(1500)).await;
                router.rehome_all(migration).await;
                router.mesh().local.deregister_all().await;
            }
            let _ = drained_tx.send(true);
            tracing::info!("shutting down: no new requests; finishing in-flight ones");
            let _ = tx.send(true);
        });
        tokio::select! {
            r = grpc => r.map_err(|e| SidecarError::Serve(format!("gRPC server failed: {e}")))?,
            _ = async move {
                let _ = grace.wait_for(|v| *v).await;
                tokio::time::sleep(Duration::from_secs(10)).await;
            } => tracing::warn!("in-flight requests still running after 10 s; exiting"),
        }
        tracing::info!("mesh stopped");
        Ok(())
    }
}

/// Keeps `modelmesh_instances_total` at the number of pods this one sees, so operators (and the
/// cluster tests) can tell when pods have found each other instead of guessing.
fn spawn_instance_gauge(instances: Arc<Table<crate::registry::records::InstanceRecord>>) {
    tokio::spawn(async move {
        let mut changes = instances.subscribe();
        loop {
            metrics::gauge!("modelmesh_instances_total").set(instances.len() as f64);
            if let Err(tokio::sync::broadcast::error::RecvError::Closed) = changes.recv().await {
                break;
            }
        }
    });
}
