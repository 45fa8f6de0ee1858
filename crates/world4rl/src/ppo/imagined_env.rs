//! The imagined environment: a batched [`VecEnv`] over the frozen diffusion world model and the frozen
//! success classifier (World4RL §III-C, Algorithm 1 steps 3-5; DIAMOND's `WorldModelEnv`).
//!
//! * **Start states** come from the recorded data of the target task, never from a simulator: an
//!   episode is reset by picking (from the reset seed) a dataset episode and a start frame
//!   `s <= start_max_step` (0: the episode's first frame, i.e. a real initial state), and the
//!   context window ending there (earlier positions are padding, as in training). Start frames stop
//!   before the episode's first recorded success: an episode that starts solved teaches nothing.
//! * **Step**: the action of every row enters one batched world-model call
//!   ([`RollingContext::step`]), which samples `x_{t+1}` (quantised to 8 bits); the classifier gives
//!   `r_t = 1[C(x_{t+1}) > threshold]` (or the probability, by the classifier's mode).
//! * **Episode end**: `terminated` on the first imagined success when `terminate_on_success` (default),
//!   `truncated` after `horizon` steps (0: the longest start episode of the task, i.e. the task's
//!   episode length).
//! * Observations carry the imagined frame at the world model's size and an empty state.

use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};
use w4rl_data::{Dataset, Episode, EpisodeKind};
use w4rl_envs::{check_action, expand_seeds, ActionSpec, EnvError, Info, Obs, Step, VecEnv};

use crate::reward::RewardClassifier;
use crate::util::frames::model_to_chw;
use crate::world_model::{RollingContext, WorldModel};

/// `[refine.imagination]`: the imagined environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImaginedEnvConfig {
    /// Episode length in imagined steps; 0 = the task's episode length in the data. Default 15,
    /// DIAMOND's imagination: short episodes, truncated and bootstrapped by the critic, with less
    /// compounding error than whole episodes at the same world-model calls per iteration.
    pub horizon: usize,
    /// End an imagined episode at the first step the classifier calls successful (default true).
    pub terminate_on_success: bool,
    /// Episode kinds whose frames provide start states (default: every kind).
    pub start_kinds: Vec<EpisodeKind>,
    /// Start frames are drawn from `0..=start_max_step` of an episode, and before its first recorded
    /// success (default 49: any frame of a 50-step episode; 0 = real initial states only). With a
    /// short `horizon`, this gives MBPO-style branched rollouts: short imagined segments from states
    /// along the recorded episodes, where the world model's compounding error stays small.
    pub start_max_step: usize,
    /// Consecutive imagined frames the classifier must call successful for the episode to succeed
    /// (1: any frame; default 3: slide-handle's imagined success rate on held-out rollouts fell from
    /// 41 % to 26 %, real 20 %, at about the same AUC). The outcome check (`world4rl eval world-model
    /// --outcomes`, the fidelity stage) judges whole replays by the same rule.
    pub success_frames: usize,
    /// Pessimism against exploiting the world model (default 1: off). With `k` ≥ 2 every transition
    /// is sampled `k` times and a frame counts as successful only as far as the *least* successful
    /// sample says (the classifier's lowest probability): a success the world model is unsure of
    /// pays nothing. Costs `k` world-model samples per step. An ablation until measured
    /// (`docs/refinement.md`).
    pub pessimism_samples: usize,
}

impl Default for ImaginedEnvConfig {
    fn default() -> Self {
        Self {
            horizon: 15,
            terminate_on_success: true,
            start_kinds: EpisodeKind::ALL.to_vec(),
            start_max_step: 49,
            success_frames: 3,
            pessimism_samples: 1,
        }
    }
}

impl ImaginedEnvConfig {
    /// The success rule of imagined episodes.
    pub fn success_rule(&self) -> crate::world_model::outcome::SuccessRule {
        crate::world_model::outcome::SuccessRule {
            frames: self.success_frames.max(1),
        }
    }
}

