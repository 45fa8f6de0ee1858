//! `world4rl export policy`: a policy folder for Python (LeRobot-style config, weights, a PyTorch module).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use tch::Device;
use world4rl::policy::{export, GaussianPolicy};

use crate::output::print_json;

#[derive(Debug, Subcommand)]
pub enum ExportCmd {
    /// A BC or refined policy as `config.json` + `model.safetensors` + `world4rl_policy.py` (plain
    /// PyTorch: `World4RLPolicy.from_pretrained(DIR).select_action(batch)`).
    Policy(PolicyArgs),
}

#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// The policy checkpoint (`RUN/bc/<task>/policy.safetensors`, `RUN/refine/<task>/last.safetensors`).
    pub checkpoint: PathBuf,
    /// The folder to write (created; a folder holding other files is refused).
    #[arg(long)]
    pub out: PathBuf,
    /// Print the summary as one JSON line.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: ExportCmd) -> Result<()> {
    match cmd {
        ExportCmd::Policy(a) => {
            let (policy, _) = GaussianPolicy::load(&a.checkpoint, Device::Cpu)
                .with_context(|| format!("loading the policy {}", a.checkpoint.display()))?;
            let summary = export::export_policy(&policy, &a.checkpoint, &a.out)?;
            tracing::info!(
                "exported {} ({} tensors, {} parameters) to {}: load it in Python with \
                 `World4RLPolicy.from_pretrained(\"{}\")` from its world4rl_policy.py",
                a.checkpoint.display(),
                summary.tensors,
                summary.parameters,
                a.out.display(),
                a.out.display()
            );
            if a.json {
                print_json(&summary)?;
            }
            Ok(())
        }
    }
}
