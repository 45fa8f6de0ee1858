//! The frame-stacking U-Net `F_θ` of the EDM denoiser (World4RL Eq. 4/6; DIAMOND
//! `src/models/diffusion/inner_model.py` and `src/models/blocks.py`).
//!
//! [`UNet`] is the plain encoder/decoder: per level a [`Downsample`] (identity at level 0) and
//! `depth` [`ResBlock`]s; a middle of two residual blocks with attention; per level on the way up an
//! [`Upsample`] (identity at the deepest level) and `depth + 1` residual blocks, each fed the
//! concatenation of the current activation and one skip activation (the last one is the level's
//! input), in reverse order.
//!
//! [`InnerModel`] wraps it: the `L` context frames (already scaled by `1/σ_data`) and the noisy next
//! frame (scaled by `c_in`) are stacked along channels into `conv_in`; the conditioning vector is
//! `MLP(Fourier(c_noise) [+ Fourier(c_noise_cond)] + ActionEmbedding(actions))`, and it reaches every
//! residual block through adaptive GroupNorm. The action embedding is a bias-free linear map of
//! each step's encoded action to `cond/L` values, flattened over the `L` steps (DIAMOND's CS:GO
//! branch embeds multi-hot actions the same way; World4RL feeds two-hot vectors, Eq. 5).

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::blocks::{
    conv2d, conv2d_zero, conv_params, linear, linear_params, num_groups, Downsample,
    FourierFeatures, FourierFeaturesConfig, ResBlock, ResBlockConfig, Upsample, GN_EPS,
};

/// Configuration of the U-Net body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UNetConfig {
    /// Channels per level (DIAMOND Atari: [64,64,64,64]; CS:GO / World4RL: [128,256,512,1024]).
    pub channels: Vec<i64>,
    /// Residual blocks per level on the way down (the way up has one more).
    pub depths: Vec<usize>,
    /// Self-attention after every residual block of a level.
    pub attention: Vec<bool>,
    /// Width of the conditioning vector (DIAMOND Atari: 256; CS:GO: 2048).
    pub cond_channels: i64,
}

impl Default for UNetConfig {
    fn default() -> Self {
        Self {
            channels: vec![32, 32, 64, 64],
            depths: vec![1, 1, 1, 1],
            attention: vec![false; 4],
            cond_channels: 256,
        }
    }
}

impl UNetConfig {
    /// Checks lengths and widths.
    pub fn validate(&self) -> Result<()> {
        let n = self.channels.len();
        ensure!(n >= 1, "unet: channels must not be empty");
        ensure!(
            self.depths.len() == n && self.attention.len() == n,
            "unet: channels, depths and attention must have the same length (got {}, {}, {})",
            n,
            self.depths.len(),
            self.attention.len()
        );
        ensure!(
            self.channels.iter().all(|&c| c > 0),
            "unet: channels must be positive"
        );
        ensure!(
            self.depths.iter().all(|&d| d > 0),
            "unet: depths must be positive"
        );
        ensure!(
            self.cond_channels > 0 && self.cond_channels % 2 == 0,
            "unet: cond_channels must be positive and even"
        );
        Ok(())
    }

    /// Spatial size the input must be a multiple of: `2^(levels-1)`.
    pub fn size_multiple(&self) -> i64 {
        1 << (self.channels.len() - 1)
    }

    fn level_blocks(&self) -> Vec<(Vec<ResBlockConfig>, Vec<ResBlockConfig>)> {
        let cc = self.cond_channels;
        (0..self.channels.len())
            .map(|i| {
                let c1 = self.channels[i.saturating_sub(1)];
                let c2 = self.channels[i];
                let attn = self.attention[i];
                let n = self.depths[i];
                let down = (0..n)
                    .map(|j| ResBlockConfig {
                        in_channels: if j == 0 { c1 } else { c2 },
                        out_channels: c2,
                        cond_channels: cc,
                        attention: attn,
                    })
                    .collect();
                let up = (0..=n)
                    .map(|j| {
                        let (ci, co) = if j < n { (2 * c2, c2) } else { (c1 + c2, c1) };
                        ResBlockConfig {
                            in_channels: ci,
                            out_channels: co,
                            cond_channels: cc,
                            attention: attn,
                        }
                    })
                    .collect();
                (down, up)
            })
            .collect()
    }

