//! World-model commands:
//!
//! * `world4rl train world-model --config CFG --data DATASET --out RUN [--dry-run]`
//! * `world4rl dream --run RUN --data DATASET --out FILE.gif`
//! * `world4rl eval world-model --run RUN --data DATASET [--json]`

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use tch::{Device, Kind};
use w4rl_data::Dataset;
use world4rl::diffusion::SamplerConfig;
use world4rl::experiment::run::RunDir;
use world4rl::experiment::stage::run_stage;
use world4rl::stages::world_model::TrainWorldModel;
use world4rl::world_model::action_encoding::EncodingKind;
use world4rl::world_model::fidelity::{self, FidelityConfig};
use world4rl::world_model::imagine::{replay_episode, side_by_side_gif, write_frames};
use world4rl::world_model::train::{self as wm_train, WorldModelTrainConfig};
use world4rl::world_model::{Precision, WorldModel};

use crate::output::print_json;

/// `world4rl train world-model`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Experiment config (TOML); its `[world_model]` section is used (default: the cpu preset).
    #[arg(long, conflicts_with = "preset")]
    pub config: Option<PathBuf>,
    /// Use a preset instead of a config file: tiny, cpu or paper.
    #[arg(long)]
    pub preset: Option<String>,
    /// Episode dataset (from `world4rl collect`). Not needed with --dry-run.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Run directory (created; re-running resumes from the last checkpoint).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Override the time budget (minutes of training, summed over resumes).
    #[arg(long)]
    pub max_minutes: Option<f64>,
    /// Override the step budget.
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Override the action encoding: two-hot, one-hot or linear (Table IV ablation).
    #[arg(long)]
    pub encoding: Option<String>,
    /// Print the parameter count and a memory estimate, allocate nothing, and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Action dimension assumed by --dry-run when no dataset is given.
    #[arg(long, default_value_t = 4)]
    pub action_dim: usize,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

/// `world4rl dream`.
#[derive(Debug, Args)]
pub struct DreamArgs {
    /// Run directory holding a trained world model.
    #[arg(long)]
    pub run: PathBuf,
    /// Episode dataset the model was trained on.
    #[arg(long)]
    pub data: PathBuf,
    /// GIF to write (real | imagined side by side).
    #[arg(long)]
    pub out: PathBuf,
    /// Which held-out episode (0-based, in the run's hold-out list; default 0).
    #[arg(long, default_value_t = 0)]
    pub episode: usize,
    /// Replay this recorded episode file instead of a held-out one (e.g. a rollout recorded with
    /// `collect --policy`, or one of `RUN/heldout/`).
    #[arg(long, conflicts_with = "episode")]
    pub episode_file: Option<PathBuf>,
    /// Number of steps to imagine (default: the whole episode).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Pixel enlargement in the GIF.
    #[arg(long, default_value_t = 4)]
    pub scale: usize,
    /// Also write the real and imagined frames to this safetensors file (u8 arrays `real` and
    /// `imagined`, `[T + 1, S, S, 3]`; the header names the task, episode and sampler), for
    /// measuring what the GIF shows.
    #[arg(long)]
    pub frames_out: Option<PathBuf>,
    #[command(flatten)]
    pub imagination: ImaginationArgs,
}

/// How `dream` and `eval world-model` run the world model's U-Net.
#[derive(Debug, Args)]
pub struct ImaginationArgs {
    /// Denoising steps (default: the model's sampler setting).
    #[arg(long)]
    pub sampler_steps: Option<usize>,
    /// Number format of the U-Net at imagination time: f32 (as trained) or bf16 (faster on CPUs
    /// with AVX-512 BF16/AMX).
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
    /// Run the f32 U-Net on channels-last activations (as `refine.world_model_channels_last`):
    /// faster on AVX-512 CPUs, equal up to float rounding.
    #[arg(long)]
    pub channels_last: bool,
}

