//! `modelmesh sidecar`: the mesh in a serving pod, configured with upstream's environment
//! variable names (each also a flag).

use anyhow::Context;
use modelmesh_mesh::dataplane::DataplaneConfig;
use modelmesh_mesh::kv::config::KvConfig;
use modelmesh_mesh::sidecar::{Sidecar, SidecarConfig};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Flags of `modelmesh sidecar`.
#[derive(Debug, clap::Args)]
#[command(
    about = "The mesh sidecar: model registry, LRU model cache, vmodels and inference routing",
    long_about = "Runs next to a model runtime (adapter) in a serving pod. Serves the mmesh.ModelMesh API and \
routes every other gRPC method to the runtime on MM_SVC_GRPC_PORT, loading models on demand and evicting the \
least recently used ones when the runtime's capacity is full. Shared state lives in KV_STORE."
)]
pub struct Args {
    /// Mesh service name; pods with the same name and store form one mesh.
    #[arg(long, env = "MM_SERVICE_NAME", default_value = "modelmesh-serving")]
    pub service_name: String,
    /// KV store: memory, memory:<snapshot-file>, etcd:<connection-json-file> or etcd:http://host:port[,...].
    #[arg(long, env = "KV_STORE", default_value = "memory")]
    pub kv_store: String,
    /// Key prefix inside the store.
    #[arg(long, env = "MM_KVSTORE_PREFIX", default_value = "mm")]
    pub kv_prefix: String,
    /// This pod's instance id (default: the pod name, else the host name).
    #[arg(long, env = "MM_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// The pod's name (Kubernetes downward API), used as the instance id.
    #[arg(long, env = "WKUBE_POD_NAME")]
    pub pod_name: Option<String>,
    /// The pod's IP (downward API): the address other pods use to reach this one; wins over
    /// --location.
    #[arg(long, env = "WKUBE_POD_IPADDR")]
    pub pod_ip: Option<String>,
    /// Upstream's metrics setting: `disabled` or `prometheus:port=<p>;scheme=<http|https>`;
    /// wins over --metrics-port.
    #[arg(long, env = "MM_METRICS")]
    pub metrics: Option<String>,
    /// Time from SIGTERM to exit, in ms (the pod's grace period): moving this pod's models gets
    /// what is left after draining requests.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_MS", default_value_t = 90_000)]
    pub shutdown_timeout_ms: u64,
    /// Log every inference request (accepted for upstream compatibility; no effect yet: use the
    /// modelmesh_api_request_milliseconds metric).
    #[arg(long, env = "MM_LOG_EACH_INVOKE", default_value_t = false)]
    pub log_each_invoke: bool,
    /// Payload processors (not supported: a warning is logged when set).
    #[arg(long, env = "MM_PAYLOAD_PROCESSORS")]
    pub payload_processors: Option<String>,
    /// External gRPC port: the ModelMesh API and inference.
    #[arg(long, env = "MM_SVC_GRPC_PORT", default_value_t = 8033)]
    pub grpc_port: u16,
    /// Address to listen on.
    #[arg(long, env = "MM_LISTEN_ADDRESS", default_value = "0.0.0.0")]
    pub address: IpAddr,
    /// Serve the mmesh.ModelMesh API on this port too (0 = not), so a network policy can keep
    /// it to the controller while every client reaches inference on MM_SVC_GRPC_PORT.
    #[arg(long, env = "MM_MANAGEMENT_PORT", default_value_t = 0)]
    pub management_port: u16,
    /// Whether MM_SVC_GRPC_PORT also serves the API's changes (register, setVModel, delete),
    /// as upstream does; status reads are served there either way. Set false with
    /// MM_MANAGEMENT_PORT.
    #[arg(long, env = "MM_MANAGEMENT_ON_GRPC_PORT", default_value_t = true, action = clap::ArgAction::Set)]
    pub management_on_grpc_port: bool,
    /// Port of the runtime's ModelRuntime service (the adapter), on localhost.
    #[arg(long, env = "INTERNAL_GRPC_PORT", default_value_t = 8085)]
    pub internal_grpc_port: u16,
    /// Port of the runtime's inference endpoint, if not the ModelRuntime port.
    #[arg(long, env = "INTERNAL_SERVING_GRPC_PORT")]
    pub internal_serving_grpc_port: Option<u16>,
    /// Port of the runtime's HTTP API for the OpenAI routes (an LLM runtime: llama.cpp's
    /// router); unset: OpenAI calls this pod serves are refused.
    #[arg(long, env = "INTERNAL_SERVING_HTTP_PORT")]
    pub internal_serving_http_port: Option<u16>,
    /// Unix socket of the runtime's inference endpoint (wins over the port).
    #[arg(long, env = "INTERNAL_SERVING_GRPC_SOCKET_PATH", value_name = "PATH")]
    pub internal_serving_grpc_socket: Option<std::path::PathBuf>,
    /// Unix socket of the runtime's ModelRuntime service (wins over the port).
    #[arg(long, env = "INTERNAL_GRPC_SOCKET_PATH", value_name = "PATH")]
    pub internal_grpc_socket: Option<std::path::PathBuf>,
    /// Host of the runtime.
    #[arg(long, env = "MM_RUNTIME_HOST", default_value = "localhost")]
    pub runtime_host: String,
    /// Owner given to vmodels created without one.
    #[arg(long, env = "MM_DEFAULT_VMODEL_OWNER", default_value = "")]
    pub default_vmodel_owner: String,
    /// How long a failed load is remembered before it is retried, in ms.
    #[arg(
        long,
        env = "MM_LOAD_FAILURE_EXPIRY_TIME_MS",
        default_value_t = 600_000
    )]
    pub load_failure_expiry_ms: u64,
    /// Dataplane config JSON ({"rpcConfigs": {...}, "allowOtherRpcs": true}).
    #[arg(long, env = "MM_DATAPLANE_CONFIG")]
    pub dataplane_config: Option<String>,
    /// File holding the dataplane config JSON.
    #[arg(long, env = "MM_DATAPLANE_CONFIG_PATH")]
    pub dataplane_config_path: Option<std::path::PathBuf>,
    /// Largest gRPC message accepted, in bytes (REST bodies may be 4x this: JSON is larger
    /// than the binary tensor it carries).
    /// Bytes or a size with a unit (16Mi, 64MiB).
    #[arg(long, env = "MM_SVC_GRPC_MAX_MSG_SIZE", default_value = "16Mi", value_parser = modelmesh_settings::size::parse_usize)]
    pub max_message_size: usize,
    /// Requests in flight on this pod (gRPC, REST, forwarded and streams) above which new ones
    /// are refused at once with RESOURCE_EXHAUSTED; 0 = unlimited.
    #[arg(long, env = "MM_MAX_INFLIGHT_REQUESTS", default_value_t = modelmesh_mesh::limits::DEFAULT_MAX_INFLIGHT_REQUESTS, allow_negative_numbers = true)]
    pub max_inflight_requests: usize,
    /// Requests in flight on one local copy of a model above which new ones go to another copy
    /// or are refused with RESOURCE_EXHAUSTED; 0 or below = unlimited.
    #[arg(
        long,
        env = "MM_MAX_INFLIGHT_PER_MODEL_COPY",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub max_inflight_per_model_copy: i64,
    /// Loads that may wait for a load slot on this pod; a request needing a new load beyond it
    /// is refused with RESOURCE_EXHAUSTED; 0 = unlimited.
    #[arg(long, env = "MM_MAX_QUEUED_LOADS", default_value_t = modelmesh_mesh::limits::DEFAULT_MAX_QUEUED_LOADS, allow_negative_numbers = true)]
    pub max_queued_loads: usize,
    /// Internal port for requests forwarded between pods; 0 = single pod (no forwarding).
    #[arg(long, env = "MM_INTERNAL_PORT", default_value_t = 8080)]
    pub internal_port: u16,
    /// Host other pods use to reach this one (the pod IP in Kubernetes).
    #[arg(long, env = "MM_LOCATION", default_value = "127.0.0.1")]
    pub location: String,
    /// Lease TTL of this pod's instance record, in seconds: how soon peers notice it is gone.
    #[arg(long, env = "MM_INSTANCE_LEASE_TTL_SECS", default_value_t = 20)]
    pub instance_lease_ttl_secs: i64,
    /// How often the leader's reaper runs, in ms.
    #[arg(long, env = "MM_REAPER_INTERVAL_MS", default_value_t = 420_000)]
    pub reaper_interval_ms: u64,
    /// How long a pod must be gone before its registrations are dropped, in ms.
    #[arg(long, env = "MM_ASSUME_INSTANCE_GONE_MS", default_value_t = 600_000)]
    pub assume_instance_gone_ms: u64,
    /// How often the leader loads recently used models that have no copy into free space, in
    /// ms; 0 disables proactive loading.
    #[arg(long, env = "MM_PROACTIVE_LOAD_INTERVAL_MS", default_value_t = 420_000)]
    pub proactive_load_interval_ms: u64,
    /// How often this pod drops idle extra copies while the cluster is at least 95% full, in ms.
    #[arg(long, env = "MM_JANITOR_INTERVAL_MS", default_value_t = 360_000)]
    pub janitor_interval_ms: u64,
    /// This pod's labels, comma-separated (matched against type constraints).
    #[arg(long, env = "MM_LABELS", default_value = "")]
    pub labels: String,
    /// Type constraints JSON: {"<type>": {"required": [labels]}, "_default": {...}}.
    #[arg(long, env = "MM_TYPE_CONSTRAINTS")]
    pub type_constraints: Option<String>,
    /// File holding the type constraints JSON.
    #[arg(long, env = "MM_TYPE_CONSTRAINTS_PATH")]
    pub type_constraints_path: Option<std::path::PathBuf>,
    /// Requests per minute per copy above which another copy of a model is loaded.
    #[arg(long, env = "MM_SCALEUP_RPM_THRESHOLD", default_value_t = 2000)]
    pub scaleup_rpm_threshold: u64,
    /// gRPC methods proxied as streams (client-, server- or bidirectional), comma-separated
    /// `package.Service/Method`, besides KServe v2's ModelStreamInfer; every other method is
    /// proxied as a unary call.
    #[arg(long, env = "MM_STREAMING_METHODS", value_delimiter = ',', value_parser = parse_method)]
    pub streaming_methods: Vec<String>,
    /// KServe v2 REST port; 0 disables.
    #[arg(long, env = "MM_REST_PORT", default_value_t = 8008)]
    pub rest_port: u16,
    /// Port of /prestop, which blocks until this pod has moved its models at shutdown; 0 disables.
    #[arg(long, env = "MM_PRESTOP_WAIT_PORT", default_value_t = 8090)]
    pub prestop_port: u16,
    /// Probe port (/ready, /live); 0 disables.
    #[arg(long, env = "MM_PROBE_PORT", default_value_t = 8089)]
    pub probe_port: u16,
    /// Prometheus port (/metrics); 0 disables.
    #[arg(long, env = "MM_METRICS_PORT", default_value_t = 2112)]
    pub metrics_port: u16,
    /// TLS certificate chain (PEM) for the gRPC, REST and internal ports; with
    /// --tls-private-key-path, turns TLS on. Old names: MM_SVC_GRPC_CA_CERT_PATH,
    /// TAS_SVC_GRPC_CA_CERT_PATH.
    #[arg(long, env = "MM_TLS_KEY_CERT_PATH", value_name = "PEM")]
    pub tls_key_cert_path: Option<std::path::PathBuf>,
    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1, unencrypted). Old names:
    /// MM_SVC_GRPC_PRIVATE_KEY_PATH, TAS_SVC_GRPC_PRIVATE_KEY_PATH.
    #[arg(long, env = "MM_TLS_PRIVATE_KEY_PATH", value_name = "PEM")]
    pub tls_private_key_path: Option<std::path::PathBuf>,
    /// Passphrase of an encrypted key: not supported (start-up fails saying so; decrypt the key).
    #[arg(long, env = "MM_TLS_PRIVATE_KEY_PASSPHRASE", hide_env_values = true)]
    pub tls_private_key_passphrase: Option<String>,
    /// Client certificates on the gRPC and REST ports: NONE, OPTIONAL or REQUIRE (mutual TLS).
    /// The internal port between pods always requires one.
    #[arg(long, env = "MM_TLS_CLIENT_AUTH", default_value = "NONE")]
    pub tls_client_auth: String,
    /// CA certificates (PEM files, comma-separated) client and peer certificates are verified
    /// against; default: the certificate chain itself.
    #[arg(long, env = "MM_TLS_TRUST_CERT_PATH", value_name = "PEM[,PEM...]")]
    pub tls_trust_cert_path: Option<String>,
    /// Name pods verify each other's certificate against on the internal port; default: the
    /// certificate's first DNS name.
    #[arg(long, env = "MM_TLS_INTERNAL_SERVER_NAME")]
    pub tls_internal_server_name: Option<String>,
    /// Seconds to wait for the runtime to report READY.
    #[arg(long, env = "MM_RUNTIME_STARTUP_TIMEOUT_SECS", default_value_t = 180)]
    pub runtime_startup_timeout: u64,
}

