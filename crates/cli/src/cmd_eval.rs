//! Evaluating policies:
//!
//! * `world4rl eval policy --policy CKPT --task TASK --episodes N [--json]`: in the real environment;
//! * `world4rl eval imagined --config CFG --run RUN --task T --candidate CKPT [--baseline CKPT]`: two
//!   policies on the same imagined episodes (the refinement's acceptance check).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use tch::Device;
use w4rl_data::Dataset;
use world4rl::eval::evaluate::{evaluate_policy, EvalConfig};
use world4rl::experiment::run::RunDir;
use world4rl::policy::GaussianPolicy;
use world4rl::stages::refine::load_imagination;
use world4rl::util::seeds::Split;

use crate::cmd_refine::start_dataset_of;
use crate::cmd_train::load_config;
use crate::output::print_json;

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

/// The task a policy acts on: `explicit` when given, else the one its checkpoint `path` records.
pub(crate) fn task_of(
    policy: &GaussianPolicy,
    explicit: Option<&str>,
    path: &std::path::Path,
) -> Result<String> {
    match explicit {
        Some(t) => Ok(t.to_string()),
        None if !policy.spec().task.is_empty() => Ok(policy.spec().task.clone()),
        None => bail!(
            "{} does not record its task; pass --task TASK",
            path.display()
        ),
    }
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
    /// Act with samples of the policy's Gaussian instead of its mean action (seeded: the same
    /// settings give the same episodes).
    #[arg(long)]
    pub sample: bool,
    /// With --sample: cap σ at this value (e.g. 0.25, the σ cap refinement starts from) instead of
    /// the checkpoint's own bound.
    #[arg(long, requires = "sample")]
    pub std_max: Option<f64>,
    /// The seed set: `validation` for every choice you make on the result (a checkpoint, a mode, a
    /// setting), `test` only for the numbers you report (docs/evaluation.md).
    #[arg(long, default_value = "validation")]
    pub split: Split,
    /// Episode length (0 = the task's own limit); give the run's `experiment.max_steps` to read a
    /// policy as its run read it.
    #[arg(long, default_value_t = 0)]
    pub max_steps: usize,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

/// `world4rl eval policy`.
pub fn eval_policy(args: EvalPolicyArgs, device: Device, seed: Option<u64>) -> Result<()> {
    if !args.policy.exists() {
        bail!("policy checkpoint {} does not exist", args.policy.display());
    }
    let (policy, _) = GaussianPolicy::load(&args.policy, device)?;
    if let Some(cap) = args.std_max {
        anyhow::ensure!(
            cap > 0.0 && cap.is_finite(),
            "--std-max must be a positive number (got {cap})"
        );
    }
    let task = task_of(&policy, args.task.as_deref(), &args.policy)?;
    let cfg = EvalConfig {
        episodes: args.episodes,
        num_envs: args.num_envs,
        seed: seed.unwrap_or(0),
        sample: args.sample,
        std_max: args.std_max,
        split: args.split,
        max_steps: args.max_steps,
        ..Default::default()
    };
    let r = evaluate_policy(&policy, &task, &cfg)?;
    tracing::info!(
        "{task}: success {:.1} % [{:.1}, {:.1}] over {} {} episodes, mean length {:.1}",
        100.0 * r.success_rate,
        100.0 * r.ci_low,
        100.0 * r.ci_high,
        r.episodes,
        cfg.split,
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

/// `world4rl eval imagined`: the acceptance check of a refined policy ([`world4rl::ppo::acceptance`]).
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
    let a = world4rl::ppo::acceptance::check(
        &wm,
        &clf,
        &starts,
        &args.task,
        &baseline,
        &candidate,
        &world4rl::ppo::acceptance::AcceptConfig {
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
