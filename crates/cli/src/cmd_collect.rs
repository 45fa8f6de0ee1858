//! `world4rl collect --config CFG --out DATASET`: the paper's data recipe for every task of the config.
//!
//! With `--policy CKPT`, only rollouts of that policy on its task (e.g. a refined policy, recorded on the
//! held-out rollouts' seeds with `--heldout-seeds` so that `eval world-model --heldout DATASET` replays
//! them from the same scenes as `RUN/heldout/`).

use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use tch::Device;
use w4rl_data::EpisodeKind;
use world4rl::eval::collect::collect_recipe;
use world4rl::eval::evaluate::PolicyActor;
use world4rl::experiment::config::ExperimentConfig;
use world4rl::policy::GaussianPolicy;

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
    /// Record rollouts of this policy checkpoint instead of the recipe (policy episodes only).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// With --policy: the task (default: the task the policy was trained for).
    #[arg(long, requires = "policy")]
    pub task: Option<String>,
    /// With --policy: episodes to record (default: `collect.heldout_episodes` with --heldout-seeds,
    /// else `collect.policy_episodes`). Sampled draws follow the batch layout, so only the default count
    /// reproduces `RUN/heldout/`'s episodes exactly.
    #[arg(long, requires = "policy")]
    pub episodes: Option<usize>,
    /// With --policy: act with the mean action instead of samples of the policy's Gaussian (the BC
    /// rollouts of the recipe are sampled).
    #[arg(long, requires = "policy")]
    pub mean: bool,
    /// With --policy: use the held-out rollouts' seed stream (`RUN/heldout/`'s scenes) instead of the
    /// training data's.
    #[arg(long, requires = "policy")]
    pub heldout_seeds: bool,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: CollectArgs, device: Device, seed: Option<u64>) -> Result<()> {
    // resolved: the collection's horizon is the experiment's (`experiment.max_steps`)
    let cfg = ExperimentConfig::load(&args.config)?.resolve();
    if let Some(p) = &args.policy {
        return record_policy(&args, p, &cfg, device, seed);
    }
    let kinds: Vec<EpisodeKind> = if args.kinds.is_empty() {
        EpisodeKind::ALL.to_vec()
    } else {
        args.kinds
            .iter()
            .map(|k| k.parse())
            .collect::<Result<_, _>>()?
    };
    let seed = seed.unwrap_or(cfg.experiment.seed);
    let pb = world4rl::util::progress::bar(0, "collect");
    let t0 = std::time::Instant::now();
    let summary = collect_recipe(
        &args.out,
        &cfg.experiment.suite,
        &cfg.experiment.tasks,
        &cfg.experiment.env_config(),
        seed,
        &cfg.collect,
        None,
        &kinds,
        progress(&pb),
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

/// `collect --policy`: rollouts of one policy on one task, nothing else.
fn record_policy(
    args: &CollectArgs,
    path: &std::path::Path,
    cfg: &ExperimentConfig,
    device: Device,
    seed: Option<u64>,
) -> Result<()> {
    ensure!(
        args.kinds.is_empty(),
        "--kinds does not apply with --policy (only policy rollouts are recorded)"
    );
    if !path.exists() {
        bail!("policy checkpoint {} does not exist", path.display());
    }
    let (policy, _) = GaussianPolicy::load(path, device)
        .with_context(|| format!("loading the policy {}", path.display()))?;
    let task = crate::cmd_eval::task_of(&policy, args.task.as_deref(), path)?;
    let seed = seed.unwrap_or(cfg.experiment.seed);
    let (base, default_n) = if args.heldout_seeds {
        (
            world4rl::util::seeds::heldout_base(seed),
            cfg.collect.heldout_episodes,
        )
    } else {
        (seed, cfg.collect.policy_episodes)
    };
    let episodes = args.episodes.unwrap_or(default_n);
    ensure!(episodes > 0, "--episodes must be positive");
    let mut actor = PolicyActor {
        policy: &policy,
        stochastic: !args.mean,
    };
    let pb = world4rl::util::progress::bar(0, "rollouts");
    let t0 = std::time::Instant::now();
    let summary = world4rl::eval::collect::record_policy_rollouts(
        &args.out,
        cfg,
        &task,
        base,
        episodes,
        &mut actor,
        progress(&pb),
    )?;
    pb.finish_and_clear();
    tracing::info!(
        "recorded {} rollouts of {} on {task} ({} already present, {} actions) into {} in {:.1}s",
        summary.written,
        path.display(),
        summary.existing,
        if args.mean { "mean" } else { "sampled" },
        args.out.display(),
        t0.elapsed().as_secs_f64()
    );
    if args.json {
        print_json(&summary)?;
    }
    Ok(())
}

/// Moves `pb` as `collect_recipe` reports its episodes.
fn progress(pb: &indicatif::ProgressBar) -> impl FnMut(usize, usize) + '_ {
    |done, total| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
    }
}