/// `world4rl eval world-model`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Run directory holding a trained world model.
    #[arg(long)]
    pub run: PathBuf,
    /// Episode dataset the model was trained on (its held-out episodes are used).
    #[arg(long)]
    pub data: PathBuf,
    /// Imagined steps per rollout.
    #[arg(long, default_value_t = 10)]
    pub horizon: usize,
    /// A rollout starts every STRIDE steps of each held-out episode.
    #[arg(long, default_value_t = 10)]
    pub stride: usize,
    /// At most this many rollouts (0 = all).
    #[arg(long, default_value_t = 0)]
    pub max_rollouts: usize,
    /// Rollouts imagined in parallel.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[command(flatten)]
    pub imagination: ImaginationArgs,
    /// LPIPS AlexNet weights (safetensors; see `world4rl::metrics::lpips`).
    #[arg(long)]
    pub lpips_weights: Option<PathBuf>,
    /// FID Inception weights (safetensors; see `world4rl::metrics::fid`).
    #[arg(long)]
    pub fid_weights: Option<PathBuf>,
    /// FVD I3D weights (safetensors; see `world4rl::metrics::fvd`).
    #[arg(long)]
    pub fvd_weights: Option<PathBuf>,
    /// Also replay this many recorded policy rollouts per task whole in the world model and compare
    /// the classifier's verdict on the imagined episode with the recorded outcome (needs the run's
    /// reward classifiers; 0 = skip).
    #[arg(long, default_value_t = 0)]
    pub outcomes: usize,
    /// Held-out rollouts to replay for --outcomes (an episode dataset no learner trained on; default:
    /// RUN/heldout when it exists, else the training rollouts of --data, an optimistic test).
    #[arg(long)]
    pub heldout: Option<PathBuf>,
    /// Reward classifiers from this run instead of --run (RUN2/reward/<task>/).
    #[arg(long)]
    pub classifiers: Option<PathBuf>,
    /// Success rule of the outcome check: this many consecutive imagined frames above the
    /// classifier's threshold (1 = any frame; `refine.imagination.success_frames` in a config).
    #[arg(long, default_value_t = 1)]
    pub success_frames: usize,
    /// AUC(k) of the outcome check: reset the context to the real frames every k steps, for each k
    /// of this comma-separated list (e.g. 1,5,10,25).
    #[arg(long, value_delimiter = ',')]
    pub resets: Vec<usize>,
    /// Held-out windows of the action-use check (0 = skip).
    #[arg(long, default_value_t = 256)]
    pub action_use: usize,
    /// The outcome check closed loop: record this many real rollouts per task of a policy acting
    /// with its mean action from the held-out scenes (the run's seed stream of `collect-heldout`),
    /// then let the same policy act on the imagined frames from each one's first frame and compare
    /// the classifier's verdict with the real outcome (needs RUN/config.toml, the policies and the
    /// classifiers; 0 = skip).
    #[arg(long, default_value_t = 0)]
    pub closed_loop: usize,
    /// The policy of --closed-loop: the run's `bc` policies or its `refined` ones.
    #[arg(long, default_value = "bc", value_parser = ["bc", "refined"])]
    pub closed_loop_policy: String,
    /// Keep the real rollouts of --closed-loop in this new episode dataset (default: a temporary
    /// folder; an existing folder is refused).
    #[arg(long)]
    pub closed_loop_out: Option<PathBuf>,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

fn resolve_config(args: &TrainArgs, seed: Option<u64>) -> Result<WorldModelTrainConfig> {
    let mut cfg = match (&args.config, &args.preset) {
        // the file's [world_model], resolved as `world4rl run` resolves it (`--seed` is the
        // experiment's seed)
        (Some(path), _) => world4rl::experiment::config::ExperimentConfig::load_world_model(path, seed)?,
        (None, Some(p)) => {
            let mut c = WorldModelTrainConfig::preset(p)?;
            c.seed ^= seed.unwrap_or(0);
            c
        }
        (None, None) => bail!("give --config CFG (a TOML file with a [world_model] section) or --preset tiny|cpu|paper"),
    };
    if let Some(m) = args.max_minutes {
        cfg.max_minutes = m;
    }
    if let Some(s) = args.max_steps {
        cfg.max_steps = s;
    }
    if let Some(e) = &args.encoding {
        cfg.model.action_encoding.kind = match e.as_str() {
            "two-hot" => EncodingKind::TwoHot,
            "one-hot" => EncodingKind::OneHot,
            "linear" => EncodingKind::Linear,
            other => bail!("unknown --encoding '{other}' (expected two-hot, one-hot or linear)"),
        };
    }
    cfg.validate()?;
    Ok(cfg)
}

