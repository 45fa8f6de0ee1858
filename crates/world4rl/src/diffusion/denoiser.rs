//! EDM-preconditioned denoiser (Karras et al. 2022; World4RL Eq. 4, 6 and 7; DIAMOND
//! `src/models/diffusion/denoiser.py`).
//!
//! `D_θ(x^τ; σ, c) = c_skip(σ)·x^τ + c_out(σ)·F_θ(c_in(σ)·x^τ; c_noise(σ), c)` with, for the
//! effective level `σ' = √(σ² + σ_offset²)` (offset noise, DIAMOND):
//!
//! * `c_skip = σ_data² / (σ'² + σ_data²)`
//! * `c_out  = σ'·σ_data / √(σ'² + σ_data²)`
//! * `c_in   = 1 / √(σ'² + σ_data²)`
//! * `c_noise = ln(σ') / 4`
//!
//! The conditioning `c` is the `L` previous clean frames (divided by `σ_data`) and their encoded
//! actions. Training (Eq. 7) draws `ln σ ~ N(loc, scale²)` (clipped), noises the next frame with
//! `σ·ε + σ_offset·ε_c` (ε_c constant over pixels, one value per channel), and regresses `F_θ` onto
//! `(x⁰ - c_skip·x^τ) / c_out`; this equals EDM's loss `λ(σ')·‖D_θ(x^τ) - x⁰‖²` with
//! `λ = 1/c_out²` (checked in the tests). Optionally the context frames are noise-augmented
//! (DIAMOND CS:GO), with their noise level given to the network.

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

use crate::models::{InnerModel, InnerModelConfig};

/// Configuration of the EDM denoiser and of its training noise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DenoiserConfig {
    /// Standard deviation of the data (EDM/DIAMOND: 0.5 for frames in [-1, 1]).
    pub sigma_data: f64,
    /// Offset noise: per-channel constant noise of this std added during training (DIAMOND Atari 0.3).
    pub sigma_offset_noise: f64,
    /// Mean of ln σ during training (DIAMOND Atari −0.4, CS:GO −1.2).
    pub sigma_loc: f64,
    /// Std of ln σ during training (1.2).
    pub sigma_scale: f64,
    /// Training σ is clipped to [sigma_min, sigma_max] (2e-3, 20).
    pub sigma_min: f64,
    pub sigma_max: f64,
    /// Noise-augment the context frames during training (DIAMOND CS:GO `noise_previous_obs`): each
    /// sample's context gets noise of a level drawn like σ, clipped to `context_sigma_max`. An
    /// ablation, off by default: no better than autoregressive training, worse beside it
    /// (`docs/world_model.md`, History).
    pub context_noise: bool,
    /// Largest context-noise level (DIAMOND: `sigma_max`; smaller values keep the context legible,
    /// which matters on short training budgets).
    pub context_sigma_max: f64,
    /// How the context-noise level is drawn: `training` (default; like σ, then clipped, as DIAMOND)
    /// or `uniform` on `[sigma_min, context_sigma_max]` (GameNGen's uniform noise levels). With a
    /// small `context_sigma_max`, `training` puts most levels on the clip (ln σ has mean −0.4), far
    /// from the level inference conditions on; `uniform` keeps that level inside the distribution.
    pub context_sigma_distribution: ContextSigma,
}

/// See [`DenoiserConfig::context_sigma_distribution`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContextSigma {
    /// Drawn like the training σ, clipped to `context_sigma_max`.
    #[default]
    Training,
    /// Uniform on `[sigma_min, context_sigma_max]`.
    Uniform,
}

impl Default for DenoiserConfig {
    fn default() -> Self {
        Self {
            sigma_data: 0.5,
            sigma_offset_noise: 0.3,
            sigma_loc: -0.4,
            sigma_scale: 1.2,
            sigma_min: 2e-3,
            sigma_max: 20.0,
            context_noise: false,
            context_sigma_max: 20.0,
            context_sigma_distribution: ContextSigma::Training,
        }
    }
}

impl DenoiserConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.sigma_data > 0.0,
            "denoiser: sigma_data must be positive"
        );
        ensure!(
            self.sigma_offset_noise >= 0.0,
            "denoiser: sigma_offset_noise must be >= 0"
        );
        ensure!(
            self.sigma_scale >= 0.0,
            "denoiser: sigma_scale must be >= 0"
        );
        ensure!(
            self.sigma_min > 0.0 && self.sigma_min <= self.sigma_max,
            "denoiser: need 0 < sigma_min <= sigma_max"
        );
        ensure!(
            self.context_sigma_max >= self.sigma_min,
            "denoiser: context_sigma_max must be >= sigma_min"
        );
        Ok(())
    }
}

