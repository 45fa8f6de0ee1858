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
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};
use w4rl_envs::{Obs, SyncVecEnv, VecEnv};

use w4rl_data::Dataset;

use crate::acceptance::{AcceptConfig, AcceptRule, Acceptance};
use crate::diffusion::SamplerConfig;
use crate::imagined_env::{ImaginationStats, ImaginedEnv, ImaginedEnvConfig};
use crate::policy::encoder::{ConvEncoder, EncoderConfig};
use crate::policy::gaussian::{check_std_bounds, GaussianPolicy, ObsBatch, ObsHistory};
use crate::policy::obs::to_float;
use crate::reward::{RewardClassifier, RewardMode};
use crate::run::RunDir;
use crate::world_model::{Precision, WorldModel};

/// `[refine.ppo]`: every PPO hyper-parameter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PpoConfig {
    /// Maximum PPO iterations (rollout + update). Default 400; the time budget usually ends training first.
    pub iterations: usize,
    /// Wall-clock budget in seconds (0 = none). Default 1200: the 20-minute budget per task.
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
    /// Stop the epoch loop when the approximate KL exceeds this (0 = never). Default 0.05: keeps each
    /// update close to the data the world model has seen.
    pub target_kl: f64,
    /// Actor learning rate. Default 2e-4: DPPO uses 1e-4 (DiWA 1e-5) over hundreds of iterations; on
    /// the real `turn-lever` env, clip 0.2 / lr 2e-4 took a BC policy from 65 % to 90 % in 16
    /// iterations, clip 0.1 / lr 1e-4 to 78 % in 11.
    pub actor_lr: f64,
    /// Critic learning rate. Default 1e-3 (DPPO, DiWA).
    pub critic_lr: f64,
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
    /// Lower bound of σ during refinement. Default 0.05 (keeps exploration alive; DPPO: 0.01).
    pub std_min: f64,
    /// Upper bound of σ. Default 1.0: the paper's cap log σ ≤ 0 (§III-C).
    pub std_max: f64,
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
            iterations: 400,
            time_budget_secs: 1200.0,
            num_envs: 64,
            rollout_steps: 50,
            gamma: 0.99,
            gae_lambda: 0.95,
            clip_coef: 0.2,
            ent_coef: 0.0,
            norm_adv: true,
            target_kl: 0.05,
            actor_lr: 2e-4,
            critic_lr: 1e-3,
            update_epochs: 5,
            minibatch_size: 320,
            max_grad_norm: 1.0,
            critic_warmup_iters: 2,
            kl_to_initial: 0.0,
            std_min: 0.05,
            std_max: 1.0,
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
}

impl RolloutEnv for SyncVecEnv {
    fn reset_one(&mut self, i: usize, seed: u64) -> Result<Obs> {
        Ok(SyncVecEnv::reset_one(self, i, seed)?)
    }
}

impl RolloutEnv for crate::imagined_env::ImaginedEnv<'_> {
    fn reset_one(&mut self, i: usize, seed: u64) -> Result<Obs> {
        self.reset_row(i, seed)
    }
}

/// The value network V_φ(x): its own image encoder (and the state when the policy uses it) and an MLP.
pub struct Critic {
    vs: nn::VarStore,
    encoder: Option<ConvEncoder>,
    fc1: nn::Linear,
    fc2: nn::Linear,
    out: nn::Linear,
    state: Option<(Tensor, Tensor)>,
}

