//! A small, fast convolutional image encoder shared by the policy, the critic and the reward classifier.
//!
//! `[N, 3, H, W]` in `[-1, 1]` → 3x3 convolutions (stride 2 by default) with ReLU → either
//! * adaptive average pooling to `pool x pool` (any frame size works; `pool = 1` is global pooling) →
//!   flatten, or
//! * a **spatial softmax** (Levine et al. 2016, robomimic's image encoder): every channel becomes the
//!   expected (x, y) position of its activation, giving precise object coordinates from small maps —
//!
//! then linear → ReLU. At 32x32 with the default widths it costs a few million multiply-adds per frame,
//! which keeps PPO's updates cheap next to the world model's imagination on a CPU.

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::Tensor;

/// Configuration of [`ConvEncoder`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncoderConfig {
    /// Output channels of the 3x3 convolutions, one layer each (default `[32, 64, 64]`).
    pub channels: Vec<i64>,
    /// Stride of each convolution (empty, the default: 2 for every layer).
    pub strides: Vec<i64>,
    /// Spatial-softmax keypoints instead of average pooling (default false).
    pub spatial_softmax: bool,
    /// Side of the feature map after adaptive average pooling (default 4).
    pub pool: i64,
    /// Width of the output feature vector (default 256).
    pub features: i64,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        Self {
            channels: vec![32, 64, 64],
            strides: Vec::new(),
            spatial_softmax: false,
            pool: 4,
            features: 256,
        }
    }
}

impl EncoderConfig {
    /// The stride of convolution `i` (2 when `strides` is empty).
    pub fn stride(&self, i: usize) -> i64 {
        self.strides.get(i).copied().unwrap_or(2)
    }

    /// Checks value ranges.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            !self.channels.is_empty() && self.channels.iter().all(|&c| c > 0),
            "encoder.channels must list at least one positive width (got {:?})",
            self.channels
        );
        ensure!(
            self.strides.is_empty() || (self.strides.len() == self.channels.len() && self.strides.iter().all(|&s| s > 0)),
            "encoder.strides must be empty or list one positive stride per layer of encoder.channels (got {:?})",
            self.strides
        );
        ensure!(
            self.pool > 0,
            "encoder.pool must be positive (got {})",
            self.pool
        );
        ensure!(
            self.features > 0,
            "encoder.features must be positive (got {})",
            self.features
        );
        Ok(())
    }
}

/// The encoder (see the module docs).
#[derive(Debug)]
pub struct ConvEncoder {
    convs: Vec<nn::Conv2D>,
    fc: nn::Linear,
    pool: i64,
    spatial_softmax: bool,
    features: i64,
}

impl ConvEncoder {
    /// Builds the encoder under `vs` for `in_channels` input channels.
    pub fn new(vs: nn::Path, in_channels: i64, cfg: &EncoderConfig) -> Result<Self> {
        cfg.validate()?;
        let mut convs = Vec::with_capacity(cfg.channels.len());
        let mut c_in = in_channels;
        for (i, &c) in cfg.channels.iter().enumerate() {
            let conv_cfg = nn::ConvConfig {
                stride: cfg.stride(i),
                padding: 1,
                ..Default::default()
            };
            convs.push(nn::conv2d(&vs / format!("conv{i}"), c_in, c, 3, conv_cfg));
            c_in = c;
        }
        let flat = if cfg.spatial_softmax {
            2 * c_in
        } else {
            c_in * cfg.pool * cfg.pool
        };
        let fc = nn::linear(&vs / "fc", flat, cfg.features, Default::default());
        Ok(Self {
            convs,
            fc,
            pool: cfg.pool,
            spatial_softmax: cfg.spatial_softmax,
            features: cfg.features,
        })
    }

    /// Width of the output.
    pub fn features(&self) -> i64 {
        self.features
    }

    /// `[N, C, H, W]` floats → `[N, features]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = x.shallow_clone();
        for c in &self.convs {
            h = c.forward(&h).relu();
        }
        let flat = if self.spatial_softmax {
            spatial_softmax(&h)
        } else {
            h.adaptive_avg_pool2d([self.pool, self.pool]).flatten(1, -1)
        };
        flat.apply(&self.fc).relu()
    }
}

/// Expected (x, y) in `[-1, 1]` of the softmax over positions of every channel: `[N, C, H, W]` →
/// `[N, 2C]` (x of every channel, then y).
pub fn spatial_softmax(h: &Tensor) -> Tensor {
    let (n, c, hh, ww) = (h.size()[0], h.size()[1], h.size()[2], h.size()[3]);
    let dev = h.device();
    let p = h
        .view([n, c, hh * ww])
        .softmax(-1, tch::Kind::Float)
        .view([n, c, hh, ww]);
    let xs = Tensor::linspace(-1.0, 1.0, ww, (tch::Kind::Float, dev)).view([1, 1, 1, ww]);
    let ys = Tensor::linspace(-1.0, 1.0, hh, (tch::Kind::Float, dev)).view([1, 1, hh, 1]);
    let ex = (&p * xs).sum_dim_intlist([2i64, 3].as_slice(), false, tch::Kind::Float);
    let ey = (&p * ys).sum_dim_intlist([2i64, 3].as_slice(), false, tch::Kind::Float);
    Tensor::cat(&[ex, ey], 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spatial_softmax_finds_a_peak() {
        let mut v = vec![0f32; 25];
        v[5 + 4] = 50.0; // row 1, column 4
        let h = Tensor::from_slice(&v).view([1, 1, 5, 5]);
        let k = Vec::<f32>::try_from(spatial_softmax(&h).flatten(0, -1)).unwrap();
        assert!(
            (k[0] - 1.0).abs() < 1e-3 && (k[1] + 0.5).abs() < 1e-3,
            "{k:?}"
        );
    }
}
