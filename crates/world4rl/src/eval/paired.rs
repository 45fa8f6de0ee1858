//! Paired comparisons of two policies evaluated on the same scenes, and their pooling over
//! independent replicates (World4RL's evaluation protocol, `docs/evaluation.md`).
//!
//! * [`paired_difference`]: one replicate. Two policies evaluated on the same seeds met the same
//!   scenes; their outcomes are positively correlated, so the difference of their success rates is
//!   known more precisely than two independent intervals say. Newcombe's hybrid score interval for
//!   paired proportions (Newcombe 1998, Statistics in Medicine 17:2635, method 10): the two Wilson
//!   intervals combined with the correlation φ of the 2x2 table of paired outcomes.
//! * [`pool_replicates`]: several independent end-to-end replicates (every seed different, CPU
//!   rounding one more source of variance). The pooled gain is the mean of the replicates' gains,
//!   with a two-level percentile bootstrap (replicates, then test scenes within each), and the
//!   probability of improvement as rliable defines it (Agarwal et al. 2021): P(X > Y) for a run X of
//!   one policy and a run Y of the other, averaged over tasks.

use anyhow::{ensure, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::eval::evaluate::{wilson_interval, Z95};

/// The difference `other − base` of two success rates measured on the same scenes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairedDifference {
    /// Scenes (episodes of each policy).
    pub n: usize,
    /// Scenes both policies solved.
    pub both: usize,
    /// Scenes only the base policy solved.
    pub only_base: usize,
    /// Scenes only the other policy solved.
    pub only_other: usize,
    /// The base policy's success rate.
    pub base: f64,
    /// The other policy's success rate.
    pub other: f64,
    /// `other − base`.
    pub diff: f64,
    /// Lower end of the 95 % interval of `diff`.
    pub lo: f64,
    /// Upper end of the 95 % interval of `diff`.
    pub hi: f64,
}

impl PairedDifference {
    /// `+12.3 [+8.1, +16.4]` in points.
    pub fn cell(&self) -> String {
        format!(
            "{:+.1} [{:+.1}, {:+.1}]",
            100.0 * self.diff,
            100.0 * self.lo,
            100.0 * self.hi
        )
    }
}

/// Newcombe's paired interval (method 10) of `other − base` from the outcomes (1 success, 0
/// failure) of two policies on the same scenes, episode `i` of each on scene `i`.
pub fn paired_difference(base: &[u8], other: &[u8]) -> Result<PairedDifference> {
    ensure!(
        base.len() == other.len(),
        "a paired comparison needs both policies on the same scenes ({} and {} episodes)",
        base.len(),
        other.len()
    );
    ensure!(!base.is_empty(), "a paired comparison needs episodes");
    let (mut both, mut only_base, mut only_other) = (0usize, 0usize, 0usize);
    for (&b, &o) in base.iter().zip(other) {
        match (b != 0, o != 0) {
            (true, true) => both += 1,
            (true, false) => only_base += 1,
            (false, true) => only_other += 1,
            (false, false) => {}
        }
    }
    let n = base.len();
    let neither = n - both - only_base - only_other;
    let (lo, hi) = newcombe_paired_interval(both, only_other, only_base, neither, Z95);
    let (kb, ko) = (both + only_base, both + only_other);
    Ok(PairedDifference {
        n,
        both,
        only_base,
        only_other,
        base: kb as f64 / n as f64,
        other: ko as f64 / n as f64,
        diff: (ko as f64 - kb as f64) / n as f64,
        lo,
        hi,
    })
}

