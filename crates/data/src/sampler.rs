//! Window sampler: (L context frames, L context actions, next frame, padding mask) across episodes.
//!
//! A window ending at step `j` (`1 <= j <= T`) holds frames `j-L .. j-1`, actions `j-L .. j-1` and the
//! target frame `j`. Positions before the episode start are zero-filled and marked `false` in the mask
//! (DIAMOND's padding). With no weights every transition of the dataset is equally likely; a task or kind
//! weight `w` multiplies the probability of that group's transitions by `w` (0 removes the group).
//!
//! With `rollout = N > 0` a window also carries the `N` frames after its target and the actions that
//! lead to them (frames `j+1 .. j+N`, actions `j .. j+N-1`), for training on the model's own
//! predictions (DIAMOND's `num_autoregressive_steps`); steps past the episode end are zero and masked.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::episode::{Episode, EpisodeKind};
use crate::DataError;

/// Sampler settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WindowConfig {
    /// Context length L (the paper's T = 4 frames).
    pub context: usize,
    /// Per-task multipliers of the uniform transition probability (missing tasks: 1).
    pub task_weights: BTreeMap<String, f64>,
    /// Per-kind multipliers (missing kinds: 1).
    pub kind_weights: BTreeMap<EpisodeKind, f64>,
    /// Frames after the target carried by each window (0 = none).
    pub rollout: usize,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            context: 4,
            task_weights: BTreeMap::new(),
            kind_weights: BTreeMap::new(),
            rollout: 0,
        }
    }
}

/// A batch of windows, row-major arrays.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowBatch {
    /// Batch size B.
    pub batch: usize,
    /// Context length L.
    pub context: usize,
    /// Frame side length H (= W).
    pub image_size: usize,
    /// Action dimensions A.
    pub action_dim: usize,
    /// Context frames, `[B, L, H, W, 3]`, oldest first.
    pub frames: Vec<u8>,
    /// Context actions, `[B, L, A]`; action `l` was taken at context frame `l`.
    pub actions: Vec<f32>,
    /// Target frames, `[B, H, W, 3]`.
    pub next: Vec<u8>,
    /// `[B, L]`, false where the context position lies before the episode start.
    pub mask: Vec<bool>,
    /// Index (into the sampler's episode list) of each window's episode.
    pub episode: Vec<usize>,
    /// Index of each window's target frame in its episode.
    pub step: Vec<usize>,
    /// Frames after the target, N = [`WindowConfig::rollout`]: `[B, N, H, W, 3]` (frames `j+1 ..
    /// j+N` of a window whose target is frame `j`), zero past the episode end.
    pub after: Vec<u8>,
    /// The actions that lead to them, `[B, N, A]` (actions `j .. j+N-1`).
    pub after_actions: Vec<f32>,
    /// `[B, N]`, false where the step lies past the episode end.
    pub after_mask: Vec<bool>,
}

impl WindowBatch {
    /// Frames after the target per window (N).
    pub fn rollout(&self) -> usize {
        self.after_mask.len().checked_div(self.batch).unwrap_or(0)
    }
}

/// Draws windows from a set of in-memory episodes, reproducibly from a seed.
pub struct WindowSampler<'a> {
    episodes: Vec<&'a Episode>,
    cfg: WindowConfig,
    cumulative: Vec<f64>,
    rng: ChaCha8Rng,
    image_size: usize,
    action_dim: usize,
}

impl<'a> WindowSampler<'a> {
    /// Builds a sampler. Fails when the episodes disagree on sizes, or when no transition has weight.
    pub fn new(
        episodes: Vec<&'a Episode>,
        cfg: WindowConfig,
        seed: u64,
    ) -> Result<Self, DataError> {
        let first = episodes
            .first()
            .ok_or_else(|| DataError::Invalid("the sampler needs at least one episode".into()))?;
        if cfg.context == 0 {
            return Err(DataError::Invalid(
                "context length must be at least 1".into(),
            ));
        }
        let image_size = first.meta.image_size;
        let action_dim = first.meta.action_dim;
        let mut cumulative = Vec::with_capacity(episodes.len());
        let mut total = 0.0;
        for ep in &episodes {
            if ep.meta.image_size != image_size || ep.meta.action_dim != action_dim {
                return Err(DataError::Invalid(format!(
                    "episode {} {} #{} has image {} / action dim {}, others have {image_size} / {action_dim}",
                    ep.meta.task, ep.meta.kind, ep.meta.index, ep.meta.image_size, ep.meta.action_dim
                )));
            }
            let wt = cfg.task_weights.get(&ep.meta.task).copied().unwrap_or(1.0);
            let wk = cfg.kind_weights.get(&ep.meta.kind).copied().unwrap_or(1.0);
            if !(wt.is_finite() && wt >= 0.0 && wk.is_finite() && wk >= 0.0) {
                return Err(DataError::Invalid(format!(
                    "sampling weights must be finite and non-negative (task {} -> {wt}, kind {} -> {wk})",
                    ep.meta.task, ep.meta.kind
                )));
            }
            total += wt * wk * ep.meta.steps as f64;
            cumulative.push(total);
        }
        if total <= 0.0 {
            return Err(DataError::Invalid(
                "no transition has a positive sampling weight".into(),
            ));
        }
        Ok(Self {
            episodes,
            cfg,
            cumulative,
            rng: ChaCha8Rng::seed_from_u64(seed),
            image_size,
            action_dim,
        })
    }