fn gib(bytes: f64) -> f64 {
    bytes / (1u64 << 30) as f64
}

/// `world4rl train world-model`.
pub fn train(args: TrainArgs, device: Device, seed: Option<u64>) -> Result<()> {
    let cfg = resolve_config(&args, seed)?;
    if args.dry_run {
        let action_dim = match &args.data {
            Some(d) => Dataset::open(d)?.spec().action_dim,
            None => args.action_dim,
        };
        let m = cfg.model.memory_estimate(action_dim, cfg.batch_size)?;
        let flops_note = format!(
            "{}x{} frames, {} context frames, {} Euler/Heun steps",
            cfg.model.image_size, cfg.model.image_size, cfg.model.context, cfg.model.sampler.steps
        );
        eprintln!(
            "world model: {:.2} M parameters ({flops_note}); training memory ≈ {:.2} GiB weights+grads+EMA+AdamW + {:.2} GiB activations at batch {} (rough estimate)",
            m.params as f64 / 1e6,
            gib(m.state_bytes),
            gib(m.activation_bytes),
            cfg.batch_size
        );
        if args.json {
            print_json(&serde_json::json!({
                "params": m.params,
                "state_gib": gib(m.state_bytes),
                "activation_gib": gib(m.activation_bytes),
                "batch_size": cfg.batch_size,
                "image_size": cfg.model.image_size,
                "action_dim": action_dim,
            }))?;
        }
        return Ok(());
    }
    let (Some(data), Some(out)) = (&args.data, &args.out) else {
        bail!("train world-model needs --data DATASET and --out RUN (or --dry-run)");
    };
    let data = Dataset::open(data)?;
    let run = RunDir::open_locked(out)?;
    let stage = TrainWorldModel {
        cfg: &cfg,
        data: &data,
        device,
        progress: true,
    };
    let summary = run_stage(&run, &stage)?.record;
    eprintln!(
        "world model: {} steps in {:.1} min, held-out loss {}, checkpoint {}",
        summary.steps,
        summary.seconds / 60.0,
        summary
            .final_val_loss
            .map(|v| format!("{v:.4}"))
            .unwrap_or_else(|| "n/a".into()),
        run.world_model().display()
    );
    if args.json {
        print_json(&summary)?;
    }
    Ok(())
}

fn load_model(
    run: &std::path::Path,
    device: Device,
    imagination: &ImaginationArgs,
) -> Result<WorldModel> {
    let path = RunDir::open(run)?.world_model();
    if !path.exists() {
        bail!("{} has no world model ({} is missing): run `world4rl train world-model --out {}` first", run.display(), path.display(), run.display());
    }
    let (mut wm, _) = WorldModel::load(&path, device)?;
    let sampler = imagination.sampler_steps.map(|steps| SamplerConfig {
        steps,
        ..wm.config().sampler.clone()
    });
    wm.set_imagination(
        sampler.as_ref(),
        imagination.precision,
        imagination.channels_last,
    )?;
    Ok(wm)
}