/// The first of these environment variables that is set and not empty.
fn old_env(names: &[&str]) -> Option<std::path::PathBuf> {
    names
        .iter()
        .find_map(|n| std::env::var_os(n).filter(|v| !v.is_empty()))
        .map(Into::into)
}

impl Args {
    /// TLS from the `MM_TLS_*` settings (and upstream's older names); `None` when off.
    fn tls(&self) -> anyhow::Result<Option<modelmesh_mesh::tls::TlsConfig>> {
        use modelmesh_mesh::tls::{ClientAuth, TlsConfig, TlsFiles};
        let cert = self
            .tls_key_cert_path
            .clone()
            .or_else(|| old_env(&["MM_SVC_GRPC_CA_CERT_PATH", "TAS_SVC_GRPC_CA_CERT_PATH"]));
        let key = self.tls_private_key_path.clone().or_else(|| {
            old_env(&[
                "MM_SVC_GRPC_PRIVATE_KEY_PATH",
                "TAS_SVC_GRPC_PRIVATE_KEY_PATH",
            ])
        });
        let (cert, key) = match (cert, key) {
            (None, None) => return Ok(None),
            (Some(c), Some(k)) => (c, k),
            (Some(_), None) => anyhow::bail!(
                "MM_TLS_KEY_CERT_PATH is set but MM_TLS_PRIVATE_KEY_PATH is not: TLS needs both"
            ),
            (None, Some(_)) => anyhow::bail!(
                "MM_TLS_PRIVATE_KEY_PATH is set but MM_TLS_KEY_CERT_PATH is not: TLS needs both"
            ),
        };
        if self
            .tls_private_key_passphrase
            .as_deref()
            .is_some_and(|p| !p.is_empty())
        {
            anyhow::bail!(
                "MM_TLS_PRIVATE_KEY_PASSPHRASE is set: encrypted private keys are not supported; decrypt the key (openssl pkcs8 -topk8 -nocrypt) and keep it in a Secret"
            );
        }
        let files = TlsFiles {
            cert_chain: cert,
            private_key: key,
            client_auth: ClientAuth::parse(&self.tls_client_auth)?,
            trust: self
                .tls_trust_cert_path
                .as_deref()
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(Into::into)
                .collect(),
            internal_server_name: self.tls_internal_server_name.clone(),
        };
        Ok(Some(TlsConfig::load(&files)?))
    }

