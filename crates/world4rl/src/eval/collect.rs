//! Data collection: the paper's recipe per task (§2.1): N expert demonstrations, M rollouts of a policy
//! (the BC policy once it exists; before that a noisy expert stands in) and R uniform-random-action
//! episodes, written atomically into an episode dataset. Re-running completes a partial dataset: an
//! episode whose file exists is skipped, and episode `i` of (task, kind) always uses the same seed.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};
use w4rl_data::{DatasetSpec, DatasetWriter, Episode, EpisodeKind};
use w4rl_envs::{make, make_expert, Controller, Env, EnvConfig, Obs};

use crate::util::seeds::collect_seed;

/// Episode counts of one task.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TaskCounts {
    /// Expert demonstrations (D_exp).
    pub expert: usize,
    /// Policy rollouts (D_rollout).
    pub policy: usize,
    /// Uniform-random-action episodes (D_rand).
    pub random: usize,
}

/// `[collect]`: the data recipe.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CollectConfig {
    /// Expert demonstrations per task (the paper: 50 on Meta-World).
    pub expert_episodes: usize,
    /// Policy rollouts per task (the paper: 150).
    pub policy_episodes: usize,
    /// Uniform-random-action episodes per task (the paper: 30). 0 is the "no random data" ablation.
    pub random_episodes: usize,
    /// Held-out BC-policy rollouts per task, recorded apart from the dataset (`RUN/heldout/`) from a
    /// seed stream of their own: no learner trains on them; the outcome check replays them.
    pub heldout_episodes: usize,
    /// Std of the Gaussian noise added to the expert's actions for policy rollouts when no policy
    /// checkpoint is given (the stand-in for D_rollout before a BC policy exists).
    pub noise_std: f32,
    /// Episode length; 0 keeps each task's default. In an experiment, taken from
    /// `experiment.max_steps`.
    pub max_steps: usize,
    /// Per-task overrides of the three counts.
    pub per_task: BTreeMap<String, TaskCounts>,
    /// Episodes stepped together (the policy is queried once per step for all of them).
    pub batch: usize,
}

impl Default for CollectConfig {
    fn default() -> Self {
        Self {
            expert_episodes: 50,
            policy_episodes: 150,
            random_episodes: 30,
            heldout_episodes: 100,
            noise_std: 0.3,
            max_steps: 0,
            per_task: BTreeMap::new(),
            batch: 16,
        }
    }
}

impl CollectConfig {
    /// The counts of one task.
    pub fn counts(&self, task: &str) -> TaskCounts {
        self.per_task.get(task).copied().unwrap_or(TaskCounts {
            expert: self.expert_episodes,
            policy: self.policy_episodes,
            random: self.random_episodes,
        })
    }

    /// The recipe of the held-out rollouts: `heldout_episodes` policy rollouts per task, nothing else.
    pub fn heldout(&self) -> Self {
        self.policy_only(self.heldout_episodes)
    }

    /// This recipe with `n` policy rollouts per task and nothing else (no per-task overrides).
    pub fn policy_only(&self, n: usize) -> Self {
        Self {
            expert_episodes: 0,
            policy_episodes: n,
            random_episodes: 0,
            per_task: BTreeMap::new(),
            ..self.clone()
        }
    }
}

/// A policy that acts on a batch of observations (the BC policy implements it).
pub trait BatchPolicy {
    /// One action per observation.
    fn act(&mut self, obs: &[&Obs]) -> Result<Vec<Vec<f32>>>;
}

/// Who chooses the actions of an episode.
pub enum ActionSource<'a> {
    /// The scripted expert, optionally with Gaussian action noise of this std.
    Expert {
        /// Noise std (0 for clean demonstrations).
        noise_std: f32,
    },
    /// Uniform random actions in the action box.
    Random,
    /// A learned policy.
    Policy(&'a mut dyn BatchPolicy),
}

/// The dataset spec of a suite's tasks at an image size (taken from the first task's environment).
pub fn dataset_spec(suite: &str, task: &str, env_cfg: &EnvConfig) -> Result<DatasetSpec> {
    let env = make(task, env_cfg).with_context(|| format!("making environment '{task}'"))?;
    let a = env.action_spec();
    Ok(DatasetSpec {
        suite: suite.to_string(),
        image_size: env.image_size(),
        action_dim: a.dim,
        action_low: a.low.clone(),
        action_high: a.high.clone(),
        state_dim: env.state_dim(),
        render: crate::eval::render::record(&env_cfg.render),
    })
}

