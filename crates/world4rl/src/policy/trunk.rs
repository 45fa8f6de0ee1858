//! The body the policy and PPO's critic share: an image encoder and/or the normalised
//! low-dimensional state, concatenated, then two ReLU layers. The heads on top differ.

use anyhow::{Context, Result};
use tch::nn;
use tch::Tensor;

use super::encoder::{ConvEncoder, EncoderConfig};

/// Encoder (optional) and two hidden layers, as `root/encoder`, `root/fc1` and `root/fc2`.
pub struct Trunk {
    encoder: Option<ConvEncoder>,
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl Trunk {
    /// A fresh trunk: an encoder of `channels` input channels when `encoder` is given, a state of
    /// `state_dim` values (0: none), `hidden` units per layer.
    pub fn new(
        root: &nn::Path,
        encoder: Option<(i64, &EncoderConfig)>,
        state_dim: i64,
        hidden: i64,
    ) -> Result<Self> {
        let encoder = encoder
            .map(|(channels, cfg)| ConvEncoder::new(root / "encoder", channels, cfg))
            .transpose()?;
        let in_dim = encoder.as_ref().map_or(0, |e| e.features()) + state_dim;
        let fc1 = nn::linear(root / "fc1", in_dim, hidden, Default::default());
        let fc2 = nn::linear(root / "fc2", hidden, hidden, Default::default());
        Ok(Self { encoder, fc1, fc2 })
    }

    /// Whether it reads frames.
    pub fn reads_frames(&self) -> bool {
        self.encoder.is_some()
    }

    /// Hidden features `[B, hidden]` of `frames` (`f32 [B, C, H, W]` in `[-1, 1]`, when it reads
    /// frames) and `state` (already normalised, when it reads the state).
    pub fn forward(&self, frames: Option<&Tensor>, state: Option<Tensor>) -> Result<Tensor> {
        let mut parts = Vec::with_capacity(2);
        if let Some(enc) = &self.encoder {
            parts.push(enc.forward(frames.context("the network reads frames but got none")?));
        }
        parts.extend(state);
        Ok(Tensor::cat(&parts, 1)
            .apply(&self.fc1)
            .relu()
            .apply(&self.fc2)
            .relu())
    }
}
