//! The [`Env`] trait (Gymnasium manner) and the types it exchanges.

use serde::{Deserialize, Serialize};

use crate::EnvError;

/// The continuous action space of a task: a box `[low, high]^dim` with a meaning per component.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionSpec {
    /// Number of action components.
    pub dim: usize,
    /// Lower bound per component.
    pub low: Vec<f32>,
    /// Upper bound per component.
    pub high: Vec<f32>,
    /// What each component does, one sentence each.
    pub meaning: Vec<String>,
}

/// One observation: an RGB frame and the privileged low-dimensional state.
#[derive(Clone, Debug, PartialEq)]
pub struct Obs {
    /// `size * size * 3` bytes, RGB, row-major, row 0 at the top.
    pub frame: Vec<u8>,
    /// Side of the square frame in pixels.
    pub size: usize,
    /// The privileged low-dimensional state (layout documented by the suite; experts read it).
    pub state: Vec<f32>,
}

/// Extra information returned by [`Env::step`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// The task's sparse success criterion holds in the new state.
    pub success: bool,
}

/// The result of one [`Env::step`].
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// Observation after the action.
    pub obs: Obs,
    /// Reward of this step (see [`RewardKind`]).
    pub reward: f32,
    /// The episode reached a terminal state (only with [`EnvConfig::terminate_on_success`]).
    pub terminated: bool,
    /// The episode hit its step limit ([`Env::max_steps`]).
    pub truncated: bool,
    /// Sparse success flag and friends.
    pub info: Info,
}

/// Which reward [`Env::step`] returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RewardKind {
    /// The task's dense shaped reward in `[0, 1]`, equal to 1 when the task is solved.
    #[default]
    Dense,
    /// 1 when the success criterion holds, else 0.
    Sparse,
}

/// How finely a suite with render options (Meta-World) draws its frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RenderQuality {
    /// No anti-aliasing, no shadows, MuJoCo's planar reflections kept (the default).
    #[default]
    Cheap,
    /// As `cheap`, without the reflections: about 1.5x faster frames on a software renderer.
    Fast,
    /// The suite's own scene settings (Meta-World: 4x MSAA, 4096-px shadow map); about 10x slower.
    Full,
}

impl RenderQuality {
    /// The name used in configs (`cheap`, `fast`, `full`).
    pub fn name(self) -> &'static str {
        match self {
            RenderQuality::Cheap => "cheap",
            RenderQuality::Fast => "fast",
            RenderQuality::Full => "full",
        }
    }
}

impl std::str::FromStr for RenderQuality {
    type Err = EnvError;

    fn from_str(s: &str) -> Result<Self, EnvError> {
        match s.trim() {
            "cheap" => Ok(RenderQuality::Cheap),
            "fast" => Ok(RenderQuality::Fast),
            "full" => Ok(RenderQuality::Full),
            other => Err(EnvError::Config(format!(
                "render quality '{other}' is unknown; use 'cheap', 'fast' or 'full'"
            ))),
        }
    }
}

/// What a frame is rendered with beyond its size. Part of a run's config and of every policy checkpoint,
/// so a resumed run or a later evaluation renders the pixels training saw. The tabletop has one renderer
/// and one camera and refuses anything but the default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RenderOptions {
    /// Render quality. Default `cheap`.
    pub quality: RenderQuality,
    /// A fixed camera of the scene (Meta-World: `corner`, `corner2`, `corner3`, `topview`, ...); empty
    /// (the default) = the suite's own default camera (`corner` on Meta-World).
    pub camera: String,
}

impl RenderOptions {
    /// The suite's defaults (cheap quality, its default camera).
    pub fn is_default(&self) -> bool {
        *self == RenderOptions::default()
    }

    /// `quality` and `camera` as one short phrase for messages.
    pub fn describe(&self) -> String {
        let camera = if self.camera.is_empty() {
            "the default camera"
        } else {
            self.camera.as_str()
        };
        format!("{} quality, {camera}", self.quality.name())
    }
}

