//! Policy-side commands (stage 1's classifier and BC policy, stage 2, evaluation):
//!
//! * `world4rl train reward --config CFG --data DATASET --out RUN [--task T]... [--json]`
//! * `world4rl train bc --config CFG --data DATASET --out RUN [--task T]... [--json]`
//! * `world4rl refine --config CFG --run RUN [--task T]... [--data DATASET] [--minutes M] [--json]`
//! * `world4rl eval policy --policy CKPT --task TASK --episodes N [--json]`
//!
//! With `--json` the last line of standard output is one JSON object.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use tch::Device;
use w4rl_data::Dataset;
use world4rl::config::ExperimentConfig;
use world4rl::evaluate::{evaluate_policy, EvalConfig};
use world4rl::policy::GaussianPolicy;
use world4rl::run::RunDir;

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

/// `world4rl eval policy`.
#[derive(Debug, Args)]
pub struct EvalPolicyArgs {
    /// Policy checkpoint (`RUN/bc/<task>/policy.safetensors`, `RUN/refine/<task>/best.safetensors`, ...).
    #[arg(long)]
    pub policy: PathBuf,
    /// Task to evaluate on (default: the task the policy was trained for).
    #[arg(long)]
    pub task: Option<String>,
    /// Number of episodes.
    #[arg(long, default_value_t = 100)]
    pub episodes: usize,
    /// Environments stepped together.
    #[arg(long, default_value_t = 16)]
    pub num_envs: usize,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

fn load_config(path: &Path, seed: Option<u64>) -> Result<ExperimentConfig> {
    let mut cfg = ExperimentConfig::load(path)?;
    if let Some(s) = seed {
        cfg.experiment.seed = s;
    }
    Ok(cfg)
}

/// The frame size the policy side works at: the section's own `image_size`, else the world model's
/// (so that the policy and the classifier see at deployment the frames they see in imagination).
fn policy_image_size(section: usize, cfg: &ExperimentConfig) -> usize {
    if section > 0 {
        section
    } else {
        cfg.world_model.model.image_size
    }
}

/// `world4rl train reward`.
pub fn train_reward(args: TrainArgs, device: Device, seed: Option<u64>) -> Result<()> {
    let cfg = load_config(&args.config, seed)?;
    let dataset = Dataset::open(&args.data)?;
    let mut rc = cfg.reward.clone();
    rc.image_size = policy_image_size(rc.image_size, &cfg);
    rc.seed ^= cfg.experiment.seed;
    if !args.task.is_empty() {
        rc.tasks = args.task.clone();
    }
    let run = RunDir::open(&args.out)?;
    let reports = world4rl::reward::train_all(&rc, &dataset, &run, device)?;
    for r in &reports {
        tracing::info!(
            "reward '{}': held-out F1 {:.3} (precision {:.3}, recall {:.3}, {} frames), threshold {:.2}",
            r.task,
            r.heldout.f1,
            r.heldout.precision,
            r.heldout.recall,
            r.heldout.n,
            r.threshold
        );
    }
    if args.json {
        print_json(&serde_json::json!({ "reward": reports }))?;
    }
    Ok(())
}

/// `world4rl train bc`.
pub fn train_bc(args: TrainArgs, device: Device, seed: Option<u64>) -> Result<()> {
    let cfg = load_config(&args.config, seed)?;
    let dataset = Dataset::open(&args.data)?;
    let mut bc = cfg.bc.clone();
    bc.image_size = policy_image_size(bc.image_size, &cfg);
    bc.seed ^= cfg.experiment.seed;
    if !args.task.is_empty() {
        bc.tasks = args.task.clone();
    }
    let run = RunDir::open(&args.out)?;
    let reports = world4rl::policy::bc::train_all(&bc, &dataset, &run, device)?;
    for r in &reports {
        tracing::info!(
            "bc '{}': {} demos, held-out MSE {}",
            r.task,
            r.demos,
            r.val_mse.map_or("-".to_string(), |m| format!("{m:.4}"))
        );
    }
    if args.json {
        print_json(&serde_json::json!({ "bc": reports }))?;
    }
    Ok(())
}

/// The dataset of a run: `--data`, else the one recorded in the BC policy, else `RUN/dataset`.
fn start_dataset(args: &RefineArgs, run: &RunDir, task: &str) -> Result<PathBuf> {
    if let Some(d) = &args.data {
        return Ok(d.clone());
    }
    let bc = world4rl::policy::bc::checkpoint_path(run, task);
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
        "no dataset for the start states of '{task}': pass --data DATASET (the dataset the run was trained on)"
    )
}