    fn mid_block(&self) -> ResBlockConfig {
        let c = *self.channels.last().unwrap();
        ResBlockConfig {
            in_channels: c,
            out_channels: c,
            cond_channels: self.cond_channels,
            attention: true,
        }
    }

    /// Trainable parameters of the U-Net body, counted in closed form (no allocation).
    pub fn param_count(&self) -> i64 {
        let mut p = 0;
        for (i, (down, up)) in self.level_blocks().into_iter().enumerate() {
            if i > 0 {
                p += Downsample::params(self.channels[i - 1])
                    + Upsample::params(self.channels[i - 1]);
            }
            p += down
                .into_iter()
                .chain(up)
                .map(ResBlock::params)
                .sum::<i64>();
        }
        p + 2 * ResBlock::params(self.mid_block())
    }
}

/// The U-Net body (see the module docs).
#[derive(Debug)]
pub struct UNet {
    downsamples: Vec<Option<Downsample>>,
    down: Vec<Vec<ResBlock>>,
    mid: Vec<ResBlock>,
    upsamples: Vec<Option<Upsample>>,
    up: Vec<Vec<ResBlock>>,
    multiple: i64,
}

impl UNet {
    pub fn new(vs: nn::Path, cfg: &UNetConfig) -> Self {
        let mut downsamples = vec![];
        let mut down = vec![];
        let mut upsamples = vec![];
        let mut up = vec![];
        for (i, (dcfg, ucfg)) in cfg.level_blocks().into_iter().enumerate() {
            let p = &vs / format!("level{i}");
            downsamples
                .push((i > 0).then(|| Downsample::new(&p / "downsample", cfg.channels[i - 1])));
            upsamples.push((i > 0).then(|| Upsample::new(&p / "upsample", cfg.channels[i - 1])));
            down.push(
                dcfg.into_iter()
                    .enumerate()
                    .map(|(j, c)| ResBlock::new(&p / format!("down{j}"), c))
                    .collect(),
            );
            up.push(
                ucfg.into_iter()
                    .enumerate()
                    .map(|(j, c)| ResBlock::new(&p / format!("up{j}"), c))
                    .collect(),
            );
        }
        let m = cfg.mid_block();
        let mid = vec![
            ResBlock::new(&vs / "mid0", m),
            ResBlock::new(&vs / "mid1", m),
        ];
        Self {
            downsamples,
            down,
            mid,
            upsamples,
            up,
            multiple: cfg.size_multiple(),
        }
    }

    /// `x: [B, channels[0], H, W]` (H, W multiples of `2^(levels-1)`), `cond: [B, cond]`.
    pub fn forward(&self, x: &Tensor, cond: &Tensor) -> Tensor {
        let mut x = x.shallow_clone();
        let mut skips: Vec<Vec<Tensor>> = Vec::with_capacity(self.down.len());
        for (ds, blocks) in self.downsamples.iter().zip(&self.down) {
            if let Some(d) = ds {
                x = d.forward(&x);
            }
            let mut s = vec![x.shallow_clone()];
            for b in blocks {
                x = b.forward(&x, cond);
                s.push(x.shallow_clone());
            }
            skips.push(s);
        }
        for b in &self.mid {
            x = b.forward(&x, cond);
        }
        for i in (0..self.up.len()).rev() {
            if let Some(u) = &self.upsamples_for_up(i) {
                x = u.forward(&x);
            }
            let s = &skips[i];
            for (j, b) in self.up[i].iter().enumerate() {
                let skip = &s[s.len() - 1 - j];
                x = b.forward(&Tensor::cat(&[&x, skip], 1), cond);
            }
        }
        x
    }

