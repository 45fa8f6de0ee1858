//! Samplers on the EDM noise schedule (Karras et al. 2022, Algorithm 1/2 and Eq. 5; DIAMOND
//! `src/models/diffusion/diffusion_sampler.py`).
//!
//! Schedule: `σ_i = (σ_max^{1/ρ} + i/(N−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ` for `i = 0…N−1`, then
//! `σ_N = 0`. Starting from `x_0 = σ_0·ε`, each step optionally "churns" (adds noise to raise σ to
//! `σ̂ = σ_i(1+γ)`), then takes an Euler step `x ← x + (σ_{i+1} − σ̂)·(x − D(x; σ̂))/σ̂`; Heun adds the
//! trapezoidal correction except on the last step to σ = 0. DIAMOND's world model uses Euler with 3
//! steps, σ ∈ [2e-3, 5], ρ = 7, no churn. The final frame is clamped to [-1, 1] and quantised to 8
//! bits ([`crate::util::frames::quantize`]) before it is fed back as context.

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// First-order (Euler) or second-order (Heun) integration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SamplerKind {
    #[default]
    Euler,
    Heun,
}

/// Configuration of the sampler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplerConfig {
    /// `euler` (default) or `heun`.
    pub kind: SamplerKind,
    /// Denoising steps N (default 3).
    pub steps: usize,
    pub sigma_min: f64,
    pub sigma_max: f64,
    pub rho: f64,
    /// EDM stochasticity S_churn (0 = deterministic), applied when `s_tmin ≤ σ ≤ s_tmax`.
    pub s_churn: f64,
    pub s_tmin: f64,
    pub s_tmax: f64,
    pub s_noise: f64,
    /// Noise level applied to the context frames at sampling time (DIAMOND CS:GO `s_cond`; 0 = off).
    /// Only meaningful for models trained with context-noise augmentation.
    pub s_cond: f64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            kind: SamplerKind::Euler,
            steps: 3,
            sigma_min: 2e-3,
            sigma_max: 5.0,
            rho: 7.0,
            s_churn: 0.0,
            s_tmin: 0.0,
            s_tmax: 1e9,
            s_noise: 1.0,
            s_cond: 0.0,
        }
    }
}

impl SamplerConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(self.steps >= 1, "sampler: steps must be at least 1");
        ensure!(
            self.sigma_min > 0.0 && self.sigma_min <= self.sigma_max,
            "sampler: need 0 < sigma_min <= sigma_max"
        );
        ensure!(self.rho > 0.0, "sampler: rho must be positive");
        ensure!(
            self.s_churn >= 0.0 && self.s_cond >= 0.0,
            "sampler: s_churn and s_cond must be >= 0"
        );
        Ok(())
    }

    /// Denoiser evaluations per sample: N (Euler) or 2N − 1 (Heun).
    pub fn function_evaluations(&self) -> usize {
        match self.kind {
            SamplerKind::Euler => self.steps,
            SamplerKind::Heun => 2 * self.steps - 1,
        }
    }
}

/// The N+1 noise levels `σ_0 > … > σ_{N−1} > σ_N = 0` of the EDM schedule.
pub fn sigmas(cfg: &SamplerConfig) -> Vec<f64> {
    let n = cfg.steps;
    let (a, b) = (
        cfg.sigma_max.powf(1.0 / cfg.rho),
        cfg.sigma_min.powf(1.0 / cfg.rho),
    );
    let mut s: Vec<f64> = (0..n)
        .map(|i| {
            let t = if n > 1 {
                i as f64 / (n - 1) as f64
            } else {
                0.0
            };
            (a + t * (b - a)).powf(cfg.rho)
        })
        .collect();
    s.push(0.0);
    s
}