    /// The sidecar configuration these flags describe.
    pub fn config(&self) -> anyhow::Result<SidecarConfig> {
        let kv = KvConfig::parse(&self.kv_store).map_err(anyhow::Error::msg)?;
        let dataplane = match (&self.dataplane_config, &self.dataplane_config_path) {
            (Some(json), _) => DataplaneConfig::parse(json).map_err(anyhow::Error::msg)?,
            (None, Some(p)) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                DataplaneConfig::parse(&text).map_err(anyhow::Error::msg)?
            }
            (None, None) => DataplaneConfig::default(),
        };
        let instance_id = self
            .instance_id
            .clone()
            .or_else(|| self.pod_name.clone().filter(|n| !n.is_empty()))
            .unwrap_or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_else(|_| "local".into())
            });
        let metrics_port = match self.metrics.as_deref().map(parse_mm_metrics) {
            Some(Ok(p)) => p,
            Some(Err(e)) => anyhow::bail!(e),
            None => self.metrics_port,
        };
        if self
            .payload_processors
            .as_deref()
            .is_some_and(|p| !p.trim().is_empty())
        {
            tracing::warn!(
                "MM_PAYLOAD_PROCESSORS is set but payload processors are not supported; ignoring it"
            );
        }
        let port = |p: u16| (p != 0).then(|| SocketAddr::new(self.address, p));
        if !self.management_on_grpc_port && self.management_port == 0 {
            anyhow::bail!(
                "MM_MANAGEMENT_ON_GRPC_PORT=false needs MM_MANAGEMENT_PORT: the ModelMesh API would not be served anywhere"
            );
        }
        Ok(SidecarConfig {
            service_name: self.service_name.clone(),
            kv,
            kv_prefix: self.kv_prefix.clone(),
            instance_id,
            grpc_addr: SocketAddr::new(self.address, self.grpc_port),
            management_addr: port(self.management_port),
            management_on_grpc_port: self.management_on_grpc_port,
            runtime_mgmt: match &self.internal_grpc_socket {
                Some(p) => format!("unix:{}", p.display()),
                None => format!("{}:{}", self.runtime_host, self.internal_grpc_port),
            },
            runtime_data: match &self.internal_serving_grpc_socket {
                Some(p) => Some(format!("unix:{}", p.display())),
                None => self
                    .internal_serving_grpc_port
                    .map(|p| format!("{}:{p}", self.runtime_host)),
            },
            runtime_http: self
                .internal_serving_http_port
                .map(|p| format!("{}:{p}", self.runtime_host)),
            default_vmodel_owner: self.default_vmodel_owner.clone(),
            load_failure_expiry: Duration::from_millis(self.load_failure_expiry_ms),
            dataplane,
            max_message: self.max_message_size,
            memory_limit: cgroup_memory_limit(),
            limits: modelmesh_mesh::limits::LimitConfig {
                pod_requests: self.max_inflight_requests,
                copy_requests: usize::try_from(self.max_inflight_per_model_copy).unwrap_or(0),
                queued_loads: self.max_queued_loads,
            },
            tls: self.tls()?,
            rest_addr: port(self.rest_port),
            internal_addr: port(self.internal_port),
            location: self
                .pod_ip
                .clone()
                .filter(|ip| !ip.is_empty())
                .unwrap_or_else(|| self.location.clone()),
            scaleup_rpm: self.scaleup_rpm_threshold,
            streaming_methods: self.streaming_methods.clone(),
            instance_lease_ttl_secs: self.instance_lease_ttl_secs.max(2),
            reaper_every: Duration::from_millis(self.reaper_interval_ms),
            gone_after: Duration::from_millis(self.assume_instance_gone_ms),
            proactive_every: (self.proactive_load_interval_ms > 0)
                .then(|| Duration::from_millis(self.proactive_load_interval_ms)),
            janitor_every: Duration::from_millis(self.janitor_interval_ms.max(100)),
            shutdown_timeout: Duration::from_millis(self.shutdown_timeout_ms),
            labels: modelmesh_mesh::constraints::parse_labels(&self.labels),
            constraints: match (&self.type_constraints, &self.type_constraints_path) {
                (Some(json), _) => modelmesh_mesh::constraints::TypeConstraints::parse(json)
                    .map_err(anyhow::Error::msg)?,
                (None, Some(p)) => {
                    let text = std::fs::read_to_string(p)
                        .with_context(|| format!("reading {}", p.display()))?;
                    modelmesh_mesh::constraints::TypeConstraints::parse(&text)
                        .map_err(anyhow::Error::msg)?
                }
                (None, None) => Default::default(),
            },
            probe_addr: port(self.probe_port),
            prestop_addr: port(self.prestop_port),
            metrics_addr: port(metrics_port),
            runtime_poll: (
                Duration::from_millis(500),
                Duration::from_secs(self.runtime_startup_timeout),
            ),
        })
    }
}

