//! What a policy's network reads: batches of observations (frames and/or states) and, for policies
//! that stack frames, each environment's last observations.

use anyhow::Result;
use tch::Tensor;
use w4rl_envs::Obs;

use super::gaussian::GaussianPolicy;

/// Network inputs of a batch: `u8 [B, 3, h, w]` frames and/or `f32 [B, S]` raw states.
#[derive(Debug)]
pub struct ObsBatch {
    /// Frames at the policy's size (`None` when the policy ignores images).
    pub image: Option<Tensor>,
    /// Raw low-dimensional states (`None` when the policy ignores the state).
    pub state: Option<Tensor>,
}

impl ObsBatch {
    /// Rows `idx` of every part.
    pub fn select(&self, idx: &Tensor) -> ObsBatch {
        ObsBatch {
            image: self.image.as_ref().map(|t| t.index_select(0, idx)),
            state: self.state.as_ref().map(|t| t.index_select(0, idx)),
        }
    }

    /// Concatenates batches along the batch dimension.
    pub fn cat(parts: &[ObsBatch]) -> ObsBatch {
        let image: Vec<&Tensor> = parts.iter().filter_map(|p| p.image.as_ref()).collect();
        let state: Vec<&Tensor> = parts.iter().filter_map(|p| p.state.as_ref()).collect();
        ObsBatch {
            image: (!image.is_empty()).then(|| Tensor::cat(&image, 0)),
            state: (!state.is_empty()).then(|| Tensor::cat(&state, 0)),
        }
    }

    /// Batch size.
    pub fn len(&self) -> i64 {
        self.image
            .as_ref()
            .or(self.state.as_ref())
            .map(|t| t.size()[0])
            .unwrap_or(0)
    }

    /// True when the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The last observations of each environment of a batch, for policies that stack frames.
#[derive(Clone, Debug)]
pub struct ObsHistory {
    k: usize,
    envs: Vec<std::collections::VecDeque<Obs>>,
}

impl ObsHistory {
    /// Histories of length at most `k`, each starting with its environment's first observation.
    pub fn new(k: usize, first: Vec<Obs>) -> Self {
        let envs = first
            .into_iter()
            .map(|o| std::collections::VecDeque::from([o]))
            .collect();
        Self { k: k.max(1), envs }
    }

    /// Number of environments.
    pub fn len(&self) -> usize {
        self.envs.len()
    }

    /// True without environments.
    pub fn is_empty(&self) -> bool {
        self.envs.is_empty()
    }

    /// Starts a new episode of environment `i`.
    pub fn reset(&mut self, i: usize, obs: Obs) {
        self.envs[i].clear();
        self.envs[i].push_back(obs);
    }

    /// Appends the newest observation of environment `i`.
    pub fn push(&mut self, i: usize, obs: Obs) {
        let h = &mut self.envs[i];
        h.push_back(obs);
        while h.len() > self.k {
            h.pop_front();
        }
    }

    /// Policy inputs of the environments `rows` (all when `None`).
    pub fn batch(&self, policy: &GaussianPolicy, rows: Option<&[usize]>) -> Result<ObsBatch> {
        let all: Vec<usize>;
        let rows = match rows {
            Some(r) => r,
            None => {
                all = (0..self.envs.len()).collect();
                &all
            }
        };
        let stacks: Vec<Vec<&Obs>> = rows
            .iter()
            .map(|&i| self.envs[i].iter().collect())
            .collect();
        let refs: Vec<&[&Obs]> = stacks.iter().map(|v| v.as_slice()).collect();
        policy.obs_batch_stacked(&refs)
    }
}
