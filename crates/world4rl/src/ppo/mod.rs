//! PPO refinement of the Gaussian policy (World4RL §III-C, Eq. 8-9), CleanRL style: every
//! hyper-parameter in [`PpoConfig`] at the top, the loop in [`train`] reads top to bottom.
//!
//! The same code runs against any [`RolloutEnv`]: the imagined environment over the frozen world model
//! (the paper's setting) or a real [`SyncVecEnv`] (the guard test of the RL code).
//!
//! * Rollouts: `num_envs` environments, `rollout_steps` steps each per iteration, actions sampled from
//!   N(μ(x), σ(x)²) with σ clamped to `[std_min, std_max]` (the paper's cap is σ ≤ e⁰ = 1); finished
//!   environments are reset at once (auto-reset), truncated episodes are bootstrapped with V of their
//!   last observation.
//! * Advantages: GAE(γ, λ) ([`gae`]); returns `A + V` are the critic's targets (the paper writes a TD(0)
//!   target, the λ = 0 case). Advantages are normalised per minibatch.
//! * Losses: clipped surrogate `-min(ρA, clip(ρ, 1±ε)A)` minus an entropy bonus for the actor, `½(V - R)²`
//!   for the critic; separate Adam optimisers and learning rates, gradient-norm clipping, optional early
//!   stop on approximate KL.
//! * Critic warm-up: the first `critic_warmup_iters` iterations update only the critic, so the first actor
//!   updates use meaningful advantages (DPPO). The critic's encoder starts as a copy of the policy's.
//!
//! Defaults follow PPO fine-tuning of pre-trained Gaussian policies (DPPO) and offline PPO inside a frozen
//! world model (DiWA), scaled to a CPU budget; each field documents its choice.

use std::path::{Path, PathBuf};

pub mod acceptance;
mod critic;
mod gae;
pub mod imagined_env;
mod train;

use anyhow::{ensure, Result};
pub use critic::Critic;
pub use gae::gae;
use serde::{Deserialize, Serialize};
pub use train::{train, Hooks, Monitor};
use w4rl_envs::{Obs, SyncVecEnv, VecEnv};

use crate::policy::encoder::EncoderConfig;
use crate::policy::gaussian::check_std_bounds;

