//! `refine/<task>`: stage 2, PPO inside the frozen world model (World4RL §III-C). The stage loads the
//! run's world model, classifier and BC policy, builds the imagined environment, runs [`crate::ppo`]
//! and, with `refine.evaluate = "validation"` (the default), chooses the policy that stands among the
//! start, the snapshots and the last checkpoint on validation scenes (with `refine.accept =
//! "imagined-gain"` instead, the acceptance check); the policy that stands as the refined one is copied
//! to `RUN/refine/<task>/policy.safetensors`.

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use tch::Device;
use w4rl_data::Dataset;

use crate::diffusion::SamplerConfig;
use crate::eval::evaluate::EvalConfig;
use crate::eval::selection::{choose, Choice};
use crate::experiment::run::{stage_name, RunDir};
use crate::experiment::stage::Stage;
use crate::policy::gaussian::GaussianPolicy;
use crate::ppo::acceptance::{AcceptConfig, AcceptRule, Acceptance};
use crate::ppo::imagined_env::{ImaginationStats, ImaginedEnv, ImaginedEnvConfig};
use crate::ppo::{output_in, train, Hooks, PpoConfig, PpoSummary};
use crate::reward::{RewardClassifier, RewardMode};
use crate::world_model::{Precision, WorldModel};

/// `[refine]`: stage 2 (PPO in imagination), per task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RefineConfig {
    /// Tasks to refine (empty: every task of the experiment).
    pub tasks: Vec<String>,
    /// The policy refinement (and its ceilings) start from: `bc-filtered` (default), the filtered BC of
    /// the same run (needs `bc.filtered_control`), or `bc`, BC* on the demos. From filtered BC, refined
    /// − filtered BC is what the world model adds over the real data it was trained on, and the same
    /// PPO in the real environment with the true reward went further: 71.0 / 95.5 / 69.5 % against
    /// 55.5 / 48.0 / 60.5 % from BC* on validation scenes (`docs/refinement.md`, "The start").
    pub start: RefineStart,
    /// PPO hyper-parameters.
    pub ppo: PpoConfig,
    /// The imagined environment.
    pub imagination: ImaginedEnvConfig,
    /// Override of the world model's sampler during refinement (e.g. fewer Euler steps for speed);
    /// the classifier's imagined frames and the fidelity stage use it too.
    pub sampler: Option<SamplerConfig>,
    /// Number format of the frozen world model's U-Net during refinement (`f32` default, `bf16`
    /// about 1.6x faster imagination on CPUs with AVX-512 BF16/AMX).
    pub world_model_precision: Precision,
    /// Run the frozen world model's f32 U-Net on channels-last activations (default true): the same
    /// math in another summation order, 1.3-1.7x faster imagination on an AVX-512 CPU. Not
    /// bit-identical to the standard layout, so a refinement's result moves as with another seed; on
    /// three replicates every pooled gain stayed inside the standard layout's interval
    /// (docs/refinement.md, "Channels-last imagination on the replicates").
    pub world_model_channels_last: bool,
    /// Override of the classifier's decision threshold.
    pub reward_threshold: Option<f64>,
    /// Override of the classifier's reward mode (`binary` or `probability`).
    pub reward_mode: Option<RewardMode>,
    /// Evaluate the current policy in the real environment every this many iterations, for
    /// monitoring only (0 = never; default 2, for the report's curves; needs the task's simulator).
    pub monitor_every: usize,
    /// Episodes of each monitoring evaluation (default 50).
    pub monitor_episodes: usize,
    /// Which policy stands as the refined one (default `validation`): `validation` the best on the
    /// validation scenes (`eval.validation_episodes`) of the start (iteration 0), a snapshot every
    /// `checkpoint_every` iterations and the last, each in every action mode, as BC\* is chosen among
    /// its checkpoints; `last` the last checkpoint; `best` the iteration with the highest imagined
    /// success rate, a one-batch estimate that is noisy and biased towards the classifier's false
    /// positives (measured on `turn-lever`: best at iteration 3 of 13 while the real success kept
    /// rising until the last).
    pub evaluate: RefinedCheckpoint,
    /// Iterations between the snapshots `evaluate = "validation"` chooses among (default 10).
    pub checkpoint_every: usize,
    /// Also run the ceiling control ([`crate::eval::ceiling`]): the same PPO in the real environment with the
    /// classifier as the reward, evaluated beside BC and the refined policy (default false).
    pub real_env_control: bool,
    /// Also run the true-reward ceiling control: the same PPO in the real environment rewarded by the
    /// environment's own success (default false). Beside the classifier-rewarded one, it separates the
    /// classifier's error from the world model's.
    pub true_reward_control: bool,
    /// Which policy stands as the refined one ([`crate::ppo::acceptance`]): `always` the refined checkpoint
    /// (default), `imagined-gain` the refined checkpoint only when, on the same imagined episodes from
    /// held-out start states, its discounted success beats the BC policy's (paired 95 % interval
    /// above `accept_margin`), else the BC policy. `imagined-gain` is an ablation: asking the same world
    /// model cannot catch its own errors (`docs/refinement.md`, "The acceptance check").
    pub accept: AcceptRule,
    /// Imagined episodes per policy of the acceptance check (default 256).
    pub accept_episodes: usize,
    /// The lower end of the imagined gain's 95 % interval must exceed this (default 0).
    pub accept_margin: f64,
}

