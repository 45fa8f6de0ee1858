//! Building blocks of the DIAMOND-style denoising U-Net (Alonso et al. 2024, `src/models/blocks.py`),
//! which World4RL uses as `F_θ` inside the EDM denoiser (World4RL Eq. 4 and 6).
//!
//! * [`FourierFeatures`]: fixed random Fourier features of the noise level `c_noise`.
//! * [`AdaGroupNorm`]: GroupNorm without affine parameters, then `x·(1 + scale) + shift` with
//!   `(scale, shift) = Linear(cond)`; this is how the noise level and the actions condition every
//!   residual block.
//! * [`SelfAttention2d`]: multi-head self-attention over the spatial positions (head dim 8).
//! * [`ResBlock`]: AdaGN → SiLU → Conv3×3 → AdaGN → SiLU → Conv3×3 (zero-initialised) + residual,
//!   then optional self-attention.
//! * [`Downsample`] (3×3 stride-2 conv, orthogonal init) and [`Upsample`] (nearest ×2 + 3×3 conv).
//!
//! Layers without an explicit initialisation use PyTorch's default (uniform ±1/√fan_in), so that
//! the network starts like its PyTorch original.

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// Channels per GroupNorm group (DIAMOND: 32).
pub const GROUP_SIZE: i64 = 32;
/// GroupNorm epsilon (DIAMOND: 1e-5).
pub const GN_EPS: f64 = 1e-5;

/// Number of GroupNorm groups for `channels` channels: `max(1, channels / 32)`.
pub fn num_groups(channels: i64) -> i64 {
    (channels / GROUP_SIZE).max(1)
}

/// PyTorch's default initialisation of a conv/linear layer with fan-in `fan_in`.
fn torch_default(fan_in: i64) -> nn::Init {
    let b = 1.0 / (fan_in.max(1) as f64).sqrt();
    nn::Init::Uniform { lo: -b, up: b }
}

/// A k×k convolution with "same" padding and PyTorch's default initialisation.
pub fn conv2d(vs: nn::Path, cin: i64, cout: i64, k: i64, stride: i64) -> nn::Conv2D {
    let init = torch_default(cin * k * k);
    nn::conv2d(
        vs,
        cin,
        cout,
        k,
        nn::ConvConfig {
            padding: k / 2,
            stride,
            ws_init: init,
            bs_init: init,
            ..Default::default()
        },
    )
}

/// A convolution whose weights and bias start at zero (residual branches and the output layer).
pub fn conv2d_zero(vs: nn::Path, cin: i64, cout: i64, k: i64) -> nn::Conv2D {
    let z = nn::Init::Const(0.0);
    nn::conv2d(
        vs,
        cin,
        cout,
        k,
        nn::ConvConfig {
            padding: k / 2,
            ws_init: z,
            bs_init: z,
            ..Default::default()
        },
    )
}

/// A linear layer with PyTorch's default initialisation.
pub fn linear(vs: nn::Path, din: i64, dout: i64, bias: bool) -> nn::Linear {
    let init = torch_default(din);
    nn::linear(
        vs,
        din,
        dout,
        nn::LinearConfig {
            ws_init: init,
            bs_init: Some(init),
            bias,
        },
    )
}

/// Parameters of a k×k conv with bias.
pub(crate) fn conv_params(cin: i64, cout: i64, k: i64) -> i64 {
    cin * cout * k * k + cout
}

/// Parameters of a linear layer.
pub(crate) fn linear_params(din: i64, dout: i64, bias: bool) -> i64 {
    din * dout + if bias { dout } else { 0 }
}

// ---------------------------------------------------------------------------------------------

/// Configuration of [`FourierFeatures`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FourierFeaturesConfig {
    /// Output width (even): `cos` and `sin` of `channels/2` random frequencies.
    pub channels: i64,
}

impl Default for FourierFeaturesConfig {
    fn default() -> Self {
        Self { channels: 256 }
    }
}