    /// On the way up, level `i`'s output is upsampled before entering level `i-1`; equivalently the
    /// upsample of level `i+1` runs at the start of level `i`.
    fn upsamples_for_up(&self, i: usize) -> Option<&Upsample> {
        self.upsamples.get(i + 1).and_then(|u| u.as_ref())
    }

    /// Spatial multiple required by the input.
    pub fn size_multiple(&self) -> i64 {
        self.multiple
    }
}

// ---------------------------------------------------------------------------------------------

/// How each step's encoded action becomes its `cond/L` conditioning values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionEmbedding {
    /// A bias-free linear map with PyTorch's default (uniform ±1/√fan_in) initialisation, weight-decayed
    /// like every other weight. With a two-hot input its outputs start about 7x smaller than the
    /// Fourier features of the noise level they are added to.
    #[default]
    Linear,
    /// DIAMOND's `nn.Embedding` (`inner_model.py`): the same map with N(0, 1) initialisation, so a
    /// two-hot (or one-hot) action starts as a unit-scale vector, and exempt from weight decay.
    Embedding,
}

/// Configuration of [`InnerModel`] (the raw network `F_θ`).
#[derive(Debug, Clone, PartialEq)]
pub struct InnerModelConfig {
    /// Channels of one frame (3).
    pub image_channels: i64,
    /// Context frames `L` (World4RL: 4).
    pub context: usize,
    /// Width of one encoded action step (e.g. `A·K` for two-hot).
    pub action_encoded_dim: i64,
    /// Add a Fourier embedding of the context-frame noise level (needed when the context frames are
    /// noise-augmented during training, DIAMOND CS:GO).
    pub context_noise_embedding: bool,
    /// Initialisation of the action embedding.
    pub action_embedding: ActionEmbedding,
    pub unet: UNetConfig,
}

impl Default for InnerModelConfig {
    fn default() -> Self {
        Self {
            image_channels: 3,
            context: 4,
            action_encoded_dim: 2 * 21,
            context_noise_embedding: false,
            action_embedding: ActionEmbedding::Linear,
            unet: UNetConfig::default(),
        }
    }
}

impl InnerModelConfig {
    pub fn validate(&self) -> Result<()> {
        self.unet.validate()?;
        ensure!(self.context >= 1, "inner model: context must be at least 1");
        ensure!(
            self.action_encoded_dim >= 1,
            "inner model: action_encoded_dim must be positive"
        );
        ensure!(
            self.unet.cond_channels % self.context as i64 == 0,
            "inner model: cond_channels ({}) must be divisible by the context length ({})",
            self.unet.cond_channels,
            self.context
        );
        Ok(())
    }

    /// Trainable parameters, in closed form (checked against the built model in tests).
    pub fn param_count(&self) -> i64 {
        let cc = self.unet.cond_channels;
        let c0 = self.unet.channels[0];
        let l = self.context as i64;
        linear_params(self.action_encoded_dim, cc / l, false)
            + linear_params(cc, cc, true) * 2
            + conv_params((l + 1) * self.image_channels, c0, 3)
            + self.unet.param_count()
            + 2 * c0
            + conv_params(c0, self.image_channels, 3)
    }
}

/// `F_θ`: conditioning MLP, `conv_in`, the U-Net, GroupNorm → SiLU → `conv_out` (zero-initialised).
#[derive(Debug)]
pub struct InnerModel {
    cfg: InnerModelConfig,
    noise_emb: FourierFeatures,
    noise_cond_emb: Option<FourierFeatures>,
    act_emb: nn::Linear,
    cond_proj1: nn::Linear,
    cond_proj2: nn::Linear,
    conv_in: nn::Conv2D,
    unet: UNet,
    norm_out: nn::GroupNorm,
    conv_out: nn::Conv2D,
    /// Run the f32 U-Net on channels-last (NHWC-strided) activations; see
    /// [`set_channels_last`](Self::set_channels_last).
    channels_last: bool,
}