/// The policy refinement starts from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefineStart {
    /// `RUN/bc/<task>/policy.safetensors`: BC* on the demonstrations.
    Bc,
    /// `RUN/bc-filtered/<task>/policy.safetensors`: BC on the demos and the successful rollouts.
    #[default]
    BcFiltered,
}

impl RefineStart {
    /// The folder of the stage that trains the start policy of `task`.
    pub fn stage(self, task: &str) -> String {
        match self {
            Self::Bc => stage_name::bc(task),
            Self::BcFiltered => stage_name::bc_filtered(task),
        }
    }

    /// The start policy's file in `run`.
    pub fn path(self, run: &RunDir, task: &str) -> PathBuf {
        match self {
            Self::Bc => run.bc_policy(task),
            Self::BcFiltered => run.bc_filtered_policy(task),
        }
    }
}

/// The refined checkpoint that stands for the refined policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefinedCheckpoint {
    /// The start, the snapshots (`RUN/refine/<task>/iter-<k>.safetensors`) and the last checkpoint,
    /// each in every action mode, on the validation scenes: the best stands (a tie goes to the
    /// earlier iteration).
    #[default]
    Validation,
    /// `RUN/refine/<task>/last.safetensors`: the policy at the end of refinement.
    Last,
    /// `RUN/refine/<task>/best.safetensors`: the iteration with the best imagined success rate.
    Best,
}

impl RefineConfig {
    /// Checks value ranges (before any PPO iteration runs).
    pub fn validate(&self) -> Result<()> {
        self.ppo.validate()?;
        ensure!(
            self.accept == AcceptRule::Always || self.accept_episodes > 0,
            "refine.accept_episodes must be positive when refine.accept = \"imagined-gain\""
        );
        ensure!(
            self.accept_margin.is_finite(),
            "refine.accept_margin must be a finite number"
        );
        ensure!(
            !(self.evaluate == RefinedCheckpoint::Validation && self.accept == AcceptRule::ImaginedGain),
            "refine.evaluate = \"validation\" already chooses between the start and the refined policy on validation scenes; refine.accept = \"imagined-gain\" needs refine.evaluate = \"last\" or \"best\""
        );
        ensure!(
            self.evaluate != RefinedCheckpoint::Validation || self.checkpoint_every > 0,
            "refine.checkpoint_every must be positive when refine.evaluate = \"validation\""
        );
        Ok(())
    }
}

impl Default for RefineConfig {
    fn default() -> Self {
        Self {
            tasks: Vec::new(),
            start: RefineStart::BcFiltered,
            ppo: PpoConfig::default(),
            imagination: ImaginedEnvConfig::default(),
            sampler: None,
            world_model_precision: Precision::F32,
            world_model_channels_last: true,
            reward_threshold: None,
            reward_mode: None,
            monitor_every: 2,
            monitor_episodes: 50,
            evaluate: RefinedCheckpoint::Validation,
            checkpoint_every: 10,
            real_env_control: false,
            true_reward_control: false,
            accept: AcceptRule::Always,
            accept_episodes: 256,
            accept_margin: 0.0,
        }
    }
}

