//! FID (Heusel et al. 2017): the Fréchet distance between Inception-v3 pool features (2048-d) of
//! real and generated frames (World4RL Table I/IV).
//!
//! The network is the *FID* Inception of `pytorch-fid` (the port of TF's 2015-12-05 graph, whose
//! blocks differ slightly from torchvision's: average pools exclude padding and the last block
//! max-pools). Inputs in [-1, 1] are resized (bilinear) to 299×299.
//!
//! **Weights.** Names follow torchvision's `Inception3` (as in pytorch-fid's weight file):
//!
//! ```python
//! import torch, safetensors.torch
//! # https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
//! sd = torch.load("pt_inception-2015-12-05-6726825d.pth", map_location="cpu")
//! sd = {k: v.contiguous() for k, v in sd.items() if not k.startswith(("fc.", "AuxLogits."))}
//! safetensors.torch.save_file(sd, "fid_inception.safetensors")
//! ```

use std::path::Path;

use anyhow::{ensure, Result};
use tch::nn::{self, Module, ModuleT};
use tch::{Device, Kind, Tensor};

/// Conv (no bias) + BatchNorm (eps 1e-3) + ReLU, torchvision's `BasicConv2d`.
#[derive(Debug)]
pub struct BasicConv2d {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
}

/// Configuration of [`BasicConv2d`]: channels, kernel (h, w), stride, padding (h, w).
#[derive(Debug, Clone, Copy)]
pub struct BasicConv2dConfig {
    pub cin: i64,
    pub cout: i64,
    pub kernel: (i64, i64),
    pub stride: i64,
    pub padding: (i64, i64),
}

impl Default for BasicConv2dConfig {
    fn default() -> Self {
        Self {
            cin: 3,
            cout: 32,
            kernel: (1, 1),
            stride: 1,
            padding: (0, 0),
        }
    }
}

impl BasicConv2d {
    pub fn new(vs: nn::Path, cfg: BasicConv2dConfig) -> Self {
        let conv = nn::conv(
            &vs / "conv",
            cfg.cin,
            cfg.cout,
            [cfg.kernel.0, cfg.kernel.1],
            nn::ConvConfigND {
                stride: [cfg.stride, cfg.stride],
                padding: [cfg.padding.0, cfg.padding.1],
                dilation: [1, 1],
                groups: 1,
                bias: false,
                ..nn::ConvConfigND::<[i64; 2]>::default()
            },
        );
        let bn = nn::batch_norm2d(
            &vs / "bn",
            cfg.cout,
            nn::BatchNormConfig {
                eps: 1e-3,
                ..Default::default()
            },
        );
        Self { conv, bn }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.bn.forward_t(&self.conv.forward(x), false).relu()
    }
}

fn bc(
    vs: &nn::Path,
    name: &str,
    cin: i64,
    cout: i64,
    k: (i64, i64),
    stride: i64,
    pad: (i64, i64),
) -> BasicConv2d {
    BasicConv2d::new(
        vs / name,
        BasicConv2dConfig {
            cin,
            cout,
            kernel: k,
            stride,
            padding: pad,
        },
    )
}

fn avg_pool_3x3(x: &Tensor) -> Tensor {
    x.avg_pool2d([3, 3], [1, 1], [1, 1], false, false, None::<i64>)
}

fn max_pool(x: &Tensor, k: i64, s: i64, p: i64) -> Tensor {
    x.max_pool2d([k, k], [s, s], [p, p], [1, 1], false)
}

/// Inception block A (`Mixed_5b/c/d`).
#[derive(Debug)]
pub struct InceptionA {
    b1: BasicConv2d,
    b5_1: BasicConv2d,
    b5_2: BasicConv2d,
    b3_1: BasicConv2d,
    b3_2: BasicConv2d,
    b3_3: BasicConv2d,
    pool: BasicConv2d,
}

