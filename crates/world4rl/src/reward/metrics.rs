//! Binary classification metrics: accuracy, precision, recall and F1 at a threshold, and the
//! threshold-free ROC AUC of scores.

use serde::{Deserialize, Serialize};

/// Confusion counts and the scores derived from them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BinaryMetrics {
    /// Examples.
    pub n: usize,
    /// Positive labels.
    pub positives: usize,
    /// True positives.
    pub tp: usize,
    /// False positives.
    pub fp: usize,
    /// True negatives.
    pub tn: usize,
    /// False negatives.
    pub fn_: usize,
    /// (tp + tn) / n.
    pub accuracy: f64,
    /// tp / (tp + fp); 0 when nothing is predicted positive.
    pub precision: f64,
    /// tp / (tp + fn); 0 without positives.
    pub recall: f64,
    /// Harmonic mean of precision and recall; 0 when both are 0.
    pub f1: f64,
}

impl BinaryMetrics {
    /// Scores of `predicted` against `labels` (same length).
    pub fn from_predictions(predicted: &[bool], labels: &[bool]) -> Self {
        let mut m = BinaryMetrics::default();
        for (&p, &l) in predicted.iter().zip(labels) {
            match (p, l) {
                (true, true) => m.tp += 1,
                (true, false) => m.fp += 1,
                (false, false) => m.tn += 1,
                (false, true) => m.fn_ += 1,
            }
        }
        m.finish()
    }

    /// Sums two sets of counts.
    pub fn merge(&self, other: &Self) -> Self {
        BinaryMetrics {
            tp: self.tp + other.tp,
            fp: self.fp + other.fp,
            tn: self.tn + other.tn,
            fn_: self.fn_ + other.fn_,
            ..Default::default()
        }
        .finish()
    }

    fn finish(mut self) -> Self {
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        self.n = self.tp + self.fp + self.tn + self.fn_;
        self.positives = self.tp + self.fn_;
        self.accuracy = ratio(self.tp + self.tn, self.n);
        self.precision = ratio(self.tp, self.tp + self.fp);
        self.recall = ratio(self.tp, self.tp + self.fn_);
        self.f1 = if self.precision + self.recall > 0.0 {
            2.0 * self.precision * self.recall / (self.precision + self.recall)
        } else {
            0.0
        };
        self
    }
}

/// Area under the ROC curve of `scores` against `labels` (same length): the probability that a random
/// positive scores above a random negative, ties counting one half (the Mann-Whitney U statistic over
/// `positives · negatives`). 0.5 is chance, 1 a perfect ranking. `None` when either class is absent
/// or a score is NaN.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    assert_eq!(scores.len(), labels.len(), "roc_auc: one label per score");
    if scores.iter().any(|s| s.is_nan()) {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // sum of the (1-based, tie-averaged) ranks of the positives
    let (mut rank_sum, mut i) = (0.0, 0);
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += mean_rank * order[i..=j].iter().filter(|&&k| labels[k]).count() as f64;
        i = j + 1;
    }
    let pos = labels.iter().filter(|&&l| l).count() as f64;
    let neg = labels.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return None;
    }
    Some((rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed() {
        let p = [true, true, false, false, true];
        let l = [true, false, false, true, true];
        let m = BinaryMetrics::from_predictions(&p, &l);
        assert_eq!((m.tp, m.fp, m.tn, m.fn_), (2, 1, 1, 1));
        assert!((m.accuracy - 0.6).abs() < 1e-12);
        assert!((m.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.f1 - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(BinaryMetrics::from_predictions(&[false], &[false]).f1, 0.0);
        assert_eq!(m.merge(&m).tp, 4);
    }

    #[test]
    fn roc_auc_counts_ordered_pairs() {
        // perfect, reversed and chance rankings
        assert_eq!(
            roc_auc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]),
            Some(1.0)
        );
        assert_eq!(
            roc_auc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]),
            Some(0.0)
        );
        assert_eq!(roc_auc(&[0.5; 4], &[false, true, false, true]), Some(0.5));
        // by hand: positives 0.4, 0.7; negatives 0.1, 0.4, 0.8
        // pairs won: 0.4 > 0.1, tie with 0.4 (1/2), 0.7 > 0.1, 0.7 > 0.4: 3.5 of 6
        let s = [0.4, 0.1, 0.7, 0.4, 0.8];
        let l = [true, false, true, false, false];
        assert!((roc_auc(&s, &l).unwrap() - 3.5 / 6.0).abs() < 1e-12);
        // a brute-force count agrees on a larger random-looking case
        let s: Vec<f64> = (0..40).map(|i| ((i * 37 % 11) as f64) / 10.0).collect();
        let l: Vec<bool> = (0..40).map(|i| (i * 13) % 5 < 2).collect();
        let mut won = 0.0;
        let mut pairs = 0.0;
        for (a, &la) in s.iter().zip(&l) {
            for (b, &lb) in s.iter().zip(&l) {
                if la && !lb {
                    pairs += 1.0;
                    won += if a > b {
                        1.0
                    } else if a == b {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
        }
        assert!((roc_auc(&s, &l).unwrap() - won / pairs).abs() < 1e-12);
        assert_eq!(roc_auc(&[0.3, 0.4], &[true, true]), None);
        assert_eq!(roc_auc(&[f64::NAN, 0.4], &[true, false]), None);
    }
}
