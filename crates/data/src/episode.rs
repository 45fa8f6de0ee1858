//! One recorded episode: frames, actions, rewards, per-frame success flags, optional low-dim state.
//!
//! Alignment (the convention every stage relies on): an episode of `T` steps holds `T + 1` frames.
//! `frames[t]` is the observation before `actions[t]`, `frames[t + 1]` the one it produced.
//! `success[t]` is the success flag *of frame t* (`success[0]` is normally 0), `rewards[t]` the
//! environment reward of step `t`, and `states[t]` the low-dim state of frame `t`.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::DataError;

/// Version of the on-disk schema written into every episode and `dataset.json`.
pub const SCHEMA_VERSION: u32 = 1;

/// Where an episode came from (the paper's D_exp, D_rollout and D_rand).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EpisodeKind {
    /// Scripted or human expert demonstration (D_exp).
    Expert,
    /// Rollout of a learned policy, e.g. the BC policy (D_rollout).
    Policy,
    /// Uniform-random-action rollout (D_rand).
    Random,
}

impl EpisodeKind {
    /// All kinds, in a fixed order.
    pub const ALL: [EpisodeKind; 3] = [
        EpisodeKind::Expert,
        EpisodeKind::Policy,
        EpisodeKind::Random,
    ];

    /// The lowercase name used in file names and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            EpisodeKind::Expert => "expert",
            EpisodeKind::Policy => "policy",
            EpisodeKind::Random => "random",
        }
    }
}

impl fmt::Display for EpisodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EpisodeKind {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "expert" => Ok(EpisodeKind::Expert),
            "policy" => Ok(EpisodeKind::Policy),
            "random" => Ok(EpisodeKind::Random),
            other => Err(DataError::Invalid(format!(
                "unknown episode kind '{other}' (expected expert, policy or random)"
            ))),
        }
    }
}

/// What every episode of one dataset shares: written once into `dataset.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    /// Suite the tasks belong to (`tabletop`, `metaworld`, ...).
    pub suite: String,
    /// Frames are square RGB images of this side length.
    pub image_size: usize,
    /// Number of action dimensions.
    pub action_dim: usize,
    /// Lower action bound per dimension.
    pub action_low: Vec<f32>,
    /// Upper action bound per dimension.
    pub action_high: Vec<f32>,
    /// Length of the optional low-dim state (0 when absent).
    pub state_dim: usize,
    /// How the frames were rendered, for suites with render options (Meta-World). Absent from
    /// `dataset.json` when it is the suite's default.
    #[serde(default, skip_serializing_if = "FrameRender::is_default")]
    pub render: FrameRender,
}

/// The render options the frames were drawn with, as the environment suite names them (Meta-World's
/// qualities `cheap`, `fast`, `full` and its camera names). An empty field is the suite's default, which
/// is also what a dataset written before the field existed holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FrameRender {
    /// Render quality (empty = the suite's default).
    pub quality: String,
    /// Camera (empty = the suite's default).
    pub camera: String,
}

impl FrameRender {
    /// Both fields at the suite's default.
    pub fn is_default(&self) -> bool {
        self.quality.is_empty() && self.camera.is_empty()
    }
}

impl DatasetSpec {
    /// Checks internal consistency (bounds length and order, non-zero sizes).
    pub fn validate(&self) -> Result<(), DataError> {
        if self.image_size == 0 || self.action_dim == 0 {
            return Err(DataError::Invalid(
                "image_size and action_dim must be positive".into(),
            ));
        }
        if self.action_low.len() != self.action_dim || self.action_high.len() != self.action_dim {
            return Err(DataError::Invalid(format!(
                "action bounds have {} / {} entries, expected action_dim = {}",
                self.action_low.len(),
                self.action_high.len(),
                self.action_dim
            )));
        }
        for (i, (lo, hi)) in self.action_low.iter().zip(&self.action_high).enumerate() {
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return Err(DataError::Invalid(format!(
                    "action bound {i} is [{lo}, {hi}]: bounds must be finite with low < high"
                )));
            }
        }
        Ok(())
    }
}

/// Per-episode metadata, stored in the safetensors header of the episode file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpisodeMeta {
    /// [`SCHEMA_VERSION`] at write time.
    pub schema_version: u32,
    /// Suite name, equal to the dataset's.
    pub suite: String,
    /// Task name, e.g. `push-t` or `metaworld/door-lock`.
    pub task: String,
    /// Where the episode came from.
    pub kind: EpisodeKind,
    /// Index of the episode among the (task, kind) episodes; names the file.
    pub index: usize,
    /// Seed the environment was reset with.
    pub seed: u64,
    /// Number of steps `T` (the episode has `T + 1` frames).
    pub steps: usize,
    /// Frame side length in pixels.
    pub image_size: usize,
    /// Number of action dimensions.
    pub action_dim: usize,
    /// Length of the low-dim state per frame (0 when absent).
    pub state_dim: usize,
    /// Lower action bound per dimension.
    pub action_low: Vec<f32>,
    /// Upper action bound per dimension.
    pub action_high: Vec<f32>,
    /// True when any frame of the episode is successful.
    pub success: bool,
}