/// Newcombe's method 10 for paired proportions, from the 2x2 table of scenes: `a` solved by both,
/// `b` by the first policy only, `c` by the second only, `d` by neither. The interval of
/// `p1 − p2` with `p1 = (a + b) / n`, `p2 = (a + c) / n`, at normal quantile `z`. The correlation
/// of the two Wilson intervals is Newcombe's corrected φ: `(ad − bc − n/2) / √((a+b)(c+d)(a+c)(b+d))`
/// when `ad − bc > n/2`, 0 when `0 ≤ ad − bc ≤ n/2`, and the uncorrected φ when `ad < bc`.
pub fn newcombe_paired_interval(a: usize, b: usize, c: usize, d: usize, z: f64) -> (f64, f64) {
    let n = a + b + c + d;
    if n == 0 {
        return (-1.0, 1.0);
    }
    let nf = n as f64;
    let (p1, p2) = ((a + b) as f64 / nf, (a + c) as f64 / nf);
    let (l1, u1) = wilson_interval(a + b, n, z);
    let (l2, u2) = wilson_interval(a + c, n, z);
    let denom = ((a + b) as f64 * (c + d) as f64 * (a + c) as f64 * (b + d) as f64).sqrt();
    let cross = a as f64 * d as f64 - b as f64 * c as f64;
    let corrected = if cross > nf / 2.0 {
        cross - nf / 2.0
    } else if cross < 0.0 {
        cross
    } else {
        0.0
    };
    let phi = if denom > 0.0 { corrected / denom } else { 0.0 };
    let diff = p1 - p2;
    let delta = ((p1 - l1).powi(2) - 2.0 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2).powi(2))
        .max(0.0)
        .sqrt();
    let eps = ((u1 - p1).powi(2) - 2.0 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2).powi(2))
        .max(0.0)
        .sqrt();
    ((diff - delta).max(-1.0), (diff + eps).min(1.0))
}

/// One replicate's outcomes of the base and the other policy on the same test scenes.
#[derive(Clone, Debug)]
pub struct ReplicatePair<'a> {
    /// The base policy's outcomes (e.g. BC*).
    pub base: &'a [u8],
    /// The other policy's outcomes (e.g. refined), scene by scene.
    pub other: &'a [u8],
}

/// The pooled gain over replicates of one task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PooledGain {
    /// Replicates pooled.
    pub replicates: usize,
    /// Mean of the replicates' `other − base`.
    pub mean: f64,
    /// 2.5 % percentile of the two-level bootstrap.
    pub lo: f64,
    /// 97.5 % percentile.
    pub hi: f64,
    /// rliable's probability of improvement: P(other's success in a replicate > base's in a
    /// replicate), ties counting one half.
    pub probability_of_improvement: f64,
}

impl PooledGain {
    /// `+12.3 [+8.1, +16.4]` in points.
    pub fn cell(&self) -> String {
        format!(
            "{:+.1} [{:+.1}, {:+.1}]",
            100.0 * self.mean,
            100.0 * self.lo,
            100.0 * self.hi
        )
    }
}

fn rate(x: &[u8]) -> f64 {
    x.iter().map(|&v| v as f64).sum::<f64>() / x.len().max(1) as f64
}

/// rliable's probability of improvement of `x` over `y` (runs of two algorithms on one task): the
/// Mann-Whitney statistic, the share of pairs (x_i, y_j) with x_i > y_j, ties counting one half.
pub fn probability_of_improvement(x: &[f64], y: &[f64]) -> f64 {
    if x.is_empty() || y.is_empty() {
        return 0.5;
    }
    let mut s = 0.0;
    for &a in x {
        for &b in y {
            s += if a > b {
                1.0
            } else if a == b {
                0.5
            } else {
                0.0
            };
        }
    }
    s / (x.len() * y.len()) as f64
}

