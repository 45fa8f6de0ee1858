//! Action encodings fed to the world model (World4RL §III-B, Eq. 5; Table IV ablation).
//!
//! * **two-hot** (the paper's choice, after DreamerV3): every action dimension `a_i` is clamped to
//!   `[b_1, b_K]` and spread over the two neighbouring bins of `B = linspace(low, high, K)`:
//!   `t[k] = (b_{k+1} - a) / (b_{k+1} - b_k)`, `t[k+1] = (a - b_k) / (b_{k+1} - b_k)`, all other
//!   entries 0. It is lossless on the clamped range: `Σ_j t[j] b_j = a`.
//! * **one-hot**: the nearest bin gets 1 (quantises the action; the paper's "one-hot" row).
//! * **linear**: the raw (clamped) action vector, projected by the model's linear action embedding
//!   (the paper's "linear" row: an information bottleneck).
//!
//! The encoded vector of one step is the concatenation over the `A` dimensions (`A·K` values, or `A`
//! for linear). A padded step (before the episode start) is encoded as all zeros, which no real
//! action produces for two-hot and one-hot (their entries sum to 1 per dimension).

use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Which encoding to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum EncodingKind {
    /// DreamerV3-style two-hot over `bins` bins (the paper's choice).
    #[default]
    TwoHot,
    /// One-hot of the nearest bin.
    OneHot,
    /// The raw action.
    Linear,
}

/// Configuration of the action encoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActionEncodingConfig {
    /// `two-hot` (default), `one-hot` or `linear`.
    pub kind: EncodingKind,
    /// Bins per action dimension for two-hot and one-hot (default 21, the paper's K).
    pub bins: usize,
    /// Lowest bin value (default -1).
    pub low: f64,
    /// Highest bin value (default 1).
    pub high: f64,
}

impl Default for ActionEncodingConfig {
    fn default() -> Self {
        Self {
            kind: EncodingKind::TwoHot,
            bins: 21,
            low: -1.0,
            high: 1.0,
        }
    }
}

/// Encodes action vectors of dimension `action_dim` (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct ActionEncoder {
    cfg: ActionEncodingConfig,
    action_dim: usize,
}

impl ActionEncoder {
    /// Checks the configuration (`bins ≥ 2` for binned encodings, `low < high`, finite bounds).
    pub fn new(cfg: ActionEncodingConfig, action_dim: usize) -> Result<Self> {
        ensure!(
            action_dim > 0,
            "action encoding: action_dim must be positive"
        );
        ensure!(
            cfg.low.is_finite() && cfg.high.is_finite() && cfg.low < cfg.high,
            "action encoding: need finite low < high, got low={} high={}",
            cfg.low,
            cfg.high
        );
        if cfg.kind != EncodingKind::Linear {
            ensure!(
                cfg.bins >= 2,
                "action encoding: {:?} needs bins >= 2, got {}",
                cfg.kind,
                cfg.bins
            );
        }
        Ok(Self { cfg, action_dim })
    }

    /// The configuration.
    pub fn config(&self) -> &ActionEncodingConfig {
        &self.cfg
    }

    /// Action dimension `A`.
    pub fn action_dim(&self) -> usize {
        self.action_dim
    }

    /// Width of one encoded step: `A·K` (two-hot, one-hot) or `A` (linear).
    pub fn encoded_dim(&self) -> usize {
        match self.cfg.kind {
            EncodingKind::Linear => self.action_dim,
            _ => self.action_dim * self.cfg.bins,
        }
    }

    /// The bin values `b_1 < … < b_K`.
    pub fn bin_values(&self) -> Vec<f64> {
        let k = self.cfg.bins;
        (0..k).map(|j| self.bin(j)).collect()
    }

    fn bin(&self, j: usize) -> f64 {
        let k = self.cfg.bins;
        // exact endpoints, evenly spaced in between
        if j == k - 1 {
            self.cfg.high
        } else {
            self.cfg.low + (self.cfg.high - self.cfg.low) * j as f64 / (k - 1) as f64
        }
    }

