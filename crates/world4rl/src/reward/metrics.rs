//! Binary classification metrics (accuracy, precision, recall, F1) at a threshold.

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
}