impl InnerModel {
    pub fn new(vs: nn::Path, cfg: &InnerModelConfig) -> Result<Self> {
        cfg.validate()?;
        let cc = cfg.unet.cond_channels;
        let l = cfg.context as i64;
        let c0 = cfg.unet.channels[0];
        let ic = cfg.image_channels;
        Ok(Self {
            cfg: cfg.clone(),
            noise_emb: FourierFeatures::new(
                &vs / "noise_emb",
                FourierFeaturesConfig { channels: cc },
            ),
            noise_cond_emb: cfg.context_noise_embedding.then(|| {
                FourierFeatures::new(
                    &vs / "noise_cond_emb",
                    FourierFeaturesConfig { channels: cc },
                )
            }),
            act_emb: match cfg.action_embedding {
                ActionEmbedding::Linear => {
                    linear(&vs / "act_emb", cfg.action_encoded_dim, cc / l, false)
                }
                ActionEmbedding::Embedding => nn::linear(
                    &vs / "act_emb",
                    cfg.action_encoded_dim,
                    cc / l,
                    nn::LinearConfig {
                        ws_init: nn::Init::Randn {
                            mean: 0.0,
                            stdev: 1.0,
                        },
                        bs_init: None,
                        bias: false,
                    },
                ),
            },
            cond_proj1: linear(&vs / "cond_proj1", cc, cc, true),
            cond_proj2: linear(&vs / "cond_proj2", cc, cc, true),
            conv_in: conv2d(&vs / "conv_in", (l + 1) * ic, c0, 3, 1),
            unet: UNet::new(&vs / "unet", &cfg.unet),
            norm_out: nn::group_norm(
                &vs / "norm_out",
                num_groups(c0),
                c0,
                nn::GroupNormConfig {
                    eps: GN_EPS,
                    ..Default::default()
                },
            ),
            conv_out: conv2d_zero(&vs / "conv_out", c0, ic, 3),
            channels_last: false,
        })
    }

    pub fn config(&self) -> &InnerModelConfig {
        &self.cfg
    }

    /// Runs the f32 U-Net on channels-last (NHWC-strided) activations instead of the standard
    /// layout. The same math in another summation order: outputs differ by float rounding only.
    /// oneDNN's convolutions are faster on that layout on AVX-512 CPUs (imagination step 1.18-1.36x
    /// over three sittings, `examples/wm_bench --channels-last`). bf16 weights always use it;
    /// training leaves it off.
    pub fn set_channels_last(&mut self, on: bool) {
        self.channels_last = on;
    }

    /// Whether the f32 U-Net runs on channels-last activations.
    pub fn channels_last(&self) -> bool {
        self.channels_last
    }