impl Critic {
    /// A critic for the inputs of `policy`.
    pub fn new(cfg: &PpoConfig, policy: &GaussianPolicy) -> Result<Self> {
        let vs = nn::VarStore::new(policy.device());
        let root = vs.root();
        let pc = policy.config();
        let enc_cfg = cfg
            .critic_encoder
            .clone()
            .unwrap_or_else(|| pc.encoder.clone());
        let encoder = if pc.use_image {
            Some(ConvEncoder::new(
                &root / "encoder",
                3 * pc.frame_stack as i64,
                &enc_cfg,
            )?)
        } else {
            None
        };
        let s = if pc.use_state {
            policy.spec().state_dim as i64
        } else {
            0
        };
        let in_dim = encoder.as_ref().map_or(0, |e| e.features()) + s;
        let fc1 = nn::linear(&root / "fc1", in_dim, cfg.critic_hidden, Default::default());
        let fc2 = nn::linear(
            &root / "fc2",
            cfg.critic_hidden,
            cfg.critic_hidden,
            Default::default(),
        );
        let zero = nn::LinearConfig {
            ws_init: nn::Init::Const(0.0),
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        };
        let out = nn::linear(&root / "out", cfg.critic_hidden, 1, zero);
        let mut critic = Self {
            vs,
            encoder,
            fc1,
            fc2,
            out,
            state: None,
        };
        let pv = policy.var_store().variables();
        if pc.use_state {
            let m = pv
                .get("state_mean")
                .context("policy lacks state statistics")?;
            let sd = pv
                .get("state_std")
                .context("policy lacks state statistics")?;
            critic.state = Some((m.detach().copy(), sd.detach().copy()));
        }
        if cfg.critic_from_policy && pc.use_image && pc.encoder == enc_cfg {
            let cv = critic.vs.variables();
            tch::no_grad(|| {
                for (name, mut var) in cv {
                    if let Some(src) = pv.get(&name).filter(|_| name.starts_with("encoder.")) {
                        var.copy_(src);
                    }
                }
            });
        }
        Ok(critic)
    }

    /// The variables.
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// V(x) `[B]`.
    pub fn forward(&self, obs: &ObsBatch) -> Result<Tensor> {
        let mut parts = Vec::with_capacity(2);
        if let Some(enc) = &self.encoder {
            let img = obs.image.as_ref().context("the critic needs frames")?;
            parts.push(enc.forward(&to_float(img)));
        }
        if let Some((m, s)) = &self.state {
            let st = obs.state.as_ref().context("the critic needs the state")?;
            parts.push((st.to_kind(Kind::Float) - m) / s);
        }
        Ok(Tensor::cat(&parts, 1)
            .apply(&self.fc1)
            .relu()
            .apply(&self.fc2)
            .relu()
            .apply(&self.out)
            .squeeze_dim(-1))
    }
}

/// Generalised advantage estimation over a `[T, N]` rollout stored row-major (`index = t * n + i`).
///
/// `dones[t*n+i]` says that the episode of env `i` ended with transition `t` (no bootstrapping across
/// it); `last_values[i]` is V of the observation after the last transition. Returns
/// `(advantages, returns = advantages + values)`.
pub fn gae(
    rewards: &[f32],
    values: &[f32],
    dones: &[bool],
    last_values: &[f32],
    n: usize,
    gamma: f32,
    lambda: f32,
) -> (Vec<f32>, Vec<f32>) {
    let t_len = rewards.len().checked_div(n).unwrap_or(0);
    let mut adv = vec![0.0f32; rewards.len()];
    for (i, &last) in last_values.iter().enumerate().take(n) {
        let mut next_adv = 0.0f32;
        let mut next_value = last;
        for t in (0..t_len).rev() {
            let k = t * n + i;
            let nonterminal = if dones[k] { 0.0 } else { 1.0 };
            let delta = rewards[k] + gamma * next_value * nonterminal - values[k];
            next_adv = delta + gamma * lambda * nonterminal * next_adv;
            adv[k] = next_adv;
            next_value = values[k];
        }
    }
    let ret = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, ret)
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
    pub first_success_rate: f64,
    /// Best success rate of an iteration's rollout.
    pub best_success_rate: f64,
    /// PPO updates behind the best checkpoint (0 = the starting policy).
    pub best_iteration: u64,
    /// Success rate of the last iteration.
    pub last_success_rate: f64,
}

struct Rollout {
    obs: Vec<ObsBatch>,
    actions: Vec<Tensor>,
    logp: Vec<f32>,
    values: Vec<f32>,
    rewards: Vec<f32>,
    dones: Vec<bool>,
    std_sum: f64,
}

#[derive(Default)]
struct EpisodeTracker {
    ret: Vec<f64>,
    len: Vec<usize>,
    success: Vec<bool>,
    finished: Vec<(f64, usize, bool)>,
}

/// A callback evaluating the current policy (for monitoring), returning a JSON record.
pub type Monitor<'h> = &'h mut dyn FnMut(&GaussianPolicy) -> Result<serde_json::Value>;

