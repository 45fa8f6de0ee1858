//! `world4rl run CFG --out RUN`: the whole pipeline, resumable stage by stage.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use tch::Device;
use world4rl::config::ExperimentConfig;
use world4rl::run::RunDir;

use crate::output::print_json;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Experiment config (TOML), e.g. configs/tabletop-cpu.toml.
    pub config: PathBuf,
    /// Run directory (default: runs/<config name>). Re-running on it resumes.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print one JSON object (the report's paths and the success table) as the last line.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: RunArgs, device: Device, seed: Option<u64>) -> Result<()> {
    let mut cfg = ExperimentConfig::load(&args.config)?;
    if let Some(s) = seed {
        cfg.experiment.seed = s;
    }
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(
            args.config
                .file_stem()
                .map(|s| s.to_os_string())
                .unwrap_or_else(|| "run".into()),
        )
    });
    let run = RunDir::open_locked(&out)?;
    let html = world4rl::pipeline::run(&cfg, &run, device)?;
    eprintln!(
        "report: {} (and {})",
        html.display(),
        run.path().join("report.md").display()
    );
    if args.json {
        print_json(&serde_json::json!({
            "run": run.path(),
            "report_html": html,
            "report_md": run.path().join("report.md"),
            "eval": run.done_summary("eval"),
        }))?;
    }
    Ok(())
}
