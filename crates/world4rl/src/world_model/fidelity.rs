//! Open-loop fidelity of the world model on held-out episodes (World4RL Table I/IV protocol,
//! adapted): from the real context at step `t0`, replay the dataset's actions `a_{t0..t0+H-1}` in
//! imagination and compare the imagined frames with the real `x_{t0+1..t0+H}` at every horizon
//! step, next to the copy-last-frame baseline (predict `x_{t0}` for every step).
//!
//! PSNR and SSIM always; LPIPS per horizon, FID over all imagined frames and FVD over the imagined
//! clips when the backbone weight files are given. All comparisons are at the model's resolution.
//!
//! **PSNR convention.** The headline PSNR of horizon step k is computed from the mean squared error
//! over all rollouts at that step (`10·log10(255² / mean MSE)`, i.e. the PSNR of the concatenated
//! frames). The per-frame average of PSNR is reported too (`psnr_frame_mean`, each frame capped at
//! 100 dB) but is not used for comparisons: rendered scenes often contain frames where nothing
//! moves, on which copy-last-frame is exact (infinite PSNR), so any cap would decide the average.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};
use w4rl_data::{Episode, WindowConfig, WindowSampler};

use super::outcome::{task_outcomes, Rollouts, SuccessRule, TaskOutcome};
use super::{imagine, Batch, RollingContext, WorldModel};
use crate::metrics;
use crate::util::frames::bytes_to_model;

/// The world model's whole check: what the `fidelity` stage records and `world4rl eval world-model`
/// prints, computed by [`check`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorldModelCheck {
    /// Open-loop PSNR/SSIM per horizon on the held-out windows, against copy-last-frame.
    pub scores: FidelityReport,
    /// The outcome check per task (empty when `outcome_episodes` is 0).
    pub outcomes: Vec<TaskOutcome>,
    /// The action-use check (when `action_use_windows` > 0).
    pub action_use: Option<ActionUse>,
}

/// Checks `wm`: open-loop fidelity on the held-out episodes `held` ([`evaluate`]), the outcome check
/// of `cfg.outcome_episodes` recorded rollouts per task of `tasks` replayed whole and judged by the
/// classifier at `classifier(task)` under `rule` ([`task_outcomes`]), and the action-use check on
/// `cfg.action_use_windows` held-out windows ([`action_use`]). Each part seeds its own noise from
/// `cfg.seed`, so a part's numbers do not depend on which parts ran before it.
pub fn check(
    wm: &WorldModel,
    held: &[Episode],
    rollouts: &Rollouts,
    classifier: impl Fn(&str) -> PathBuf,
    tasks: &[String],
    cfg: &FidelityConfig,
    rule: SuccessRule,
) -> Result<WorldModelCheck> {
    let scores = evaluate(wm, held, cfg)?;
    let outcomes = if cfg.outcome_episodes > 0 {
        let opts = cfg.outcome_options(rule);
        task_outcomes(classifier, wm, rollouts, tasks, cfg.outcome_episodes, &opts)?
    } else {
        Vec::new()
    };
    let action_use = (cfg.action_use_windows > 0)
        .then(|| action_use(wm, held, cfg.action_use_windows, cfg.batch, cfg.seed))
        .transpose()?;
    Ok(WorldModelCheck {
        scores,
        outcomes,
        action_use,
    })
}

