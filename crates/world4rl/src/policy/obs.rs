//! From environment frames to network inputs.
//!
//! Every learner of the policy side (reward classifier, BC policy, critic) sees frames at the world
//! model's frame size, so that the policy refined inside the world model sees at deployment the same kind
//! of input it was trained on. Real frames larger than that are reduced by **area averaging** (exact box
//! filter for integer factors) and re-quantised to 8 bits, as a world-model frame is.
//!
//! Layouts: environment and dataset frames are `u8 [N, H, W, 3]` row-major; network inputs are
//! `u8 [N, 3, h, w]` (compact, stored in rollout buffers) turned into `f32` in `[-1, 1]` by [`to_float`].

use anyhow::{ensure, Result};
use tch::{Device, Kind, Tensor};

/// `n` RGB frames of `size x size` pixels (`u8 [n, size, size, 3]`) as a `u8 [n, 3, out, out]` tensor on
/// `device`, resized to `out` pixels when `out != size`.
pub fn frames_to_u8(
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
    Ok(resize_u8(&t, out))
}

/// Resizes a `u8 [N, 3, H, W]` batch of square frames to `out` pixels (area averaging when shrinking,
/// bilinear when growing), rounding back to 8 bits. Returns a contiguous tensor.
pub fn resize_u8(t: &Tensor, out: usize) -> Tensor {
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
pub fn to_float(t: &Tensor) -> Tensor {
    t.to_kind(Kind::Float) / 127.5 - 1.0
}

/// `f32` in `[-1, 1]` back to 8-bit pixels (rounded, clamped).
pub fn to_u8(t: &Tensor) -> Tensor {
    ((t.clamp(-1.0, 1.0) + 1.0) * 127.5)
        .round()
        .to_kind(Kind::Uint8)
}

/// DrQ-style random-shift augmentation of a float batch `[N, C, H, W]`: replicate-pad by `pad` pixels and
/// crop back at a random offset per sample. `pad = 0` returns the input.
pub fn random_shift(x: &Tensor, pad: i64) -> Tensor {
    if pad <= 0 {
        return x.shallow_clone();
    }
    let (n, h, w) = (x.size()[0], x.size()[2], x.size()[3]);
    let padded = x.pad([pad, pad, pad, pad], "replicate", None::<f64>);
    let offs = Vec::<i64>::try_from(Tensor::randint(
        2 * pad + 1,
        [n, 2],
        (Kind::Int64, Device::Cpu),
    ))
    .unwrap_or_else(|_| vec![pad; 2 * n as usize]);
    let crops: Vec<Tensor> = (0..n)
        .map(|i| {
            let (dy, dx) = (offs[2 * i as usize], offs[2 * i as usize + 1]);
            padded.get(i).narrow(1, dy, h).narrow(2, dx, w)
        })
        .collect();
    Tensor::stack(&crops, 0)
}

/// Random elements of the dihedral group of the square (rotations by multiples of 90° and mirror
/// images), one index in `0..8` per sample of a batch of `n`.
pub fn random_dihedral_picks(n: i64) -> Vec<i64> {
    Vec::<i64>::try_from(Tensor::randint(8, [n], (Kind::Int64, Device::Cpu)))
        .unwrap_or_else(|_| vec![0; n as usize])
}

/// Applies dihedral element `picks[i]` to sample `i` of a square batch `[N, C, H, W]`: `k % 4`
/// quarter turns (`rot90` from the row axis towards the column axis), then a left-right mirror when
/// `k >= 4`.
pub fn dihedral(x: &Tensor, picks: &[i64]) -> Tensor {
    let out: Vec<Tensor> = picks
        .iter()
        .enumerate()
        .map(|(i, &k)| {
            let t = x.get(i as i64).rot90(k % 4, [1, 2]);
            if k >= 4 {
                t.flip([2])
            } else {
                t
            }
        })
        .collect();
    Tensor::stack(&out, 0)
}

/// The same transformation of 2-D displacement actions `[N, 2]` given in image axes
/// (`a[0]` along columns, `+x` right; `a[1]` along rows, `+y` down): a quarter turn maps `(x, y)` to
/// `(y, -x)`, the mirror maps `(x, y)` to `(-x, y)`.
pub fn dihedral_actions(a: &Tensor, picks: &[i64]) -> Tensor {
    let v = Vec::<f32>::try_from(a.to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1))
        .unwrap_or_default();
    let mut out = Vec::with_capacity(v.len());
    for (i, &k) in picks.iter().enumerate() {
        let (mut x, mut y) = (v[2 * i], v[2 * i + 1]);
        for _ in 0..k % 4 {
            (x, y) = (y, -x);
        }
        if k >= 4 {
            x = -x;
        }
        out.extend([x, y]);
    }
    Tensor::from_slice(&out)
        .view([picks.len() as i64, 2])
        .to_device(a.device())
}

/// Random dihedral augmentation of a square float batch `[N, C, H, W]` (for labels that do not depend
/// on the picture's orientation, as the tabletop suite's success).
pub fn random_dihedral(x: &Tensor) -> Tensor {
    dihedral(x, &random_dihedral_picks(x.size()[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_resize_and_layout() {
        // one 4x4 frame, red channel = column index * 10, green = row index, blue = 7
        let mut f = Vec::new();
        for r in 0..4u8 {
            for c in 0..4u8 {
                f.extend_from_slice(&[c * 10, r, 7]);
            }
        }
        let t = frames_to_u8(&f, 1, 4, 2, Device::Cpu).unwrap();
        assert_eq!(t.size(), vec![1, 3, 2, 2]);
        let v = Vec::<u8>::try_from(t.flatten(0, -1)).unwrap();
        // red: mean of columns {0,1} = 5, {2,3} = 25; green: rows {0,1} -> 0.5 -> rounds to 0 (half to even), {2,3} -> 2.5 -> 2
        assert_eq!(&v[..4], &[5, 25, 5, 25]);
        assert_eq!(&v[8..], &[7, 7, 7, 7]);
        assert!(frames_to_u8(&f[..10], 1, 4, 2, Device::Cpu).is_err());
        let x = to_float(&t);
        assert!(to_u8(&x).equal(&t));
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

    #[test]
    fn dihedral_moves_pixels_and_actions_alike() {
        // a dot at displacement (dx, dy) = (+1, -2) from the centre of a 5x5 image; the action pointing
        // at it must point at it after every transformation
        for k in 0..8 {
            let mut img = vec![0f32; 25];
            img[3] = 1.0; // row 0 = centre row 2 - 2, column 3 = centre column 2 + 1
            let x = Tensor::from_slice(&img).view([1, 1, 5, 5]);
            let a = Tensor::from_slice(&[1.0f32, -2.0]).view([1, 2]);
            let y = dihedral(&x, &[k]);
            let b = Vec::<f32>::try_from(dihedral_actions(&a, &[k]).flatten(0, -1)).unwrap();
            let pos = y.flatten(0, -1).argmax(0, false).int64_value(&[]);
            let (r, c) = (pos / 5, pos % 5);
            assert_eq!((c - 2, r - 2), (b[0] as i64, b[1] as i64), "k = {k}");
        }
    }
}