/// Fixed random Fourier features: `[cos, sin](2π · c_noise · w)` with `w ~ N(0, 1)` of size
/// `channels/2`. The weights are stored in the checkpoint but not trained.
#[derive(Debug)]
pub struct FourierFeatures {
    weight: Tensor,
}

impl FourierFeatures {
    /// Draws the frequencies from libtorch's generator (seed it with `tch::manual_seed`).
    pub fn new(vs: nn::Path, cfg: FourierFeaturesConfig) -> Self {
        assert!(
            cfg.channels % 2 == 0,
            "FourierFeatures: channels must be even"
        );
        let w = Tensor::randn([1, cfg.channels / 2], (Kind::Float, vs.device()));
        let weight = vs.add("weight", w, false);
        Self { weight }
    }

    /// `[B]` -> `[B, channels]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let f = x.unsqueeze(1).matmul(&self.weight) * (2.0 * std::f64::consts::PI);
        Tensor::cat(&[f.cos(), f.sin()], 1)
    }
}

// ---------------------------------------------------------------------------------------------

/// Configuration of [`AdaGroupNorm`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaGroupNormConfig {
    /// Channels of the normalised activation.
    pub channels: i64,
    /// Width of the conditioning vector.
    pub cond_channels: i64,
}

impl Default for AdaGroupNormConfig {
    fn default() -> Self {
        Self {
            channels: 64,
            cond_channels: 256,
        }
    }
}

/// Adaptive GroupNorm: `GN(x)·(1 + scale) + shift`, `(scale, shift) = Linear(cond)`.
#[derive(Debug)]
pub struct AdaGroupNorm {
    groups: i64,
    linear: nn::Linear,
}

impl AdaGroupNorm {
    pub fn new(vs: nn::Path, cfg: AdaGroupNormConfig) -> Self {
        Self {
            groups: num_groups(cfg.channels),
            linear: linear(&vs / "linear", cfg.cond_channels, 2 * cfg.channels, true),
        }
    }

    pub(crate) fn params(cfg: AdaGroupNormConfig) -> i64 {
        linear_params(cfg.cond_channels, 2 * cfg.channels, true)
    }

    /// `x: [B, C, H, W]`, `cond: [B, cond_channels]`.
    pub fn forward(&self, x: &Tensor, cond: &Tensor) -> Tensor {
        let x = x.group_norm(self.groups, None::<Tensor>, None::<Tensor>, GN_EPS, true);
        let ss = self.linear.forward(cond).unsqueeze(-1).unsqueeze(-1);
        let ss = ss.chunk(2, 1);
        x * (&ss[0] + 1.0) + &ss[1]
    }
}

// ---------------------------------------------------------------------------------------------

/// Configuration of [`SelfAttention2d`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SelfAttention2dConfig {
    pub channels: i64,
    /// Channels per head (DIAMOND: 8); heads = `max(1, channels / head_dim)`.
    pub head_dim: i64,
}

impl Default for SelfAttention2dConfig {
    fn default() -> Self {
        Self {
            channels: 64,
            head_dim: 8,
        }
    }
}

/// Multi-head self-attention over the H·W positions: GroupNorm → 1×1 qkv → softmax attention →
/// zero-initialised 1×1 output projection, plus the residual.
#[derive(Debug)]
pub struct SelfAttention2d {
    heads: i64,
    norm: nn::GroupNorm,
    qkv: nn::Conv2D,
    out: nn::Conv2D,
}

impl SelfAttention2d {
    pub fn new(vs: nn::Path, cfg: SelfAttention2dConfig) -> Self {
        let c = cfg.channels;
        Self {
            heads: (c / cfg.head_dim).max(1),
            norm: nn::group_norm(
                &vs / "norm",
                num_groups(c),
                c,
                nn::GroupNormConfig {
                    eps: GN_EPS,
                    ..Default::default()
                },
            ),
            qkv: conv2d(&vs / "qkv", c, 3 * c, 1, 1),
            out: conv2d_zero(&vs / "out", c, c, 1),
        }
    }

