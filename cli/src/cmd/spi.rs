//! `modelmesh spi`: call a mmesh.ModelRuntime (an adapter or a runtime that implements the SPI
//! itself) directly, as the mesh would. For operators debugging a pod and for the demo.

use anyhow::{Context, bail};
use modelmesh_proto::mmesh::{
    self as pb, model_runtime_client::ModelRuntimeClient, runtime_status_response::Status,
};
use std::time::{Duration, Instant};

/// Flags of `modelmesh spi`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Call a mmesh.ModelRuntime (adapter) directly: runtimeStatus, loadModel, unloadModel, modelSize"
)]
pub struct Args {
    /// Address of the ModelRuntime service.
    #[arg(long, env = "ADAPTER_ADDRESS", default_value = "127.0.0.1:8085")]
    address: String,
    #[command(subcommand)]
    call: Call,
}

#[derive(Debug, clap::Subcommand)]
enum Call {
    /// runtimeStatus; with --wait, poll until READY (as the mesh does at start-up).
    Status {
        /// Seconds to wait for READY (0 = ask once).
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
    /// loadModel (waits for the runtime to be READY first, up to 60 s).
    Load {
        /// Model id to load under.
        model_id: String,
        /// Model type (placement label; the format when modelKey has none).
        #[arg(long)]
        model_type: String,
        /// Path of the model in its storage.
        #[arg(long)]
        model_path: String,
        /// modelKey JSON (storage_key, storage_params, model_type, ...).
        #[arg(long, default_value = "{}")]
        model_key: String,
    },
    /// unloadModel.
    Unload {
        /// Model id.
        model_id: String,
    },
    /// modelSize.
    Size {
        /// Model id.
        model_id: String,
    },
}

async fn wait_ready(
    c: &mut ModelRuntimeClient<tonic::transport::Channel>,
    wait: Duration,
) -> anyhow::Result<pb::RuntimeStatusResponse> {
    let deadline = Instant::now() + wait;
    loop {
        let last = match c.runtime_status(pb::RuntimeStatusRequest {}).await {
            Ok(r) => {
                let r = r.into_inner();
                match Status::try_from(r.status) {
                    Ok(Status::Ready) => return Ok(r),
                    Ok(Status::Failing) => bail!("runtime reports FAILING"),
                    _ => "STARTING".to_string(),
                }
            }
            Err(e) => format!("{}: {}", e.code(), e.message()),
        };
        if Instant::now() >= deadline {
            bail!("runtime not READY after {wait:?} (last answer: {last})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs one call and prints the answer.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let uri = if a.address.contains("://") {
        a.address.clone()
    } else {
        format!("http://{}", a.address)
    };
    let channel = tonic::transport::Endpoint::from_shared(uri.clone())
        .with_context(|| format!("invalid address {uri}"))?
        .connect_lazy();
    let mut c = ModelRuntimeClient::new(channel);
    match a.call {
        Call::Status { wait } => {
            let r = if wait > 0 {
                wait_ready(&mut c, Duration::from_secs(wait)).await?
            } else {
                c.runtime_status(pb::RuntimeStatusRequest {})
                    .await?
                    .into_inner()
            };
            println!("{r:#?}");
        }
        Call::Load {
            model_id,
            model_type,
            model_path,
            model_key,
        } => {
            wait_ready(&mut c, Duration::from_secs(60)).await?;
            let started = Instant::now();
            let r = c
                .load_model(pb::LoadModelRequest {
                    model_id: model_id.clone(),
                    model_type,
                    model_path,
                    model_key,
                })
                .await
                .map_err(|s| anyhow::anyhow!("loadModel failed ({}): {}", s.code(), s.message()))?
                .into_inner();
            println!(
                "loaded {model_id}: {} bytes, in {:?}",
                r.size_in_bytes,
                started.elapsed()
            );
        }
        Call::Unload { model_id } => {
            c.unload_model(pb::UnloadModelRequest {
                model_id: model_id.clone(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("unloadModel failed ({}): {}", s.code(), s.message()))?;
            println!("unloaded {model_id}");
        }
        Call::Size { model_id } => {
            let r = c
                .model_size(pb::ModelSizeRequest {
                    model_id: model_id.clone(),
                })
                .await?
                .into_inner();
            println!("{model_id}: {} bytes", r.size_in_bytes);
        }
    }
    Ok(())
}