    /// The episodes, in the order `WindowBatch::episode` indexes them.
    pub fn episodes(&self) -> &[&'a Episode] {
        &self.episodes
    }

    /// Draws `batch` windows.
    pub fn sample(&mut self, batch: usize) -> WindowBatch {
        let total = *self.cumulative.last().expect("non-empty");
        let mut picks = Vec::with_capacity(batch);
        for _ in 0..batch {
            let u = self.rng.gen::<f64>() * total;
            let e = self
                .cumulative
                .partition_point(|&c| c <= u)
                .min(self.episodes.len() - 1);
            // Episodes with zero weight have equal cumulative bounds and are never chosen.
            let steps = self.episodes[e].meta.steps;
            let j = self.rng.gen_range(1..=steps);
            picks.push((e, j));
        }
        self.windows(&picks)
    }

    /// Builds the windows ending at the given (episode, target frame) pairs, in order.
    pub fn windows(&self, picks: &[(usize, usize)]) -> WindowBatch {
        let l = self.cfg.context;
        let h = self.image_size;
        let a = self.action_dim;
        let fl = h * h * 3;
        let b = picks.len();
        let n = self.cfg.rollout;
        let mut out = WindowBatch {
            batch: b,
            context: l,
            image_size: h,
            action_dim: a,
            frames: vec![0; b * l * fl],
            actions: vec![0.0; b * l * a],
            next: vec![0; b * fl],
            mask: vec![false; b * l],
            episode: Vec::with_capacity(b),
            step: Vec::with_capacity(b),
            after: vec![0; b * n * fl],
            after_actions: vec![0.0; b * n * a],
            after_mask: vec![false; b * n],
        };
        for (i, &(e, j)) in picks.iter().enumerate() {
            let ep = self.episodes[e];
            for k in 0..l {
                // context position k holds time step j - l + k
                let Some(t) = (j + k).checked_sub(l) else {
                    continue;
                };
                let slot = i * l + k;
                out.mask[slot] = true;
                out.frames[slot * fl..(slot + 1) * fl].copy_from_slice(ep.frame(t));
                out.actions[slot * a..(slot + 1) * a].copy_from_slice(ep.action(t));
            }
            out.next[i * fl..(i + 1) * fl].copy_from_slice(ep.frame(j));
            for k in 0..n.min(ep.meta.steps - j) {
                let slot = i * n + k;
                out.after_mask[slot] = true;
                out.after[slot * fl..(slot + 1) * fl].copy_from_slice(ep.frame(j + 1 + k));
                out.after_actions[slot * a..(slot + 1) * a].copy_from_slice(ep.action(j + k));
            }
            out.episode.push(e);
            out.step.push(j);
        }
        out
    }
}

/// Splits episode indices into (train, held-out), stratified by task so every task with at least two
/// episodes keeps at least one of each; reproducible from the seed.
pub fn holdout_split(tasks: &[&str], fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut by_task: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, t) in tasks.iter().enumerate() {
        by_task.entry(t).or_default().push(i);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut train, mut held) = (Vec::new(), Vec::new());
    for (_, mut idx) in by_task {
        // Fisher-Yates shuffle
        for i in (1..idx.len()).rev() {
            let j = rng.gen_range(0..=i);
            idx.swap(i, j);
        }
        let mut n_held = (idx.len() as f64 * fraction).round() as usize;
        if fraction > 0.0 && idx.len() >= 2 {
            n_held = n_held.clamp(1, idx.len() - 1);
        }
        held.extend_from_slice(&idx[..n_held]);
        train.extend_from_slice(&idx[n_held..]);
    }
    train.sort_unstable();
    held.sort_unstable();
    (train, held)
}