/// `[refine.ppo]`: every PPO hyper-parameter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PpoConfig {
    /// PPO iterations (rollout + update). Default 30, the demo's budget: 6-12 minutes per task on 2
    /// cores (`docs/refinement.md`).
    pub iterations: usize,
    /// Wall-clock budget in seconds (0 = none, the default): a time budget makes a loaded machine
    /// train fewer iterations, so the same config would train different policies.
    pub time_budget_secs: f64,
    /// Parallel environments, stepped in one batched call. Default 64: one world-model batch per step
    /// keeps the CPU busy while episodes stay numerous (DiWA uses 50).
    pub num_envs: usize,
    /// Steps per environment per iteration. Default 50 (≈ one tabletop episode; DiWA: 36 decisions).
    pub rollout_steps: usize,
    /// Discount. Default 0.99: with termination on success it rewards finishing early, which also
    /// shortens imagined rollouts (DPPO/DiWA use 0.999 for longer horizons).
    pub gamma: f64,
    /// GAE λ. Default 0.95 (CleanRL, DPPO, DiWA).
    pub gae_lambda: f64,
    /// Clip range ε of the ratio. Default 0.2 (CleanRL). DPPO fine-tunes with 0.01 over hundreds of
    /// iterations; a CPU budget allows a few dozen, and the KL early stop below bounds each update.
    pub clip_coef: f64,
    /// Entropy bonus. Default 0 (CleanRL continuous control, DPPO, DiWA): σ is bounded instead.
    pub ent_coef: f64,
    /// Normalise advantages per minibatch. Default true.
    pub norm_adv: bool,
    /// Stop the epoch loop when the approximate KL exceeds this (0 = never). Default 0.02: keeps each
    /// update close to the data the world model has seen. With 0.05 (and lr 2e-4) the real success
    /// drifted down over 30 iterations in imagination; with 0.01 each iteration moved too little
    /// (`docs/refinement.md`).
    pub target_kl: f64,
    /// Actor learning rate. Default 5e-5 (DPPO uses 1e-4, DiWA 1e-5). In the real environment with
    /// the true reward, 2e-4 with KL 0.05 and no annealing was not better from filtered BC (63.5 /
    /// 93.5 / 73.5 % against 71.0 / 95.5 / 69.5 % on validation scenes, `docs/refinement.md`).
    pub actor_lr: f64,
    /// Critic learning rate. Default 1e-3 (DPPO, DiWA).
    pub critic_lr: f64,
    /// Anneal both learning rates linearly to 0 over `iterations` (iteration i uses the fraction
    /// `1 - (i - 1) / iterations`, as CleanRL's `anneal_lr`). Default true: push-block's real success
    /// no longer peaks mid-run and falls back (+20.0 against +10.5 points on one PPO seed).
    pub anneal_lr: bool,
    /// Passes over each rollout. Default 5 (DPPO/DiWA: 10; halved for the CPU budget).
    pub update_epochs: usize,
    /// Minibatch size. Default 320 (10 minibatches per epoch at the default rollout size).
    pub minibatch_size: usize,
    /// Gradient-norm clip. Default 1.0.
    pub max_grad_norm: f64,
    /// Iterations at the start that update only the critic. Default 2 (DPPO).
    pub critic_warmup_iters: usize,
    /// Weight β of a penalty β · KL(π ‖ π₀) to the starting policy π₀ (with the same σ bounds), on
    /// the states of each minibatch (0 = off, the default). The refined policy then moves away from
    /// BC only where the imagined advantage pays for it: the guard RLHF puts against a learned reward
    /// that can be exploited, here the world model and the classifier. Measured on the demo (β 0.1, 30
    /// iterations): slide-handle held at BC, but turn-lever's gain went too (`docs/refinement.md`).
    pub kl_to_initial: f64,
    /// Lower bound of σ during refinement. Default 0.02, BC's own bound, so PPO starts exactly at the
    /// policy it is compared against (DPPO: 0.01).
    pub std_min: f64,
    /// Upper bound of σ. Default 1.0, BC's own bound and the paper's cap (log σ ≤ 0). Until
    /// 2026-12-07 it was 0.25 (a 6000-step BC's σ of about 0.6 made imagined rollouts noise); from
    /// filtered BC, whose σ is about 0.25 on average, that cap cost the start's sampled reading 2.5 to
    /// 10.5 points on validation scenes before PPO's first step, and without it every task of
    /// replicate 3 refined further (`docs/refinement.md`, "PPO from the start's own σ"). Every policy
    /// is still also read sampled with σ ≤ `eval.std_cap` (0.25).
    pub std_max: f64,
    /// Refine a bounded residual on the frozen start instead of the whole policy (0 = off, the
    /// default): the start's mean plus `residual_scale · tanh(r(h))`, `r` a zero-initialised MLP on the
    /// start's frozen features, so PPO starts exactly at the start and its mean moves at most this far
    /// in the normalised action box `[-1, 1]`; only `r` and the log-σ head train (ResiP, Policy
    /// Decorator: a residual keeps what imitation learned where the reward says nothing, and bounds
    /// how far a learned world model can be exploited).
    pub residual_scale: f64,
    /// Critic image encoder (default: the same layout as the policy's).
    pub critic_encoder: Option<EncoderConfig>,
    /// Critic hidden width. Default 256.
    pub critic_hidden: i64,
    /// Start the critic's encoder from the policy's when the layouts agree. Default true.
    pub critic_from_policy: bool,
    /// Write the last checkpoint every this many iterations. Default 5.
    pub save_every: usize,
    /// Seed of sampling and resets.
    pub seed: u64,
}

impl Default for PpoConfig {
    fn default() -> Self {
        Self {
            iterations: 30,
            time_budget_secs: 0.0,
            num_envs: 64,
            rollout_steps: 50,
            gamma: 0.99,
            gae_lambda: 0.95,
            clip_coef: 0.2,
            ent_coef: 0.0,
            norm_adv: true,
            target_kl: 0.02,
            actor_lr: 5e-5,
            critic_lr: 1e-3,
            anneal_lr: true,
            update_epochs: 5,
            minibatch_size: 320,
            max_grad_norm: 1.0,
            critic_warmup_iters: 2,
            kl_to_initial: 0.0,
            std_min: 0.02,
            std_max: 1.0,
            residual_scale: 0.0,
            critic_encoder: None,
            critic_hidden: 256,
            critic_from_policy: true,
            save_every: 5,
            seed: 0,
        }
    }
}