/// Wall-clock spent inside the imagined environment.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct ImaginationStats {
    /// Batched steps taken.
    pub steps: u64,
    /// Seconds in the world model.
    pub world_model_seconds: f64,
    /// Seconds in the classifier.
    pub classifier_seconds: f64,
}

/// The imagined environment (see the module docs).
pub struct ImaginedEnv<'a> {
    wm: &'a WorldModel,
    clf: &'a RewardClassifier,
    starts: Vec<Episode>,
    ctx: RollingContext,
    spec: ActionSpec,
    horizon: usize,
    terminate_on_success: bool,
    start_max_step: usize,
    success_frames: usize,
    pessimism_samples: usize,
    /// Per row: consecutive imagined frames above the threshold so far.
    streak: Vec<usize>,
    steps: Vec<usize>,
    over: Vec<bool>,
    task: String,
    stats: ImaginationStats,
}

/// Keeps the first `s + 1` frames (and `s` actions) of an episode.
fn head(ep: &Episode, s: usize) -> Episode {
    let s = s.min(ep.steps());
    let (fl, a, sd) = (ep.frame_len(), ep.meta.action_dim, ep.meta.state_dim);
    let mut meta = ep.meta.clone();
    meta.steps = s;
    Episode {
        meta,
        frames: ep.frames[..(s + 1) * fl].to_vec(),
        actions: ep.actions[..s * a].to_vec(),
        rewards: ep.rewards[..s].to_vec(),
        success: ep.success[..s + 1].to_vec(),
        states: ep.states[..(s + 1) * sd].to_vec(),
    }
}

impl<'a> ImaginedEnv<'a> {
    /// `num_envs` imagined environments of `task`, starting from the task's episodes in `dataset`.
    pub fn new(
        wm: &'a WorldModel,
        clf: &'a RewardClassifier,
        dataset: &Dataset,
        task: &str,
        num_envs: usize,
        cfg: &ImaginedEnvConfig,
    ) -> Result<Self> {
        ensure!(
            num_envs > 0,
            "the imagined environment needs at least one env (num_envs = 0)"
        );
        ensure!(
            !cfg.start_kinds.is_empty(),
            "imagination.start_kinds is empty"
        );
        let spec = dataset.spec();
        ensure!(
            spec.action_dim == wm.action_dim(),
            "the dataset's actions have {} dimensions, the world model's {}",
            spec.action_dim,
            wm.action_dim()
        );
        let mut starts = Vec::new();
        let mut longest = 0;
        for (i, e) in dataset.entries().iter().enumerate() {
            if e.meta.task != task || !cfg.start_kinds.contains(&e.meta.kind) || e.meta.steps == 0 {
                continue;
            }
            let ep = dataset
                .load(i)
                .with_context(|| format!("loading start states of '{task}'"))?;
            longest = longest.max(ep.steps());
            // the last allowed start frame: before the first recorded success
            let first_success = ep.success.iter().position(|&f| f == 1);
            let limit = first_success.map_or(cfg.start_max_step, |k| {
                cfg.start_max_step.min(k.saturating_sub(1))
            });
            starts.push(head(&ep, limit));
        }
        if starts.is_empty() {
            bail!(
                "the dataset {} has no {:?} episodes of task '{task}' to start imagined episodes from (tasks: {})",
                dataset.dir().display(),
                cfg.start_kinds,
                dataset.tasks().join(", ")
            );
        }
        let horizon = if cfg.horizon == 0 {
            longest
        } else {
            cfg.horizon
        };
        let action_spec = ActionSpec {
            dim: spec.action_dim,
            low: spec.action_low.clone(),
            high: spec.action_high.clone(),
            meaning: vec![String::new(); spec.action_dim],
        };
        let picks: Vec<(&Episode, usize)> = (0..num_envs).map(|_| (&starts[0], 0)).collect();
        let ctx = RollingContext::from_episodes(wm, &picks)?;
        let mut env = Self {
            wm,
            clf,
            ctx,
            spec: action_spec,
            horizon,
            terminate_on_success: cfg.terminate_on_success,
            start_max_step: cfg.start_max_step,
            success_frames: cfg.success_rule().frames,
            pessimism_samples: cfg.pessimism_samples.max(1),
            streak: vec![0; num_envs],
            steps: vec![0; num_envs],
            over: vec![false; num_envs],
            task: task.to_string(),
            stats: ImaginationStats::default(),
            starts,
        };
        env.try_reset(&[0])?;
        Ok(env)
    }