/// Hooks called by [`train`]: per-iteration logging, and optional monitoring of the current policy.
pub struct Hooks<'h> {
    /// Receives every iteration's record (the stats, plus whatever the monitor returned).
    pub log: &'h mut dyn FnMut(&serde_json::Value) -> Result<()>,
    /// Called every `monitor_every` iterations (0 = never) with the current policy; its JSON result is
    /// merged into the record under `monitor`. For monitoring only: it never selects checkpoints.
    pub monitor: Option<Monitor<'h>>,
    /// See `monitor`.
    pub monitor_every: usize,
}

fn collect<E: RolloutEnv>(
    cfg: &PpoConfig,
    env: &mut E,
    policy: &GaussianPolicy,
    critic: &Critic,
    hist: &mut ObsHistory,
    tracker: &mut EpisodeTracker,
    rng: &mut ChaCha8Rng,
) -> Result<Rollout> {
    let n = env.num_envs();
    let gamma = cfg.gamma as f32;
    let mut ro = Rollout {
        obs: Vec::with_capacity(cfg.rollout_steps),
        actions: Vec::with_capacity(cfg.rollout_steps),
        logp: Vec::with_capacity(cfg.rollout_steps * n),
        values: Vec::with_capacity(cfg.rollout_steps * n),
        rewards: Vec::with_capacity(cfg.rollout_steps * n),
        dones: Vec::with_capacity(cfg.rollout_steps * n),
        std_sum: 0.0,
    };
    for _ in 0..cfg.rollout_steps {
        let ob = hist.batch(policy, None)?;
        let (a, logp, v, std) = tch::no_grad(|| -> Result<_> {
            let out = policy.forward(&ob, 0)?;
            let a = out.sample();
            let logp = out.log_prob(&a);
            let v = critic.forward(&ob)?;
            Ok((
                a,
                logp,
                v,
                out.log_std.exp().mean(Kind::Float).double_value(&[]),
            ))
        })?;
        ro.std_sum += std;
        let steps = env
            .step(&policy.to_env_actions(&a)?)
            .context("stepping the environments")?;
        ro.logp
            .extend(Vec::<f32>::try_from(logp.to_device(Device::Cpu))?);
        ro.values
            .extend(Vec::<f32>::try_from(v.to_device(Device::Cpu))?);
        ro.obs.push(ob);
        ro.actions.push(a);
        let base = ro.rewards.len();
        let mut trunc = Vec::new();
        let mut done_rows = Vec::new();
        for (i, st) in steps.into_iter().enumerate() {
            let done = st.terminated || st.truncated;
            ro.rewards.push(st.reward);
            ro.dones.push(done);
            tracker.ret[i] += st.reward as f64;
            tracker.len[i] += 1;
            tracker.success[i] |= st.info.success;
            if st.truncated && !st.terminated {
                trunc.push(i);
            }
            if done {
                tracker
                    .finished
                    .push((tracker.ret[i], tracker.len[i], tracker.success[i]));
                tracker.ret[i] = 0.0;
                tracker.len[i] = 0;
                tracker.success[i] = false;
                done_rows.push(i);
            }
            hist.push(i, st.obs);
        }
        // bootstrap truncated (not terminated) episodes with V of their last observation
        if !trunc.is_empty() {
            let vb = tch::no_grad(|| critic.forward(&hist.batch(policy, Some(&trunc))?))?;
            for (k, x) in Vec::<f32>::try_from(vb.to_device(Device::Cpu))?
                .into_iter()
                .enumerate()
            {
                ro.rewards[base + trunc[k]] += gamma * x;
            }
        }
        for i in done_rows {
            let o = env.reset_one(i, rng.gen())?;
            hist.reset(i, o);
        }
    }
    Ok(ro)
}

fn explained_variance(pred: &[f32], target: &[f32]) -> f64 {
    let n = target.len().max(1) as f64;
    let mean = |v: &mut dyn Iterator<Item = f64>| v.sum::<f64>() / n;
    let mt = mean(&mut target.iter().map(|&x| x as f64));
    let var_t = mean(&mut target.iter().map(|&x| (x as f64 - mt).powi(2)));
    let diff: Vec<f64> = target
        .iter()
        .zip(pred)
        .map(|(&t, &p)| (t - p) as f64)
        .collect();
    let md = mean(&mut diff.iter().copied());
    let var_d = mean(&mut diff.iter().map(|&d| (d - md).powi(2)));
    if var_t <= 0.0 {
        f64::NAN
    } else {
        1.0 - var_d / var_t
    }
}

