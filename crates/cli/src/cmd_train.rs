//! Stage 1's learners on a dataset, into a run directory: the reward classifier and the BC policy.
//!
//! * `world4rl train reward --config CFG --data DATASET --out RUN [--task T]... [--json]`
//! * `world4rl train bc --config CFG --data DATASET --out RUN [--task T]... [--json]`
//!
//! Each resolves the config as `world4rl run` does and runs the same stage objects
//! (`world4rl::stages`), so a stage command and the pipeline train the same models. With `--json`
//! the last line of standard output is one JSON object.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use tch::Device;
use w4rl_data::Dataset;
use world4rl::experiment::config::{ExperimentConfig, ResolvedConfig};
use world4rl::experiment::run::RunDir;
use world4rl::experiment::stage::run_stage;
use world4rl::stages::bc::{BcKind, TrainBc};
use world4rl::stages::{pick_tasks, reward};

use crate::output::print_json;

/// `world4rl train reward` and `world4rl train bc`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Experiment config (TOML); its `[reward]` or `[bc]` section is used.
    #[arg(long)]
    pub config: PathBuf,
    /// Episode dataset (from `world4rl collect`).
    #[arg(long)]
    pub data: PathBuf,
    /// Run directory (created when needed); finished tasks are skipped.
    #[arg(long)]
    pub out: PathBuf,
    /// Only these tasks (repeatable; default: the section's `tasks`, else every task of the dataset).
    #[arg(long)]
    pub task: Vec<String>,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

/// The config file, with `--seed` applied, resolved as every stage trains from it
/// ([`ExperimentConfig::resolve`]: the same values `world4rl run` uses).
pub(crate) fn load_config(path: &Path, seed: Option<u64>) -> Result<ResolvedConfig> {
    let mut cfg = ExperimentConfig::load(path)?;
    if let Some(s) = seed {
        cfg.experiment.seed = s;
    }
    Ok(cfg.resolve())
}

/// Opens (and locks) the run directory `out` and records the config file there as `world4rl run`
/// does: a run directory made with another config is refused, so a learner never skips tasks that
/// were trained under other settings.
pub(crate) fn open_run(out: &Path, config: &Path, seed: Option<u64>) -> Result<RunDir> {
    let run = RunDir::open_locked(out)?;
    run.write_config(&crate::cmd_run::load(config, seed)?)
        .with_context(|| {
            format!(
                "{} was written under {}, not under {}",
                run.path().display(),
                run.path().join("config.toml").display(),
                config.display()
            )
        })?;
    Ok(run)
}

/// `world4rl train reward`: the `reward/<task>` stage for each task, on `--data`, into `--out`.
pub fn train_reward(args: TrainArgs, device: Device, seed: Option<u64>) -> Result<()> {
    let cfg = load_config(&args.config, seed)?;
    let dataset = Dataset::open(&args.data)?;
    let run = open_run(&args.out, &args.config, seed)?;
    let tasks = pick_tasks(&args.task, &cfg.reward.tasks, &dataset);
    let wm = reward::imagination_model(&cfg.reward, &run, &tasks, device)?;
    let mut reports = Vec::new();
    for task in tasks {
        let stage = reward::TrainReward {
            cfg: &cfg.reward,
            data: &dataset,
            task,
            world_model: wm.as_ref(),
            device,
        };
        reports.push(run_stage(&run, &stage)?.record);
    }
    if args.json {
        print_json(&serde_json::json!({ "reward": reports }))?;
    }
    Ok(())
}

/// `world4rl train bc`: the `bc/<task>` stage for each task, on `--data`, into `--out`.
pub fn train_bc(args: TrainArgs, device: Device, seed: Option<u64>) -> Result<()> {
    let cfg = load_config(&args.config, seed)?;
    let dataset = Dataset::open(&args.data)?;
    let run = open_run(&args.out, &args.config, seed)?;
    let mut reports = Vec::new();
    let eval = cfg.eval_config();
    for task in pick_tasks(&args.task, &cfg.bc.tasks, &dataset) {
        let stage = TrainBc {
            cfg: &cfg.bc,
            data: &dataset,
            task,
            kind: BcKind::Demos,
            eval: &eval,
            device,
        };
        reports.push(run_stage(&run, &stage)?.record);
    }
    if args.json {
        print_json(&serde_json::json!({ "bc": reports }))?;
    }
    Ok(())
}