/// Runs episodes `indices` of (`task`, `kind`) with the given action source and writes each one.
/// Returns the number of episodes written.
#[allow(clippy::too_many_arguments)]
pub fn collect_episodes(
    writer: &DatasetWriter,
    task: &str,
    kind: EpisodeKind,
    indices: &[usize],
    base_seed: u64,
    env_cfg: &EnvConfig,
    source: &mut ActionSource<'_>,
    batch: usize,
    mut on_episode: impl FnMut(&Episode),
) -> Result<usize> {
    let mut written = 0;
    for chunk in indices.chunks(batch.max(1)) {
        if crate::util::interrupt::stop_requested() {
            return Err(crate::util::interrupt::Interrupted {
                stage: format!("the collection of {task} ({kind})"),
                at: format!("after {written} new episodes, each one committed"),
            }
            .into());
        }
        let episodes = run_batch(writer.spec(), task, kind, chunk, base_seed, env_cfg, source)?;
        for ep in &episodes {
            writer.write(ep)?;
            on_episode(ep);
            written += 1;
        }
    }
    Ok(written)
}

fn run_batch(
    spec: &DatasetSpec,
    task: &str,
    kind: EpisodeKind,
    indices: &[usize],
    base_seed: u64,
    env_cfg: &EnvConfig,
    source: &mut ActionSource<'_>,
) -> Result<Vec<Episode>> {
    let n = indices.len();
    if let (ActionSource::Policy(_), Some(&first)) = (&*source, indices.first()) {
        // a learned policy samples from libtorch's generator: seeded from the batch's first episode,
        // the batch draws the same actions in any process (a resumed run, a stage command), not
        // whatever the stages before it left in the generator
        let seed =
            crate::util::seeds::mix(collect_seed(base_seed, task, kind, first) ^ 0x706f_6c69);
        tch::manual_seed(seed as i64);
    }
    let mut envs: Vec<Box<dyn Env>> = Vec::with_capacity(n);
    let mut experts: Vec<Box<dyn Controller>> = Vec::new();
    let mut rngs = Vec::with_capacity(n);
    let mut obs = Vec::with_capacity(n);
    let mut eps = Vec::with_capacity(n);
    for &i in indices {
        let seed = collect_seed(base_seed, task, kind, i);
        let mut env = make(task, env_cfg)?;
        let o = env.reset(seed);
        if let ActionSource::Expert { .. } = source {
            let mut ex = make_expert(task)?;
            ex.reset(seed);
            experts.push(ex);
        }
        eps.push(Episode::start(
            spec, task, kind, i, seed, &o.frame, &o.state, false,
        )?);
        rngs.push(ChaCha8Rng::seed_from_u64(seed ^ 0xA5A5_5A5A));
        obs.push(o);
        envs.push(env);
    }
    let (low, high) = {
        let a = envs[0].action_spec();
        (a.low.clone(), a.high.clone())
    };
    let mut done = vec![false; n];
    while done.iter().any(|d| !d) {
        let live: Vec<usize> = (0..n).filter(|&i| !done[i]).collect();
        let actions: Vec<Vec<f32>> = match source {
            ActionSource::Expert { noise_std } => live
                .iter()
                .map(|&i| {
                    let mut a = experts[i].act(&obs[i]);
                    if *noise_std > 0.0 {
                        let normal = Normal::new(0.0f32, *noise_std).expect("valid std");
                        for (k, x) in a.iter_mut().enumerate() {
                            *x = (*x + normal.sample(&mut rngs[i])).clamp(low[k], high[k]);
                        }
                    }
                    a
                })
                .collect(),
            ActionSource::Random => live
                .iter()
                .map(|&i| {
                    (0..low.len())
                        .map(|k| rngs[i].gen_range(low[k]..=high[k]))
                        .collect()
                })
                .collect(),
            ActionSource::Policy(p) => {
                let o: Vec<&Obs> = live.iter().map(|&i| &obs[i]).collect();
                let acts = p.act(&o)?;
                if acts.len() != live.len() {
                    bail!(
                        "the policy returned {} actions for {} observations",
                        acts.len(),
                        live.len()
                    );
                }
                acts.into_iter()
                    .map(|a| {
                        a.iter()
                            .enumerate()
                            .map(|(k, x)| x.clamp(low[k], high[k]))
                            .collect()
                    })
                    .collect()
            }
        };
        for (i, a, step) in crate::eval::evaluate::step_rows(&mut envs, &live, actions) {
            let step = step.with_context(|| format!("stepping {task}"))?;
            eps[i].push(
                &a,
                step.reward,
                &step.obs.frame,
                &step.obs.state,
                step.info.success,
            )?;
            done[i] = step.terminated || step.truncated;
            obs[i] = step.obs;
        }
    }
    Ok(eps)
}