/// Options shared by every task of every suite.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnvConfig {
    /// Side of the square RGB observation in pixels (8..=1024). Default 64.
    pub image_size: usize,
    /// End the episode (`terminated = true`) on the first successful step. Default `false`: episodes have a
    /// fixed length, as in Meta-World, and success means "successful at some step".
    pub terminate_on_success: bool,
    /// Override of the task's episode length; `None` keeps the task's default.
    pub max_steps: Option<usize>,
    /// Dense shaped reward (default) or sparse success reward.
    pub reward: RewardKind,
    /// Render quality and camera (Meta-World; the tabletop accepts only the default).
    pub render: RenderOptions,
}

impl Default for EnvConfig {
    fn default() -> Self {
        Self {
            image_size: 64,
            terminate_on_success: false,
            max_steps: None,
            reward: RewardKind::Dense,
            render: RenderOptions::default(),
        }
    }
}

impl EnvConfig {
    /// The default configuration with another image size.
    pub fn with_size(image_size: usize) -> Self {
        Self {
            image_size,
            ..Self::default()
        }
    }

    /// Checks value ranges.
    pub fn validate(&self) -> Result<(), EnvError> {
        if !(8..=1024).contains(&self.image_size) {
            return Err(EnvError::Config(format!(
                "image_size is {} but must be between 8 and 1024 pixels",
                self.image_size
            )));
        }
        if self.max_steps == Some(0) {
            return Err(EnvError::Config(
                "max_steps is 0 but must be at least 1 (or absent for the task's default)".into(),
            ));
        }
        Ok(())
    }
}

/// A reinforcement-learning environment in the Gymnasium manner.
///
/// * [`reset`](Env::reset) starts an episode; everything about it (initial state, goal) is a deterministic
///   function of the seed, whatever happened before.
/// * [`step`](Env::step) applies one action. Actions must have [`ActionSpec::dim`] finite components; a NaN or
///   infinite component, or a wrong length, is refused with an [`EnvError`] and leaves the environment
///   unchanged. Finite out-of-range values are clipped to `[low, high]` (`[-1, 1]` in the tabletop suite).
/// * After `terminated` or `truncated` the episode is over and `step` returns [`EnvError::EpisodeOver`] until
///   the next `reset`. There is no auto-reset.
///
/// Environments are created already reset with seed 0.
pub trait Env: Send {
    /// Task name, unique across suites (e.g. `push-t`).
    fn task(&self) -> &str;
    /// Suite name (e.g. `tabletop`).
    fn suite(&self) -> &str;
    /// The action space.
    fn action_spec(&self) -> &ActionSpec;
    /// Episode length: `truncated` is set on this step.
    fn max_steps(&self) -> usize;
    /// Length of [`Obs::state`].
    fn state_dim(&self) -> usize;
    /// Side of [`Obs::frame`] in pixels.
    fn image_size(&self) -> usize;
    /// Starts a new episode from `seed`.
    fn reset(&mut self, seed: u64) -> Obs;
    /// Applies one action.
    fn step(&mut self, action: &[f32]) -> Result<Step, EnvError>;
    /// Whether a step costs enough (milliseconds of physics and rendering) that a batch of these
    /// environments is worth stepping in parallel. Cheap environments (microseconds a step) step one by
    /// one: handing them to a thread pool costs about what it saves, while the policy's threads still spin.
    /// Meta-World's steps (about 9 ms) would qualify, 1.3-1.4x faster in parallel, but one parallel run
    /// crashed inside Mesa's software rasteriser (`swrast_dri.so`), so it keeps this default until that
    /// is understood (`docs/speed.md`).
    fn costly_step(&self) -> bool {
        false
    }
}

/// Checks an action against a spec and returns it clipped to `[low, high]`.
///
/// Errors on a wrong length or a non-finite component; finite out-of-range values are clipped.
pub fn check_action(task: &str, spec: &ActionSpec, action: &[f32]) -> Result<Vec<f32>, EnvError> {
    if action.len() != spec.dim {
        return Err(EnvError::ActionDim {
            task: task.to_string(),
            expected: spec.dim,
            got: action.len(),
        });
    }
    if let Some((index, &value)) = action.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(EnvError::NonFiniteAction {
            task: task.to_string(),
            index,
            value,
        });
    }
    Ok(action
        .iter()
        .zip(spec.low.iter().zip(&spec.high))
        .map(|(&a, (&lo, &hi))| a.clamp(lo, hi))
        .collect())
}