/// What the refinement of a task records.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RefineReport {
    /// Task.
    pub task: String,
    /// The PPO summary (imagined success rates).
    pub ppo: PpoSummary,
    /// Imagined episode length.
    pub horizon: usize,
    /// Distinct start episodes.
    pub start_episodes: usize,
    /// Time in the world model and the classifier.
    pub imagination: ImaginationStats,
    /// The BC policy refined.
    pub initial_policy: PathBuf,
    /// Best checkpoint.
    pub best: PathBuf,
    /// Last checkpoint.
    pub last: PathBuf,
    /// The acceptance check (`refine.accept = "imagined-gain"`), when it ran.
    #[serde(default)]
    pub acceptance: Option<Acceptance>,
    /// `RUN/refine/<task>/policy.safetensors`: the policy that stands as the refined one (a copy of the
    /// checkpoint chosen by `refine.evaluate`, or of the BC policy when the acceptance check refused it).
    #[serde(default)]
    pub policy: PathBuf,
    /// The choice on validation scenes (`refine.evaluate = "validation"`): every candidate (step =
    /// PPO iterations behind it, 0 the start) in every mode, and the one that stands.
    #[serde(default)]
    pub choice: Option<Choice>,
}

/// The run's frozen world model and the classifier of `task`, as refinement uses them.
pub fn load_imagination(
    cfg: &RefineConfig,
    run: &RunDir,
    task: &str,
    device: Device,
) -> Result<(WorldModel, RewardClassifier)> {
    Ok((
        load_world_model(cfg, run, device)?,
        load_classifier(cfg, run, task, device)?,
    ))
}

/// The run's world model with refinement's sampler, precision and layout.
pub fn load_world_model(cfg: &RefineConfig, run: &RunDir, device: Device) -> Result<WorldModel> {
    let (mut wm, _) = WorldModel::load(&run.world_model(), device).with_context(|| {
        format!(
            "loading the world model of run {} (train it first)",
            run.path().display()
        )
    })?;
    wm.set_imagination(
        cfg.sampler.as_ref(),
        cfg.world_model_precision,
        cfg.world_model_channels_last,
    )?;
    Ok(wm)
}

/// The run's classifier of `task` with refinement's threshold and reward mode, when set.
pub fn load_classifier(
    cfg: &RefineConfig,
    run: &RunDir,
    task: &str,
    device: Device,
) -> Result<RewardClassifier> {
    let (mut clf, _) =
        RewardClassifier::load(&run.classifier(task), device).with_context(|| {
            format!("loading the reward classifier of '{task}' (run `world4rl train reward` first)")
        })?;
    if cfg.reward_threshold.is_some() || cfg.reward_mode.is_some() {
        clf.set_reward(
            cfg.reward_threshold.unwrap_or(clf.threshold()),
            cfg.reward_mode.unwrap_or(clf.mode()),
        )?;
    }
    Ok(clf)
}

/// The start states of the acceptance check: the run's held-out rollouts, when the check is on and
/// the run has them.
pub fn accept_starts(cfg: &RefineConfig, run: &RunDir) -> Result<Option<Dataset>> {
    let dir = run.heldout();
    if cfg.accept == AcceptRule::Always || !dir.exists() {
        return Ok(None);
    }
    let data = Dataset::open(&dir)
        .with_context(|| format!("opening the held-out rollouts {}", dir.display()))?;
    Ok(Some(data))
}

/// The policy refinement of `task` starts from (`refine.start`).
pub fn load_start(
    run: &RunDir,
    task: &str,
    start: RefineStart,
    device: Device,
) -> Result<GaussianPolicy> {
    let (policy, _) = GaussianPolicy::load(&start.path(run, task), device).with_context(|| {
        match start {
            RefineStart::Bc => {
                format!("loading the BC policy of '{task}' (run `world4rl train bc` first)")
            }
            RefineStart::BcFiltered => format!(
                "loading the filtered BC policy of '{task}' (refine.start = \"bc-filtered\": run the `bc-filtered` stage with bc.filtered_control = true first)"
            ),
        }
    })?;
    Ok(policy)
}

/// Refines the BC policy of `task` inside the run's world model with the run's classifier; start
/// states come from `data`. Writes `RUN/refine/<task>/{best,last,policy}.safetensors` and
/// `metrics.jsonl`. `monitor_seed` is the base of the seeds of the optional real-environment monitor.
pub struct RefineTask<'a> {
    /// `[refine]` (resolved).
    pub cfg: &'a RefineConfig,
    /// The start states (the dataset the run trained on).
    pub data: &'a Dataset,
    /// Start states of the acceptance check (the held-out rollouts), when there are any.
    pub accept_starts: Option<&'a Dataset>,
    /// The task.
    pub task: String,
    /// Where it runs.
    pub device: Device,
    /// Base of the monitoring seeds (the experiment's seed).
    pub monitor_seed: u64,
    /// The monitor's episode length (`experiment.max_steps`; 0 = the task's own).
    pub max_steps: usize,
    /// `[eval]` with the experiment's seed: the validation scenes of `refine.evaluate = "validation"`.
    pub eval: &'a EvalConfig,
}