/// The preconditioning coefficients of a batch, each shaped `[B, 1, 1, 1]` except `c_noise: [B]`.
#[derive(Debug)]
pub struct Conditioners {
    pub c_in: Tensor,
    pub c_out: Tensor,
    pub c_skip: Tensor,
    pub c_noise: Tensor,
}

/// EDM preconditioning for noise levels `sigma: [B]` (see the module docs), with offset noise
/// `sigma_offset` folded into the effective level.
pub fn conditioners(sigma: &Tensor, sigma_data: f64, sigma_offset: f64) -> Conditioners {
    let s = (sigma.square() + sigma_offset * sigma_offset).sqrt();
    let sd2 = sigma_data * sigma_data;
    let denom = s.square() + sd2;
    let c_in = denom.rsqrt();
    let c_skip = denom.reciprocal() * sd2;
    let c_out = &s * c_skip.sqrt();
    let c_noise = s.log() / 4.0;
    let v = |t: Tensor| t.view([-1, 1, 1, 1]);
    Conditioners {
        c_in: v(c_in),
        c_out: v(c_out),
        c_skip: v(c_skip),
        c_noise,
    }
}

/// One training batch for the denoiser, all tensors on the model's device.
#[derive(Debug)]
pub struct DenoiserBatch<'a> {
    /// Context frames `[B, L, C, H, W]` in [-1, 1].
    pub context: &'a Tensor,
    /// Encoded context actions `[B, L, E]`.
    pub actions: &'a Tensor,
    /// Next frame `[B, C, H, W]` in [-1, 1].
    pub next: &'a Tensor,
    /// `[B, L]` bool, false = padded step before the episode start (frame and action zeroed).
    pub context_mask: Option<&'a Tensor>,
    /// `[B]` bool, false = this sample's target is padding and is left out of the loss.
    pub sample_mask: Option<&'a Tensor>,
    /// Per-pixel loss weights `[B, 1, H, W]` (`None` = uniform). Each sample's loss is the weighted
    /// mean over its pixels, so the weights change where the loss looks, not its scale.
    pub pixel_weight: Option<&'a Tensor>,
}

/// The result of [`Denoiser::loss`].
#[derive(Debug)]
pub struct LossOutput {
    /// Scalar loss of Eq. 7 (mean over unmasked samples and pixels).
    pub loss: Tensor,
    /// Per-sample loss `[B]` (mean over pixels).
    pub per_sample: Tensor,
    /// The σ drawn for each sample `[B]`.
    pub sigma: Tensor,
    /// The denoised estimate `D_θ(x^σ)` at the drawn σ `[B, C, H, W]`, detached from the graph
    /// (DIAMOND feeds it back as context when training on its own predictions).
    pub denoised: Tensor,
}

/// `D_θ`: the preconditioned denoiser around the U-Net `F_θ`.
#[derive(Debug)]
pub struct Denoiser {
    cfg: DenoiserConfig,
    inner: InnerModel,
}

impl Denoiser {
    /// Builds `F_θ` under `vs / "inner_model"`. The inner model's context-noise embedding is switched
    /// on when `cfg.context_noise` is.
    pub fn new(vs: nn::Path, cfg: DenoiserConfig, inner: &InnerModelConfig) -> Result<Self> {
        cfg.validate()?;
        let mut icfg = inner.clone();
        icfg.context_noise_embedding = cfg.context_noise;
        let inner = InnerModel::new(&vs / "inner_model", &icfg)?;
        Ok(Self { cfg, inner })
    }

    pub fn config(&self) -> &DenoiserConfig {
        &self.cfg
    }

    pub fn inner_model(&self) -> &InnerModel {
        &self.inner
    }

    pub fn inner_model_mut(&mut self) -> &mut InnerModel {
        &mut self.inner
    }

    /// Preconditioning coefficients at `sigma: [B]`.
    pub fn conditioners(&self, sigma: &Tensor) -> Conditioners {
        conditioners(sigma, self.cfg.sigma_data, self.cfg.sigma_offset_noise)
    }