/// Integrates from noise to a frame. `denoise(x, σ)` must return `D(x; σ)` for the whole batch at
/// the scalar level `σ`; `x_init` is standard normal noise of the output shape (scaled here by σ_0).
/// Returns the final, unquantised sample.
pub fn sample<F>(cfg: &SamplerConfig, x_init: &Tensor, mut denoise: F) -> Tensor
where
    F: FnMut(&Tensor, f64) -> Tensor,
{
    let sig = sigmas(cfg);
    let n = cfg.steps;
    let gamma_churn = (cfg.s_churn / n as f64).min(std::f64::consts::SQRT_2 - 1.0);
    let mut x = x_init * sig[0];
    for i in 0..n {
        let (s, s_next) = (sig[i], sig[i + 1]);
        let gamma = if cfg.s_churn > 0.0 && cfg.s_tmin <= s && s <= cfg.s_tmax {
            gamma_churn
        } else {
            0.0
        };
        let s_hat = s * (1.0 + gamma);
        if gamma > 0.0 {
            x = &x + x.randn_like() * (cfg.s_noise * (s_hat * s_hat - s * s).sqrt());
        }
        let d = (&x - denoise(&x, s_hat)) / s_hat;
        let dt = s_next - s_hat;
        let x_next = &x + &d * dt;
        x = if cfg.kind == SamplerKind::Heun && s_next > 0.0 {
            let d2 = (&x_next - denoise(&x_next, s_next)) / s_next;
            &x + (d + d2) * (0.5 * dt)
        } else {
            x_next
        };
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::frames::{hwc_to_model, model_to_hwc, quantize};
    use tch::Device;
    use tch::Kind;

    #[test]
    fn schedule_endpoints_and_monotonicity() {
        let cfg = SamplerConfig::default();
        let s = sigmas(&cfg);
        assert_eq!(s.len(), 4);
        assert!((s[0] - 5.0).abs() < 1e-12);
        assert!((s[2] - 2e-3).abs() < 1e-12);
        assert_eq!(s[3], 0.0);
        assert!(s.windows(2).all(|w| w[0] > w[1]));
        // EDM default schedule (18 steps, σ_max 80) hits its published middle value
        let edm = sigmas(&SamplerConfig {
            steps: 18,
            sigma_max: 80.0,
            ..Default::default()
        });
        assert!((edm[0] - 80.0).abs() < 1e-9 && (edm[17] - 0.002).abs() < 1e-12);
    }

    #[test]
    fn a_perfect_denoiser_returns_the_clean_frame() {
        tch::manual_seed(7);
        let opts = (Kind::Float, Device::Cpu);
        let clean = quantize(&(Tensor::rand([4, 3, 8, 8], opts) * 2.0 - 1.0));
        for kind in [SamplerKind::Euler, SamplerKind::Heun] {
            for steps in [1usize, 3, 10] {
                for churn in [0.0, 5.0] {
                    let cfg = SamplerConfig {
                        kind,
                        steps,
                        s_churn: churn,
                        ..Default::default()
                    };
                    let mut calls = 0;
                    let x0 = Tensor::randn([4, 3, 8, 8], opts);
                    let out = sample(&cfg, &x0, |_x, _s| {
                        calls += 1;
                        clean.shallow_clone()
                    });
                    assert_eq!(calls, cfg.function_evaluations());
                    let q = quantize(&out);
                    assert_eq!(
                        (&q - &clean).abs().max().double_value(&[]),
                        0.0,
                        "{kind:?} {steps} {churn}"
                    );
                    assert!((&out - &clean).abs().max().double_value(&[]) < 1e-5);
                }
            }
        }
    }

    #[test]
    fn a_wrong_denoiser_is_caught() {
        // the same check fails for a denoiser that is off by one quantisation level
        let opts = (Kind::Float, Device::Cpu);
        let clean = quantize(&(Tensor::rand([1, 3, 4, 4], opts) * 1.8 - 0.9));
        let out = sample(
            &SamplerConfig::default(),
            &Tensor::randn([1, 3, 4, 4], opts),
            |_x, _s| &clean + 2.0 / 255.0,
        );
        assert!((quantize(&out) - &clean).abs().max().double_value(&[]) > 0.0);
    }

    #[test]
    fn u8_round_trip() {
        let u = Tensor::arange(256, (Kind::Uint8, Device::Cpu))
            .view([1, 4, 64, 1])
            .repeat([1, 1, 1, 3]);
        let f = hwc_to_model(&u);
        assert_eq!(f.size(), vec![1, 3, 4, 64]);
        assert_eq!(quantize(&f).eq_tensor(&f).all().int64_value(&[]), 1);
        assert_eq!(model_to_hwc(&f).eq_tensor(&u).all().int64_value(&[]), 1);
    }
}