    /// Encodes a tensor of actions `[..., A]` (any float kind) into `[..., encoded_dim]` (f32, same
    /// device). Refuses NaN or infinite actions and a wrong last dimension.
    pub fn encode(&self, actions: &Tensor) -> Result<Tensor> {
        let size = actions.size();
        ensure!(
            size.last().copied() == Some(self.action_dim as i64),
            "action encoding: expected actions of shape [..., {}], got {:?}",
            self.action_dim,
            size
        );
        let a = actions.to_kind(Kind::Float);
        if a.numel() > 0 {
            let finite = a.isfinite().all().int64_value(&[]) != 0;
            if !finite {
                bail!("action encoding: actions contain NaN or infinite values");
            }
        }
        let (lo, hi) = (self.cfg.low, self.cfg.high);
        let a = a.clamp(lo, hi);
        let mut out_shape = size.clone();
        match self.cfg.kind {
            EncodingKind::Linear => Ok(a),
            EncodingKind::OneHot => {
                let k = self.cfg.bins as i64;
                let idx = ((a - lo) / (hi - lo) * (k - 1) as f64)
                    .round()
                    .to_kind(Kind::Int64)
                    .clamp(0, k - 1);
                *out_shape.last_mut().unwrap() = self.action_dim as i64 * k;
                Ok(idx.one_hot(k).to_kind(Kind::Float).reshape(out_shape))
            }
            EncodingKind::TwoHot => {
                let k = self.cfg.bins as i64;
                let dev = actions.device();
                // work in f64 so that the round trip Σ t_j b_j = a holds to f32 precision
                let a64 = a.to_kind(Kind::Double);
                let u = (&a64 - lo) / (hi - lo) * (k - 1) as f64;
                let below = u.floor().clamp(0.0, (k - 2) as f64).to_kind(Kind::Int64);
                let bins = Tensor::from_slice(&self.bin_values()).to_device(dev);
                let b_lo = bins
                    .index_select(0, &below.flatten(0, -1))
                    .reshape(size.as_slice());
                let b_hi = bins
                    .index_select(0, &(&below + 1).flatten(0, -1))
                    .reshape(size.as_slice());
                let w_hi = (&a64 - &b_lo) / (&b_hi - &b_lo);
                let w_lo = (&b_hi - &a64) / (&b_hi - &b_lo);
                let oh_lo = below.one_hot(k).to_kind(Kind::Double);
                let oh_hi = (&below + 1).one_hot(k).to_kind(Kind::Double);
                let t = oh_lo * w_lo.unsqueeze(-1) + oh_hi * w_hi.unsqueeze(-1);
                *out_shape.last_mut().unwrap() = self.action_dim as i64 * k;
                Ok(t.reshape(out_shape).to_kind(Kind::Float))
            }
        }
    }

    /// Inverse of [`encode`](Self::encode) on the clamped range: `Σ_j t_j b_j` per dimension
    /// (exact for two-hot, the bin value for one-hot, identity for linear). `[..., encoded_dim]` ->
    /// `[..., A]`, computed in f64.
    pub fn decode(&self, encoded: &Tensor) -> Result<Tensor> {
        let size = encoded.size();
        ensure!(
            size.last().copied() == Some(self.encoded_dim() as i64),
            "action decoding: expected [..., {}], got {:?}",
            self.encoded_dim(),
            size
        );
        match self.cfg.kind {
            EncodingKind::Linear => Ok(encoded.to_kind(Kind::Double)),
            _ => {
                let k = self.cfg.bins as i64;
                let mut shape = size.clone();
                let last = shape.pop().unwrap();
                shape.push(last / k);
                shape.push(k);
                let bins = Tensor::from_slice(&self.bin_values()).to_device(encoded.device());
                let t = encoded.to_kind(Kind::Double).reshape(shape);
                Ok((t * bins).sum_dim_intlist(-1, false, Kind::Double))
            }
        }
    }