/// Settings of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FidelityConfig {
    /// Imagined steps per rollout H.
    pub horizon: usize,
    /// A rollout starts every `stride` steps of an episode (t0 = 0, stride, … while t0 + H ≤ T).
    pub stride: usize,
    /// Use at most this many rollouts (spread evenly over the candidates; 0 = all).
    pub max_rollouts: usize,
    /// Rollouts imagined in parallel.
    pub batch: usize,
    /// Seed of the sampler noise.
    pub seed: u64,
    /// Recorded policy rollouts per task that `world4rl run` replays whole in the world model, to
    /// compare imagined with real episode outcomes ([`crate::world_model::outcome::outcome_agreement`]; the
    /// held-out rollouts of `RUN/heldout/` when the run has them; 0 = skip). Default 100.
    pub outcome_episodes: usize,
    /// Rollouts per task of each refined policy, recorded by `world4rl run`'s fidelity stage from the
    /// held-out rollouts' scenes (acting as `[eval] sample` says) and replayed like them: does imagined
    /// success follow the change PPO made to the policy, or does the world model call the refined
    /// policy's failures successes? (0 = skip; needs the held-out rollouts). Default 50.
    pub refined_outcome_episodes: usize,
    /// AUC(k): reset intervals k of the outcome check (each costs one more replay of every episode;
    /// default 15, the imagined episodes' length).
    pub outcome_resets: Vec<usize>,
    /// Bootstrap resamples of the outcome AUC's 95 % interval.
    pub outcome_bootstrap: usize,
    /// Held-out windows of the action-use check (next-frame error with the true actions against
    /// the same windows with the actions permuted across the batch; 0 = skip).
    pub action_use_windows: usize,
    /// LPIPS (AlexNet) weights, see [`metrics::lpips`].
    pub lpips_weights: Option<PathBuf>,
    /// FID Inception weights, see [`metrics::fid`].
    pub fid_weights: Option<PathBuf>,
    /// FVD I3D weights, see [`metrics::fvd`].
    pub fvd_weights: Option<PathBuf>,
}

impl Default for FidelityConfig {
    fn default() -> Self {
        Self {
            horizon: 10,
            stride: 10,
            max_rollouts: 0,
            batch: 64,
            seed: 0,
            outcome_episodes: 100,
            refined_outcome_episodes: 50,
            outcome_resets: vec![15],
            outcome_bootstrap: 1000,
            action_use_windows: 256,
            lpips_weights: None,
            fid_weights: None,
            fvd_weights: None,
        }
    }
}

impl FidelityConfig {
    /// The outcome check's options under the imagined environment's success `rule`.
    pub fn outcome_options(
        &self,
        rule: crate::world_model::outcome::SuccessRule,
    ) -> crate::world_model::outcome::OutcomeOptions {
        crate::world_model::outcome::OutcomeOptions {
            batch: self.batch,
            rule,
            resets: self.outcome_resets.clone(),
            bootstrap: self.outcome_bootstrap,
            seed: self.seed,
        }
    }
}

/// How much the next frame depends on the action: one-step predictions of held-out windows with the
/// recorded actions and with the same windows' actions permuted across the batch (same noise draws).
/// A model that ignores its actions has `ratio` ≈ 1.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct ActionUse {
    /// Windows scored.
    pub windows: usize,
    /// Mean squared error (frames in [-1, 1]) of the prediction with the true actions.
    pub mse_true: f64,
    /// The same with permuted actions.
    pub mse_permuted: f64,
    /// `mse_permuted / mse_true`.
    pub ratio: f64,
}