/// `world4rl refine`.
pub fn refine(args: RefineArgs, device: Device, seed: Option<u64>) -> Result<()> {
    let cfg = load_config(&args.config, seed)?;
    if !args.run.exists() {
        bail!("run directory {} does not exist; train the world model, classifier and BC policy into it first", args.run.display());
    }
    let run = RunDir::open(&args.run)?;
    let mut rc = cfg.refine.clone();
    rc.ppo.seed ^= cfg.experiment.seed;
    if let Some(m) = args.minutes {
        if m.is_nan() || m <= 0.0 {
            bail!("--minutes must be positive (got {m})");
        }
        rc.ppo.time_budget_secs = m * 60.0;
    }
    let tasks = if !args.task.is_empty() {
        args.task.clone()
    } else if !rc.tasks.is_empty() {
        rc.tasks.clone()
    } else {
        cfg.experiment.tasks.clone()
    };
    if args.real_env {
        let mut out = Vec::new();
        for task in &tasks {
            let (summary, last) = world4rl::ceiling::refine_real_task(
                &rc,
                &run,
                task,
                cfg.experiment.image_size,
                device,
            )?;
            tracing::info!(
                "ceiling control '{task}': {} iterations, classifier-judged success {:.2} -> {:.2}; evaluate {}",
                summary.iterations,
                summary.first_success_rate,
                summary.best_success_rate,
                last.display()
            );
            out.push(serde_json::json!({"task": task, "ppo": summary, "last": last}));
        }
        if args.json {
            print_json(&serde_json::json!({ "ceiling": out }))?;
        }
        return Ok(());
    }
    let mut reports = Vec::new();
    for task in &tasks {
        let data = start_dataset(&args, &run, task)?;
        let dataset = Dataset::open(&data)
            .with_context(|| format!("opening the dataset {}", data.display()))?;
        let r = world4rl::ppo::refine_task(&rc, &run, &dataset, task, device, cfg.experiment.seed)?;
        tracing::info!(
            "refine '{task}': {} iterations, imagined success {:.2} -> best {:.2} (iteration {}), {:.0} s",
            r.ppo.iterations,
            r.ppo.first_success_rate,
            r.ppo.best_success_rate,
            r.ppo.best_iteration,
            r.ppo.seconds
        );
        reports.push(r);
    }
    if args.json {
        print_json(&serde_json::json!({ "refine": reports }))?;
    }
    Ok(())
}

/// `world4rl eval policy`.
pub fn eval_policy(args: EvalPolicyArgs, device: Device, seed: Option<u64>) -> Result<()> {
    if !args.policy.exists() {
        bail!("policy checkpoint {} does not exist", args.policy.display());
    }
    let (policy, _) = GaussianPolicy::load(&args.policy, device)?;
    let task = match &args.task {
        Some(t) => t.clone(),
        None if !policy.spec().task.is_empty() => policy.spec().task.clone(),
        None => bail!(
            "{} does not record its task; pass --task TASK",
            args.policy.display()
        ),
    };
    let cfg = EvalConfig {
        episodes: args.episodes,
        num_envs: args.num_envs,
        seed: seed.unwrap_or(0),
        ..Default::default()
    };
    let r = evaluate_policy(&policy, &task, &cfg)?;
    tracing::info!(
        "{task}: success {:.1} % [{:.1}, {:.1}] over {} episodes, mean length {:.1}",
        100.0 * r.success_rate,
        100.0 * r.ci_low,
        100.0 * r.ci_high,
        r.episodes,
        r.mean_episode_length
    );
    if args.json {
        print_json(&r)?;
    } else {
        println!(
            "{task}: success rate {:.3} (95 % CI {:.3}-{:.3}, {} episodes), mean episode length {:.1}",
            r.success_rate, r.ci_low, r.ci_high, r.episodes, r.mean_episode_length
        );
    }
    Ok(())
}
