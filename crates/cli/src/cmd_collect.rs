//! `world4rl collect --config CFG --out DATASET`: the paper's data recipe for every task of the config.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use w4rl_data::EpisodeKind;
use world4rl::collect::collect_recipe;
use world4rl::config::ExperimentConfig;

use crate::output::print_json;

#[derive(Debug, Args)]
pub struct CollectArgs {
    /// Experiment config (TOML).
    #[arg(long)]
    pub config: PathBuf,
    /// Dataset folder to create or complete.
    #[arg(long)]
    pub out: PathBuf,
    /// Only these kinds (expert, policy, random); default all three.
    #[arg(long, value_delimiter = ',')]
    pub kinds: Vec<String>,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: CollectArgs, seed: Option<u64>) -> Result<()> {
    let cfg = ExperimentConfig::load(&args.config)?;
    let kinds: Vec<EpisodeKind> = if args.kinds.is_empty() {
        EpisodeKind::ALL.to_vec()
    } else {
        args.kinds
            .iter()
            .map(|k| k.parse())
            .collect::<Result<_, _>>()?
    };
    let seed = seed.unwrap_or(cfg.experiment.seed);
    let pb = world4rl::progress::bar(0, "collect");
    let t0 = std::time::Instant::now();
    let summary = collect_recipe(
        &args.out,
        &cfg.experiment.suite,
        &cfg.experiment.tasks,
        cfg.experiment.image_size,
        seed,
        &cfg.collect,
        None,
        &kinds,
        |done, total| {
            pb.set_length(total as u64);
            pb.set_position(done as u64);
        },
    )?;
    pb.finish_and_clear();
    tracing::info!(
        "collected {} episodes ({} already present) into {} in {:.1}s",
        summary.written,
        summary.existing,
        args.out.display(),
        t0.elapsed().as_secs_f64()
    );
    if args.json {
        print_json(&summary)?;
    }
    Ok(())
}