    /// * `noisy_next: [B, C, H, W]` — the noisy next frame, already multiplied by `c_in`;
    /// * `c_noise: [B]`; `c_noise_cond: [B]` (only used with the context-noise embedding);
    /// * `context: [B, L·C, H, W]` — context frames already divided by `σ_data`;
    /// * `actions: [B, L, E]` — encoded actions (zeros for padded steps).
    ///
    /// Returns `[B, C, H, W]`. H and W are zero-padded to the U-Net's multiple and cropped back.
    pub fn forward(
        &self,
        noisy_next: &Tensor,
        c_noise: &Tensor,
        c_noise_cond: Option<&Tensor>,
        context: &Tensor,
        actions: &Tensor,
    ) -> Tensor {
        // weights converted to a reduced precision (bf16 inference, see `WorldModel::set_precision`):
        // the inputs follow them, the output returns to the caller's kind
        let kind = self.conv_in.ws.kind();
        if noisy_next.kind() != kind {
            let cond = c_noise_cond.map(|t| t.to_kind(kind));
            return self
                .forward(
                    &noisy_next.to_kind(kind),
                    &c_noise.to_kind(kind),
                    cond.as_ref(),
                    &context.to_kind(kind),
                    &actions.to_kind(kind),
                )
                .to_kind(noisy_next.kind());
        }
        let mut emb =
            self.noise_emb.forward(c_noise) + self.act_emb.forward(actions).flatten(1, -1);
        if let Some(e) = &self.noise_cond_emb {
            let zeros;
            let c = match c_noise_cond {
                Some(c) => c,
                None => {
                    zeros = c_noise.zeros_like();
                    &zeros
                }
            };
            emb += e.forward(c);
        }
        let cond = self
            .cond_proj2
            .forward(&self.cond_proj1.forward(&emb).silu());
        let x = Tensor::cat(&[context, noisy_next], 1);
        let (_, _, h, w) = x.size4().expect("InnerModel expects 4-D frames");
        let m = self.unet.size_multiple();
        let (ph, pw) = ((m - h % m) % m, (m - w % m) % m);
        let x = if ph > 0 || pw > 0 {
            x.constant_pad_nd([0, pw, 0, ph])
        } else {
            x
        };
        // oneDNN's bf16 convolutions are fastest on channels-last (NHWC-strided) activations; the
        // layout then propagates through the U-Net (imagination step 247 -> 205 ms, examples/wm_bench).
        // In f32 it is a setting: faster too, but not bit-identical to the standard layout.
        let x = if kind == Kind::Float && !self.channels_last {
            x
        } else {
            x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
        };
        let x = self.conv_in.forward(&x);
        let x = self.unet.forward(&x, &cond);
        let x = self.conv_out.forward(&self.norm_out.forward(&x).silu());
        if ph > 0 || pw > 0 {
            x.narrow(2, 0, h).narrow(3, 0, w)
        } else {
            x
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn count(vs: &nn::VarStore) -> i64 {
        vs.trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum()
    }

    #[test]
    fn analytic_count_matches_built_model() {
        for unet in [
            UNetConfig {
                channels: vec![16, 32],
                depths: vec![1, 2],
                attention: vec![false, true],
                cond_channels: 32,
            },
            UNetConfig {
                channels: vec![32, 32, 64, 64],
                depths: vec![2, 2, 2, 2],
                attention: vec![false, false, true, true],
                cond_channels: 64,
            },
        ] {
            let cfg = InnerModelConfig {
                action_encoded_dim: 42,
                context_noise_embedding: true,
                unet,
                ..Default::default()
            };
            let vs = nn::VarStore::new(Device::Cpu);
            let _m = InnerModel::new(vs.root(), &cfg).unwrap();
            assert_eq!(count(&vs), cfg.param_count());
        }
    }

    #[test]
    fn diamond_csgo_config_has_the_papers_size() {
        // World4RL reports 330 M parameters; DIAMOND's CS:GO denoiser config gives 330.5 M.
        let unet = UNetConfig {
            channels: vec![128, 256, 512, 1024],
            depths: vec![2, 2, 2, 2],
            attention: vec![false, false, true, true],
            cond_channels: 2048,
        };
        let cfg = InnerModelConfig {
            action_encoded_dim: 4 * 21,
            unet,
            ..Default::default()
        };
        let p = cfg.param_count() as f64 / 1e6;
        assert!((329.0..332.0).contains(&p), "{p} M");
    }

    #[test]
    fn forward_shapes_with_padding_and_zero_output_at_init() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = InnerModelConfig {
            unet: UNetConfig {
                channels: vec![8, 16, 16],
                depths: vec![1, 1, 1],
                attention: vec![false, false, true],
                cond_channels: 16,
            },
            ..Default::default()
        };
        let m = InnerModel::new(vs.root(), &cfg).unwrap();
        let b = 2;
        let opts = (Kind::Float, Device::Cpu);
        let y = m.forward(
            &Tensor::randn([b, 3, 10, 14], opts),
            &Tensor::randn([b], opts),
            None,
            &Tensor::randn([b, 12, 10, 14], opts),
            &Tensor::randn([b, 4, 42], opts),
        );
        assert_eq!(y.size(), vec![b, 3, 10, 14]);
        // conv_out is zero-initialised, as in DIAMOND
        assert_eq!(y.abs().max().double_value(&[]), 0.0);
    }
}
