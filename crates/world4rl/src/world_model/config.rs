//! The world model's settings: architecture, noise and sampler (`[world_model.model]`), the presets
//! `tiny`, `cpu` and `paper`, and the number format of its network evaluations.

use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};

use crate::diffusion::{DenoiserConfig, SamplerConfig};
use crate::models::{ActionEmbedding, InnerModelConfig, UNetConfig};
use crate::world_model::action_encoding::{ActionEncoder, ActionEncodingConfig, EncodingKind};

/// Architecture, noise and sampler settings of the world model (`[world_model.model]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorldModelConfig {
    /// Side of the (square) frames the model works at; dataset frames are resized to it (area
    /// averaging when shrinking).
    pub image_size: usize,
    /// Context frames L (the paper's T = 4).
    pub context: usize,
    /// Action encoding (two-hot K = 21 by default).
    pub action_encoding: ActionEncodingConfig,
    /// How the encoded actions enter the conditioning vector (`linear` or DIAMOND's `embedding`).
    /// `embedding` is an ablation: it did not change action use or the outcome AUC
    /// (`docs/world_model.md`, History).
    pub action_embedding: ActionEmbedding,
    /// U-Net widths, depths, attention, conditioning width.
    pub unet: UNetConfig,
    /// EDM preconditioning and training noise.
    pub denoiser: DenoiserConfig,
    /// Sampler used for imagination.
    pub sampler: SamplerConfig,
}

impl Default for WorldModelConfig {
    fn default() -> Self {
        Self::cpu()
    }
}

impl WorldModelConfig {
    /// Tests and CI smoke runs: 16×16 frames, 0.33 M parameters, seconds per hundred steps.
    pub fn tiny() -> Self {
        Self {
            image_size: 16,
            context: 4,
            action_encoding: ActionEncodingConfig::default(),
            action_embedding: ActionEmbedding::Linear,
            unet: UNetConfig {
                channels: vec![16, 32, 32],
                depths: vec![1, 1, 1],
                attention: vec![false, false, false],
                cond_channels: 64,
            },
            denoiser: DenoiserConfig::default(),
            sampler: SamplerConfig::default(),
        }
    }

    /// The README demo on a 2-core CPU (see `docs/world_model.md` for the measurements behind it):
    /// 32×32 frames (a train step costs ~1/4 of 64×64, bake-off scale probe; the tabletop scenes stay
    /// legible), channels [32,32,64,64] with one residual block per level and attention only at the
    /// 4×4 level (2.0 M parameters), and 2 Euler steps (on short training budgets 2 steps gave a
    /// higher open-loop PSNR than 3, and imagination costs a third less).
    pub fn cpu() -> Self {
        Self {
            image_size: 32,
            context: 4,
            action_encoding: ActionEncodingConfig::default(),
            action_embedding: ActionEmbedding::Linear,
            unet: UNetConfig {
                channels: vec![32, 32, 64, 64],
                depths: vec![1, 1, 1, 1],
                attention: vec![false, false, false, true],
                cond_channels: 256,
            },
            denoiser: DenoiserConfig::default(),
            sampler: SamplerConfig {
                steps: 2,
                ..Default::default()
            },
        }
    }

    /// The paper's size (~330 M parameters): DIAMOND's CS:GO denoiser (channels
    /// [128,256,512,1024], depths 2, attention at the two deepest levels, cond 2048) with its noise
    /// settings (ln σ ~ N(−1.2, 1.2²), offset noise 0.1, context-noise augmentation, s_cond 0.005),
    /// 64×64 frames, 3 Euler steps. Meant for a GPU.
    pub fn paper() -> Self {
        Self {
            image_size: 64,
            context: 4,
            action_encoding: ActionEncodingConfig::default(),
            action_embedding: ActionEmbedding::Linear,
            unet: UNetConfig {
                channels: vec![128, 256, 512, 1024],
                depths: vec![2, 2, 2, 2],
                attention: vec![false, false, true, true],
                cond_channels: 2048,
            },
            denoiser: DenoiserConfig {
                sigma_loc: -1.2,
                sigma_offset_noise: 0.1,
                context_noise: true,
                ..Default::default()
            },
            sampler: SamplerConfig {
                s_cond: 0.005,
                ..Default::default()
            },
        }
    }