    /// Episode length in imagined steps.
    pub fn horizon(&self) -> usize {
        self.horizon
    }

    /// Number of distinct start episodes.
    pub fn num_start_episodes(&self) -> usize {
        self.starts.len()
    }

    /// Time spent so far.
    pub fn stats(&self) -> ImaginationStats {
        self.stats
    }

    /// Task name.
    pub fn task(&self) -> &str {
        &self.task
    }

    fn pick(&self, seed: u64) -> (usize, usize) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let e = rng.gen_range(0..self.starts.len());
        let s = rng.gen_range(0..=self.start_max_step.min(self.starts[e].steps()));
        (e, s)
    }

    /// Observations (u8 frames, no state) of imagined frames `[B, 3, S, S]` in [-1, 1], as the
    /// policy sees them in imagination.
    pub(crate) fn obs_of(frames: &Tensor) -> Result<Vec<Obs>> {
        // [B, 3, S, S] in [-1, 1] -> B observations of u8 [S, S, 3]
        let size = frames.size()[3] as usize;
        let bytes = Vec::<u8>::try_from(
            crate::util::frames::model_to_hwc(frames)
                .to_device(Device::Cpu)
                .flatten(0, -1),
        )?;
        let fl = size * size * 3;
        Ok(bytes
            .chunks(fl)
            .map(|f| Obs {
                frame: f.to_vec(),
                size,
                state: Vec::new(),
            })
            .collect())
    }

    /// Restarts every row from the start states chosen by `seeds` (one seed is expanded to all rows).
    pub fn try_reset(&mut self, seeds: &[u64]) -> Result<Vec<Obs>, ImaginationError> {
        let seeds = expand_seeds(seeds, self.steps.len());
        let picks: Vec<(&Episode, usize)> = seeds
            .iter()
            .map(|&s| {
                let (e, t) = self.pick(s);
                (&self.starts[e], t)
            })
            .collect();
        self.ctx =
            RollingContext::from_episodes(self.wm, &picks).map_err(ImaginationError::Reset)?;
        self.steps.iter_mut().for_each(|s| *s = 0);
        self.streak.iter_mut().for_each(|s| *s = 0);
        self.over.iter_mut().for_each(|o| *o = false);
        Self::obs_of(&self.ctx.last_frame()).map_err(ImaginationError::Reset)
    }

    /// Restarts row `i` from the start state chosen by `seed`.
    pub fn reset_row(&mut self, i: usize, seed: u64) -> Result<Obs> {
        ensure!(
            i < self.steps.len(),
            "env index {i} is out of range ({} envs)",
            self.steps.len()
        );
        let (e, s) = self.pick(seed);
        let fresh = RollingContext::from_episodes(self.wm, &[(&self.starts[e], s)])?;
        self.ctx.reset_rows(&[i as i64], &fresh)?;
        self.steps[i] = 0;
        self.streak[i] = 0;
        self.over[i] = false;
        Ok(Self::obs_of(&fresh.last_frame())?.remove(0))
    }
}

/// The classifier's probabilities of `k` samples of each of `B` next frames, `[k·B]` sample-major,
/// reduced to the least successful sample of each frame, `[B]`.
fn least_successful(probs: &Tensor, k: usize) -> Tensor {
    probs.view([k as i64, -1]).min_dim(0, false).0
}

/// What can go wrong inside the imagined environment: the world model or the classifier failing.
#[derive(Debug, thiserror::Error)]
pub enum ImaginationError {
    /// Building the start contexts of a reset.
    #[error("resetting from the dataset's start states failed: {0:#}")]
    Reset(anyhow::Error),
    /// Imagining the next frames, or judging them.
    #[error("imagining the next frames failed: {0:#}")]
    Step(anyhow::Error),
}