    pub(crate) fn params(cfg: SelfAttention2dConfig) -> i64 {
        let c = cfg.channels;
        2 * c + conv_params(c, 3 * c, 1) + conv_params(c, c, 1)
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (n, c, h, w) = x.size4().expect("SelfAttention2d expects [B,C,H,W]");
        let d = c / self.heads;
        let qkv = self.qkv.forward(&self.norm.forward(x));
        // [n, 3c, h, w] -> [n, 3, heads, hw, d]
        let qkv = qkv.view([n, 3, self.heads, d, h * w]).transpose(3, 4);
        let (q, k, v) = (qkv.select(1, 0), qkv.select(1, 1), qkv.select(1, 2));
        let y = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            0.0,
            false,
            None,
            false,
        );
        let y = y.transpose(2, 3).reshape([n, c, h, w]);
        x + self.out.forward(&y)
    }
}

// ---------------------------------------------------------------------------------------------

/// Configuration of [`ResBlock`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResBlockConfig {
    pub in_channels: i64,
    pub out_channels: i64,
    pub cond_channels: i64,
    /// Append a [`SelfAttention2d`] after the residual sum.
    pub attention: bool,
}

impl Default for ResBlockConfig {
    fn default() -> Self {
        Self {
            in_channels: 64,
            out_channels: 64,
            cond_channels: 256,
            attention: false,
        }
    }
}

/// DIAMOND's residual block with adaptive GroupNorm conditioning.
#[derive(Debug)]
pub struct ResBlock {
    proj: Option<nn::Conv2D>,
    norm1: AdaGroupNorm,
    conv1: nn::Conv2D,
    norm2: AdaGroupNorm,
    conv2: nn::Conv2D,
    attn: Option<SelfAttention2d>,
}

impl ResBlock {
    pub fn new(vs: nn::Path, cfg: ResBlockConfig) -> Self {
        let (ci, co, cc) = (cfg.in_channels, cfg.out_channels, cfg.cond_channels);
        Self {
            proj: (ci != co).then(|| conv2d(&vs / "proj", ci, co, 1, 1)),
            norm1: AdaGroupNorm::new(
                &vs / "norm1",
                AdaGroupNormConfig {
                    channels: ci,
                    cond_channels: cc,
                },
            ),
            conv1: conv2d(&vs / "conv1", ci, co, 3, 1),
            norm2: AdaGroupNorm::new(
                &vs / "norm2",
                AdaGroupNormConfig {
                    channels: co,
                    cond_channels: cc,
                },
            ),
            conv2: conv2d_zero(&vs / "conv2", co, co, 3),
            attn: cfg.attention.then(|| {
                SelfAttention2d::new(
                    &vs / "attn",
                    SelfAttention2dConfig {
                        channels: co,
                        head_dim: 8,
                    },
                )
            }),
        }
    }

    pub(crate) fn params(cfg: ResBlockConfig) -> i64 {
        let (ci, co, cc) = (cfg.in_channels, cfg.out_channels, cfg.cond_channels);
        let proj = if ci != co { conv_params(ci, co, 1) } else { 0 };
        let attn = if cfg.attention {
            SelfAttention2d::params(SelfAttention2dConfig {
                channels: co,
                head_dim: 8,
            })
        } else {
            0
        };
        proj + AdaGroupNorm::params(AdaGroupNormConfig {
            channels: ci,
            cond_channels: cc,
        }) + conv_params(ci, co, 3)
            + AdaGroupNorm::params(AdaGroupNormConfig {
                channels: co,
                cond_channels: cc,
            })
            + conv_params(co, co, 3)
            + attn
    }