    /// A preset by name: `tiny`, `cpu` or `paper`.
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "tiny" => Ok(Self::tiny()),
            "cpu" => Ok(Self::cpu()),
            "paper" => Ok(Self::paper()),
            other => bail!("unknown world-model preset '{other}' (expected tiny, cpu or paper)"),
        }
    }

    /// Checks every part.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.image_size >= 4,
            "world_model.model.image_size must be at least 4"
        );
        ensure!(
            self.context >= 1,
            "world_model.model.context must be at least 1"
        );
        self.unet.validate()?;
        self.denoiser.validate()?;
        self.sampler.validate()?;
        ActionEncoder::new(self.action_encoding.clone(), 1)?;
        Ok(())
    }

    /// The inner-model configuration for actions of dimension `action_dim`.
    pub fn inner_model(&self, action_dim: usize) -> Result<InnerModelConfig> {
        let enc = ActionEncoder::new(self.action_encoding.clone(), action_dim)?;
        let cfg = InnerModelConfig {
            image_channels: 3,
            context: self.context,
            action_encoded_dim: enc.encoded_dim() as i64,
            context_noise_embedding: self.denoiser.context_noise,
            action_embedding: self.action_embedding,
            unet: self.unet.clone(),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Trainable parameters for actions of dimension `action_dim`, in closed form (nothing is
    /// allocated, so this is cheap for the paper preset).
    pub fn param_count(&self, action_dim: usize) -> Result<i64> {
        Ok(self.inner_model(action_dim)?.param_count())
    }

    /// A rough training-memory estimate in bytes for `batch` (f32): weights, gradients, EMA copy and
    /// two AdamW moments (5 × 4 bytes per parameter) plus activations kept for the backward pass,
    /// counted as ~8 tensors of the block's output size per residual block (plus attention maps).
    pub fn memory_estimate(&self, action_dim: usize, batch: usize) -> Result<MemoryEstimate> {
        let params = self.param_count(action_dim)? as f64;
        let state = params * 4.0 * 5.0;
        let u = &self.unet;
        let mut act = 0f64;
        let mut side =
            self.image_size.div_ceil(u.size_multiple() as usize) * u.size_multiple() as usize;
        for (i, &c) in u.channels.iter().enumerate() {
            let hw = (side * side) as f64;
            // down blocks + up blocks (depth + 1), each ~8 saved activations of c·hw
            let blocks = (2 * u.depths[i] + 1) as f64;
            act += blocks * 8.0 * c as f64 * hw;
            if u.attention[i] {
                let heads = (c / 8).max(1) as f64;
                act += blocks * heads * hw * hw * 2.0;
            }
            if i + 1 < u.channels.len() {
                side /= 2;
            }
        }
        let c_last = *u.channels.last().unwrap() as f64;
        let hw = (side * side) as f64;
        act += 2.0 * (8.0 * c_last * hw + (c_last / 8.0).max(1.0) * hw * hw * 2.0);
        let activations = act * batch as f64 * 4.0;
        Ok(MemoryEstimate {
            params: params as i64,
            state_bytes: state,
            activation_bytes: activations,
        })
    }
}

/// Output of [`WorldModelConfig::memory_estimate`].
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MemoryEstimate {
    pub params: i64,
    /// Weights + gradients + EMA + AdamW moments.
    pub state_bytes: f64,
    /// Activations saved for the backward pass of one batch (rough).
    pub activation_bytes: f64,
}

/// Number format of the world model's network evaluations: at imagination time
/// (`refine.world_model_precision`, `eval world-model --precision`) the weights themselves are cast;
/// in training (`world_model.precision`) the passes run on a cast working copy of f32 weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats, as trained (default).
    #[default]
    F32,
    /// bfloat16 weights and activations for the U-Net (the EDM preconditioning and the sampler stay
    /// `f32`). On CPUs with AVX-512 BF16/AMX it makes an imagination step about 1.6x faster (cpu
    /// preset, batch 64, 2 cores: 334 -> 205 ms); on older CPUs it is emulated and slower.
    Bf16,
    /// `bf16` where the CPU computes bfloat16 natively (AVX-512 BF16 or AMX-BF16 in
    /// `/proc/cpuinfo`), `f32` elsewhere: chosen by the machine at run time ([`Precision::resolved`]),
    /// and the choice recorded (the world-model stage's `precision`), since the two round differently.
    Auto,
}

impl Precision {
    /// The format used on this machine: `auto` resolved by the CPU's flags, the others as they are.
    pub fn resolved(self) -> Precision {
        match self {
            Self::Auto => {
                if crate::util::device::cpu_has_native_bf16() == Some(true) {
                    Self::Bf16
                } else {
                    Self::F32
                }
            }
            other => other,
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::Auto => "auto",
        })
    }
}

impl std::str::FromStr for Precision {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            "auto" => Ok(Self::Auto),
            other => bail!("precision '{other}' is unknown; use f32, bf16 or auto"),
        }
    }
}

/// Name of an encoding for reports.
pub fn encoding_name(kind: EncodingKind) -> &'static str {
    match kind {
        EncodingKind::TwoHot => "two-hot",
        EncodingKind::OneHot => "one-hot",
        EncodingKind::Linear => "linear",
    }
}