impl InceptionA {
    pub fn new(vs: nn::Path, cin: i64, pool_features: i64) -> Self {
        Self {
            b1: bc(&vs, "branch1x1", cin, 64, (1, 1), 1, (0, 0)),
            b5_1: bc(&vs, "branch5x5_1", cin, 48, (1, 1), 1, (0, 0)),
            b5_2: bc(&vs, "branch5x5_2", 48, 64, (5, 5), 1, (2, 2)),
            b3_1: bc(&vs, "branch3x3dbl_1", cin, 64, (1, 1), 1, (0, 0)),
            b3_2: bc(&vs, "branch3x3dbl_2", 64, 96, (3, 3), 1, (1, 1)),
            b3_3: bc(&vs, "branch3x3dbl_3", 96, 96, (3, 3), 1, (1, 1)),
            pool: bc(&vs, "branch_pool", cin, pool_features, (1, 1), 1, (0, 0)),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        Tensor::cat(
            &[
                self.b1.forward(x),
                self.b5_2.forward(&self.b5_1.forward(x)),
                self.b3_3.forward(&self.b3_2.forward(&self.b3_1.forward(x))),
                self.pool.forward(&avg_pool_3x3(x)),
            ],
            1,
        )
    }
}

/// Inception block B (`Mixed_6a`, grid reduction).
#[derive(Debug)]
pub struct InceptionB {
    b3: BasicConv2d,
    d1: BasicConv2d,
    d2: BasicConv2d,
    d3: BasicConv2d,
}

impl InceptionB {
    pub fn new(vs: nn::Path, cin: i64) -> Self {
        Self {
            b3: bc(&vs, "branch3x3", cin, 384, (3, 3), 2, (0, 0)),
            d1: bc(&vs, "branch3x3dbl_1", cin, 64, (1, 1), 1, (0, 0)),
            d2: bc(&vs, "branch3x3dbl_2", 64, 96, (3, 3), 1, (1, 1)),
            d3: bc(&vs, "branch3x3dbl_3", 96, 96, (3, 3), 2, (0, 0)),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        Tensor::cat(
            &[
                self.b3.forward(x),
                self.d3.forward(&self.d2.forward(&self.d1.forward(x))),
                max_pool(x, 3, 2, 0),
            ],
            1,
        )
    }
}

/// Inception block C (`Mixed_6b..e`, factorised 7×7).
#[derive(Debug)]
pub struct InceptionC {
    b1: BasicConv2d,
    b7: [BasicConv2d; 3],
    d7: [BasicConv2d; 5],
    pool: BasicConv2d,
}

impl InceptionC {
    pub fn new(vs: nn::Path, cin: i64, c7: i64) -> Self {
        let (h, w) = ((1, 7), (7, 1));
        let (ph, pw) = ((0, 3), (3, 0));
        Self {
            b1: bc(&vs, "branch1x1", cin, 192, (1, 1), 1, (0, 0)),
            b7: [
                bc(&vs, "branch7x7_1", cin, c7, (1, 1), 1, (0, 0)),
                bc(&vs, "branch7x7_2", c7, c7, h, 1, ph),
                bc(&vs, "branch7x7_3", c7, 192, w, 1, pw),
            ],
            d7: [
                bc(&vs, "branch7x7dbl_1", cin, c7, (1, 1), 1, (0, 0)),
                bc(&vs, "branch7x7dbl_2", c7, c7, w, 1, pw),
                bc(&vs, "branch7x7dbl_3", c7, c7, h, 1, ph),
                bc(&vs, "branch7x7dbl_4", c7, c7, w, 1, pw),
                bc(&vs, "branch7x7dbl_5", c7, 192, h, 1, ph),
            ],
            pool: bc(&vs, "branch_pool", cin, 192, (1, 1), 1, (0, 0)),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let b7 = self.b7.iter().fold(x.shallow_clone(), |h, l| l.forward(&h));
        let d7 = self.d7.iter().fold(x.shallow_clone(), |h, l| l.forward(&h));
        Tensor::cat(
            &[
                self.b1.forward(x),
                b7,
                d7,
                self.pool.forward(&avg_pool_3x3(x)),
            ],
            1,
        )
    }
}

/// Inception block D (`Mixed_7a`, grid reduction).
#[derive(Debug)]
pub struct InceptionD {
    b3: [BasicConv2d; 2],
    b7: [BasicConv2d; 4],
}

impl InceptionD {
    pub fn new(vs: nn::Path, cin: i64) -> Self {
        Self {
            b3: [
                bc(&vs, "branch3x3_1", cin, 192, (1, 1), 1, (0, 0)),
                bc(&vs, "branch3x3_2", 192, 320, (3, 3), 2, (0, 0)),
            ],
            b7: [
                bc(&vs, "branch7x7x3_1", cin, 192, (1, 1), 1, (0, 0)),
                bc(&vs, "branch7x7x3_2", 192, 192, (1, 7), 1, (0, 3)),
                bc(&vs, "branch7x7x3_3", 192, 192, (7, 1), 1, (3, 0)),
                bc(&vs, "branch7x7x3_4", 192, 192, (3, 3), 2, (0, 0)),
            ],
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let b3 = self.b3.iter().fold(x.shallow_clone(), |h, l| l.forward(&h));
        let b7 = self.b7.iter().fold(x.shallow_clone(), |h, l| l.forward(&h));
        Tensor::cat(&[b3, b7, max_pool(x, 3, 2, 0)], 1)
    }
}

/// Inception block E (`Mixed_7b` with an average pool, `Mixed_7c` with a max pool in the FID net).
#[derive(Debug)]
pub struct InceptionE {
    b1: BasicConv2d,
    b3_1: BasicConv2d,
    b3_2a: BasicConv2d,
    b3_2b: BasicConv2d,
    d_1: BasicConv2d,
    d_2: BasicConv2d,
    d_3a: BasicConv2d,
    d_3b: BasicConv2d,
    pool: BasicConv2d,
    max_pool: bool,
}

impl InceptionE {
    pub fn new(vs: nn::Path, cin: i64, max_pool: bool) -> Self {
        Self {
            b1: bc(&vs, "branch1x1", cin, 320, (1, 1), 1, (0, 0)),
            b3_1: bc(&vs, "branch3x3_1", cin, 384, (1, 1), 1, (0, 0)),
            b3_2a: bc(&vs, "branch3x3_2a", 384, 384, (1, 3), 1, (0, 1)),
            b3_2b: bc(&vs, "branch3x3_2b", 384, 384, (3, 1), 1, (1, 0)),
            d_1: bc(&vs, "branch3x3dbl_1", cin, 448, (1, 1), 1, (0, 0)),
            d_2: bc(&vs, "branch3x3dbl_2", 448, 384, (3, 3), 1, (1, 1)),
            d_3a: bc(&vs, "branch3x3dbl_3a", 384, 384, (1, 3), 1, (0, 1)),
            d_3b: bc(&vs, "branch3x3dbl_3b", 384, 384, (3, 1), 1, (1, 0)),
            pool: bc(&vs, "branch_pool", cin, 192, (1, 1), 1, (0, 0)),
            max_pool,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let b3 = self.b3_1.forward(x);
        let b3 = Tensor::cat(&[self.b3_2a.forward(&b3), self.b3_2b.forward(&b3)], 1);
        let d = self.d_2.forward(&self.d_1.forward(x));
        let d = Tensor::cat(&[self.d_3a.forward(&d), self.d_3b.forward(&d)], 1);
        let p = if self.max_pool {
            max_pool(x, 3, 1, 1)
        } else {
            avg_pool_3x3(x)
        };
        Tensor::cat(&[self.b1.forward(x), b3, d, self.pool.forward(&p)], 1)
    }
}

/// The FID Inception-v3 up to the 2048-d global average pool.
#[derive(Debug)]
pub struct FidInception {
    stem: Vec<BasicConv2d>,
    a: Vec<InceptionA>,
    b: InceptionB,
    c: Vec<InceptionC>,
    d: InceptionD,
    e: Vec<InceptionE>,
    vs: nn::VarStore,
}

impl FidInception {
    /// Builds the network with random weights on `device`.
    pub fn new(device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let r = vs.root();
        let stem = vec![
            bc(&r, "Conv2d_1a_3x3", 3, 32, (3, 3), 2, (0, 0)),
            bc(&r, "Conv2d_2a_3x3", 32, 32, (3, 3), 1, (0, 0)),
            bc(&r, "Conv2d_2b_3x3", 32, 64, (3, 3), 1, (1, 1)),
            bc(&r, "Conv2d_3b_1x1", 64, 80, (1, 1), 1, (0, 0)),
            bc(&r, "Conv2d_4a_3x3", 80, 192, (3, 3), 1, (0, 0)),
        ];
        let a = vec![
            InceptionA::new(&r / "Mixed_5b", 192, 32),
            InceptionA::new(&r / "Mixed_5c", 256, 64),
            InceptionA::new(&r / "Mixed_5d", 288, 64),
        ];
        let b = InceptionB::new(&r / "Mixed_6a", 288);
        let c = vec![
            InceptionC::new(&r / "Mixed_6b", 768, 128),
            InceptionC::new(&r / "Mixed_6c", 768, 160),
            InceptionC::new(&r / "Mixed_6d", 768, 160),
            InceptionC::new(&r / "Mixed_6e", 768, 192),
        ];
        let d = InceptionD::new(&r / "Mixed_7a", 768);
        let e = vec![
            InceptionE::new(&r / "Mixed_7b", 1280, false),
            InceptionE::new(&r / "Mixed_7c", 2048, true),
        ];
        Self {
            stem,
            a,
            b,
            c,
            d,
            e,
            vs,
        }
    }