/// `world4rl dream`: a held-out episode, real beside its imagined replay (same actions, open loop
/// from the first frame).
pub fn dream(args: DreamArgs, device: Device, seed: Option<u64>) -> Result<()> {
    let wm = load_model(&args.run, device, &args.imagination)?;
    let held = match &args.episode_file {
        Some(p) => vec![w4rl_data::read_episode(p)
            .with_context(|| format!("reading the episode {}", p.display()))?],
        None => {
            let data = Dataset::open(&args.data)?;
            wm_train::load_holdout(&RunDir::open(&args.run)?.world_model_dir(), &data)?
        }
    };
    // --episode-file conflicts with --episode, which then keeps its default 0: the file's one episode
    let ep = held.get(args.episode).with_context(|| {
        format!(
            "--episode {} is out of range: the run holds out {} episodes",
            args.episode,
            held.len()
        )
    })?;
    let steps = args.steps.unwrap_or(ep.meta.steps).min(ep.meta.steps);
    if steps == 0 {
        bail!("--steps must be at least 1");
    }
    tch::manual_seed(seed.unwrap_or(0) as i64);
    let (real, fake) = replay_episode(&wm, ep, steps)?;
    side_by_side_gif(&args.out, &[&real, &fake], args.scale, 10)?;
    if let Some(path) = &args.frames_out {
        let meta = std::collections::HashMap::from([
            ("task".to_string(), ep.meta.task.clone()),
            ("kind".to_string(), ep.meta.kind.to_string()),
            ("index".to_string(), ep.meta.index.to_string()),
            ("seed".to_string(), ep.meta.seed.to_string()),
            ("steps".to_string(), steps.to_string()),
            (
                "sampler_steps".to_string(),
                wm.config().sampler.steps.to_string(),
            ),
        ]);
        write_frames(path, &[("real", &real), ("imagined", &fake)], &meta)?;
    }
    let psnr = world4rl::metrics::psnr(
        &fake.narrow(0, 1, steps as i64),
        &real.narrow(0, 1, steps as i64),
    )?;
    eprintln!(
        "wrote {} ({} {} #{}, {steps} imagined steps; left real, right imagined; mean PSNR {:.2} dB)",
        args.out.display(),
        ep.meta.task,
        ep.meta.kind,
        ep.meta.index,
        psnr.mean(Kind::Double).double_value(&[])
    );
    Ok(())
}

/// `world4rl eval world-model`: open-loop PSNR/SSIM per horizon on the run's held-out episodes,
/// next to copy-last-frame (plus LPIPS/FID/FVD given weights).
pub fn eval(args: EvalArgs, device: Device, seed: Option<u64>) -> Result<()> {
    if let Some(p) = args.closed_loop_out.as_ref().filter(|p| p.exists()) {
        // the recorder resumes a dataset it finds: another policy's rollouts would be scored
        bail!(
            "--closed-loop-out {} already exists: give a folder that does not, so that only this policy's rollouts are scored",
            p.display()
        );
    }
    let wm = load_model(&args.run, device, &args.imagination)?;
    let data = Dataset::open(&args.data)?;
    let held = wm_train::load_holdout(&RunDir::open(&args.run)?.world_model_dir(), &data)?;
    if held.is_empty() {
        bail!("the run holds out no episodes (holdout_fraction = 0): nothing to evaluate on");
    }
    let cfg = FidelityConfig {
        horizon: args.horizon,
        stride: args.stride,
        max_rollouts: args.max_rollouts,
        batch: args.batch,
        seed: seed.unwrap_or(0),
        outcome_episodes: args.outcomes,
        refined_outcome_episodes: 0,
        outcome_resets: args.resets.clone(),
        outcome_bootstrap: 1000,
        action_use_windows: args.action_use,
        lpips_weights: args.lpips_weights.clone(),
        fid_weights: args.fid_weights.clone(),
        fvd_weights: args.fvd_weights.clone(),
    };
    let held_dir = args
        .heldout
        .clone()
        .unwrap_or_else(|| args.run.join("heldout"));
    let heldout = if held_dir.exists() {
        Some(Dataset::open(&held_dir)?)
    } else if args.heldout.is_some() {
        bail!("--heldout {}: no such dataset", held_dir.display());
    } else {
        None
    };
    let clf_run = RunDir::open(args.classifiers.as_ref().unwrap_or(&args.run))?;
    let rule = world4rl::world_model::outcome::SuccessRule {
        frames: args.success_frames.max(1),
    };
    // the fidelity stage's own check, with this command's settings
    let checked = fidelity::check(
        &wm,
        &held,
        &world4rl::world_model::outcome::Rollouts {
            heldout: heldout.as_ref(),
            training: &data,
        },
        |t| clf_run.classifier(t),
        &data.tasks(),
        &cfg,
        rule,
    )?;
    let (report, outcomes, action_use) = (checked.scores, checked.outcomes, checked.action_use);
    if let Some(a) = action_use {
        eprintln!(
            "action use: next-frame MSE {:.5} with the true actions, {:.5} with permuted ones (ratio {:.2}) on {} held-out windows",
            a.mse_true, a.mse_permuted, a.ratio, a.windows
        );
    }
    let closed_loop = if args.closed_loop > 0 {
        closed_loop_outcomes(
            &args,
            &wm,
            &clf_run,
            &data.tasks(),
            &cfg.outcome_options(rule),
            device,
        )?
    } else {
        Vec::new()
    };
    eprint!("{}", report.table());
    eprintln!(
        "{} rollouts from {} held-out episodes, {}x{} frames, {} sampler steps, {:.1} imagined frames/s; beats copy-last-frame at {}/{} horizons",
        report.rollouts,
        report.episodes,
        report.image_size,
        report.image_size,
        report.sampler_steps,
        report.imagined_fps,
        report.beats_copy_last_at.len(),
        report.horizon
    );
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        if args.outcomes > 0 {
            v["outcomes"] = serde_json::to_value(&outcomes)?;
        }
        if let Some(a) = action_use {
            v["action_use"] = serde_json::to_value(a)?;
        }
        if args.closed_loop > 0 {
            v["closed_loop"] = serde_json::to_value(&closed_loop)?;
        }
        print_json(&v)?;
    }
    Ok(())
}