impl PpoConfig {
    /// Checks value ranges.
    pub fn validate(&self) -> Result<()> {
        ensure!(self.iterations > 0, "ppo.iterations must be positive");
        ensure!(
            self.time_budget_secs >= 0.0,
            "ppo.time_budget_secs must be >= 0"
        );
        ensure!(
            self.num_envs > 0 && self.rollout_steps > 0,
            "ppo.num_envs and ppo.rollout_steps must be positive"
        );
        ensure!(
            (0.0..=1.0).contains(&self.gamma),
            "ppo.gamma must lie in [0, 1]"
        );
        ensure!(
            (0.0..=1.0).contains(&self.gae_lambda),
            "ppo.gae_lambda must lie in [0, 1]"
        );
        ensure!(
            self.clip_coef > 0.0 && self.clip_coef < 1.0,
            "ppo.clip_coef must lie in (0, 1)"
        );
        ensure!(
            self.actor_lr >= 0.0 && self.critic_lr > 0.0,
            "ppo learning rates must be positive"
        );
        ensure!(
            self.update_epochs > 0 && self.minibatch_size > 0,
            "ppo.update_epochs and minibatch_size must be positive"
        );
        ensure!(
            self.max_grad_norm > 0.0,
            "ppo.max_grad_norm must be positive"
        );
        ensure!(self.target_kl >= 0.0, "ppo.target_kl must be >= 0");
        ensure!(
            self.kl_to_initial >= 0.0 && self.kl_to_initial.is_finite(),
            "ppo.kl_to_initial must be a finite number >= 0"
        );
        ensure!(self.critic_hidden > 0, "ppo.critic_hidden must be positive");
        ensure!(self.save_every > 0, "ppo.save_every must be positive");
        check_std_bounds(self.std_min, self.std_max)?;
        ensure!(
            (0.0..=2.0).contains(&self.residual_scale),
            "ppo.residual_scale must lie in [0, 2] (0: refine the whole policy; got {})",
            self.residual_scale
        );
        match &self.critic_encoder {
            Some(e) => e.validate(),
            None => Ok(()),
        }
    }
}

/// A batched environment whose members can be reset one at a time (PPO's auto-reset).
pub trait RolloutEnv: VecEnv {
    /// Restarts environment `i` from `seed`.
    fn reset_one(&mut self, i: usize, seed: u64) -> Result<Obs>;

    /// Restarts every environment (one seed each), returning a failure instead of panicking.
    fn reset_all(&mut self, seeds: &[u64]) -> Result<Vec<Obs>> {
        Ok(self.reset(seeds))
    }
}

impl RolloutEnv for SyncVecEnv {
    fn reset_one(&mut self, i: usize, seed: u64) -> Result<Obs> {
        Ok(SyncVecEnv::reset_one(self, i, seed)?)
    }
}

impl RolloutEnv for crate::ppo::imagined_env::ImaginedEnv<'_> {
    fn reset_one(&mut self, i: usize, seed: u64) -> Result<Obs> {
        self.reset_row(i, seed)
    }

    fn reset_all(&mut self, seeds: &[u64]) -> Result<Vec<Obs>> {
        Ok(self.try_reset(seeds)?)
    }
}

/// One iteration's logged numbers.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct IterationStats {
    /// Iteration (1-based).
    pub step: u64,
    /// Environment steps so far (all envs).
    pub env_steps: u64,
    /// Episodes finished in this iteration.
    pub episodes: usize,
    /// Fraction of them that succeeded (NaN when none finished).
    pub success_rate: f64,
    /// Their mean return.
    pub mean_return: f64,
    /// Their mean length.
    pub mean_length: f64,
    /// Policy loss of the last epoch.
    pub pg_loss: f64,
    /// Value loss of the last epoch.
    pub v_loss: f64,
    /// Mean entropy.
    pub entropy: f64,
    /// Approximate KL(old || new) of the last minibatch.
    pub approx_kl: f64,
    /// KL(π ‖ π₀) to the starting policy on the last minibatch (0 unless `kl_to_initial` > 0).
    #[serde(default)]
    pub kl_initial: f64,
    /// Fraction of samples with a clipped ratio.
    pub clip_frac: f64,
    /// Mean σ of the sampled actions.
    pub std: f64,
    /// 1 - Var(R - V) / Var(R).
    pub explained_variance: f64,
    /// Whether the actor was updated (false during critic warm-up).
    pub actor_updated: bool,
    /// Seconds in rollouts / updates in this iteration.
    pub rollout_seconds: f64,
    /// Seconds in the PPO update.
    pub update_seconds: f64,
    /// Seconds since the start.
    pub elapsed: f64,
}