    /// Draws training noise levels: `exp(N(loc, scale²))` clipped to `[sigma_min, sigma_max]`.
    pub fn sample_sigma(&self, n: i64, device: tch::Device) -> Tensor {
        (Tensor::randn([n], (Kind::Float, device)) * self.cfg.sigma_scale + self.cfg.sigma_loc)
            .exp()
            .clamp(self.cfg.sigma_min, self.cfg.sigma_max)
    }

    /// `n` context-noise levels, by [`DenoiserConfig::context_sigma_distribution`].
    pub fn sample_context_sigma(&self, n: i64, device: tch::Device) -> Tensor {
        match self.cfg.context_sigma_distribution {
            ContextSigma::Training => self
                .sample_sigma(n, device)
                .clamp_max(self.cfg.context_sigma_max),
            ContextSigma::Uniform => {
                let (lo, hi) = (self.cfg.sigma_min, self.cfg.context_sigma_max);
                Tensor::rand([n], (Kind::Float, device)) * (hi - lo) + lo
            }
        }
    }

    /// `F_θ(c_in·x; c_noise, context/σ_data, actions)`; `context: [B, L, C, H, W]`.
    pub fn model_output(
        &self,
        noisy_next: &Tensor,
        cs: &Conditioners,
        sigma_cond: Option<&Tensor>,
        context: &Tensor,
        actions: &Tensor,
    ) -> Tensor {
        let ctx = context.flatten(1, 2) / self.cfg.sigma_data;
        let c_noise_cond = sigma_cond.map(|s| s.log() / 4.0);
        self.inner.forward(
            &(noisy_next * &cs.c_in),
            &cs.c_noise,
            c_noise_cond.as_ref(),
            &ctx,
            actions,
        )
    }

    /// `D_θ(x^σ; σ, context, actions)` (not clamped). `sigma: [B]`; `sigma_cond: [B]` is the noise
    /// level of the context frames when they were noise-augmented (`None` = clean).
    pub fn denoise(
        &self,
        noisy_next: &Tensor,
        sigma: &Tensor,
        sigma_cond: Option<&Tensor>,
        context: &Tensor,
        actions: &Tensor,
    ) -> Tensor {
        let cs = self.conditioners(sigma);
        let f = self.model_output(noisy_next, &cs, sigma_cond, context, actions);
        &cs.c_skip * noisy_next + &cs.c_out * f
    }

    /// The training loss of Eq. 7 on one batch; draws σ, the offset noise, the pixel noise and (when
    /// configured) the context noise from libtorch's generator.
    pub fn loss(&self, batch: &DenoiserBatch) -> Result<LossOutput> {
        let next = batch.next;
        let (b, c, _, _) = next.size4()?;
        let dev = next.device();
        let sigma = self.sample_sigma(b, dev);
        let offset = Tensor::randn([b, c, 1, 1], (Kind::Float, dev));
        let noise = next.randn_like();
        let ctx_noise = self.cfg.context_noise.then(|| {
            let sc = self.sample_context_sigma(b, dev);
            (sc, batch.context.randn_like())
        });
        self.loss_with_noise(
            batch,
            &sigma,
            &offset,
            &noise,
            ctx_noise.as_ref().map(|(s, n)| (s, n)),
        )
    }

    /// Eq. 7 with explicit random draws: `sigma: [B]`, standard-normal `offset: [B, C, 1, 1]` (scaled
    /// by `sigma_offset_noise` here) and `noise` shaped like the next frame, and, for context-noise
    /// augmentation, `(sigma_cond: [B], standard-normal noise shaped like the context)`.
    pub fn loss_with_noise(
        &self,
        batch: &DenoiserBatch,
        sigma: &Tensor,
        offset: &Tensor,
        noise: &Tensor,
        ctx_noise: Option<(&Tensor, &Tensor)>,
    ) -> Result<LossOutput> {
        let next = batch.next;
        let (b, _, _, _) = next.size4()?;
        let cs = self.conditioners(sigma);
        let noisy = next + offset * self.cfg.sigma_offset_noise + noise * sigma.view([-1, 1, 1, 1]);
        let (context, sigma_cond) = match ctx_noise {
            Some((sc, n)) => (
                batch.context + n * sc.view([-1, 1, 1, 1, 1]),
                Some(sc.shallow_clone()),
            ),
            None => (batch.context.shallow_clone(), None),
        };
        let context = match batch.context_mask {
            Some(m) => context * m.to_kind(Kind::Float).view([b, -1, 1, 1, 1]),
            None => context,
        };
        let out = self.model_output(&noisy, &cs, sigma_cond.as_ref(), &context, batch.actions);
        let denoised = (&cs.c_skip * &noisy + &cs.c_out * out.detach()).detach();
        let target = (next - &cs.c_skip * &noisy) / &cs.c_out;
        let sq = (out - target).square();
        let per_sample = match batch.pixel_weight {
            None => sq.mean_dim(&[1i64, 2, 3][..], false, Kind::Float),
            Some(w) => {
                let c = sq.size()[1] as f64;
                (sq * w).sum_dim_intlist(&[1i64, 2, 3][..], false, Kind::Float)
                    / (w.sum_dim_intlist(&[1i64, 2, 3][..], false, Kind::Float) * c)
            }
        };
        let loss = masked_mean(&per_sample, batch.sample_mask);
        Ok(LossOutput {
            loss,
            per_sample,
            sigma: sigma.shallow_clone(),
            denoised,
        })
    }
}

