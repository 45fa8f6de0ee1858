//! What the world model trains on: batches of context windows (frames, actions, mask, target and the
//! frames after it), built from the dataset's window sampler, and the motion weights of the loss.

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use crate::util::frames::bytes_to_model;

/// A training or evaluation batch on the model's device.
#[derive(Debug)]
pub struct Batch {
    /// `[B, L, 3, H, W]` in [-1, 1], zero where masked.
    pub context: Tensor,
    /// Raw actions `[B, L, A]`.
    pub actions: Tensor,
    /// `[B, L]` bool, false = padding before the episode start.
    pub mask: Tensor,
    /// `[B, 3, H, W]` in [-1, 1].
    pub next: Tensor,
    /// The frames after the target, for training on the model's own predictions (`None` when the
    /// sampler carries none).
    pub after: Option<AfterTarget>,
}

/// The `N` steps after a window's target (see [`w4rl_data::WindowBatch::after`]).
#[derive(Debug)]
pub struct AfterTarget {
    /// `[B, N, 3, H, W]` in [-1, 1], zero past the episode end.
    pub frames: Tensor,
    /// Raw actions `[B, N, A]` leading to them (action `k` is taken at the frame before frame `k`).
    pub actions: Tensor,
    /// `[B, N]` bool, false past the episode end.
    pub mask: Tensor,
}

/// How a training step scores a batch beyond Eq. 7 (training only; validation uses the plain loss).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TrainLossOptions {
    /// Extra weight `λ` of the pixels where the last two context frames differ (dilated by
    /// `motion_radius`): pixel weight `1 + λ·moved`. The weights come from the context only, so the
    /// per-pixel optimum is still the conditional mean. 0 = uniform.
    pub motion_weight: f64,
    /// Dilation radius (pixels) of the motion mask.
    pub motion_radius: i64,
}

/// Per-pixel weights `[B, 1, H, W]`: `1 + λ` where the last two (real) context frames of
/// `context: [B, L, 3, H, W]` differ by more than one 8-bit level, dilated by `radius`, else 1.
pub fn motion_weights(context: &Tensor, mask: &Tensor, lambda: f64, radius: i64) -> Tensor {
    let l = context.size()[1];
    if l < 2 {
        return context.select(1, 0).narrow(1, 0, 1).ones_like();
    }
    let a = context.select(1, l - 1);
    let b = context.select(1, l - 2);
    let both = mask
        .select(1, l - 1)
        .logical_and(&mask.select(1, l - 2))
        .to_kind(Kind::Float)
        .view([-1, 1, 1, 1]);
    let moved = (a - b)
        .abs()
        .amax(&[1i64][..], true)
        .gt(1.5 / 127.5)
        .to_kind(Kind::Float)
        * both;
    let k = 2 * radius + 1;
    let moved = if radius > 0 {
        moved.max_pool2d([k, k], [1, 1], [radius, radius], [1, 1], false)
    } else {
        moved
    };
    moved * lambda + 1.0
}

impl Batch {
    /// Converts a window batch of the dataset sampler (u8 frames) to model tensors.
    pub fn from_windows(
        w: &w4rl_data::WindowBatch,
        image_size: usize,
        device: Device,
    ) -> Result<Self> {
        let (b, l, s, a) = (w.batch, w.context, w.image_size, w.action_dim);
        let ctx = bytes_to_model(&w.frames, b * l, s, image_size, device)?;
        let size = image_size as i64;
        let context = ctx.view([b as i64, l as i64, 3, size, size]);
        let next = bytes_to_model(&w.next, b, s, image_size, device)?;
        let actions = Tensor::from_slice(&w.actions)
            .view([b as i64, l as i64, a as i64])
            .to_device(device);
        let mask = Tensor::from_slice(&w.mask)
            .view([b as i64, l as i64])
            .to_device(device);
        let context = context
            * mask
                .to_kind(Kind::Float)
                .view([b as i64, l as i64, 1, 1, 1]);
        let n = w.rollout();
        let after = (n > 0)
            .then(|| -> Result<AfterTarget> {
                let mask = Tensor::from_slice(&w.after_mask)
                    .view([b as i64, n as i64])
                    .to_device(device);
                let frames = bytes_to_model(&w.after, b * n, s, image_size, device)?
                    .view([b as i64, n as i64, 3, size, size])
                    * mask
                        .to_kind(Kind::Float)
                        .view([b as i64, n as i64, 1, 1, 1]);
                let actions = Tensor::from_slice(&w.after_actions)
                    .view([b as i64, n as i64, a as i64])
                    .to_device(device);
                Ok(AfterTarget {
                    frames,
                    actions,
                    mask,
                })
            })
            .transpose()?;
        Ok(Self {
            context,
            actions,
            mask,
            next,
            after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn motion_weights_mark_the_moved_pixels_and_their_neighbourhood() {
        let opts = (Kind::Float, Device::Cpu);
        let ctx = Tensor::zeros([2, 4, 3, 8, 8], opts);
        // sample 0: one pixel changes between the last two frames; sample 1: same, but padded
        for b in 0..2 {
            let _ = ctx.get(b).get(3).get(1).get(4).get(5).fill_(0.5);
        }
        let mask =
            Tensor::from_slice(&[true, true, true, true, false, false, false, true]).view([2, 4]);
        let w = motion_weights(&ctx, &mask, 3.0, 1);
        assert_eq!(w.size(), vec![2, 1, 8, 8]);
        let at = |b: i64, r: i64, c: i64| w.double_value(&[b, 0, r, c]);
        // the moved pixel and its 3x3 neighbourhood weigh 1 + λ, the rest 1
        for (r, c) in [(4, 5), (3, 4), (5, 6), (3, 6)] {
            assert_eq!(at(0, r, c), 4.0);
        }
        for (r, c) in [(2, 5), (4, 7), (0, 0)] {
            assert_eq!(at(0, r, c), 1.0);
        }
        // a context whose second-to-last frame is padding has no motion to see
        assert_eq!(w.get(1).sum(Kind::Float).double_value(&[]), 64.0);
        // less than one 8-bit level is not motion
        let tiny = Tensor::zeros([1, 4, 3, 8, 8], opts);
        let _ = tiny.get(0).get(3).fill_(0.5 / 127.5);
        let all = Tensor::ones([1, 4], (Kind::Bool, Device::Cpu));
        assert_eq!(
            motion_weights(&tiny, &all, 3.0, 1)
                .sum(Kind::Float)
                .double_value(&[]),
            64.0
        );
    }
}