/// `MM_METRICS`: `disabled` → 0 (off), `prometheus:port=<p>[;scheme=<s>]` → p.
/// A gRPC method as `package.Service/Method` (no leading slash, one slash).
fn parse_method(v: &str) -> Result<String, String> {
    let v = v.trim();
    match v.split_once('/') {
        Some((svc, m)) if !svc.is_empty() && !m.is_empty() && !m.contains('/') && v.is_ascii() => {
            Ok(v.to_string())
        }
        _ => Err(format!(
            "{v:?} is not a gRPC method: write package.Service/Method, e.g. inference.GRPCInferenceService/ModelStreamInfer"
        )),
    }
}

fn parse_mm_metrics(v: &str) -> Result<u16, String> {
    let v = v.trim();
    if v == "disabled" || v.is_empty() {
        return Ok(0);
    }
    let Some(params) = v.strip_prefix("prometheus") else {
        return Err(format!(
            "MM_METRICS '{v}': expected 'disabled' or 'prometheus:port=<port>;scheme=<http|https>'"
        ));
    };
    let mut port = 2112;
    for kv in params
        .trim_start_matches(':')
        .split(';')
        .filter(|s| !s.is_empty())
    {
        match kv.split_once('=') {
            Some(("port", p)) => {
                port = p
                    .parse()
                    .map_err(|_| format!("MM_METRICS '{v}': port '{p}' is not a port number"))?
            }
            Some(("scheme", "https")) => tracing::warn!(
                "MM_METRICS asks for https; metrics are served over plain http (TLS is not implemented for metrics yet)"
            ),
            Some(("scheme", "http")) => {}
            _ => return Err(format!("MM_METRICS '{v}': unknown setting '{kv}'")),
        }
    }
    Ok(port)
}