impl Stage for RefineTask<'_> {
    type Record = RefineReport;

    fn name(&self) -> String {
        stage_name::refine(&self.task)
    }

    /// The start policy, the world model and the classifier: refinement trained on others is stale.
    fn inputs(&self) -> Vec<String> {
        vec![
            self.cfg.start.stage(&self.task),
            stage_name::WORLD_MODEL.into(),
            stage_name::reward(&self.task),
        ]
    }

    fn run(&self, run: &RunDir) -> Result<RefineReport> {
        let (cfg, task, device) = (self.cfg, self.task.as_str(), self.device);
        cfg.validate()?;
        let (wm, clf) = load_imagination(cfg, run, task, device)?;
        let bc_path = cfg.start.path(run, task);
        let mut policy = load_start(run, task, cfg.start, device)?;
        check_inputs(task, &policy, &clf, &wm)?;
        let mut env = ImaginedEnv::new(
            &wm,
            &clf,
            self.data,
            task,
            cfg.ppo.num_envs,
            &cfg.imagination,
        )?;
        let dir = run.stage_dir(&self.name())?;
        let choosing = self.choosing();
        let out = output_in(&dir).with_snapshots(if choosing { cfg.checkpoint_every } else { 0 });
        let mut metrics = run.metrics(&self.name())?;
        metrics.truncate_after(0)?;
        let extra = serde_json::json!({"stage": crate::experiment::stage_id::StageId::Refine.name(), "task": task, "initial_policy": bc_path});
        let eval_cfg = crate::eval::evaluate::EvalConfig {
            episodes: cfg.monitor_episodes.max(1),
            seed: self.monitor_seed ^ 0x6d6f_6e69,
            // the batch every recorded monitor curve was measured with
            num_envs: 16,
            max_steps: self.max_steps,
            ..Default::default()
        };
        let mut monitor = |p: &GaussianPolicy| -> Result<serde_json::Value> {
            let r = crate::eval::evaluate::evaluate_policy(p, task, &eval_cfg)?;
            Ok(serde_json::to_value(r)?)
        };
        let mut log = |v: &serde_json::Value| metrics.log(v);
        let hooks = Hooks {
            log: &mut log,
            monitor: (cfg.monitor_every > 0).then_some(
                &mut monitor as &mut dyn FnMut(&GaussianPolicy) -> Result<serde_json::Value>,
            ),
            monitor_every: cfg.monitor_every,
        };
        tracing::info!(
            "refine '{task}': {} imagined envs, horizon {}, {} start episodes",
            cfg.ppo.num_envs,
            env.horizon(),
            env.num_start_episodes()
        );
        let summary = train(&cfg.ppo, &mut env, &mut policy, &out, &extra, hooks)?;
        let (horizon, start_episodes, imagination) =
            (env.horizon(), env.num_start_episodes(), env.stats());
        drop(env);
        let choice = if choosing {
            Some(choose_refined(
                &out.candidates(&bc_path, summary.iterations),
                &self.task,
                self.eval,
                self.device,
                "refine",
            )?)
        } else {
            None
        };
        let chosen = match (&choice, cfg.evaluate) {
            (Some(c), _) => c.best().path.clone(),
            (None, RefinedCheckpoint::Best) => out.best.clone(),
            (None, _) => out.last.clone(),
        };
        let acceptance = match cfg.accept {
            AcceptRule::Always => None,
            AcceptRule::ImaginedGain => Some(self.acceptance(run, &wm, &clf, &chosen, horizon)?),
        };
        let standing = run.refined_policy(task);
        let keep_bc = acceptance.as_ref().is_some_and(|a| !a.accepted);
        let from = if keep_bc { &bc_path } else { &chosen };
        let bytes = std::fs::read(from)
            .with_context(|| format!("reading the policy {}", from.display()))?;
        w4rl_data::write_atomic(&standing, &bytes)?;
        tracing::info!(
            "refine '{task}': {} iterations, imagined success {:.2} -> best {:.2} (iteration {}), {:.0} s",
            summary.iterations,
            summary.first_success_rate,
            summary.best_success_rate,
            summary.best_iteration,
            summary.seconds
        );
        Ok(RefineReport {
            task: task.to_string(),
            ppo: summary,
            horizon,
            start_episodes,
            imagination,
            initial_policy: bc_path,
            best: out.best,
            last: out.last,
            acceptance,
            policy: standing,
            choice,
        })
    }
}

