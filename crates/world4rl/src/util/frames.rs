//! Frame layouts and the conversions between them, in one place. Three layouts occur:
//!
//! * **bytes** `u8 [N, H, W, 3]`, row-major: environment observations, dataset episodes, GIFs;
//! * **chw** `u8 [N, 3, h, w]`: what the policy side (classifier, BC policy, critic) stores and reads;
//! * **model** `f32 [.., 3, H, W]` in `[-1, 1]`: what the world model reads and predicts.
//!
//! Real frames larger than a network's input are reduced by **area averaging** (an exact box filter
//! for integer factors) and re-quantised to 8 bits, as a world-model frame is; 8-bit frames are a
//! fixed point of the conversion to the model's range and back.

use anyhow::{ensure, Result};
use tch::{Device, Kind, Tensor};

/// `n` RGB frames of `size x size` pixels (`u8 [n, size, size, 3]`) as a `u8 [n, 3, out, out]` tensor on
/// `device`, resized to `out` pixels when `out != size`.
pub fn bytes_to_chw(
    frames: &[u8],
    n: usize,
    size: usize,
    out: usize,
    device: Device,
) -> Result<Tensor> {
    ensure!(
        size > 0 && out > 0,
        "frame sizes must be positive (got {size} -> {out})"
    );
    ensure!(
        frames.len() == n * size * size * 3,
        "got {} bytes of frames, expected {n} frames of {size}x{size}x3 = {}",
        frames.len(),
        n * size * size * 3
    );
    let t = Tensor::from_slice(frames)
        .view([n as i64, size as i64, size as i64, 3])
        .permute([0, 3, 1, 2])
        .to_device(device);
    Ok(resize_chw(&t, out))
}

/// Resizes a `u8 [N, 3, H, W]` batch of square frames to `out` pixels (area averaging when shrinking,
/// bilinear when growing), rounding back to 8 bits. Returns a contiguous tensor.
pub fn resize_chw(t: &Tensor, out: usize) -> Tensor {
    let size = t.size()[3];
    let out = out as i64;
    if size == out {
        return t.contiguous();
    }
    let f = t.to_kind(Kind::Float);
    let r = if size > out && size % out == 0 {
        let k = size / out;
        f.avg_pool2d([k, k], [k, k], [0, 0], false, true, None::<i64>)
    } else if size > out {
        f.adaptive_avg_pool2d([out, out])
    } else {
        f.upsample_bilinear2d([out, out], false, None::<f64>, None::<f64>)
    };
    r.round()
        .clamp(0.0, 255.0)
        .to_kind(Kind::Uint8)
        .contiguous()
}

/// `u8` pixels to `f32` in `[-1, 1]` (the world model's range).
pub fn chw_to_model(t: &Tensor) -> Tensor {
    t.to_kind(Kind::Float) / 127.5 - 1.0
}

/// `f32` in `[-1, 1]` back to 8-bit pixels (rounded, clamped).
pub fn model_to_chw(t: &Tensor) -> Tensor {
    ((t.clamp(-1.0, 1.0) + 1.0) * 127.5)
        .round()
        .to_kind(Kind::Uint8)
}

/// Resizes frames `[N, 3, S, S]` to `size × size`: area averaging when shrinking, bilinear when
/// growing, unchanged when equal.
pub fn resize_model(frames: &Tensor, size: usize) -> Tensor {
    let s = frames.size();
    let (h, w) = (s[s.len() - 2], s[s.len() - 1]);
    let size = size as i64;
    if h == size && w == size {
        frames.shallow_clone()
    } else if h >= size && w >= size {
        frames.adaptive_avg_pool2d([size, size])
    } else {
        frames.upsample_bilinear2d([size, size], false, None, None)
    }
}

/// Converts u8 frames `[N, S, S, 3]` (row-major bytes) to `[N, 3, size, size]` in [-1, 1] on `device`,
/// resized to the model's frame size and re-quantised to 8 bits.
pub fn bytes_to_model(
    bytes: &[u8],
    n: usize,
    side: usize,
    size: usize,
    device: Device,
) -> Result<Tensor> {
    ensure!(
        bytes.len() == n * side * side * 3,
        "frames: expected {}x{side}x{side}x3 bytes, got {}",
        n,
        bytes.len()
    );
    let t = Tensor::from_slice(bytes).view([n as i64, side as i64, side as i64, 3]);
    let f = hwc_to_model(&t);
    let f = if side == size {
        f
    } else {
        quantize(&resize_model(&f, size))
    };
    Ok(f.to_device(device))
}

/// Clamps to [-1, 1] and rounds to the 256 levels of an 8-bit frame (DIAMOND's
/// `clamp(-1,1).add(1).div(2).mul(255).byte().div(255).mul(2).sub(1)`, with rounding instead of
/// truncation so that an 8-bit frame converted to [-1, 1] is a fixed point).
pub fn quantize(x: &Tensor) -> Tensor {
    ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round() / 127.5 - 1.0
}

/// Converts `[..., H, W, C]` u8 frames to `[..., C, H, W]` f32 in [-1, 1].
pub fn hwc_to_model(frames: &Tensor) -> Tensor {
    let nd = frames.dim() as i64;
    let mut perm: Vec<i64> = (0..nd - 3).collect();
    perm.extend([nd - 1, nd - 3, nd - 2]);
    frames.permute(perm.as_slice()).to_kind(Kind::Float) / 127.5 - 1.0
}

/// Converts `[..., C, H, W]` frames in [-1, 1] to `[..., H, W, C]` u8 (rounded, clamped).
pub fn model_to_hwc(frames: &Tensor) -> Tensor {
    let nd = frames.dim() as i64;
    let mut perm: Vec<i64> = (0..nd - 3).collect();
    perm.extend([nd - 2, nd - 1, nd - 3]);
    ((frames.clamp(-1.0, 1.0) + 1.0) * 127.5)
        .round()
        .to_kind(Kind::Uint8)
        .permute(perm.as_slice())
        .contiguous()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::obs::{random_dihedral, random_shift};

    #[test]
    fn area_resize_and_layout() {
        // one 4x4 frame, red channel = column index * 10, green = row index, blue = 7
        let mut f = Vec::new();
        for r in 0..4u8 {
            for c in 0..4u8 {
                f.extend_from_slice(&[c * 10, r, 7]);
            }
        }
        let t = bytes_to_chw(&f, 1, 4, 2, Device::Cpu).unwrap();
        assert_eq!(t.size(), vec![1, 3, 2, 2]);
        let v = Vec::<u8>::try_from(t.flatten(0, -1)).unwrap();
        // red: mean of columns {0,1} = 5, {2,3} = 25; green: rows {0,1} -> 0.5 -> rounds to 0 (half to even), {2,3} -> 2.5 -> 2
        assert_eq!(&v[..4], &[5, 25, 5, 25]);
        assert_eq!(&v[8..], &[7, 7, 7, 7]);
        assert!(bytes_to_chw(&f[..10], 1, 4, 2, Device::Cpu).is_err());
        let x = chw_to_model(&t);
        assert!(model_to_chw(&x).equal(&t));
        let s = random_shift(&x, 1);
        assert_eq!(s.size(), x.size());
        let d = random_dihedral(&x);
        assert_eq!(d.size(), x.size());
        // a symmetry keeps the multiset of pixel values
        assert!(
            (d.sum(Kind::Float) - x.sum(Kind::Float))
                .abs()
                .double_value(&[])
                < 1e-3
        );
    }
}