/// Refines `policy` with PPO in `env`. Writes `out.last` every `save_every` iterations and at the end,
/// and `out.best` whenever an iteration's success rate is the best so far. `extra` is stored in the
/// checkpoints' metadata.
pub fn train<E: RolloutEnv>(
    cfg: &PpoConfig,
    env: &mut E,
    policy: &mut GaussianPolicy,
    out: &PpoOutput,
    extra: &serde_json::Value,
    hooks: Hooks<'_>,
) -> Result<PpoSummary> {
    cfg.validate()?;
    ensure!(
        env.num_envs() == cfg.num_envs,
        "the environment batch has {} envs but ppo.num_envs is {}",
        env.num_envs(),
        cfg.num_envs
    );
    let start = Instant::now();
    // checkpoints of an unfinished earlier attempt would be mistaken for this run's
    for p in [&out.best, &out.last] {
        if p.exists() {
            std::fs::remove_file(p)
                .with_context(|| format!("removing the stale checkpoint {}", p.display()))?;
        }
    }
    tch::manual_seed(cfg.seed as i64);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    policy.set_std_bounds(cfg.std_min, cfg.std_max)?;
    let critic = Critic::new(cfg, policy)?;
    let reference = if cfg.kl_to_initial > 0.0 {
        Some(policy.duplicate()?)
    } else {
        None
    };
    let mut actor_opt = nn::Adam::default().build(policy.var_store(), cfg.actor_lr.max(1e-12))?;
    let mut critic_opt = nn::Adam::default().build(critic.var_store(), cfg.critic_lr)?;

    let n = cfg.num_envs;
    let seeds: Vec<u64> = (0..n).map(|_| rng.gen()).collect();
    let mut hist = ObsHistory::new(policy.config().frame_stack, env.reset(&seeds));
    let mut tracker = EpisodeTracker {
        ret: vec![0.0; n],
        len: vec![0; n],
        success: vec![false; n],
        finished: Vec::new(),
    };
    let batch = cfg.rollout_steps * n;
    let bar = crate::progress::bar(cfg.iterations as u64, "ppo");
    let mut summary = PpoSummary {
        iterations: 0,
        env_steps: 0,
        seconds: 0.0,
        first_success_rate: f64::NAN,
        best_success_rate: f64::NEG_INFINITY,
        best_iteration: 0,
        last_success_rate: f64::NAN,
    };
    let min_episodes = (n / 4).max(1);
    let mut hooks = hooks;

    for iter in 1..=cfg.iterations as u64 {
        crate::interrupt::check("PPO refinement")?;
        if cfg.time_budget_secs > 0.0 && start.elapsed().as_secs_f64() >= cfg.time_budget_secs {
            tracing::info!(
                "ppo: time budget of {} s reached after {} iterations",
                cfg.time_budget_secs,
                iter - 1
            );
            break;
        }
        // ---- rollout
        let t0 = Instant::now();
        let ro = collect(cfg, env, policy, &critic, &mut hist, &mut tracker, &mut rng)?;
        let last_v = tch::no_grad(|| critic.forward(&hist.batch(policy, None)?))?;
        let last_v = Vec::<f32>::try_from(last_v.to_device(Device::Cpu))?;
        let (adv, ret) = gae(
            &ro.rewards,
            &ro.values,
            &ro.dones,
            &last_v,
            n,
            cfg.gamma as f32,
            cfg.gae_lambda as f32,
        );
        let rollout_seconds = t0.elapsed().as_secs_f64();

        // ---- episodes finished in this rollout: they measure the policy as it was before this
        // iteration's update, so the best checkpoint is written now, before the update
        let finished = std::mem::take(&mut tracker.finished);
        let k = finished.len();
        let avg = |f: &dyn Fn(&(f64, usize, bool)) -> f64| {
            if k == 0 {
                f64::NAN
            } else {
                finished.iter().map(f).sum::<f64>() / k as f64
            }
        };
        let success_rate = avg(&|e| e.2 as u8 as f64);
        if k >= min_episodes && success_rate > summary.best_success_rate {
            summary.best_success_rate = success_rate;
            summary.best_iteration = iter - 1;
            policy.save(&out.best, tagged(extra, "best", iter - 1, success_rate))?;
        }

        // ---- update
        let t1 = Instant::now();
        let dev = policy.device();
        let b_obs = ObsBatch::cat(&ro.obs);
        let b_act = Tensor::cat(&ro.actions, 0);
        let b_logp = Tensor::from_slice(&ro.logp).to_device(dev);
        let b_adv = Tensor::from_slice(&adv).to_device(dev);
        let b_ret = Tensor::from_slice(&ret).to_device(dev);
        let update_actor = iter > cfg.critic_warmup_iters as u64;
        let (mut pg_l, mut v_l, mut ent, mut kl, mut clips, mut nclip) =
            (0.0, 0.0, 0.0, 0.0, 0.0, 0usize);
        let mut kl_initial = 0.0;
        'epochs: for _ in 0..cfg.update_epochs {
            let perm = Tensor::randperm(batch as i64, (Kind::Int64, dev));
            let mut s = 0;
            while s < batch {
                let len = cfg.minibatch_size.min(batch - s) as i64;
                let idx = perm.narrow(0, s as i64, len);
                s += len as usize;
                let mb_obs = b_obs.select(&idx);
                // critic
                let v = critic.forward(&mb_obs)?;
                let v_loss = (v - b_ret.index_select(0, &idx)).square().mean(Kind::Float) * 0.5;
                critic_opt.zero_grad();
                v_loss.backward();
                critic_opt.clip_grad_norm(cfg.max_grad_norm);
                critic_opt.step();
                v_l = v_loss.double_value(&[]);
                if !update_actor {
                    continue;
                }
                // actor
                let o = policy.forward(&mb_obs, 0)?;
                let logratio =
                    o.log_prob(&b_act.index_select(0, &idx)) - b_logp.index_select(0, &idx);
                let ratio = logratio.exp();
                let mut mb_adv = b_adv.index_select(0, &idx);
                if cfg.norm_adv && len > 1 {
                    mb_adv = (&mb_adv - mb_adv.mean(Kind::Float)) / (mb_adv.std(true) + 1e-8);
                }
                let pg1 = -&mb_adv * &ratio;
                let pg2 = -&mb_adv * ratio.clamp(1.0 - cfg.clip_coef, 1.0 + cfg.clip_coef);
                let pg_loss = pg1.maximum(&pg2).mean(Kind::Float);
                let entropy = o.entropy().mean(Kind::Float);
                let mut loss = &pg_loss - cfg.ent_coef * &entropy;
                if let Some(r) = &reference {
                    let r_out = tch::no_grad(|| r.forward(&mb_obs, 0))?;
                    let kl_ref = o.kl_to(&r_out).mean(Kind::Float);
                    kl_initial = kl_ref.double_value(&[]);
                    // out of place: the autograd graph keeps both terms
                    loss = loss.g_add(&(kl_ref * cfg.kl_to_initial));
                }
                actor_opt.zero_grad();
                loss.backward();
                actor_opt.clip_grad_norm(cfg.max_grad_norm);
                actor_opt.step();
                let approx_kl = tch::no_grad(|| {
                    ((&ratio - 1.0) - &logratio)
                        .mean(Kind::Float)
                        .double_value(&[])
                });
                pg_l = pg_loss.double_value(&[]);
                ent = entropy.double_value(&[]);
                kl = approx_kl;
                clips += tch::no_grad(|| {
                    (&ratio - 1.0)
                        .abs()
                        .gt(cfg.clip_coef)
                        .to_kind(Kind::Float)
                        .mean(Kind::Float)
                        .double_value(&[])
                });
                nclip += 1;
                ensure!(
                    pg_l.is_finite() && v_l.is_finite(),
                    "ppo: a loss became non-finite at iteration {iter}; lower the learning rates"
                );
                if cfg.target_kl > 0.0 && approx_kl > cfg.target_kl {
                    break 'epochs;
                }
            }
        }
        let update_seconds = t1.elapsed().as_secs_f64();

        // ---- bookkeeping
        let stats = IterationStats {
            step: iter,
            env_steps: iter * batch as u64,
            episodes: k,
            success_rate,
            mean_return: avg(&|e| e.0),
            mean_length: avg(&|e| e.1 as f64),
            pg_loss: pg_l,
            v_loss: v_l,
            entropy: ent,
            approx_kl: kl,
            kl_initial,
            clip_frac: if nclip > 0 { clips / nclip as f64 } else { 0.0 },
            std: ro.std_sum / cfg.rollout_steps as f64,
            explained_variance: explained_variance(&ro.values, &ret),
            actor_updated: update_actor,
            rollout_seconds,
            update_seconds,
            elapsed: start.elapsed().as_secs_f64(),
        };
        if iter == 1 {
            summary.first_success_rate = stats.success_rate;
        }
        summary.iterations = iter;
        summary.env_steps = stats.env_steps;
        summary.last_success_rate = stats.success_rate;
        let mut rec = serde_json::to_value(&stats)?;
        if hooks.monitor_every > 0 && iter % hooks.monitor_every as u64 == 0 {
            if let Some(m) = hooks.monitor.as_mut() {
                rec["monitor"] = m(policy)?;
            }
        }
        (hooks.log)(&rec)?;
        bar.inc(1);
        bar.set_prefix(format!("success {:.2}", stats.success_rate));
        tracing::debug!("ppo iteration {iter}: {rec}");

        // ---- last checkpoint
        if iter % cfg.save_every as u64 == 0 {
            policy.save(&out.last, tagged(extra, "last", iter, f64::NAN))?;
        }
    }
    bar.finish_and_clear();
    policy.save(
        &out.last,
        tagged(extra, "last", summary.iterations, f64::NAN),
    )?;
    if !out.best.exists() {
        // no iteration finished enough episodes to rank: the final policy stands in
        policy.save(
            &out.best,
            tagged(extra, "best", summary.iterations, f64::NAN),
        )?;
    }
    summary.seconds = start.elapsed().as_secs_f64();
    Ok(summary)
}