/// Collects the whole recipe of `tasks` into `out` (skipping episodes that exist), with `policy` for
/// D_rollout when given, else the noisy expert. Calls `progress(done, total)` after each episode.
#[allow(clippy::too_many_arguments)]
pub fn collect_recipe(
    out: &Path,
    suite: &str,
    tasks: &[String],
    env_cfg: &EnvConfig,
    base_seed: u64,
    cfg: &CollectConfig,
    mut policy: Option<&mut dyn BatchPolicy>,
    kinds: &[EpisodeKind],
    mut progress: impl FnMut(usize, usize),
) -> Result<CollectSummary> {
    let Some(first) = tasks.first() else {
        bail!("no tasks to collect");
    };
    let spec = dataset_spec(suite, first, env_cfg)?;
    let writer = DatasetWriter::create(out, spec)?;
    let mut plan: Vec<(String, EpisodeKind, Vec<usize>)> = Vec::new();
    let mut total = 0;
    let mut existing = 0;
    for task in tasks {
        let c = cfg.counts(task);
        for (kind, n) in [
            (EpisodeKind::Expert, c.expert),
            (EpisodeKind::Policy, c.policy),
            (EpisodeKind::Random, c.random),
        ] {
            if !kinds.contains(&kind) {
                continue;
            }
            total += n;
            let todo: Vec<usize> = (0..n)
                .filter(|&i| !writer.contains(task, kind, i))
                .collect();
            existing += n - todo.len();
            if !todo.is_empty() {
                plan.push((task.clone(), kind, todo));
            }
        }
    }
    let mut done = existing;
    progress(done, total);
    let mut written = 0;
    for (task, kind, todo) in plan {
        let mut source = match kind {
            EpisodeKind::Expert => ActionSource::Expert { noise_std: 0.0 },
            EpisodeKind::Random => ActionSource::Random,
            EpisodeKind::Policy => match policy.as_deref_mut() {
                Some(p) => ActionSource::Policy(p),
                None => ActionSource::Expert {
                    noise_std: cfg.noise_std,
                },
            },
        };
        written += collect_episodes(
            &writer,
            &task,
            kind,
            &todo,
            base_seed,
            env_cfg,
            &mut source,
            cfg.batch,
            |_| {
                done += 1;
                progress(done, total);
            },
        )?;
    }
    Ok(CollectSummary {
        total,
        existing,
        written,
    })
}

/// Records `episodes` rollouts of `actor` on `task` into `out` (policy episodes only, in the
/// experiment's suite and real environment) under the collection seed stream of `base_seed`: the run's
/// training scenes with its seed, the held-out ones with [`crate::util::seeds::heldout_base`] of it.
/// Resumes what `out` holds, as [`collect_recipe`] does.
pub fn record_policy_rollouts(
    out: &Path,
    cfg: &crate::experiment::config::ExperimentConfig,
    task: &str,
    base_seed: u64,
    episodes: usize,
    actor: &mut dyn BatchPolicy,
    progress: impl FnMut(usize, usize),
) -> Result<CollectSummary> {
    collect_recipe(
        out,
        &cfg.experiment.suite,
        &[task.to_string()],
        &cfg.experiment.env_config(),
        base_seed,
        &cfg.collect.policy_only(episodes),
        Some(actor),
        &[EpisodeKind::Policy],
        progress,
    )
}

/// What a collection did.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CollectSummary {
    /// Episodes the recipe asks for.
    pub total: usize,
    /// Episodes that were already there.
    pub existing: usize,
    /// Episodes written now.
    pub written: usize,
}