/// Pools one task's replicates: the mean gain with a two-level percentile bootstrap (`resamples`
/// draws: replicates with replacement, then each drawn replicate's scenes with replacement, the pairs
/// kept together) and the probability of improvement.
pub fn pool_replicates(reps: &[ReplicatePair], resamples: usize, seed: u64) -> Result<PooledGain> {
    ensure!(!reps.is_empty(), "pooling needs at least one replicate");
    for (i, r) in reps.iter().enumerate() {
        ensure!(
            r.base.len() == r.other.len() && !r.base.is_empty(),
            "replicate {i}: a paired comparison needs both policies on the same scenes ({} and {} episodes)",
            r.base.len(),
            r.other.len()
        );
    }
    let gains: Vec<f64> = reps.iter().map(|r| rate(r.other) - rate(r.base)).collect();
    let mean = gains.iter().sum::<f64>() / gains.len() as f64;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut draws = Vec::with_capacity(resamples);
    for _ in 0..resamples.max(1) {
        let mut total = 0.0;
        for _ in 0..reps.len() {
            let r = &reps[rng.gen_range(0..reps.len())];
            let n = r.base.len();
            let mut d = 0i64;
            for _ in 0..n {
                let j = rng.gen_range(0..n);
                d += r.other[j] as i64 - r.base[j] as i64;
            }
            total += d as f64 / n as f64;
        }
        draws.push(total / reps.len() as f64);
    }
    draws.sort_by(f64::total_cmp);
    let q = |p: f64| draws[((p * (draws.len() - 1) as f64).round() as usize).min(draws.len() - 1)];
    let x: Vec<f64> = reps.iter().map(|r| rate(r.other)).collect();
    let y: Vec<f64> = reps.iter().map(|r| rate(r.base)).collect();
    Ok(PooledGain {
        replicates: reps.len(),
        mean,
        lo: q(0.025),
        hi: q(0.975),
        probability_of_improvement: probability_of_improvement(&x, &y),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::evaluate::newcombe_difference_interval;

    #[test]
    fn a_worked_example_of_newcombes_paired_method() {
        // Altman, Machin, Bryant & Gardner (2000), Statistics with Confidence, Table 6.2: 41 pairs,
        // 14 positive on both, 5 on the first only, 0 on the second only, 22 on neither. The values
        // are those of the published algorithm (Newcombe 1998, method 10, as the R function
        // biostatUZH::confIntPairedProportion computes it): D = 5/41, 95 % interval 0.0115 to 0.2265.
        let (lo, hi) = newcombe_paired_interval(14, 5, 0, 22, Z95);
        assert!(
            (lo - 0.011_483).abs() < 1e-5 && (hi - 0.226_493).abs() < 1e-5,
            "({lo}, {hi})"
        );
        // the same table through the outcome vectors: the first policy is `other` here
        let mut base = Vec::new();
        let mut other = Vec::new();
        for (b, o, k) in [(1u8, 1u8, 14), (0, 1, 5), (1, 0, 0), (0, 0, 22)] {
            base.extend(std::iter::repeat_n(b, k));
            other.extend(std::iter::repeat_n(o, k));
        }
        let p = paired_difference(&base, &other).unwrap();
        assert!((p.diff - 5.0 / 41.0).abs() < 1e-12);
        assert!((p.lo - lo).abs() < 1e-12 && (p.hi - hi).abs() < 1e-12);
    }

    #[test]
    fn without_correlation_the_paired_interval_is_newcombes_independent_one() {
        // a table with ad = bc has φ = 0: method 10 for paired data then reduces to the hybrid score
        // interval of two independent samples, which is checked against Newcombe's published example
        // in `evaluate`. 100 scenes: a = 20, b = 20, c = 30, d = 30 (ad = bc = 600).
        let (lo, hi) = newcombe_paired_interval(20, 20, 30, 30, Z95);
        // p1 = 40/100, p2 = 50/100: p1 − p2 = newcombe(k1 = 50, k2 = 40)
        let (elo, ehi) = newcombe_difference_interval(50, 100, 40, 100, Z95);
        assert!(
            (lo - elo).abs() < 1e-12 && (hi - ehi).abs() < 1e-12,
            "({lo}, {hi})"
        );
    }

    #[test]
    fn positive_correlation_narrows_the_interval_and_it_covers_the_truth() {
        // the same margins (50 % against 60 %), strongly paired: narrower than the independent one
        let base: Vec<u8> = (0..200).map(|i| (i < 100) as u8).collect();
        let other: Vec<u8> = (0..200).map(|i| (i < 120) as u8).collect();
        let p = paired_difference(&base, &other).unwrap();
        assert_eq!((p.both, p.only_base, p.only_other), (100, 0, 20));
        assert!((p.diff - 0.1).abs() < 1e-12);
        let (ilo, ihi) = newcombe_difference_interval(100, 200, 120, 200, Z95);
        assert!(
            p.lo > ilo && p.hi < ihi && p.lo > 0.0,
            "{p:?} vs ({ilo}, {ihi})"
        );

        // coverage: 2000 simulated evaluations of 200 correlated scenes (true rates 0.55 and 0.65)
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut covered = 0;
        let trials = 2000;
        for _ in 0..trials {
            let (mut b, mut o) = (Vec::new(), Vec::new());
            for _ in 0..200 {
                // a scene's difficulty is shared: u < 0.55 solves it for base, u < 0.65 for other,
                // except 10 % of scenes where each policy draws on its own
                let u: f64 = rng.gen();
                if rng.gen::<f64>() < 0.1 {
                    b.push((rng.gen::<f64>() < 0.55) as u8);
                    o.push((rng.gen::<f64>() < 0.65) as u8);
                } else {
                    b.push((u < 0.55) as u8);
                    o.push((u < 0.65) as u8);
                }
            }
            let p = paired_difference(&b, &o).unwrap();
            covered += (p.lo <= 0.1 && 0.1 <= p.hi) as usize;
        }
        let coverage = covered as f64 / trials as f64;
        assert!((0.93..=0.975).contains(&coverage), "coverage {coverage}");
    }

    #[test]
    fn mismatched_or_empty_outcomes_are_refused() {
        assert!(paired_difference(&[1, 0], &[1]).is_err());
        assert!(paired_difference(&[], &[]).is_err());
        let r = ReplicatePair {
            base: &[1, 0],
            other: &[1],
        };
        assert!(pool_replicates(&[r], 10, 0).is_err());
        assert!(pool_replicates(&[], 10, 0).is_err());
    }

    #[test]
    fn pooling_averages_replicates_and_its_interval_widens_with_their_spread() {
        let make = |k: usize, n: usize| -> Vec<u8> { (0..n).map(|i| (i < k) as u8).collect() };
        let b = make(500, 1000);
        let (o1, o2, o3) = (make(600, 1000), make(620, 1000), make(580, 1000));
        let reps = [
            ReplicatePair {
                base: &b,
                other: &o1,
            },
            ReplicatePair {
                base: &b,
                other: &o2,
            },
            ReplicatePair {
                base: &b,
                other: &o3,
            },
        ];
        let g = pool_replicates(&reps, 2000, 1).unwrap();
        assert!((g.mean - 0.1).abs() < 1e-12, "{g:?}");
        assert!(
            g.lo > 0.07 && g.hi < 0.13 && g.lo < 0.1 && g.hi > 0.1,
            "{g:?}"
        );
        assert_eq!(g.probability_of_improvement, 1.0);
        // replicates that disagree: a wider interval, and a probability of improvement below 1
        let (w, l) = (make(800, 1000), make(400, 1000));
        let spread = [
            ReplicatePair {
                base: &b,
                other: &w,
            },
            ReplicatePair {
                base: &b,
                other: &l,
            },
            ReplicatePair {
                base: &b,
                other: &o1,
            },
        ];
        let s = pool_replicates(&spread, 2000, 1).unwrap();
        assert!(s.hi - s.lo > 2.0 * (g.hi - g.lo), "{s:?} vs {g:?}");
        assert!((s.probability_of_improvement - 2.0 / 3.0).abs() < 1e-12);
        // the same seed gives the same interval
        assert_eq!(pool_replicates(&reps, 2000, 1).unwrap(), g);
    }

    #[test]
    fn probability_of_improvement_counts_ties_as_half() {
        assert_eq!(probability_of_improvement(&[0.5], &[0.5]), 0.5);
        assert_eq!(probability_of_improvement(&[0.6, 0.4], &[0.5]), 0.5);
        assert_eq!(probability_of_improvement(&[0.9, 0.8], &[0.1, 0.2]), 1.0);
    }
}