/// `eval world-model --closed-loop N`: per task, records N real rollouts of the chosen policy acting
/// with its mean action from the held-out scenes, then runs the closed-loop outcome check on them
/// (`world4rl::world_model::closed_loop`).
fn closed_loop_outcomes(
    args: &EvalArgs,
    wm: &WorldModel,
    clf_run: &RunDir,
    tasks: &[String],
    opts: &world4rl::world_model::outcome::OutcomeOptions,
    device: Device,
) -> Result<Vec<world4rl::world_model::outcome::TaskOutcome>> {
    use w4rl_data::Episode;
    use world4rl::eval::evaluate::PolicyActor;
    use world4rl::policy::GaussianPolicy;
    use world4rl::reward::RewardClassifier;

    let cfg_path = args.run.join("config.toml");
    let cfg = world4rl::experiment::config::ExperimentConfig::load(&cfg_path)
        .with_context(|| {
            format!(
            "--closed-loop records rollouts from the run's held-out scenes and needs its config {}",
            cfg_path.display()
        )
        })?
        .resolve();
    let run = RunDir::open(&args.run)?;
    let tmp;
    let out = match &args.closed_loop_out {
        Some(p) => p.clone(),
        None => {
            tmp = tempfile::tempdir().context("creating a temporary folder for the rollouts")?;
            tmp.path().join("closed-loop")
        }
    };
    let mut results = Vec::new();
    for task in tasks {
        let path = match args.closed_loop_policy.as_str() {
            "refined" => run.refined_policy(task),
            _ => run.bc_policy(task),
        };
        if !path.is_file() {
            tracing::warn!(
                "{task}: no {} policy at {}; closed-loop check skipped",
                args.closed_loop_policy,
                path.display()
            );
            continue;
        }
        let (policy, _) = GaussianPolicy::load(&path, device)
            .with_context(|| format!("loading {}", path.display()))?;
        let mut actor = PolicyActor {
            policy: &policy,
            stochastic: false,
        };
        world4rl::eval::collect::record_policy_rollouts(
            &out,
            &cfg,
            task,
            world4rl::util::seeds::heldout_base(cfg.experiment.seed),
            args.closed_loop,
            &mut actor,
            |_, _| {},
        )?;
        let recorded = Dataset::open(&out)?;
        let eps: Vec<Episode> = recorded.load_where(|m| m.task == *task)?;
        let eps: Vec<&Episode> = eps.iter().take(args.closed_loop).collect();
        let (clf, _) = RewardClassifier::load(&clf_run.classifier(task), wm.device())
            .with_context(|| format!("loading the reward classifier of '{task}'"))?;
        tch::manual_seed(opts.seed as i64);
        let o = world4rl::world_model::closed_loop::closed_loop_agreement(
            wm, &clf, &policy, &eps, true, opts,
        )?;
        eprintln!(
            "{task}: closed loop, {} {} policy rollouts (mean action) from held-out scenes; {}",
            o.episodes,
            args.closed_loop_policy,
            o.summary()
        );
        results.push(world4rl::world_model::outcome::TaskOutcome {
            task: task.clone(),
            agreement: o,
        });
    }
    Ok(results)
}
