//! The feature statistics LeRobot keeps in `meta/stats.json` (min, max, mean, std, count and the
//! 1/10/50/90/99 % quantiles), accumulated row by row over an export.

use std::collections::BTreeMap;

use serde_json::json;
use w4rl_data::{DatasetSpec, Episode};

use crate::export::{IMAGE, STATE};

/// Every exported feature's running statistics; booleans are marked (their min and max are
/// written as booleans).
pub struct Stats(BTreeMap<&'static str, (Stat, bool)>);

impl Stats {
    /// Empty statistics of the features of a dataset with `spec`.
    pub fn new(spec: &DatasetSpec) -> Self {
        let mut stats: BTreeMap<&'static str, (Stat, bool)> = BTreeMap::new();
        let vals = |d: usize| Stat::Values(vec![Vec::new(); d]);
        stats.insert(IMAGE, (Stat::Image(Box::new([[0; 256]; 3]), 0), false));
        if spec.state_dim > 0 {
            stats.insert(STATE, (vals(spec.state_dim), false));
        }
        stats.insert("action", (vals(spec.action_dim), false));
        for k in [
            "next.reward",
            "timestamp",
            "frame_index",
            "episode_index",
            "index",
            "task_index",
        ] {
            stats.insert(k, (vals(1), false));
        }
        stats.insert("next.success", (vals(1), true));
        stats.insert("next.done", (vals(1), true));
        Self(stats)
    }

    /// Adds the rows of episode `i` (its first row is `row`, its task `task_index`).
    pub fn add_episode(
        &mut self,
        ep: &Episode,
        spec: &DatasetSpec,
        (i, row, task_index): (usize, usize, usize),
        fps: u32,
    ) {
        let m = &ep.meta;
        let stats = &mut self.0;
        for t in 0..=m.steps {
            if let Some((Stat::Image(h, frames), _)) = stats.get_mut(IMAGE) {
                *frames += 1;
                for px in ep.frame(t).chunks_exact(3) {
                    for c in 0..3 {
                        h[c][px[c] as usize] += 1;
                    }
                }
            }
            let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
            if spec.state_dim > 0 {
                stats
                    .get_mut(STATE)
                    .expect("inserted")
                    .0
                    .push(&f(ep.state(t)));
            }
            let a = if m.steps == 0 {
                vec![0.0; spec.action_dim]
            } else {
                f(ep.action(t.min(m.steps - 1)))
            };
            stats.get_mut("action").expect("inserted").0.push(&a);
            let reward = if t < m.steps {
                ep.rewards[t] as f64
            } else {
                0.0
            };
            let scalars = [
                ("next.reward", reward),
                (
                    "next.success",
                    (ep.success[(t + 1).min(m.steps)] != 0) as u8 as f64,
                ),
                ("next.done", (t == m.steps) as u8 as f64),
                ("timestamp", (t as f32 / fps as f32) as f64),
                ("frame_index", t as f64),
                ("episode_index", i as f64),
                ("index", (row + t) as f64),
                ("task_index", task_index as f64),
            ];
            for (k, v) in scalars {
                stats.get_mut(k).expect("inserted").0.push(&[v]);
            }
        }
    }

    /// `meta/stats.json`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.0
                .iter()
                .map(|(k, (s, b))| (k.to_string(), s.to_json(*b)))
                .collect(),
        )
    }
}

/// Running statistics of one feature: values per dimension (exact quantiles) or, for images, a
/// histogram per channel.
enum Stat {
    Values(Vec<Vec<f64>>),
    /// Histogram per channel, and the number of frames (LeRobot counts frames, not pixels).
    Image(Box<[[u64; 256]; 3]>, u64),
}

impl Stat {
    fn push(&mut self, v: &[f64]) {
        if let Stat::Values(d) = self {
            for (k, x) in v.iter().enumerate() {
                d[k].push(*x);
            }
        }
    }

    fn to_json(&self, boolean: bool) -> serde_json::Value {
        // per dimension (or channel): min, max, mean, std, q01, q10, q50, q90, q99
        let (per, count, image): (Vec<[f64; 9]>, u64, bool) = match self {
            Stat::Values(dims) => {
                let per = dims
                    .iter()
                    .map(|d| {
                        let mut s = d.clone();
                        s.sort_by(|a, b| a.total_cmp(b));
                        let n = s.len().max(1) as f64;
                        let mean = s.iter().sum::<f64>() / n;
                        let var = s.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
                        let first = s.first().copied().unwrap_or(0.0);
                        let last = s.last().copied().unwrap_or(0.0);
                        summary(first, last, mean, var.sqrt(), |p| quantile_sorted(&s, p))
                    })
                    .collect();
                (per, dims.first().map_or(0, |d| d.len()) as u64, false)
            }
            Stat::Image(h, frames) => {
                let val = |i: usize| i as f64 / 255.0;
                let per = h
                    .iter()
                    .map(|hist| {
                        let nf = hist.iter().sum::<u64>().max(1) as f64;
                        let weighted = |f: &dyn Fn(f64) -> f64| {
                            hist.iter()
                                .enumerate()
                                .map(|(i, &c)| c as f64 * f(val(i)))
                                .sum::<f64>()
                                / nf
                        };
                        let mean = weighted(&|v| v);
                        let var = weighted(&|v| (v - mean).powi(2));
                        let min = hist.iter().position(|&c| c > 0).unwrap_or(0);
                        let max = hist.iter().rposition(|&c| c > 0).unwrap_or(0);
                        summary(val(min), val(max), mean, var.sqrt(), |p| {
                            quantile_hist(hist, p)
                        })
                    })
                    .collect();
                (per, *frames, true)
            }
        };
        let col = |i: usize| -> serde_json::Value {
            if image {
                // LeRobot's image stats have shape (3, 1, 1)
                json!(per.iter().map(|s| vec![vec![s[i]]]).collect::<Vec<_>>())
            } else if boolean && i < 2 {
                json!(per.iter().map(|s| s[i] != 0.0).collect::<Vec<_>>())
            } else {
                json!(per.iter().map(|s| s[i]).collect::<Vec<_>>())
            }
        };
        json!({
            "min": col(0), "max": col(1), "mean": col(2), "std": col(3),
            "count": [count],
            "q01": col(4), "q10": col(5), "q50": col(6), "q90": col(7), "q99": col(8),
        })
    }
}

/// The statistics LeRobot stores, in order: min, max, mean, std and the 1/10/50/90/99 % quantiles.
fn summary(min: f64, max: f64, mean: f64, std: f64, q: impl Fn(f64) -> f64) -> [f64; 9] {
    [
        min,
        max,
        mean,
        std,
        q(0.01),
        q(0.10),
        q(0.50),
        q(0.90),
        q(0.99),
    ]
}

/// Linear-interpolated quantile of sorted values (numpy's default).
fn quantile_sorted(s: &[f64], p: f64) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    let pos = p * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

/// Quantile of 8-bit values given as a histogram, in [0, 1].
fn quantile_hist(h: &[u64; 256], p: f64) -> f64 {
    let n: u64 = h.iter().sum();
    if n == 0 {
        return 0.0;
    }
    let target = (p * (n - 1) as f64).round() as u64;
    let mut acc = 0u64;
    for (i, &c) in h.iter().enumerate() {
        acc += c;
        if acc > target {
            return i as f64 / 255.0;
        }
    }
    1.0
}
