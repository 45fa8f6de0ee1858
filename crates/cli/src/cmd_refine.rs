//! `world4rl refine --config CFG --run RUN [--task T]... [--data DATASET] [--minutes M] [--real-env]
//! [--json]`: stage 2, the `refine/<task>` stage (or the ceiling control, `refine-real/<task>`) for
//! each task, with the config resolved as `world4rl run` resolves it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use tch::Device;
use w4rl_data::Dataset;
use world4rl::experiment::run::RunDir;
use world4rl::experiment::stage::run_stage;
use world4rl::policy::GaussianPolicy;
use world4rl::stages::ceiling::{CeilingReward, RealEnvControl};
use world4rl::stages::refine::{accept_starts, RefineTask};

use crate::cmd_train::load_config;
use crate::output::print_json;

/// `world4rl refine`.
#[derive(Debug, Args)]
pub struct RefineArgs {
    /// Experiment config (TOML); its `[refine]` section is used.
    #[arg(long)]
    pub config: PathBuf,
    /// Run directory holding the world model, the classifiers and the BC policies.
    #[arg(long)]
    pub run: PathBuf,
    /// Only these tasks (repeatable; default: `refine.tasks`, else the experiment's tasks).
    #[arg(long)]
    pub task: Vec<String>,
    /// Dataset providing the start states (default: the one the BC policy was trained on, or
    /// `RUN/dataset`).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Override the refinement time budget per task, in minutes.
    #[arg(long)]
    pub minutes: Option<f64>,
    /// Run the ceiling control instead: the same PPO in the real environment with the classifier as
    /// the reward (no world model), into RUN/refine-real/<task>/.
    #[arg(long)]
    pub real_env: bool,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

/// The dataset of a run: `--data`, else the one recorded in the BC policy, else `RUN/dataset`.
fn start_dataset(args: &RefineArgs, run: &RunDir, task: &str) -> Result<PathBuf> {
    match &args.data {
        Some(d) => Ok(d.clone()),
        None => start_dataset_of(run, task).with_context(|| {
            format!("no dataset for the start states of '{task}': pass --data DATASET (the dataset the run was trained on)")
        }),
    }
}

/// `world4rl refine`: the `refine/<task>` stage (or, with `--real-env`, `refine-real/<task>`) for
/// each task.
pub fn refine(args: RefineArgs, device: Device, seed: Option<u64>) -> Result<()> {
    let cfg = load_config(&args.config, seed)?;
    if !args.run.exists() {
        bail!("run directory {} does not exist; train the world model, classifier and BC policy into it first", args.run.display());
    }
    let run = crate::cmd_train::open_run(&args.run, &args.config, seed)?;
    let mut rc = cfg.refine.clone();
    if let Some(m) = args.minutes {
        if m.is_nan() || m <= 0.0 {
            bail!("--minutes must be positive (got {m})");
        }
        rc.ppo.time_budget_secs = m * 60.0;
    }
    let tasks =
        world4rl::stages::choose_tasks(&args.task, &rc.tasks, || cfg.experiment.tasks.clone());
    let eval = cfg.eval_config();
    if args.real_env {
        let mut out = Vec::new();
        for task in tasks {
            let stage = RealEnvControl {
                reward: CeilingReward::Classifier,
                cfg: &rc,
                task,
                env: cfg.experiment.env_config(),
                eval: &eval,
                device,
            };
            out.push(run_stage(&run, &stage)?.record);
        }
        if args.json {
            print_json(&serde_json::json!({ "ceiling": out }))?;
        }
        return Ok(());
    }
    let heldout = accept_starts(&rc, &run)?;
    let mut reports = Vec::new();
    for task in tasks {
        let data = start_dataset(&args, &run, &task)?;
        let dataset = Dataset::open(&data)
            .with_context(|| format!("opening the dataset {}", data.display()))?;
        let stage = RefineTask {
            cfg: &rc,
            data: &dataset,
            accept_starts: heldout.as_ref(),
            task,
            device,
            monitor_seed: cfg.experiment.seed,
            max_steps: cfg.experiment.max_steps,
            eval: &eval,
        };
        reports.push(run_stage(&run, &stage)?.record);
    }
    if args.json {
        print_json(&serde_json::json!({ "refine": reports }))?;
    }
    Ok(())
}

/// The training dataset of a run for `task` (the one recorded in its BC policy, else `RUN/dataset`).
pub(crate) fn start_dataset_of(run: &RunDir, task: &str) -> Result<PathBuf> {
    let bc = run.bc_policy(task);
    if let Ok((_, extra)) = GaussianPolicy::load(&bc, Device::Cpu) {
        if let Some(d) = extra.get("dataset").and_then(|d| d.as_str()) {
            if Path::new(d).exists() {
                return Ok(PathBuf::from(d));
            }
        }
    }
    let d = run.path().join("dataset");
    if d.exists() {
        return Ok(d);
    }
    bail!(
        "no training dataset found for '{task}' in run {}",
        run.path().display()
    )
}