/// Measures [`ActionUse`] on `windows` windows drawn (from `seed`) from `episodes`, `batch` per call.
pub fn action_use(
    model: &WorldModel,
    episodes: &[Episode],
    windows: usize,
    batch: usize,
    seed: u64,
) -> Result<ActionUse> {
    ensure!(
        windows >= 2 && batch >= 2,
        "action use needs at least 2 windows per batch"
    );
    let _g = tch::no_grad_guard();
    let mut sampler = WindowSampler::new(
        episodes.iter().collect(),
        WindowConfig {
            context: model.context_len(),
            ..Default::default()
        },
        seed ^ 0xAC7,
    )?;
    let (mut se_true, mut se_perm, mut n) = (0.0, 0.0, 0usize);
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
    while n < windows {
        let b = batch.min(windows - n).max(2);
        let w = Batch::from_windows(&sampler.sample(b), model.image_size(), model.device())?;
        // a derangement: every window gets another window's actions
        let shift = rand::Rng::gen_range(&mut rng, 1..b) as i64;
        let permuted = w.actions.roll([shift], [0]);
        let noise_seed = rand::Rng::gen::<u32>(&mut rng) as i64;
        tch::manual_seed(noise_seed);
        let p_true = model.imagine_step_masked(&w.context, &w.actions, Some(&w.mask))?;
        tch::manual_seed(noise_seed);
        let p_perm = model.imagine_step_masked(&w.context, &permuted, Some(&w.mask))?;
        let se = |p: &Tensor| (p - &w.next).square().mean(Kind::Double).double_value(&[]);
        se_true += se(&p_true) * b as f64;
        se_perm += se(&p_perm) * b as f64;
        n += b;
    }
    let (mse_true, mse_permuted) = (se_true / n as f64, se_perm / n as f64);
    Ok(ActionUse {
        windows: n,
        mse_true,
        mse_permuted,
        ratio: mse_permuted / mse_true.max(1e-12),
    })
}

/// Per-horizon scores of the model and of copy-last-frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FidelityReport {
    pub horizon: usize,
    pub rollouts: usize,
    pub episodes: usize,
    pub image_size: usize,
    pub sampler_steps: usize,
    /// PSNR (dB) of the pooled MSE at horizon steps 1..=H (see the module docs).
    pub psnr: Vec<f64>,
    pub ssim: Vec<f64>,
    pub copy_last_psnr: Vec<f64>,
    pub copy_last_ssim: Vec<f64>,
    /// Mean of per-frame PSNR (capped at 100 dB) at horizon steps 1..=H.
    pub psnr_frame_mean: Vec<f64>,
    pub copy_last_psnr_frame_mean: Vec<f64>,
    /// Means over the H steps.
    pub mean_psnr: f64,
    pub mean_ssim: f64,
    pub copy_last_mean_psnr: f64,
    pub copy_last_mean_ssim: f64,
    /// Horizon steps (1-based) where the model's PSNR beats copy-last-frame.
    pub beats_copy_last_at: Vec<usize>,
    pub lpips: Option<Vec<f64>>,
    pub copy_last_lpips: Option<Vec<f64>>,
    pub fid: Option<f64>,
    pub fvd: Option<f64>,
    pub seconds: f64,
    /// Imagined frames per second (all rollouts, all steps).
    pub imagined_fps: f64,
}

/// The rollout starts `(episode index, t0)` of [`evaluate`].
pub fn rollout_starts(episodes: &[Episode], cfg: &FidelityConfig) -> Vec<(usize, usize)> {
    let mut all = Vec::new();
    for (i, ep) in episodes.iter().enumerate() {
        let mut t0 = 0;
        while t0 + cfg.horizon <= ep.meta.steps {
            all.push((i, t0));
            t0 += cfg.stride.max(1);
        }
    }
    if cfg.max_rollouts > 0 && all.len() > cfg.max_rollouts {
        let n = all.len();
        all = (0..cfg.max_rollouts)
            .map(|k| all[k * n / cfg.max_rollouts])
            .collect();
    }
    all
}

/// The recorded actions of `h` steps from each start (`[B, h, A]`) and the real frames they led to
/// (`[B, h, 3, S, S]` at the model's size).
fn recorded(wm: &WorldModel, refs: &[(&Episode, usize)], h: usize) -> Result<(Tensor, Tensor)> {
    let a = wm.action_dim();
    let mut acts = Vec::with_capacity(refs.len() * h * a);
    let mut real = Vec::with_capacity(refs.len());
    for &(ep, t0) in refs {
        for k in 0..h {
            acts.extend_from_slice(ep.action(t0 + k));
        }
        let bytes: Vec<u8> = (1..=h)
            .flat_map(|k| ep.frame(t0 + k).iter().copied())
            .collect();
        real.push(bytes_to_model(
            &bytes,
            h,
            ep.meta.image_size,
            wm.image_size(),
            wm.device(),
        )?);
    }
    let actions = Tensor::from_slice(&acts).view([refs.len() as i64, h as i64, a as i64]);
    Ok((actions, Tensor::stack(&real, 0)))
}