/// `extra` with the checkpoint's tag, the number of PPO updates behind it and its measured success rate.
fn tagged(
    extra: &serde_json::Value,
    tag: &str,
    updates: u64,
    success_rate: f64,
) -> serde_json::Value {
    let mut m = extra.clone();
    if let serde_json::Value::Object(o) = &mut m {
        o.insert("checkpoint".into(), tag.into());
        o.insert("updates".into(), updates.into());
        o.insert("success_rate".into(), success_rate.into());
    }
    m
}

/// Default checkpoint locations under a stage folder: `DIR/best.safetensors`, `DIR/last.safetensors`.
pub fn output_in(dir: &Path) -> PpoOutput {
    PpoOutput {
        best: dir.join("best.safetensors"),
        last: dir.join("last.safetensors"),
    }
}

// ---------------------------------------------------------------------------------------------
// Stage 2 driver: refine the BC policy of a task inside the frozen world model.

/// `[refine]`: stage 2 (PPO in imagination), per task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RefineConfig {
    /// Tasks to refine (empty: every task of the experiment).
    pub tasks: Vec<String>,
    /// PPO hyper-parameters.
    pub ppo: PpoConfig,
    /// The imagined environment.
    pub imagination: ImaginedEnvConfig,
    /// Override of the world model's sampler during refinement (e.g. fewer Euler steps for speed).
    pub sampler: Option<SamplerConfig>,
    /// Number format of the frozen world model's U-Net during refinement (`f32` default, `bf16`
    /// about 1.6x faster imagination on CPUs with AVX-512 BF16/AMX).
    pub world_model_precision: Precision,
    /// Override of the classifier's decision threshold.
    pub reward_threshold: Option<f64>,
    /// Override of the classifier's reward mode (`binary` or `probability`).
    pub reward_mode: Option<RewardMode>,
    /// Evaluate the current policy in the real environment every this many iterations, for
    /// monitoring only (0 = never; needs the task's simulator).
    pub monitor_every: usize,
    /// Episodes of each monitoring evaluation (default 20).
    pub monitor_episodes: usize,
    /// Which checkpoint `world4rl run` evaluates in the real environment as the refined policy
    /// (default `last`). `best` is the iteration with the highest imagined success rate, a one-batch
    /// estimate that is noisy and biased towards the classifier's false positives (measured on
    /// `turn-lever`: best at iteration 3 of 13 while the real success kept rising until the last).
    pub evaluate: RefinedCheckpoint,
    /// Also run the ceiling control ([`crate::ceiling`]): the same PPO in the real environment with the
    /// classifier as the reward, evaluated beside BC and the refined policy (default false).
    pub real_env_control: bool,
    /// Which policy stands as the refined one ([`crate::acceptance`]): `always` the refined checkpoint
    /// (default), `imagined-gain` the refined checkpoint only when, on the same imagined episodes from
    /// held-out start states, its discounted success beats the BC policy's (paired 95 % interval
    /// above `accept_margin`), else the BC policy.
    pub accept: AcceptRule,
    /// Imagined episodes per policy of the acceptance check (default 256).
    pub accept_episodes: usize,
    /// The lower end of the imagined gain's 95 % interval must exceed this (default 0).
    pub accept_margin: f64,
}