impl RefineTask<'_> {
    /// Whether the refined policy is chosen on validation scenes.
    fn choosing(&self) -> bool {
        chooses_on_validation(self.cfg, self.eval, &self.task)
    }

    /// The acceptance check of the refined checkpoint `chosen` against the BC policy.
    fn acceptance(
        &self,
        run: &RunDir,
        wm: &WorldModel,
        clf: &RewardClassifier,
        chosen: &std::path::Path,
        horizon: usize,
    ) -> Result<Acceptance> {
        let (cfg, task) = (self.cfg, self.task.as_str());
        let bc = load_start(run, task, cfg.start, self.device)?;
        let (refined, _) = GaussianPolicy::load(chosen, self.device)?;
        let starts = self.accept_starts.unwrap_or(self.data);
        let a = crate::ppo::acceptance::check(
            wm,
            clf,
            starts,
            task,
            &bc,
            &refined,
            &AcceptConfig {
                episodes: cfg.accept_episodes,
                num_envs: cfg.ppo.num_envs,
                horizon,
                success_frames: cfg.imagination.success_frames,
                gamma: cfg.ppo.gamma,
                margin: cfg.accept_margin,
                seed: cfg.ppo.seed ^ 0x6163_6365_7074,
            },
        )
        .with_context(|| format!("the acceptance check of '{task}'"))?;
        let c = &a.comparison;
        tracing::info!(
            "refine '{task}': imagined discounted success BC {:.3} -> refined {:.3}, gain {:+.3} [{:+.3}, {:+.3}] over {} paired episodes from {}: {}",
            c.baseline_discounted,
            c.candidate_discounted,
            c.gain,
            c.gain_ci.0,
            c.gain_ci.1,
            c.episodes,
            if self.accept_starts.is_some() { "held-out start states" } else { "training start states" },
            if a.accepted { "refined policy accepted" } else { "kept the BC policy" }
        );
        Ok(a)
    }
}

/// Whether a PPO run of `task` (refinement or its ceilings) is chosen on validation scenes:
/// `refine.evaluate = "validation"`, validation episodes, and an environment for the task (a task of
/// imported data has none: the last checkpoint stands).
pub fn chooses_on_validation(cfg: &RefineConfig, eval: &EvalConfig, task: &str) -> bool {
    let asked = cfg.evaluate == RefinedCheckpoint::Validation && eval.validation_episodes > 0;
    let has_env = w4rl_envs::task_names().iter().any(|t| t == task);
    if asked && !has_env {
        tracing::warn!(
            "'{task}' has no environment here: the last checkpoint of its PPO stands, unchosen"
        );
    }
    asked && has_env
}

/// Every candidate of `checkpoints` (`(iteration, file)`: the start at 0, a PPO run's snapshots and
/// its last checkpoint, as [`crate::ppo::PpoOutput::candidates`] lists them) in every action mode on the
/// validation scenes: the best, logged under `what`.
pub fn choose_refined(
    checkpoints: &[(Option<usize>, PathBuf)],
    task: &str,
    eval: &EvalConfig,
    device: Device,
    what: &str,
) -> Result<Choice> {
    let choice = choose(checkpoints, task, eval, eval.validation_episodes, device)
        .with_context(|| format!("{what} '{task}': choosing among its checkpoints"))?;
    let best = choice.best();
    tracing::info!(
        "{what} '{task}': {} read {} stands ({:.1} % on {} validation episodes)",
        match best.step {
            Some(0) | None => "the start".to_string(),
            Some(i) => format!("iteration {i}"),
        },
        best.mode,
        100.0 * best.rate(),
        best.episodes
    );
    Ok(choice)
}

/// Refuses a policy that reads the state (the world model does not predict it); warns when the
/// policy or the classifier work at another frame size than the world model imagines.
fn check_inputs(
    task: &str,
    policy: &GaussianPolicy,
    clf: &RewardClassifier,
    wm: &WorldModel,
) -> Result<()> {
    ensure!(
        !policy.config().use_state,
        "the BC policy of '{task}' reads the low-dimensional state, which the world model does not predict; train it with bc.policy.use_state = false"
    );
    for (what, size) in [
        ("BC policy", policy.spec().image_size),
        ("classifier", clf.image_size()),
    ] {
        if size != wm.image_size() {
            tracing::warn!(
                "refine '{task}': the {what} works at {size} px but the world model imagines {} px frames; \
                 frames are resized, but train it with image_size = {} to match what it will see",
                wm.image_size(),
                wm.image_size()
            );
        }
    }
    Ok(())
}