/// Mean of `v: [B]` over the entries where `mask: [B]` is true (all when `None`; 0 when none is).
pub fn masked_mean(v: &Tensor, mask: Option<&Tensor>) -> Tensor {
    match mask {
        None => v.mean(Kind::Float),
        Some(m) => {
            let m = m.to_kind(Kind::Float);
            (v * &m).sum(Kind::Float) / m.sum(Kind::Float).clamp_min(1.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::UNetConfig;
    use tch::Device;

    #[test]
    fn preconditioning_identities() {
        let sigma = Tensor::from_slice(&[0.002f64, 0.05, 0.3, 0.5, 1.0, 2.5, 5.0, 20.0, 80.0]);
        for &offset in &[0.0, 0.3] {
            let sd = 0.5;
            let cs = conditioners(&sigma, sd, offset);
            let s = (sigma.square() + offset * offset)
                .sqrt()
                .view([-1, 1, 1, 1]);
            let close = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]) < 1e-9;
            // EDM Table 1 formulas
            assert!(close(
                &cs.c_skip,
                &((s.square() + sd * sd).reciprocal() * (sd * sd))
            ));
            assert!(close(&cs.c_out, &(&s * sd / (s.square() + sd * sd).sqrt())));
            assert!(close(&cs.c_in, &(s.square() + sd * sd).rsqrt()));
            assert!(close(&cs.c_noise.view([-1, 1, 1, 1]), &(s.log() / 4.0)));
            // unit-variance network input: c_in² (σ² + σ_d²) = 1
            assert!(close(
                &(cs.c_in.square() * (s.square() + sd * sd)),
                &cs.c_in.ones_like()
            ));
            // unit-variance training target: ((1 - c_skip)² σ_d² + c_skip² σ²) = c_out²
            let var = (-&cs.c_skip + 1.0).square() * (sd * sd) + cs.c_skip.square() * s.square();
            assert!(close(&var, &cs.c_out.square()));
        }
        // limits: σ → 0 gives D = x (c_skip → 1, c_out → 0)
        let cs = conditioners(&Tensor::from_slice(&[1e-8f64]), 0.5, 0.0);
        assert!((cs.c_skip.double_value(&[0, 0, 0, 0]) - 1.0).abs() < 1e-12);
        assert!(cs.c_out.double_value(&[0, 0, 0, 0]) < 1e-7);
    }

    fn tiny_denoiser(vs: &nn::VarStore, offset: f64) -> Denoiser {
        let inner = InnerModelConfig {
            action_encoded_dim: 6,
            context: 2,
            unet: UNetConfig {
                channels: vec![8, 8],
                depths: vec![1, 1],
                attention: vec![false, false],
                cond_channels: 16,
            },
            ..Default::default()
        };
        Denoiser::new(
            vs.root(),
            DenoiserConfig {
                sigma_offset_noise: offset,
                ..Default::default()
            },
            &inner,
        )
        .unwrap()
    }

    #[test]
    fn uniform_context_noise_covers_the_inference_level_and_the_clipped_one_does_not() {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let mut d = tiny_denoiser(&vs, 0.3);
        d.cfg.context_sigma_max = 0.3;
        let n = 20_000;
        let share = |t: &Tensor, below: f64| {
            t.lt(below)
                .to_kind(Kind::Float)
                .mean(Kind::Float)
                .double_value(&[])
        };
        // DIAMOND's draw clipped at 0.3: three quarters of the levels sit on the clip, almost none
        // near the inference level
        let clipped = d.sample_context_sigma(n, Device::Cpu);
        assert!(clipped.max().double_value(&[]) <= 0.3 + 1e-6);
        assert!(
            share(&clipped, 0.3 - 1e-6) < 0.3,
            "{}",
            share(&clipped, 0.3 - 1e-6)
        );
        assert!(share(&clipped, 0.01) < 0.01);
        d.cfg.context_sigma_distribution = ContextSigma::Uniform;
        let uniform = d.sample_context_sigma(n, Device::Cpu);
        assert!(uniform.min().double_value(&[]) >= d.cfg.sigma_min - 1e-9);
        assert!(uniform.max().double_value(&[]) <= 0.3 + 1e-6);
        let low = share(&uniform, 0.03);
        assert!((low - (0.03 - 0.002) / (0.3 - 0.002)).abs() < 0.01, "{low}");
    }

    #[test]
    fn eq7_loss_equals_edm_weighted_denoising_loss() {
        tch::manual_seed(11);
        let vs = nn::VarStore::new(Device::Cpu);
        let d = tiny_denoiser(&vs, 0.3);
        // random (non-zero) weights everywhere so F_θ is not trivially zero
        tch::no_grad(|| {
            for (_, mut v) in vs.variables() {
                let r = v.randn_like() * 0.2;
                v.copy_(&r);
            }
        });
        let opts = (Kind::Float, Device::Cpu);
        let b = 5;
        let context = Tensor::rand([b, 2, 3, 8, 8], opts) * 2.0 - 1.0;
        let actions = Tensor::rand([b, 2, 6], opts);
        let next = Tensor::rand([b, 3, 8, 8], opts) * 2.0 - 1.0;
        let mask = Tensor::from_slice(&[true, true, false, true, true]);
        // Eq. 7 with explicit draws, compared with EDM's weighted loss on the same draws
        let sigma = d.sample_sigma(b, Device::Cpu);
        let offset = Tensor::randn([b, 3, 1, 1], opts);
        let noise = next.randn_like();
        let out = d
            .loss_with_noise(
                &DenoiserBatch {
                    context: &context,
                    actions: &actions,
                    next: &next,
                    context_mask: None,
                    sample_mask: Some(&mask),
                    pixel_weight: None,
                },
                &sigma,
                &offset,
                &noise,
                None,
            )
            .unwrap();
        let noisy = &next + &offset * 0.3 + &noise * sigma.view([-1, 1, 1, 1]);
        // EDM: λ(σ')·‖D(x^σ) − x⁰‖², λ = (σ'² + σ_d²)/(σ'·σ_d)², mean over pixels
        let s_eff = (sigma.square() + 0.09).sqrt();
        let lambda = (s_eff.square() + 0.25) / (s_eff.square() * 0.25);
        let dn = d.denoise(&noisy, &sigma, None, &context, &actions);
        let edm = (dn - &next)
            .square()
            .mean_dim(&[1i64, 2, 3][..], false, Kind::Float)
            * lambda;
        let rel = ((&edm - &out.per_sample).abs() / edm.abs().clamp_min(1e-6))
            .max()
            .double_value(&[]);
        assert!(rel < 1e-4, "per-sample Eq.7 vs EDM relative error {rel}");
        let m = mask.to_kind(Kind::Float);
        let edm_mean = (&edm * &m).sum(Kind::Float) / m.sum(Kind::Float);
        assert!(
            (edm_mean - &out.loss).abs().double_value(&[])
                < 1e-4 * out.loss.double_value(&[]).abs().max(1.0)
        );
        assert!(out.loss.double_value(&[]) > 0.0);
    }

    #[test]
    fn context_mask_zeroes_padded_frames_and_loss_is_finite() {
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let mut d = tiny_denoiser(&vs, 0.0);
        d.cfg.context_noise = false;
        let opts = (Kind::Float, Device::Cpu);
        let context = Tensor::rand([3, 2, 3, 8, 8], opts);
        let actions = Tensor::rand([3, 2, 6], opts);
        let next = Tensor::rand([3, 3, 8, 8], opts);
        let cm = Tensor::from_slice(&[false, true, true, true, true, true]).view([3, 2]);
        let out = d
            .loss(&DenoiserBatch {
                context: &context,
                actions: &actions,
                next: &next,
                context_mask: Some(&cm),
                sample_mask: None,
                pixel_weight: None,
            })
            .unwrap();
        assert!(out.loss.double_value(&[]).is_finite());
    }
}
