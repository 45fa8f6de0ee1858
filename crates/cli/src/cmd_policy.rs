//! Policy-side commands (stage 1's classifier and BC policy, stage 2, evaluation):
//!
//! * `world4rl train reward --config CFG --data DATASET --out RUN [--task T]... [--json]`
//! * `world4rl train bc --config CFG --data DATASET --out RUN [--task T]... [--json]`
//! * `world4rl refine --config CFG --run RUN [--task T]... [--data DATASET] [--minutes M] [--json]`
//!
//! Each resolves the config as `world4rl run` does and runs the same stage objects
//! (`world4rl::stages`), so a stage command and the pipeline train the same models.
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
use world4rl::run::{stage_name, RunDir};
use world4rl::stage::run_stage;
use world4rl::stages::bc::TrainBc;
use world4rl::stages::ceiling::RealEnvControl;
use world4rl::stages::refine::{load_imagination, RefineTask};
use world4rl::stages::{reward, tasks_or_all};

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

/// `world4rl eval imagined`.
#[derive(Debug, Args)]
pub struct EvalImaginedArgs {
    /// Experiment config (TOML); its `[refine]` section gives the imagined env, γ, the sampler and
    /// the acceptance margin.
    #[arg(long)]
    pub config: PathBuf,
    /// Run directory holding the world model and the classifiers.
    #[arg(long)]
    pub run: PathBuf,
    /// Task.
    #[arg(long)]
    pub task: String,
    /// The policy to judge (e.g. `RUN/refine/<task>/last.safetensors`).
    #[arg(long)]
    pub candidate: PathBuf,
    /// The policy to compare it with (default: `RUN/bc/<task>/policy.safetensors`).
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Dataset of the start states (default: `RUN/heldout` when it exists, else the training data).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Imagined episodes per policy (default: `refine.accept_episodes`).
    #[arg(long)]
    pub episodes: Option<usize>,
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

/// The config file, with `--seed` applied, resolved as every stage trains from it
/// ([`ExperimentConfig::resolve`]: the same values `world4rl run` uses).
fn load_config(path: &Path, seed: Option<u64>) -> Result<ExperimentConfig> {
    let mut cfg = ExperimentConfig::load(path)?;
    if let Some(s) = seed {
        cfg.experiment.seed = s;
    }
    Ok(cfg.resolve())
}

/// `world4rl train reward`: the `reward/<task>` stage for each task, on `--data`, into `--out`.
pub fn train_reward(args: TrainArgs, device: Device, seed: Option<u64>) -> Result<()> {
    let cfg = load_config(&args.config, seed)?;
    let dataset = Dataset::open(&args.data)?;
    let run = RunDir::open_locked(&args.out)?;
    let tasks = pick(&args.task, &cfg.reward.tasks, &dataset);
    let todo = tasks.iter().any(|t| !run.is_done(&stage_name::reward(t)));
    let wm = if todo {
        reward::imagination_model(&cfg.reward, &run, device)?
    } else {
        None
    };
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
    let run = RunDir::open_locked(&args.out)?;
    let mut reports = Vec::new();
    for task in pick(&args.task, &cfg.bc.tasks, &dataset) {
        let stage = TrainBc {
            cfg: &cfg.bc,
            data: &dataset,
            task,
            device,
        };
        reports.push(run_stage(&run, &stage)?.record);
    }
    if args.json {
        print_json(&serde_json::json!({ "bc": reports }))?;
    }
    Ok(())
}

/// `--task` when given, else the section's tasks, else every task of the dataset.
fn pick(given: &[String], configured: &[String], data: &Dataset) -> Vec<String> {
    if given.is_empty() {
        tasks_or_all(configured, data)
    } else {
        given.to_vec()
    }
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
    let run = RunDir::open_locked(&args.run)?;
    let mut rc = cfg.refine.clone();
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
        for task in tasks {
            let stage = RealEnvControl {
                cfg: &rc,
                task,
                image_size: cfg.experiment.image_size,
                device,
            };
            out.push(run_stage(&run, &stage)?.record);
        }
        if args.json {
            print_json(&serde_json::json!({ "ceiling": out }))?;
        }
        return Ok(());
    }
    let heldout_dir = run.heldout();
    let heldout =
        if rc.accept != world4rl::acceptance::AcceptRule::Always && heldout_dir.exists() {
            Some(Dataset::open(&heldout_dir).with_context(|| {
                format!("opening the held-out rollouts {}", heldout_dir.display())
            })?)
        } else {
            None
        };
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
        };
        reports.push(run_stage(&run, &stage)?.record);
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

/// `world4rl eval imagined`: the acceptance check of a refined policy ([`world4rl::acceptance`]).
pub fn eval_imagined(args: EvalImaginedArgs, device: Device, seed: Option<u64>) -> Result<()> {
    let cfg = load_config(&args.config, seed)?;
    if !args.run.exists() {
        bail!("run directory {} does not exist", args.run.display());
    }
    let run = RunDir::open(&args.run)?;
    let rc = &cfg.refine;
    let baseline_path = args
        .baseline
        .clone()
        .unwrap_or_else(|| run.bc_policy(&args.task));
    for p in [&baseline_path, &args.candidate] {
        if !p.exists() {
            bail!("policy checkpoint {} does not exist", p.display());
        }
    }
    let (baseline, _) = GaussianPolicy::load(&baseline_path, device)?;
    let (candidate, _) = GaussianPolicy::load(&args.candidate, device)?;
    let heldout = run.heldout();
    let data = match &args.data {
        Some(d) => d.clone(),
        None if heldout.exists() => heldout,
        None => start_dataset_of(&run, &args.task)?,
    };
    let starts =
        Dataset::open(&data).with_context(|| format!("opening the dataset {}", data.display()))?;
    let (wm, clf) = load_imagination(rc, &run, &args.task, device)?;
    let horizon = if rc.imagination.horizon > 0 {
        rc.imagination.horizon
    } else {
        // the task's episode length in the training data, as refinement uses
        let train = Dataset::open(&start_dataset_of(&run, &args.task)?)?;
        train
            .entries()
            .iter()
            .filter(|e| e.meta.task == args.task)
            .map(|e| e.meta.steps)
            .max()
            .unwrap_or(0)
    };
    let a = world4rl::acceptance::check(
        &wm,
        &clf,
        &starts,
        &args.task,
        &baseline,
        &candidate,
        &world4rl::acceptance::AcceptConfig {
            episodes: args.episodes.unwrap_or(rc.accept_episodes),
            num_envs: rc.ppo.num_envs,
            horizon,
            success_frames: rc.imagination.success_frames,
            gamma: rc.ppo.gamma,
            margin: rc.accept_margin,
            // the resolved PPO seed already holds experiment.seed
            seed: rc.ppo.seed ^ 0x6163_6365_7074,
        },
    )?;
    let c = &a.comparison;
    println!(
        "{}: {} paired imagined episodes from {} (horizon {horizon})",
        args.task,
        c.episodes,
        data.display()
    );
    println!(
        "  success            baseline {:5.1} %   candidate {:5.1} %",
        100.0 * c.baseline_success,
        100.0 * c.candidate_success
    );
    println!(
        "  discounted success baseline {:.3}     candidate {:.3}     gain {:+.3} [{:+.3}, {:+.3}]",
        c.baseline_discounted, c.candidate_discounted, c.gain, c.gain_ci.0, c.gain_ci.1
    );
    println!(
        "  verdict at margin {}: {}",
        a.margin,
        if a.accepted {
            "accept the candidate"
        } else {
            "keep the baseline"
        }
    );
    if args.json {
        print_json(&serde_json::to_value(&a)?)?;
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
