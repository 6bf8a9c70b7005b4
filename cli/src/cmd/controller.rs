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
    /// Print the CustomResourceDefinitions (Predictor, ServingRuntime, ClusterServingRuntime,
    /// InferenceService) as YAML, or write one file per CRD into a directory (the chart's crds/).
    Crdgen {
        /// Write `<group>_<plural>.yaml` files here instead of printing one stream.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

/// Runs the subcommand.
pub async fn run(a: Args) -> anyhow::Result<()> {
    match a.command {
        Command::Crdgen { out_dir } => crdgen(out_dir),
    }
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