/// Runs the sidecar until SIGTERM / Ctrl-C.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let cfg = a.config()?;
    let sidecar = Sidecar::start(cfg, None).await?;
    if let Some(addr) = sidecar.grpc_addr() {
        eprintln!("modelmesh sidecar: grpc listening on {addr}");
    }
    if let Some(addr) = sidecar.rest_addr() {
        eprintln!("modelmesh sidecar: rest listening on {addr}");
    }
    sidecar.serve(super::signal::shutdown()).await?;
    Ok(())
}

/// This container's memory limit, from its cgroup (v2 `memory.max`, else v1's
/// `memory.limit_in_bytes`); None when unlimited or unknown.
fn cgroup_memory_limit() -> Option<u64> {
    [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .and_then(|t| t.trim().parse::<u64>().ok())
    // cgroup v1 reports "unlimited" as a huge number.
    .filter(|b| *b < (1 << 60))
}

#[cfg(test)]
mod tests {
    use super::parse_mm_metrics;

    #[test]
    fn upstream_metrics_setting() {
        assert_eq!(parse_mm_metrics("disabled"), Ok(0));
        assert_eq!(
            parse_mm_metrics("prometheus:port=2222;scheme=http"),
            Ok(2222)
        );
        assert_eq!(parse_mm_metrics("prometheus"), Ok(2112));
        assert!(parse_mm_metrics("statsd:port=1").is_err());
        assert!(
            parse_mm_metrics("prometheus:port=x")
                .unwrap_err()
                .contains("port")
        );
    }
}