/// An episode held in memory. See the module docs for the alignment of the arrays.
#[derive(Clone, Debug, PartialEq)]
pub struct Episode {
    /// Metadata (also written into the file header).
    pub meta: EpisodeMeta,
    /// RGB frames, u8, shape `[T + 1, H, W, 3]`, row-major.
    pub frames: Vec<u8>,
    /// Actions, f32, shape `[T, A]`.
    pub actions: Vec<f32>,
    /// Rewards, f32, shape `[T]`.
    pub rewards: Vec<f32>,
    /// Success flag per frame, u8 (0 or 1), shape `[T + 1]`.
    pub success: Vec<u8>,
    /// Low-dim state per frame, f32, shape `[T + 1, S]` (empty when `S = 0`).
    pub states: Vec<f32>,
}

impl Episode {
    /// Starts an empty episode for the given spec, from its first observation.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        spec: &DatasetSpec,
        task: &str,
        kind: EpisodeKind,
        index: usize,
        seed: u64,
        first_frame: &[u8],
        first_state: &[f32],
        first_success: bool,
    ) -> Result<Self, DataError> {
        let mut ep = Episode {
            meta: EpisodeMeta {
                schema_version: SCHEMA_VERSION,
                suite: spec.suite.clone(),
                task: task.to_string(),
                kind,
                index,
                seed,
                steps: 0,
                image_size: spec.image_size,
                action_dim: spec.action_dim,
                state_dim: spec.state_dim,
                action_low: spec.action_low.clone(),
                action_high: spec.action_high.clone(),
                success: first_success,
            },
            frames: Vec::new(),
            actions: Vec::new(),
            rewards: Vec::new(),
            success: Vec::new(),
            states: Vec::new(),
        };
        ep.check_frame(first_frame, first_state)?;
        ep.frames.extend_from_slice(first_frame);
        ep.states.extend_from_slice(first_state);
        ep.success.push(first_success as u8);
        Ok(ep)
    }

    fn check_frame(&self, frame: &[u8], state: &[f32]) -> Result<(), DataError> {
        let m = &self.meta;
        if frame.len() != m.image_size * m.image_size * 3 {
            return Err(DataError::Invalid(format!(
                "frame has {} bytes, expected {}x{}x3 = {}",
                frame.len(),
                m.image_size,
                m.image_size,
                m.image_size * m.image_size * 3
            )));
        }
        if state.len() != m.state_dim {
            return Err(DataError::Invalid(format!(
                "state has {} values, expected state_dim = {}",
                state.len(),
                m.state_dim
            )));
        }
        Ok(())
    }

    /// Appends one step: the action taken, its reward, and the frame it produced.
    pub fn push(
        &mut self,
        action: &[f32],
        reward: f32,
        next_frame: &[u8],
        next_state: &[f32],
        next_success: bool,
    ) -> Result<(), DataError> {
        if action.len() != self.meta.action_dim {
            return Err(DataError::Invalid(format!(
                "action has {} values, expected action_dim = {}",
                action.len(),
                self.meta.action_dim
            )));
        }
        if let Some(bad) = action.iter().find(|a| !a.is_finite()) {
            return Err(DataError::Invalid(format!("action contains {bad}")));
        }
        self.check_frame(next_frame, next_state)?;
        self.actions.extend_from_slice(action);
        self.rewards.push(reward);
        self.frames.extend_from_slice(next_frame);
        self.states.extend_from_slice(next_state);
        self.success.push(next_success as u8);
        self.meta.steps += 1;
        self.meta.success |= next_success;
        Ok(())
    }

    /// Number of steps `T`.
    pub fn steps(&self) -> usize {
        self.meta.steps
    }

    /// Bytes of one frame (`H * W * 3`).
    pub fn frame_len(&self) -> usize {
        self.meta.image_size * self.meta.image_size * 3
    }

    /// Frame `t` (`0..=T`) as `H * W * 3` bytes.
    pub fn frame(&self, t: usize) -> &[u8] {
        let n = self.frame_len();
        &self.frames[t * n..(t + 1) * n]
    }

    /// Action `t` (`0..T`).
    pub fn action(&self, t: usize) -> &[f32] {
        let a = self.meta.action_dim;
        &self.actions[t * a..(t + 1) * a]
    }

    /// Low-dim state of frame `t` (empty when the dataset has none).
    pub fn state(&self, t: usize) -> &[f32] {
        let s = self.meta.state_dim;
        &self.states[t * s..(t + 1) * s]
    }

    /// Checks that every array's length agrees with the metadata and the values are sane.
    pub fn validate(&self) -> Result<(), DataError> {
        let m = &self.meta;
        let t = m.steps;
        let expect = |name: &str, got: usize, want: usize| {
            if got == want {
                Ok(())
            } else {
                Err(DataError::Invalid(format!(
                    "{name} has {got} elements, metadata says {want}"
                )))
            }
        };
        expect("frames", self.frames.len(), (t + 1) * self.frame_len())?;
        expect("actions", self.actions.len(), t * m.action_dim)?;
        expect("rewards", self.rewards.len(), t)?;
        expect("success", self.success.len(), t + 1)?;
        expect("states", self.states.len(), (t + 1) * m.state_dim)?;
        if self.success.iter().any(|&s| s > 1) {
            return Err(DataError::Invalid("success flags must be 0 or 1".into()));
        }
        if m.success != self.success.contains(&1) {
            return Err(DataError::Invalid(
                "metadata success flag disagrees with the per-frame flags".into(),
            ));
        }
        if self.actions.iter().any(|a| !a.is_finite()) {
            return Err(DataError::Invalid("actions contain NaN or infinity".into()));
        }
        Ok(())
    }
}