/// The refined checkpoint that stands for the refined policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefinedCheckpoint {
    /// `RUN/refine/<task>/last.safetensors`: the policy at the end of refinement.
    #[default]
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
        Ok(())
    }
}

impl Default for RefineConfig {
    fn default() -> Self {
        Self {
            tasks: Vec::new(),
            ppo: PpoConfig::default(),
            imagination: ImaginedEnvConfig::default(),
            sampler: None,
            world_model_precision: Precision::F32,
            reward_threshold: None,
            reward_mode: None,
            monitor_every: 0,
            monitor_episodes: 20,
            evaluate: RefinedCheckpoint::Last,
            real_env_control: false,
            accept: AcceptRule::Always,
            accept_episodes: 256,
            accept_margin: 0.0,
        }
    }
}

/// What [`refine_task`] reports.
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
}

/// The file of the policy that stands as the refined one in a refinement stage folder.
pub fn standing_policy_in(dir: &Path) -> PathBuf {
    dir.join("policy.safetensors")
}

/// Loads the frozen world model of a run (with `cfg`'s sampler and precision) and the classifier of
/// `task` (with `cfg`'s reward overrides): what imagination needs.
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

/// The run's world model with refinement's sampler and precision.
pub fn load_world_model(cfg: &RefineConfig, run: &RunDir, device: Device) -> Result<WorldModel> {
    let wm_path = crate::world_model::train::StagePaths::new(run.path()).model;
    let (mut wm, _) = WorldModel::load(&wm_path, device).with_context(|| {
        format!(
            "loading the world model of run {} (train it first)",
            run.path().display()
        )
    })?;
    if let Some(s) = &cfg.sampler {
        wm.set_sampler(s.clone())?;
    }
    wm.set_precision(cfg.world_model_precision);
    Ok(wm)
}

