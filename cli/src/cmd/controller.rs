//! `modelmesh controller`: the Kubernetes controller and its tooling.

use anyhow::Context;
use clap::{Args as ClapArgs, Subcommand};
use std::path::PathBuf;

/// Arguments of `modelmesh controller`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller: reconcile Predictors and ModelMesh-mode InferenceServices into mesh
    /// registrations and write their status (in a pod, or with a kubeconfig).
    Run(RunArgs),
    /// Print the Deployment the controller would make for a runtime (a ServingRuntime or
    /// ClusterServingRuntime YAML file), or with --network-policy the NetworkPolicy it applies
    /// in a served namespace, with a model-serving-config config.yaml.
    Render {
        /// The runtime's YAML (required unless --network-policy).
        #[arg(long, value_name = "FILE", required_unless_present = "network_policy")]
        runtime: Option<PathBuf>,
        /// The config.yaml (default: the built-in defaults).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Replicas to render.
        #[arg(long, default_value_t = 1)]
        replicas: i32,
        /// Print the runtime pods' NetworkPolicy instead of a Deployment.
        #[arg(long, conflicts_with = "runtime")]
        network_policy: bool,
        /// The served namespace (with --network-policy).
        #[arg(long, default_value = "modelmesh-serving")]
        namespace: String,
        /// The controller's namespace (with --network-policy).
        #[arg(long, default_value = "modelmesh-serving")]
        controller_namespace: String,
    },
    /// Print the CustomResourceDefinitions (Predictor, ServingRuntime, ClusterServingRuntime,
    /// InferenceService) as YAML, or write one file per CRD into a directory (the chart's crds/).
    Crdgen {
        /// Write `<group>_<plural>.yaml` files here instead of printing one stream.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

/// Flags of `modelmesh controller run` (upstream's environment names).
#[derive(Debug, ClapArgs)]
struct RunArgs {
    /// The controller's namespace (default: the service account's, else modelmesh-serving).
    #[arg(long, env = "NAMESPACE")]
    namespace: Option<String>,
    /// Serve only the controller's namespace (otherwise every namespace labelled
    /// modelmesh-enabled=true, and its own).
    #[arg(long, env = "NAMESPACE_SCOPE", default_value_t = false)]
    namespace_scope: bool,
    /// The ConfigMap holding config.yaml (model-serving-config).
    #[arg(long, default_value = "model-serving-config")]
    config_map: String,
    /// Development: send mesh calls to this host:port instead of each namespace's Service.
    #[arg(long, env = "MODELMESH_ENDPOINT")]
    mesh_endpoint: Option<String>,
    /// Port of /healthz and /readyz; 0 disables.
    #[arg(long, default_value_t = 8081)]
    health_port: u16,
    /// Port of Prometheus /metrics (reconcile counts); 0 disables.
    #[arg(long, default_value_t = 8080)]
    metrics_port: u16,
    /// Reconcile InferenceServices in ModelMesh mode (skipped when the CRD is missing).
    #[arg(long, env = "ENABLE_ISVC_WATCH", default_value_t = true, action = clap::ArgAction::Set)]
    isvc: bool,
    /// Take the leader Lease (modelmesh-controller-leader-lock) before reconciling, so several
    /// replicas can run and one leads.
    #[arg(long, env = "ENABLE_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// This replica's identity in the lease (default: the pod name, from POD_NAME or the host name).
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
}

/// Runs the subcommand.
pub async fn run(a: Args) -> anyhow::Result<()> {
    match a.command {
        Command::Crdgen { out_dir } => crdgen(out_dir),
        Command::Render {
            runtime,
            config,
            replicas,
            network_policy,
            namespace,
            controller_namespace,
        } => {
            let cfg = match &config {
                Some(p) => modelmesh_controller::config::Config::parse(
                    &std::fs::read_to_string(p)
                        .with_context(|| format!("reading {}", p.display()))?,
                )?,
                None => Default::default(),
            };
            match runtime {
                Some(rt) if !network_policy => render(&rt, &cfg, replicas),
                _ => {
                    let p = modelmesh_controller::network_policy::network_policy(
                        &cfg,
                        &namespace,
                        &controller_namespace,
                    )
                    .context("networkPolicy.enabled is false in this config: nothing to render")?;
                    print!(
                        "{}",
                        serde_norway::to_string(&serde_json::json!({
                            "apiVersion": "networking.k8s.io/v1",
                            "kind": "NetworkPolicy",
                            "metadata": p.metadata,
                            "spec": p.spec,
                        }))?
                    );
                    Ok(())
                }
            }
        }
        Command::Run(r) => {
            let namespace = r.namespace.unwrap_or_else(|| {
                std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                    .map(|s| s.trim().to_string())
                    .unwrap_or_else(|_| "modelmesh-serving".into())
            });
            modelmesh_controller::run::run(modelmesh_controller::run::RunConfig {
                namespace,
                namespace_scope: r.namespace_scope,
                config_map: r.config_map,
                mesh_endpoint: r.mesh_endpoint,
                health_addr: (r.health_port != 0)
                    .then(|| std::net::SocketAddr::from(([0, 0, 0, 0], r.health_port))),
                metrics_addr: (r.metrics_port != 0)
                    .then(|| std::net::SocketAddr::from(([0, 0, 0, 0], r.metrics_port))),
                watch_isvc: r.isvc,
                leader_identity: r.leader_election.then(|| {
                    r.pod_name.clone().unwrap_or_else(|| {
                        std::fs::read_to_string("/etc/hostname")
                            .map(|h| h.trim().to_string())
                            .unwrap_or_else(|_| "modelmesh-controller".into())
                    })
                }),
            })
            .await?;
            Ok(())
        }
    }
}

fn render(
    runtime: &std::path::Path,
    cfg: &modelmesh_controller::config::Config,
    replicas: i32,
) -> anyhow::Result<()> {
    use modelmesh_controller::crd::serving_runtime::ServingRuntimeSpec;
    let text = std::fs::read_to_string(runtime)
        .with_context(|| format!("reading {}", runtime.display()))?;
    let v: serde_json::Value = serde_norway::from_str(&text)
        .with_context(|| format!("{} is not YAML", runtime.display()))?;
    let kind = v["kind"].as_str().unwrap_or_default();
    anyhow::ensure!(
        kind == "ServingRuntime" || kind == "ClusterServingRuntime",
        "{}: expected a ServingRuntime or ClusterServingRuntime, got kind '{kind}'",
        runtime.display()
    );
    let spec: ServingRuntimeSpec = serde_json::from_value(v["spec"].clone())
        .with_context(|| format!("{}: invalid spec", runtime.display()))?;
    let name = v["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let annotations: std::collections::BTreeMap<String, String> =
        serde_json::from_value(v["metadata"]["annotations"].clone()).unwrap_or_default();
    let problems = modelmesh_controller::validation::validate(
        &spec,
        &cfg.built_in_server_types,
        cfg.runtime_policy(),
    );
    anyhow::ensure!(
        problems.is_empty(),
        "runtime {name} is invalid:\n  {}",
        problems.join("\n  ")
    );
    let d = modelmesh_controller::deployment::render(
        &modelmesh_controller::deployment::RuntimeInput {
            name: &name,
            spec: &spec,
            annotations: &annotations,
            replicas,
            pvcs: &[],
            etcd_secret: "model-serving-etcd",
        },
        cfg,
    );
    print!("{}", serde_norway::to_string(&d)?);
    Ok(())
}

fn crdgen(out_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let crds = modelmesh_controller::crd::all();
    match out_dir {
        None => {
            for crd in &crds {
                print!("{}", modelmesh_controller::crd::to_yaml(crd)?);
            }
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for crd in &crds {
                let path = dir.join(modelmesh_controller::crd::file_name(crd));
                std::fs::write(&path, modelmesh_controller::crd::to_yaml(crd)?)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}