impl VecEnv for ImaginedEnv<'_> {
    fn num_envs(&self) -> usize {
        self.steps.len()
    }

    fn action_spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn image_size(&self) -> usize {
        self.wm.image_size()
    }

    /// See [`ImaginedEnv::try_reset`], which returns the failure; this one panics with it.
    fn reset(&mut self, seeds: &[u64]) -> Vec<Obs> {
        self.try_reset(seeds)
            .unwrap_or_else(|e| panic!("imagined env: {e}"))
    }

    fn step(&mut self, actions: &[Vec<f32>]) -> Result<Vec<Step>, EnvError> {
        let n = self.steps.len();
        if actions.len() != n {
            return Err(EnvError::BatchSize {
                expected: n,
                got: actions.len(),
            });
        }
        let mut flat = Vec::with_capacity(n * self.spec.dim);
        for (i, a) in actions.iter().enumerate() {
            flat.extend(check_action(&self.task, &self.spec, a)?);
            if self.over[i] {
                return Err(EnvError::EpisodeOver {
                    task: format!("{} (imagined env {i})", self.task),
                    steps: self.steps[i],
                });
            }
        }
        let wrap = |e: anyhow::Error| EnvError::Backend {
            env: format!("the imagined '{}' environment", self.task),
            source: Box::new(ImaginationError::Step(e)),
        };
        let a = Tensor::from_slice(&flat)
            .view([n as i64, self.spec.dim as i64])
            .to_device(self.wm.device());
        let t0 = Instant::now();
        // the next frames (with pessimism: `k` samples of each, the first one rolling the window)
        let k = self.pessimism_samples;
        let samples = self.ctx.step_samples(self.wm, &a, k).map_err(wrap)?;
        let t1 = Instant::now();
        let next = samples.get(0);
        // every sample judged; the least successful one stands
        let p = least_successful(&self.clf.prob_u8(&model_to_chw(&samples.flatten(0, 1))), k);
        let r = self.clf.reward_of(&p);
        let probs = Vec::<f32>::try_from(p.to_device(Device::Cpu).to_kind(Kind::Float))
            .map_err(|e| wrap(e.into()))?;
        let rewards = Vec::<f32>::try_from(r.to_device(Device::Cpu).to_kind(Kind::Float))
            .map_err(|e| wrap(e.into()))?;
        self.stats.steps += 1;
        self.stats.world_model_seconds += (t1 - t0).as_secs_f64();
        self.stats.classifier_seconds += t1.elapsed().as_secs_f64();
        let obs = Self::obs_of(&next).map_err(wrap)?;
        let thr = self.clf.threshold() as f32;
        Ok(obs
            .into_iter()
            .enumerate()
            .map(|(i, o)| {
                self.steps[i] += 1;
                let success = crate::world_model::outcome::SuccessRule {
                    frames: self.success_frames,
                }
                .judge(&mut self.streak[i], probs[i], thr);
                // with a rule of several frames, a binary reward is paid when the rule is met
                let reward = if self.success_frames > 1
                    && self.clf.mode() == crate::reward::RewardMode::Binary
                {
                    f32::from(u8::from(success))
                } else {
                    rewards[i]
                };
                let terminated = self.terminate_on_success && success;
                let truncated = self.steps[i] >= self.horizon;
                self.over[i] = terminated || truncated;
                Step {
                    obs: o,
                    reward,
                    terminated,
                    truncated,
                    info: Info { success },
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::least_successful;
    use tch::Tensor;

    #[test]
    fn pessimism_keeps_the_least_successful_sample_of_each_frame() {
        // 2 samples (rows) of 3 frames, sample-major as the batched call returns them
        let p = Tensor::from_slice(&[0.9f32, 0.2, 0.7, 0.4, 0.8, 0.7]);
        let got = Vec::<f32>::try_from(least_successful(&p, 2)).unwrap();
        assert_eq!(got, vec![0.4, 0.2, 0.7]);
        // one sample: the probabilities themselves
        let one = Vec::<f32>::try_from(least_successful(&p, 1)).unwrap();
        assert_eq!(one, vec![0.9, 0.2, 0.7, 0.4, 0.8, 0.7]);
    }
}