/// The run's classifier of `task` with refinement's threshold and reward mode, when set.
pub fn load_classifier(
    cfg: &RefineConfig,
    run: &RunDir,
    task: &str,
    device: Device,
) -> Result<RewardClassifier> {
    let clf_path = crate::reward::checkpoint_path(run, task);
    let (mut clf, _) = RewardClassifier::load(&clf_path, device).with_context(|| {
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

/// Stage folder of the refinement of `task`: `refine/<task>`.
pub fn refine_stage(task: &str) -> String {
    format!("refine/{task}")
}

/// Refines the BC policy of `task` of a run (`RUN/bc/<task>/policy.safetensors`) inside the run's world
/// model (`RUN/world_model/model.safetensors`) with the run's classifier
/// (`RUN/reward/<task>/classifier.safetensors`); start states come from `dataset`. Writes
/// `RUN/refine/<task>/{best,last}.safetensors`, `metrics.jsonl` and `done.json`. `monitor_seed` is the
/// base of the evaluation seeds used by the optional real-environment monitoring.
pub fn refine_task(
    cfg: &RefineConfig,
    run: &RunDir,
    dataset: &Dataset,
    accept_starts: Option<&Dataset>,
    task: &str,
    device: Device,
    monitor_seed: u64,
) -> Result<RefineReport> {
    cfg.validate()?;
    let (wm, clf) = load_imagination(cfg, run, task, device)?;
    let bc_path = crate::policy::bc::checkpoint_path(run, task);
    let (mut policy, _) = GaussianPolicy::load(&bc_path, device).with_context(|| {
        format!("loading the BC policy of '{task}' (run `world4rl train bc` first)")
    })?;
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
    let mut env = ImaginedEnv::new(&wm, &clf, dataset, task, cfg.ppo.num_envs, &cfg.imagination)?;
    let stage = refine_stage(task);
    let dir = run.stage_dir(&stage)?;
    let out = output_in(&dir);
    let mut metrics = run.metrics(&stage)?;
    metrics.truncate_after(0)?;
    let extra = serde_json::json!({"stage": "refine", "task": task, "initial_policy": bc_path});
    let eval_cfg = crate::evaluate::EvalConfig {
        episodes: cfg.monitor_episodes.max(1),
        seed: monitor_seed ^ 0x6d6f_6e69,
        ..Default::default()
    };
    let mut monitor = |p: &GaussianPolicy| -> Result<serde_json::Value> {
        let r = crate::evaluate::evaluate_policy(p, task, &eval_cfg)?;
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
    let chosen = match cfg.evaluate {
        RefinedCheckpoint::Last => out.last.clone(),
        RefinedCheckpoint::Best => out.best.clone(),
    };
    let acceptance = match cfg.accept {
        AcceptRule::Always => None,
        AcceptRule::ImaginedGain => {
            let (bc, _) = GaussianPolicy::load(&bc_path, device)?;
            let (refined, _) = GaussianPolicy::load(&chosen, device)?;
            let starts = accept_starts.unwrap_or(dataset);
            let a = crate::acceptance::check(
                &wm,
                &clf,
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
                if accept_starts.is_some() { "held-out start states" } else { "training start states" },
                if a.accepted { "refined policy accepted" } else { "kept the BC policy" }
            );
            Some(a)
        }
    };
    let standing = standing_policy_in(&dir);
    let keep_bc = acceptance.as_ref().is_some_and(|a| !a.accepted);
    let from = if keep_bc { &bc_path } else { &chosen };
    let bytes =
        std::fs::read(from).with_context(|| format!("reading the policy {}", from.display()))?;
    w4rl_data::write_atomic(&standing, &bytes)?;
    let report = RefineReport {
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
    };
    run.mark_done(&stage, &serde_json::to_value(&report)?)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gae_matches_hand_computation() {
        // 2 envs, 3 steps; env 0 ends at t = 1, env 1 never ends.
        let n = 2;
        let r = [1.0, 0.0, 0.0, 0.0, 2.0, 1.0];
        let v = [0.5, 0.1, 0.4, 0.2, 0.3, 0.6];
        let d = [false, false, true, false, false, false];
        let last = [0.7, 0.8];
        let (g, l) = (0.9f32, 0.8f32);
        let (adv, ret) = gae(&r, &v, &d, &last, n, g, l);
        // env 0: t=2: δ = 2 + .9*.7 - .3 = 2.33 ; A2 = 2.33
        //        t=1: done -> δ = 0 - .4 = -.4 ; A1 = -.4
        //        t=0: δ = 1 + .9*.4 - .5 = .86 ; A0 = .86 + .72*(-.4) = .572
        // env 1: t=2: δ = 1 + .9*.8 - .6 = 1.12 ; A2 = 1.12
        //        t=1: δ = 0 + .9*.6 - .2 = .34 ; A1 = .34 + .72*1.12 = 1.1464
        //        t=0: δ = 0 + .9*.2 - .1 = .08 ; A0 = .08 + .72*1.1464 = .905408
        let want = [0.572, 0.905408, -0.4, 1.1464, 2.33, 1.12];
        for (a, w) in adv.iter().zip(want) {
            assert!((a - w).abs() < 1e-5, "{adv:?}");
        }
        for k in 0..6 {
            assert!((ret[k] - (adv[k] + v[k])).abs() < 1e-6);
        }
        // λ = 0 gives the TD(0) target of the paper's Eq. 9
        let (adv0, _) = gae(&r, &v, &d, &last, n, g, 0.0);
        assert!((adv0[0] - 0.86).abs() < 1e-6);
    }

    #[test]
    fn explained_variance_of_perfect_prediction_is_one() {
        assert!((explained_variance(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]) - 1.0).abs() < 1e-12);
        assert!(explained_variance(&[0.0; 3], &[1.0; 3]).is_nan());
    }
}