    /// Loads weights (torchvision `Inception3` names; see the module docs).
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        let mut m = Self::new(device);
        let (t, _) = crate::util::checkpoint::load_tensors(path)?;
        crate::util::checkpoint::copy_into_varstore(&t, &mut m.vs, "", path)?;
        Ok(m)
    }

    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// 2048-d features of frames `[N, 3, H, W]` in [-1, 1] (resized to 299×299), on the CPU, f64.
    pub fn features(&self, frames: &Tensor) -> Result<Tensor> {
        ensure!(
            frames.dim() == 4 && frames.size()[1] == 3,
            "fid: frames must be [N, 3, H, W], got {:?}",
            frames.size()
        );
        let _g = tch::no_grad_guard();
        let x = frames
            .to_kind(Kind::Float)
            .to_device(self.vs.device())
            .upsample_bilinear2d([299, 299], false, None, None);
        let mut h = self.stem[0].forward(&x);
        h = self.stem[1].forward(&h);
        h = self.stem[2].forward(&h);
        h = max_pool(&h, 3, 2, 0);
        h = self.stem[3].forward(&h);
        h = self.stem[4].forward(&h);
        h = max_pool(&h, 3, 2, 0);
        for m in &self.a {
            h = m.forward(&h);
        }
        h = self.b.forward(&h);
        for m in &self.c {
            h = m.forward(&h);
        }
        h = self.d.forward(&h);
        for m in &self.e {
            h = m.forward(&h);
        }
        Ok(h.adaptive_avg_pool2d([1, 1])
            .flatten(1, -1)
            .to_kind(Kind::Double)
            .to_device(Device::Cpu))
    }

    /// FID between two sets of frames (processed in chunks of `chunk`).
    pub fn fid(&self, real: &Tensor, fake: &Tensor, chunk: i64) -> Result<f64> {
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