/// Where [`train`] writes.
#[derive(Clone, Debug)]
pub struct PpoOutput {
    /// Best checkpoint: the policy whose rollout had the highest success rate over the episodes it
    /// finished (at least `num_envs / 4` of them); the starting policy when nothing beat it.
    pub best: PathBuf,
    /// Last checkpoint.
    pub last: PathBuf,
    /// A copy of the policy every this many iterations (0 = none), at [`PpoOutput::snapshot`]: the
    /// candidates of a choice on validation scenes.
    pub snapshot_every: usize,
}

impl PpoOutput {
    /// The policy after `iteration` PPO iterations: `iter-<iteration>.safetensors` beside `last`.
    pub fn snapshot(&self, iteration: u64) -> PathBuf {
        self.last
            .with_file_name(format!("iter-{iteration:04}.safetensors"))
    }

    /// Every snapshot of `iterations` iterations run, in order, with its iteration.
    pub fn snapshots(&self, iterations: u64) -> Vec<(u64, PathBuf)> {
        if self.snapshot_every == 0 {
            return Vec::new();
        }
        (1..=iterations)
            .filter(|i| i % self.snapshot_every as u64 == 0)
            .map(|i| (i, self.snapshot(i)))
            .collect()
    }

    /// The candidates of a choice after `iterations` iterations from the policy in `start`: the start
    /// (iteration 0), every snapshot, and the last checkpoint when no snapshot holds it; as
    /// `(iteration, file)`, in order.
    pub fn candidates(&self, start: &Path, iterations: u64) -> Vec<(Option<usize>, PathBuf)> {
        let mut out = vec![(Some(0), start.to_path_buf())];
        for (i, path) in self.snapshots(iterations) {
            out.push((Some(i as usize), path));
        }
        if iterations > 0 && out.last().and_then(|c| c.0) != Some(iterations as usize) {
            out.push((Some(iterations as usize), self.last.clone()));
        }
        out
    }

    /// The same locations with a snapshot every `every` iterations.
    pub fn with_snapshots(self, every: usize) -> Self {
        Self {
            snapshot_every: every,
            ..self
        }
    }
}

/// What [`train`] returns.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PpoSummary {
    /// Iterations run.
    pub iterations: u64,
    /// Environment steps.
    pub env_steps: u64,
    /// Seconds.
    pub seconds: f64,
    /// Success rate of the first iteration's episodes (the starting policy, sampled).
    #[serde(deserialize_with = "crate::util::json_float::nan_if_null")]
    pub first_success_rate: f64,
    /// Best success rate of an iteration's rollout.
    #[serde(deserialize_with = "crate::util::json_float::nan_if_null")]
    pub best_success_rate: f64,
    /// PPO updates behind the best checkpoint (0 = the starting policy).
    pub best_iteration: u64,
    /// Success rate of the last iteration.
    #[serde(deserialize_with = "crate::util::json_float::nan_if_null")]
    pub last_success_rate: f64,
}

/// Default checkpoint locations under a stage folder: `DIR/best.safetensors`, `DIR/last.safetensors`.
pub fn output_in(dir: &Path) -> PpoOutput {
    PpoOutput {
        best: dir.join("best.safetensors"),
        last: dir.join("last.safetensors"),
        snapshot_every: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_choice_sees_the_start_every_snapshot_and_the_last_checkpoint_once() {
        let out = output_in(Path::new("run/refine/t")).with_snapshots(10);
        let steps = |iterations| -> Vec<Option<usize>> {
            out.candidates(Path::new("start.safetensors"), iterations)
                .into_iter()
                .map(|c| c.0)
                .collect()
        };
        assert_eq!(steps(30), [Some(0), Some(10), Some(20), Some(30)]);
        // a run cut short (a time budget) ends between snapshots: its last checkpoint is added
        assert_eq!(steps(25), [Some(0), Some(10), Some(20), Some(25)]);
        assert_eq!(steps(0), [Some(0)]);
        let c = out.candidates(Path::new("start.safetensors"), 30);
        assert_eq!(c[0].1, Path::new("start.safetensors"));
        assert_eq!(c[1].1, Path::new("run/refine/t/iter-0010.safetensors"));
        // without snapshots: the start and the last checkpoint
        let plain = output_in(Path::new("d"));
        let c = plain.candidates(Path::new("s"), 3);
        assert_eq!(c.len(), 2);
        assert_eq!(c[1], (Some(3), PathBuf::from("d/last.safetensors")));
    }
}