/// The LPIPS, FID and FVD networks whose weights `cfg` names.
#[allow(clippy::type_complexity)]
fn feature_networks(
    cfg: &FidelityConfig,
    dev: tch::Device,
) -> Result<(
    Option<metrics::lpips::Lpips>,
    Option<metrics::fid::FidInception>,
    Option<metrics::fvd::I3d>,
)> {
    let lpips = cfg
        .lpips_weights
        .as_ref()
        .map(|p| metrics::lpips::Lpips::load(p, Default::default(), dev))
        .transpose()?;
    let fid = cfg
        .fid_weights
        .as_ref()
        .map(|p| metrics::fid::FidInception::load(p, dev))
        .transpose()?;
    let fvd = cfg
        .fvd_weights
        .as_ref()
        .map(|p| metrics::fvd::I3d::load(p, dev))
        .transpose()?;
    Ok((lpips, fid, fvd))
}

/// Evaluates `wm` on `episodes` (see the module docs).
pub fn evaluate(
    wm: &WorldModel,
    episodes: &[Episode],
    cfg: &FidelityConfig,
) -> Result<FidelityReport> {
    ensure!(
        cfg.horizon >= 1 && cfg.batch >= 1,
        "fidelity: horizon and batch must be at least 1"
    );
    let starts = rollout_starts(episodes, cfg);
    ensure!(
        !starts.is_empty(),
        "fidelity: no held-out episode has {} steps",
        cfg.horizon
    );
    let (h, size) = (cfg.horizon, wm.image_size());
    let (lpips, fid, fvd) = feature_networks(cfg, wm.device())?;

    tch::manual_seed(cfg.seed as i64);
    let t_start = Instant::now();
    let mut psnr: Vec<Vec<Tensor>> = (0..h).map(|_| Vec::new()).collect();
    let mut ssim: Vec<Vec<Tensor>> = (0..h).map(|_| Vec::new()).collect();
    let mut cl_psnr: Vec<Vec<Tensor>> = (0..h).map(|_| Vec::new()).collect();
    let mut cl_ssim: Vec<Vec<Tensor>> = (0..h).map(|_| Vec::new()).collect();
    let mut mse: Vec<Vec<Tensor>> = (0..h).map(|_| Vec::new()).collect();
    let mut cl_mse: Vec<Vec<Tensor>> = (0..h).map(|_| Vec::new()).collect();
    let mut lp: Vec<Vec<Tensor>> = (0..h).map(|_| Vec::new()).collect();
    let mut cl_lp: Vec<Vec<Tensor>> = (0..h).map(|_| Vec::new()).collect();
    let (mut real_clips, mut fake_clips) = (Vec::new(), Vec::new());
    for chunk in starts.chunks(cfg.batch) {
        let refs: Vec<(&Episode, usize)> = chunk.iter().map(|&(e, t)| (&episodes[e], t)).collect();
        let mut ctx = RollingContext::from_episodes(wm, &refs)?;
        let (actions, real) = recorded(wm, &refs, h)?;
        let last = ctx.last_frame();
        let fake = imagine(wm, &mut ctx, &actions)?; // [B, H, 3, S, S]
        for k in 0..h {
            let (r, f) = (real.select(1, k as i64), fake.select(1, k as i64));
            psnr[k].push(metrics::psnr(&f, &r)?);
            mse[k].push(metrics::mse(&f, &r)?);
            ssim[k].push(metrics::ssim(&f, &r)?);
            cl_psnr[k].push(metrics::psnr(&last, &r)?);
            cl_mse[k].push(metrics::mse(&last, &r)?);
            cl_ssim[k].push(metrics::ssim(&last, &r)?);
            if let Some(l) = &lpips {
                lp[k].push(l.distance(&f, &r)?);
                cl_lp[k].push(l.distance(&last, &r)?);
            }
        }
        if fid.is_some() || fvd.is_some() {
            real_clips.push(real.to_device(tch::Device::Cpu));
            fake_clips.push(fake.to_device(tch::Device::Cpu));
        }
    }
    let seconds = t_start.elapsed().as_secs_f64();
    let mean_of = |v: &[Tensor]| metrics::mean(&Tensor::cat(v, 0));
    let per_h = |v: &[Vec<Tensor>]| v.iter().map(|x| mean_of(x)).collect::<Vec<f64>>();
    let avg = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let pooled = |v: &[Vec<Tensor>]| {
        per_h(v)
            .into_iter()
            .map(metrics::psnr_from_mse)
            .collect::<Vec<f64>>()
    };
    let (psnr_fm, cl_psnr_fm) = (per_h(&psnr), per_h(&cl_psnr));
    let (psnr, cl_psnr) = (pooled(&mse), pooled(&cl_mse));
    let (ssim, cl_ssim) = (per_h(&ssim), per_h(&cl_ssim));
    let (fid_v, fvd_v) = if !real_clips.is_empty() {
        let real = Tensor::cat(&real_clips, 0);
        let fake = Tensor::cat(&fake_clips, 0);
        (
            fid.as_ref()
                .map(|m| m.fid(&real.flatten(0, 1), &fake.flatten(0, 1), 32))
                .transpose()?,
            fvd.as_ref().map(|m| m.fvd(&real, &fake, 8)).transpose()?,
        )
    } else {
        (None, None)
    };
    Ok(FidelityReport {
        horizon: h,
        rollouts: starts.len(),
        episodes: episodes.len(),
        image_size: size,
        sampler_steps: wm.config().sampler.steps,
        mean_psnr: avg(&psnr),
        mean_ssim: avg(&ssim),
        copy_last_mean_psnr: avg(&cl_psnr),
        copy_last_mean_ssim: avg(&cl_ssim),
        beats_copy_last_at: (0..h)
            .filter(|&k| psnr[k] > cl_psnr[k])
            .map(|k| k + 1)
            .collect(),
        psnr,
        ssim,
        copy_last_psnr: cl_psnr,
        copy_last_ssim: cl_ssim,
        psnr_frame_mean: psnr_fm,
        copy_last_psnr_frame_mean: cl_psnr_fm,
        lpips: lpips.as_ref().map(|_| per_h(&lp)),
        copy_last_lpips: lpips.as_ref().map(|_| per_h(&cl_lp)),
        fid: fid_v,
        fvd: fvd_v,
        seconds,
        imagined_fps: (starts.len() * h) as f64 / seconds.max(1e-9),
    })
}

impl FidelityReport {
    /// A plain-text table: horizon, PSNR, SSIM, copy-last PSNR, copy-last SSIM.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:>7} {:>9} {:>7} {:>14} {:>14}\n",
            "horizon", "PSNR dB", "SSIM", "copy-last PSNR", "copy-last SSIM"
        );
        for k in 0..self.horizon {
            s += &format!(
                "{:>7} {:>9.2} {:>7.4} {:>14.2} {:>14.4}\n",
                k + 1,
                self.psnr[k],
                self.ssim[k],
                self.copy_last_psnr[k],
                self.copy_last_ssim[k]
            );
        }
        s += &format!(
            "{:>7} {:>9.2} {:>7.4} {:>14.2} {:>14.4}\n",
            "mean",
            self.mean_psnr,
            self.mean_ssim,
            self.copy_last_mean_psnr,
            self.copy_last_mean_ssim
        );
        s
    }
}
