//! Video-prediction fidelity metrics (World4RL Table I and IV).
//!
//! * [`psnr`] and [`ssim`] need no weights;
//! * [`lpips`], [`fid`] and [`fvd`] need backbone weights the user supplies as safetensors files
//!   (see each module for the conversion from the standard checkpoints).
//!
//! Frames are `[N, 3, H, W]` f32 in [-1, 1] throughout.

pub mod fid;
pub mod fvd;
pub mod lpips;

use anyhow::{ensure, Result};
use tch::{Kind, Tensor};

fn check_pair(a: &Tensor, b: &Tensor) -> Result<()> {
    ensure!(
        a.size() == b.size(),
        "metrics: frame shapes differ ({:?} vs {:?})",
        a.size(),
        b.size()
    );
    ensure!(
        a.dim() == 4 && a.size()[1] == 3,
        "metrics: frames must be [N, 3, H, W], got {:?}",
        a.size()
    );
    Ok(())
}

/// Peak signal-to-noise ratio per frame, in dB, for frames in [-1, 1] (peak-to-peak 2, i.e. the
/// usual 8-bit PSNR). Identical frames give 100 dB (capped). `[N, 3, H, W]` × 2 -> `[N]` (f64).
pub fn psnr(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    check_pair(a, b)?;
    let mse = (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .square()
        .mean_dim(&[1i64, 2, 3][..], false, Kind::Double);
    Ok((mse.clamp_min(1e-12).reciprocal() * 4.0)
        .log10()
        .multiply_scalar(10.0)
        .clamp_max(100.0))
}

/// Mean squared error per frame on the 8-bit scale (frames in [-1, 1] mapped to [0, 255]).
/// `[N, 3, H, W]` × 2 -> `[N]` (f64).
pub fn mse(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    check_pair(a, b)?;
    Ok((a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .square()
        .mean_dim(&[1i64, 2, 3][..], false, Kind::Double)
        * (127.5 * 127.5))
}

/// PSNR (dB) of an 8-bit-scale mean squared error (100 dB for 0).
pub fn psnr_from_mse(mse: f64) -> f64 {
    if mse <= 1e-10 {
        100.0
    } else {
        (10.0 * (255.0f64 * 255.0 / mse).log10()).min(100.0)
    }
}

/// Configuration of [`ssim`] (Wang et al. 2004 defaults).
#[derive(Debug, Clone, Copy)]
pub struct SsimConfig {
    /// Gaussian window side (11) and standard deviation (1.5).
    pub window: i64,
    pub sigma: f64,
    pub k1: f64,
    pub k2: f64,
}

impl Default for SsimConfig {
    fn default() -> Self {
        Self {
            window: 11,
            sigma: 1.5,
            k1: 0.01,
            k2: 0.03,
        }
    }
}

fn gaussian_window(cfg: &SsimConfig, channels: i64, device: tch::Device) -> Tensor {
    let w = cfg.window;
    let c = (w - 1) as f64 / 2.0;
    let g: Vec<f64> = (0..w)
        .map(|i| (-((i as f64 - c).powi(2)) / (2.0 * cfg.sigma * cfg.sigma)).exp())
        .collect();
    let s: f64 = g.iter().sum();
    let g = Tensor::from_slice(&g).to_device(device) / s;
    let k = g.unsqueeze(1).matmul(&g.unsqueeze(0));
    k.view([1, 1, w, w]).repeat([channels, 1, 1, 1])
}

/// Structural similarity per frame (Gaussian 11×11 window, σ 1.5, K = (0.01, 0.03), data range
/// [0, 1], "valid" filtering as in the original code; channels averaged). Frames smaller than the
/// window use a window as large as the frame. `[N, 3, H, W]` × 2 -> `[N]` (f64).
pub fn ssim(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    ssim_with(a, b, &SsimConfig::default())
}

/// [`ssim`] with explicit settings.
pub fn ssim_with(a: &Tensor, b: &Tensor, cfg: &SsimConfig) -> Result<Tensor> {
    check_pair(a, b)?;
    let s = a.size();
    let mut cfg = *cfg;
    cfg.window = cfg.window.min(s[2]).min(s[3]);
    let x = (a.to_kind(Kind::Double) + 1.0) / 2.0;
    let y = (b.to_kind(Kind::Double) + 1.0) / 2.0;
    let c = s[1];
    let w = gaussian_window(&cfg, c, a.device()).to_kind(Kind::Double);
    let f = |t: &Tensor| t.conv2d(&w, None::<Tensor>, [1, 1], [0, 0], [1, 1], c);
    let (mx, my) = (f(&x), f(&y));
    let sxx = f(&(&x * &x)) - mx.square();
    let syy = f(&(&y * &y)) - my.square();
    let sxy = f(&(&x * &y)) - &mx * &my;
    let (c1, c2) = (cfg.k1 * cfg.k1, cfg.k2 * cfg.k2);
    let map = ((&mx * &my * 2.0 + c1) * (sxy * 2.0 + c2))
        / ((mx.square() + my.square() + c1) * (sxx + syy + c2));
    Ok(map.mean_dim(&[1i64, 2, 3][..], false, Kind::Double))
}

/// Mean of a `[N]` tensor as f64.
pub fn mean(t: &Tensor) -> f64 {
    t.mean(Kind::Double).double_value(&[])
}

/// Fréchet distance between Gaussians fitted to two feature sets `[N, D]` and `[M, D]`:
/// `‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2})` (computed in f64 through symmetric
/// eigendecompositions, so no complex square roots appear).
pub fn frechet_distance(f1: &Tensor, f2: &Tensor) -> Result<f64> {
    ensure!(
        f1.dim() == 2 && f2.dim() == 2 && f1.size()[1] == f2.size()[1],
        "frechet distance: need [N, D] and [M, D] features"
    );
    ensure!(
        f1.size()[0] >= 2 && f2.size()[0] >= 2,
        "frechet distance: need at least 2 samples per set"
    );
    let stats = |f: &Tensor| {
        let f = f.to_kind(Kind::Double);
        let mu = f.mean_dim(&[0i64][..], false, Kind::Double);
        let c = &f - &mu;
        let cov = c.transpose(0, 1).matmul(&c) / (f.size()[0] - 1) as f64;
        (mu, cov)
    };
    let (m1, s1) = stats(f1);
    let (m2, s2) = stats(f2);
    let sqrt_psd = |m: &Tensor| {
        let (e, v) = ((m + m.transpose(0, 1)) / 2.0).linalg_eigh("L");
        (&v * e.clamp_min(0.0).sqrt().unsqueeze(0)).matmul(&v.transpose(0, 1))
    };
    let r1 = sqrt_psd(&s1);
    let inner = r1.matmul(&s2).matmul(&r1);
    let (e, _) = ((&inner + inner.transpose(0, 1)) / 2.0).linalg_eigh("L");
    let tr_sqrt = e.clamp_min(0.0).sqrt().sum(Kind::Double).double_value(&[]);
    let d = (m1 - m2).square().sum(Kind::Double).double_value(&[]);
    Ok(d + s1.trace().double_value(&[]) + s2.trace().double_value(&[]) - 2.0 * tr_sqrt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn psnr_known_values() {
        let a = Tensor::zeros([2, 3, 8, 8], (Kind::Float, Device::Cpu));
        // an error of one 8-bit level everywhere: 20 log10(255) = 48.13 dB
        let b = &a + 2.0 / 255.0;
        let p = psnr(&a, &b).unwrap();
        assert!((p.double_value(&[0]) - 48.1308).abs() < 1e-3, "{p}");
        assert_eq!(psnr(&a, &a).unwrap().double_value(&[1]), 100.0);
        assert!(psnr(&a, &Tensor::zeros([2, 3, 8, 4], (Kind::Float, Device::Cpu))).is_err());
        let m = mse(&a, &b).unwrap().double_value(&[0]);
        assert!(
            (m - 1.0).abs() < 1e-5 && (psnr_from_mse(m) - 48.1308).abs() < 1e-3,
            "{m}"
        );
    }

    #[test]
    fn ssim_properties_and_a_hand_computed_case() {
        tch::manual_seed(0);
        let a = Tensor::rand([2, 3, 16, 16], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let s = ssim(&a, &a).unwrap();
        assert!((s - 1.0).abs().max().double_value(&[]) < 1e-9);
        let n =
            (&a + Tensor::randn([2, 3, 16, 16], (Kind::Float, Device::Cpu)) * 0.6).clamp(-1.0, 1.0);
        let s = ssim(&a, &n).unwrap();
        assert!(s.max().double_value(&[]) < 0.8, "{s}");
        // constant images with means m1, m2 (in [0,1]): SSIM = (2 m1 m2 + C1) / (m1² + m2² + C1)
        let x = Tensor::full([1, 3, 11, 11], 0.2 * 2.0 - 1.0, (Kind::Float, Device::Cpu));
        let y = Tensor::full([1, 3, 11, 11], 0.6 * 2.0 - 1.0, (Kind::Float, Device::Cpu));
        let c1 = 1e-4;
        let want = (2.0 * 0.2 * 0.6 + c1) / (0.04 + 0.36 + c1);
        let got = ssim(&x, &y).unwrap().double_value(&[0]);
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn frechet_distance_of_gaussians() {
        // samples from a seeded Rust generator: libtorch's global one is shared with the tests
        // that run in parallel threads, which made this test draw different samples on each run
        use rand::SeedableRng;
        use rand_distr::{Distribution, StandardNormal};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut randn = |n: usize| {
            let v: Vec<f64> = (0..n * 3)
                .map(|_| StandardNormal.sample(&mut rng))
                .collect();
            Tensor::from_slice(&v).view([n as i64, 3])
        };
        let a = randn(4000);
        // same distribution: ~0; shifted by (1,0,0) and scaled by 2: 1 + 3·(1 + 4 − 2·2) = 4
        assert!(frechet_distance(&a, &randn(4000)).unwrap().abs() < 0.05);
        let b = randn(4000) * 2.0 + Tensor::from_slice(&[1.0f64, 0.0, 0.0]);
        let d = frechet_distance(&a, &b).unwrap();
        assert!((d - 4.0).abs() < 0.3, "{d}");
    }
}
