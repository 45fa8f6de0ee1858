//! Augmentations of the policy side's network inputs (`f32 [N, C, H, W]`): DrQ's random shifts and
//! the dihedral transforms of the tabletop scenes, with the matching action transforms. Every learner
//! of the policy side (reward classifier, BC policy, critic) sees frames at the world model's frame
//! size, so that the policy refined inside the world model sees at deployment the same kind of input
//! it was trained on; the conversions are in [`crate::util::frames`].

use tch::{Device, Kind, Tensor};

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