    /// Pure-Rust two-hot / one-hot / linear encoding of one action vector (reference for tests and
    /// for callers without tensors). Same semantics as [`encode`](Self::encode).
    pub fn encode_slice(&self, action: &[f32]) -> Result<Vec<f32>> {
        ensure!(
            action.len() == self.action_dim,
            "action encoding: expected {} values, got {}",
            self.action_dim,
            action.len()
        );
        if let Some(bad) = action.iter().position(|v| !v.is_finite()) {
            bail!(
                "action encoding: action[{bad}] = {} is not finite",
                action[bad]
            );
        }
        let (lo, hi) = (self.cfg.low, self.cfg.high);
        let k = self.cfg.bins;
        let mut out = vec![0f32; self.encoded_dim()];
        for (i, &v) in action.iter().enumerate() {
            let a = (v as f64).clamp(lo, hi);
            match self.cfg.kind {
                EncodingKind::Linear => out[i] = a as f32,
                EncodingKind::OneHot => {
                    let j = (((a - lo) / (hi - lo)) * (k - 1) as f64).round() as usize;
                    out[i * k + j.min(k - 1)] = 1.0;
                }
                EncodingKind::TwoHot => {
                    let bins = self.bin_values();
                    let j = bins
                        .partition_point(|&b| b <= a)
                        .saturating_sub(1)
                        .min(k - 2);
                    let (b0, b1) = (bins[j], bins[j + 1]);
                    out[i * k + j] = ((b1 - a) / (b1 - b0)) as f32;
                    out[i * k + j + 1] = ((a - b0) / (b1 - b0)) as f32;
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(kind: EncodingKind, a: usize) -> ActionEncoder {
        ActionEncoder::new(
            ActionEncodingConfig {
                kind,
                ..Default::default()
            },
            a,
        )
        .unwrap()
    }

    #[test]
    fn two_hot_round_trip_is_exact_on_the_clamped_range() {
        let e = enc(EncodingKind::TwoHot, 4);
        // a dense grid, every bin value, values between bins, and random values
        let mut vals: Vec<f32> = (0..=2000).map(|i| -1.0 + i as f32 * 0.001).collect();
        vals.extend(e.bin_values().iter().map(|&b| b as f32));
        tch::manual_seed(3);
        let r =
            Vec::<f32>::try_from(Tensor::rand([4000], (Kind::Float, tch::Device::Cpu)) * 2.0 - 1.0)
                .unwrap();
        vals.extend(r);
        while !vals.len().is_multiple_of(4) {
            vals.push(0.0);
        }
        let a = Tensor::from_slice(&vals).reshape([-1, 4]);
        let t = e.encode(&a).unwrap();
        assert_eq!(t.size(), vec![a.size()[0], 84]);
        // each dimension's weights are non-negative, sum to one and touch at most two adjacent bins
        let t3 = t.reshape([-1, 4, 21]);
        let sums = t3.sum_dim_intlist(-1, false, Kind::Double);
        assert!((sums - 1.0).abs().max().double_value(&[]) < 1e-6);
        assert!(t3.min().double_value(&[]) >= 0.0);
        let nonzero = t3.gt(0.0).sum_dim_intlist(-1, false, Kind::Int64);
        assert!(nonzero.max().int64_value(&[]) <= 2);
        // decode in f64 and compare to the f32 input: the only error is the final f32 rounding of t
        let back = e.decode(&t).unwrap().to_kind(Kind::Float);
        let err = (back - &a).abs().max().double_value(&[]);
        assert!(err <= 2e-7, "two-hot round trip error {err}");
        // exact (bit for bit) when decoding the f64 weights directly, before the f32 cast
        for &v in &[-1.0f32, -0.95, -0.3, 0.0, 0.05, 0.1234567, 0.7, 1.0] {
            let s = e.encode_slice(&[v, v, v, v]).unwrap();
            let dec: f64 = (0..21).map(|j| s[j] as f64 * e.bin_values()[j]).sum();
            assert!((dec - v as f64).abs() < 1e-7, "{v} -> {dec}");
        }
    }

    #[test]
    fn two_hot_tensor_matches_the_slice_reference_and_clamps() {
        let e = enc(EncodingKind::TwoHot, 2);
        for a in [[-3.0f32, 2.5], [0.333, -0.777], [1.0, -1.0], [0.05, 0.95]] {
            let t = Vec::<f32>::try_from(e.encode(&Tensor::from_slice(&a)).unwrap()).unwrap();
            let s = e.encode_slice(&a).unwrap();
            for (x, y) in t.iter().zip(&s) {
                assert!((x - y).abs() < 1e-6, "{a:?}: {t:?} vs {s:?}");
            }
        }
        // out of range collapses onto the end bins
        let s = e.encode_slice(&[-3.0, 2.5]).unwrap();
        assert_eq!(s[0], 1.0);
        assert_eq!(s[21 + 20], 1.0);
    }

    #[test]
    fn one_hot_and_linear() {
        let e = enc(EncodingKind::OneHot, 2);
        let t = e.encode(&Tensor::from_slice(&[0.04f32, 0.06])).unwrap();
        let v = Vec::<f32>::try_from(t).unwrap();
        assert_eq!(v[10], 1.0); // 0.04 -> bin 10 (value 0.0)
        assert_eq!(v[21 + 11], 1.0); // 0.06 -> bin 11 (value 0.1)
        assert_eq!(v.iter().sum::<f32>(), 2.0);
        let l = enc(EncodingKind::Linear, 3);
        assert_eq!(l.encoded_dim(), 3);
        let v = Vec::<f32>::try_from(l.encode(&Tensor::from_slice(&[0.5f32, -2.0, 0.1])).unwrap())
            .unwrap();
        assert_eq!(v, vec![0.5, -1.0, 0.1]);
    }

    #[test]
    fn bad_input_is_an_error() {
        let e = enc(EncodingKind::TwoHot, 2);
        assert!(e.encode(&Tensor::from_slice(&[f32::NAN, 0.0])).is_err());
        assert!(e
            .encode(&Tensor::from_slice(&[f32::INFINITY, 0.0]))
            .is_err());
        assert!(e.encode(&Tensor::from_slice(&[0.0f32, 0.0, 0.0])).is_err());
        assert!(e.encode_slice(&[0.0, f32::NAN]).is_err());
        assert!(ActionEncoder::new(
            ActionEncodingConfig {
                bins: 1,
                ..Default::default()
            },
            2
        )
        .is_err());
        assert!(ActionEncoder::new(
            ActionEncodingConfig {
                low: 1.0,
                high: 1.0,
                ..Default::default()
            },
            2
        )
        .is_err());
    }
}