    /// `x: [B, in, H, W]`, `cond: [B, cond]` -> `[B, out, H, W]`.
    pub fn forward(&self, x: &Tensor, cond: &Tensor) -> Tensor {
        let r = match &self.proj {
            Some(p) => p.forward(x),
            None => x.shallow_clone(),
        };
        let h = self.conv1.forward(&self.norm1.forward(x, cond).silu());
        let h = self.conv2.forward(&self.norm2.forward(&h, cond).silu());
        let y = h + r;
        match &self.attn {
            Some(a) => a.forward(&y),
            None => y,
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// 3×3 stride-2 convolution (orthogonally initialised), halving H and W.
#[derive(Debug)]
pub struct Downsample {
    conv: nn::Conv2D,
}

impl Downsample {
    pub fn new(vs: nn::Path, channels: i64) -> Self {
        let b = torch_default(channels * 9);
        let mut conv = nn::conv2d(
            vs,
            channels,
            channels,
            3,
            nn::ConvConfig {
                padding: 1,
                stride: 2,
                ws_init: b,
                bs_init: b,
                ..Default::default()
            },
        );
        // orthogonal init of the [C, C·9] weight matrix (DIAMOND); tch's Init::Orthogonal returns the
        // flattened matrix, so reshape it here
        let q = nn::init::init(
            nn::Init::Orthogonal { gain: 1.0 },
            &[channels, channels * 9],
            conv.ws.device(),
        );
        tch::no_grad(|| conv.ws.copy_(&q.view([channels, channels, 3, 3])));
        Self { conv }
    }

    pub(crate) fn params(channels: i64) -> i64 {
        conv_params(channels, channels, 3)
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.conv.forward(x)
    }
}

/// Nearest-neighbour ×2 upsampling followed by a 3×3 convolution.
#[derive(Debug)]
pub struct Upsample {
    conv: nn::Conv2D,
}

impl Upsample {
    pub fn new(vs: nn::Path, channels: i64) -> Self {
        Self {
            conv: conv2d(vs, channels, channels, 3, 1),
        }
    }

    pub(crate) fn params(channels: i64) -> i64 {
        conv_params(channels, channels, 3)
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (_, _, h, w) = x.size4().expect("Upsample expects [B,C,H,W]");
        self.conv
            .forward(&x.upsample_nearest2d([2 * h, 2 * w], None, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn count(vs: &nn::VarStore) -> i64 {
        vs.trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum()
    }

    #[test]
    fn analytic_param_counts_match_the_built_blocks() {
        for &(ci, co, attn) in &[(32i64, 32i64, false), (32, 64, true), (96, 64, false)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let cfg = ResBlockConfig {
                in_channels: ci,
                out_channels: co,
                cond_channels: 48,
                attention: attn,
            };
            let _b = ResBlock::new(vs.root(), cfg);
            assert_eq!(count(&vs), ResBlock::params(cfg), "{cfg:?}");
        }
    }

    #[test]
    fn attention_matches_a_plain_softmax_computation() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let mut a = SelfAttention2d::new(
            vs.root(),
            SelfAttention2dConfig {
                channels: 16,
                head_dim: 8,
            },
        );
        // give the zero-initialised output projection some weights so the test sees the attention
        tch::no_grad(|| {
            a.out
                .ws
                .copy_(&Tensor::randn([16, 16, 1, 1], (Kind::Float, Device::Cpu)));
        });
        let x = Tensor::randn([2, 16, 4, 3], (Kind::Float, Device::Cpu));
        let y = a.forward(&x);
        // reference: explicit per-head softmax(q kᵀ/√d) v
        let qkv = a.qkv.forward(&a.norm.forward(&x)).view([2, 3, 2, 8, 12]);
        let q = qkv.select(1, 0).transpose(2, 3);
        let k = qkv.select(1, 1).transpose(2, 3);
        let v = qkv.select(1, 2).transpose(2, 3);
        let att = (q.matmul(&k.transpose(2, 3)) / 8f64.sqrt()).softmax(-1, Kind::Float);
        let r = att.matmul(&v).transpose(2, 3).reshape([2, 16, 4, 3]);
        let r = &x + a.out.forward(&r);
        assert!((y - r).abs().max().double_value(&[]) < 1e-5);
    }
}
