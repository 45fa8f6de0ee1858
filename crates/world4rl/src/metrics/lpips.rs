//! LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
//! Metric"), AlexNet variant — the perceptual distance of World4RL Table I/IV.
//!
//! `LPIPS(x, y) = Σ_l mean_hw ‖ w_l ⊙ (n(f_l(x)) − n(f_l(y))) ‖²`, where `f_l` are the five ReLU
//! outputs of AlexNet's feature extractor applied to the scaled input `(x − shift) / scale`, `n`
//! normalises each feature vector to unit length over channels, and `w_l` are the learned 1×1
//! "linear" weights (no bias).
//!
//! **Weights.** The tensors use the names of the `lpips` Python package's state dict, so the
//! standard weights convert in three lines:
//!
//! ```python
//! import lpips, safetensors.torch
//! m = lpips.LPIPS(net="alex")          # downloads torchvision's AlexNet + LPIPS v0.1 linear layers
//! safetensors.torch.save_file({k: v.contiguous() for k, v in m.state_dict().items()}, "lpips_alex.safetensors")
//! ```
//!
//! (keys `net.slice1.0.weight` … `net.slice5.10.bias`, `lin0.model.1.weight` … `lin4.model.1.weight`;
//! `scaling_layer.*` buffers are ignored, the constants are built in).

use std::path::Path;

use anyhow::{ensure, Result};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// LPIPS input shift and scale (fixed constants of the `lpips` package).
const SHIFT: [f64; 3] = [-0.030, -0.088, -0.188];
const SCALE: [f64; 3] = [0.458, 0.448, 0.450];
/// AlexNet feature channels at the five taps.
pub const CHANNELS: [i64; 5] = [64, 192, 384, 256, 256];

/// Configuration of [`Lpips`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LpipsConfig {
    /// Frames are resized (bilinear) to this side before the network when set; AlexNet's stride-4
    /// first layer leaves little of a 32×32 frame otherwise.
    pub resize_to: Option<i64>,
}

impl Default for LpipsConfig {
    fn default() -> Self {
        Self {
            resize_to: Some(64),
        }
    }
}

/// LPIPS with an AlexNet backbone.
#[derive(Debug)]
pub struct Lpips {
    cfg: LpipsConfig,
    convs: Vec<nn::Conv2D>,
    lins: Vec<nn::Conv2D>,
    shift: Tensor,
    scale: Tensor,
    vs: nn::VarStore,
}

impl Lpips {
    /// Builds the network (random weights) in its own VarStore on `device`.
    pub fn new(cfg: LpipsConfig, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let net = &root / "net";
        // (slice, torchvision index, in, out, kernel, stride, padding)
        let spec = [
            (1, 0, 3, 64, 11, 4, 2),
            (2, 3, 64, 192, 5, 1, 2),
            (3, 6, 192, 384, 3, 1, 1),
            (4, 8, 384, 256, 3, 1, 1),
            (5, 10, 256, 256, 3, 1, 1),
        ];
        let convs = spec
            .iter()
            .map(|&(s, i, ci, co, k, st, p)| {
                nn::conv2d(
                    &net / format!("slice{s}") / i.to_string(),
                    ci,
                    co,
                    k,
                    nn::ConvConfig {
                        stride: st,
                        padding: p,
                        ..Default::default()
                    },
                )
            })
            .collect();
        let lins = CHANNELS
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                nn::conv2d(
                    &root / format!("lin{i}") / "model" / "1",
                    c,
                    1,
                    1,
                    nn::ConvConfig {
                        bias: false,
                        ..Default::default()
                    },
                )
            })
            .collect();
        let shift = Tensor::from_slice(&SHIFT)
            .to_kind(Kind::Float)
            .view([1, 3, 1, 1])
            .to_device(device);
        let scale = Tensor::from_slice(&SCALE)
            .to_kind(Kind::Float)
            .view([1, 3, 1, 1])
            .to_device(device);
        Self {
            cfg,
            convs,
            lins,
            shift,
            scale,
            vs,
        }
    }

    /// Loads weights from a safetensors file with the `lpips` package's names (see module docs).
    pub fn load(path: &Path, cfg: LpipsConfig, device: Device) -> Result<Self> {
        let mut m = Self::new(cfg, device);
        let (t, _) = crate::util::checkpoint::load_tensors(path)?;
        crate::util::checkpoint::copy_into_varstore(&t, &mut m.vs, "", path)?;
        Ok(m)
    }

    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// The five ReLU feature maps of AlexNet.
    fn features(&self, x: &Tensor) -> Vec<Tensor> {
        let x = (x - &self.shift) / &self.scale;
        let mut out = Vec::with_capacity(5);
        let mut h = self.convs[0].forward(&x).relu();
        out.push(h.shallow_clone());
        h = self.convs[1]
            .forward(&h.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false))
            .relu();
        out.push(h.shallow_clone());
        h = self.convs[2]
            .forward(&h.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false))
            .relu();
        out.push(h.shallow_clone());
        h = self.convs[3].forward(&h).relu();
        out.push(h.shallow_clone());
        h = self.convs[4].forward(&h).relu();
        out.push(h);
        out
    }

    /// Per-frame distance `[N]` between frames `[N, 3, H, W]` in [-1, 1].
    pub fn distance(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        ensure!(
            a.size() == b.size() && a.dim() == 4 && a.size()[1] == 3,
            "lpips: need two [N, 3, H, W] batches of equal shape"
        );
        let _g = tch::no_grad_guard();
        let dev = self.vs.device();
        let prep = |t: &Tensor| {
            let t = t.to_kind(Kind::Float).to_device(dev);
            match self.cfg.resize_to {
                Some(s) if t.size()[2] != s || t.size()[3] != s => {
                    t.upsample_bilinear2d([s, s], false, None, None)
                }
                _ => t,
            }
        };
        let (fa, fb) = (self.features(&prep(a)), self.features(&prep(b)));
        let norm =
            |f: &Tensor| f / (f.square().sum_dim_intlist(1, true, Kind::Float).sqrt() + 1e-10);
        let mut total = Tensor::zeros([a.size()[0]], (Kind::Float, dev));
        for ((x, y), lin) in fa.iter().zip(&fb).zip(&self.lins) {
            let d = (norm(x) - norm(y)).square();
            total += lin
                .forward(&d)
                .mean_dim(&[1i64, 2, 3][..], false, Kind::Float);
        }
        Ok(total.to_kind(Kind::Double).to_device(Device::Cpu))
    }
}
