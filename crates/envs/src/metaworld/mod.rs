//! The `metaworld` suite: Meta-World v3 tasks (metaworld 3.1.1) on MuJoCo 3.17, in Rust (cargo feature
//! `mujoco`).
//!
//! The six tasks of the World4RL paper's Table II (`coffee-pull`, `soccer`, `hammer`, `door-lock`,
//! `lever-pull`, `handle-pull`) plus `button-press` and `drawer-open`, registered as `metaworld/<task>`.
//! The scenes (XML, meshes, textures) are Meta-World's own, read at run time from the directory that
//! `scripts/setup-mujoco.sh` extracts from the `metaworld==3.1.1` wheel ([`assets_dir`]).
//!
//! # Semantics (those of metaworld 3.1.1, checked against it by `tests/metaworld_parity.rs`)
//! * **Action** `a` in `[-1, 1]^4`: the arm's mocap target moves by `a[0..3] / 100` (metres), clipped to the
//!   task's hand bounds; `a[3]` drives the two gripper fingers (`ctrl = [a3, -a3]`; +1 closes). Then 5 MuJoCo
//!   steps of 2.5 ms (`frame_skip = 5`, 12.5 ms per environment step).
//! * **Reset**: the task's random initial configuration (the "task vector", `rand_vec` in Meta-World: object
//!   and/or goal positions) is drawn uniformly from the task's range, or given explicitly
//!   ([`MetaWorld::reset_to`]); the hand is then held at its start for 50 x 5 steps.
//! * **Observation** (39 values): hand position (3), gripper opening (1, finger distance / 0.1 in [0, 1]),
//!   14 object values (per object position (3) and quaternion (4), zero-padded), the same 18 values of the
//!   previous step, and the goal position (3) (Meta-World's MT setting, goal observable). After a step the
//!   hand, gripper and goal values are clipped to Meta-World's observation space.
//! * **Success** uses each task's threshold; the dense reward is Meta-World's "v2" reward in `[0, 10]`
//!   ([`MwStep::reward`]; the [`crate::Env`] wrapper divides it by 10).
//! * Episodes last 500 steps by default ([`MetaWorldConfig::max_steps`]).
//! * **Seeds**: `reset(seed)` draws the task vector with a ChaCha8 generator, so seed `k` is not MT1's task
//!   `k` (numpy's generator); replay a Meta-World task with [`MetaWorld::reset_to`] and its `rand_vec`.
//! * **Experts** ([`expert_action`]) port metaworld's scripted policies, except soccer's, which is this
//!   crate's own (metaworld's knocks the ball away too often to reach 90 %).
//!
//! # Pixels
//! RGB frames from a fixed camera (`corner` by default, turned upright) through EGL, see [`RenderConfig`] and
//! [`MetaWorldRenderer`]; they are pixel-identical to metaworld's with the same settings (checked by the parity
//! test on this machine's Mesa).
//!
//! # Set-up and build
//! `scripts/setup-mujoco.sh` downloads the two wheels, extracts libmujoco 3.17.0 and the assets into
//! `third_party/`, installs the Debian EGL packages, and writes `third_party/mujoco.env`; then
//! `source third_party/mujoco.env && cargo test -p w4rl-envs --features mujoco`. The build needs
//! `MUJOCO_DYNAMIC_LINK_DIR` (mujoco-rs links libmujoco from it; this crate's build script also embeds it as an
//! rpath of its own test binaries).
//!
//! # Types
//! * [`MetaWorld`]: physics, observation, reward, success (no frames; `Send`); [`MetaWorldRenderer`]: frames.
//! * [`MetaWorldEnv`]: both as a [`crate::Env`]; [`MetaWorldExpert`]: the scripted expert as a
//!   [`crate::Expert`]; [`expert_action`]: the experts as a function of the observation.

mod env;
mod expert;
mod render;
mod reward;
mod sim;
mod tasks;

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use env::{
    action_spec, list_tasks, make, make_expert, MetaWorldEnv, MetaWorldExpert, PREFIX, SUITE,
};
pub use expert::expert_action;
pub use render::{MetaWorldRenderer, RenderConfig};
pub use tasks::{spec, TaskSpec, TASKS};

use sim::{Sim, Vec3, FRAME_SKIP};
use tasks::TaskImpl;

/// Environment variable naming the Meta-World asset directory (the one holding `sawyer_xyz/`).
pub const ASSETS_ENV: &str = "WORLD4RL_METAWORLD_ASSETS";
/// Observation length.
pub const OBS_DIM: usize = 39;
/// Action length.
pub const ACTION_DIM: usize = 4;
/// Meta-World's episode length.
pub const DEFAULT_MAX_STEPS: usize = 500;

/// Hand bounds of the observation space (`_HAND_SPACE`).
const OBS_HAND_LOW: Vec3 = [-0.525, 0.348, -0.0525];
const OBS_HAND_HIGH: Vec3 = [0.525, 1.025, 0.7];

/// What can go wrong in this suite. Every message says what and what to do.
#[derive(Debug, thiserror::Error)]
pub enum MetaWorldError {
    #[error("Meta-World assets not found (looked in {looked}); run scripts/setup-mujoco.sh, or set {ASSETS_ENV} to the directory holding sawyer_xyz/")]
    AssetsMissing { looked: String },
    #[error("cannot load the Meta-World scene {path}: {reason}")]
    ModelLoad { path: String, reason: String },
    #[error("unknown Meta-World task '{0}'; known: {known}", known = known_tasks())]
    UnknownTask(String),
    #[error("bad task vector for '{task}': {reason}")]
    BadTaskVector { task: String, reason: String },
    #[error("action has {0} components but Meta-World tasks take 4")]
    ActionDim(usize),
    #[error("action component {index} is {value}, not a finite number")]
    NonFiniteAction { index: usize, value: f32 },
    #[error("the episode is over after {0} steps; call reset before stepping again")]
    EpisodeOver(usize),
    #[error("invalid Meta-World configuration: {0}")]
    Config(String),
    #[error("Meta-World rendering: {0}")]
    Render(String),
}

fn known_tasks() -> String {
    TASKS.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
}

/// Finds the asset directory: `$WORLD4RL_METAWORLD_ASSETS`, else `third_party/metaworld-assets` under the
/// current directory, else under the workspace this crate was built in.
pub fn assets_dir() -> Result<PathBuf, MetaWorldError> {
    let mut looked = Vec::new();
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os(ASSETS_ENV) {
        candidates.push(PathBuf::from(dir));
    } else {
        candidates.push(PathBuf::from("third_party/metaworld-assets"));
        candidates
            .push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../third_party/metaworld-assets"));
    }
    for c in candidates {
        if c.join("sawyer_xyz").is_dir() {
            return Ok(c);
        }
        looked.push(c.display().to_string());
    }
    Err(MetaWorldError::AssetsMissing {
        looked: looked.join(", "),
    })
}

/// Options of a [`MetaWorld`] environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetaWorldConfig {
    /// Episode length; `truncated` is reported on this step. Default 500 (Meta-World's).
    pub max_steps: usize,
    /// Asset directory; `None` looks it up with [`assets_dir`].
    pub assets: Option<PathBuf>,
}

impl Default for MetaWorldConfig {
    fn default() -> Self {
        MetaWorldConfig {
            max_steps: DEFAULT_MAX_STEPS,
            assets: None,
        }
    }
}

/// The outcome of [`MetaWorld::step`].
#[derive(Clone, Debug, PartialEq)]
pub struct MwStep {
    /// The 39-D observation.
    pub obs: [f64; OBS_DIM],
    /// Meta-World's dense ("v2") reward, in `[0, 10]`.
    pub reward: f64,
    /// The task's success criterion holds.
    pub success: bool,
    /// This step reached [`MetaWorldConfig::max_steps`].
    pub truncated: bool,
}

/// One Meta-World task on one MuJoCo scene: physics, observation, reward, success; no frames (see
/// [`MetaWorldRenderer`]). [`MetaWorldEnv`] wraps both as a [`crate::Env`].
pub struct MetaWorld {
    spec: &'static TaskSpec,
    sim: Sim,
    task: Box<dyn TaskImpl>,
    max_steps: usize,
    steps: usize,
    prev: [f64; 18],
    obs: [f64; OBS_DIM],
    target: Vec3,
    task_vector: Vec<f64>,
}

impl MetaWorld {
    /// Loads the scene of `task` (`coffee-pull`, `metaworld/coffee-pull` or `coffee-pull-v3`) and resets it
    /// with seed 0.
    pub fn new(task: &str, cfg: &MetaWorldConfig) -> Result<MetaWorld, MetaWorldError> {
        let name = task.strip_prefix(PREFIX).unwrap_or(task);
        let spec = spec(name).ok_or_else(|| MetaWorldError::UnknownTask(task.to_string()))?;
        if cfg.max_steps == 0 {
            return Err(MetaWorldError::Config(
                "max_steps is 0 but must be at least 1".into(),
            ));
        }
        let dir = match &cfg.assets {
            Some(d) if d.join("sawyer_xyz").is_dir() => d.clone(),
            Some(d) => {
                return Err(MetaWorldError::AssetsMissing {
                    looked: d.display().to_string(),
                })
            }
            None => assets_dir()?,
        };
        let path = dir.join(spec.xml);
        if !path.is_file() {
            return Err(MetaWorldError::AssetsMissing {
                looked: path.display().to_string(),
            });
        }
        let sim = Sim::load(&path)?;
        let task = tasks::build(spec, &sim)?;
        let mut env = MetaWorld {
            spec,
            sim,
            task,
            max_steps: cfg.max_steps,
            steps: 0,
            prev: [0.0; 18],
            obs: [0.0; OBS_DIM],
            target: [0.0; 3],
            task_vector: Vec::new(),
        };
        env.reset(0)?;
        Ok(env)
    }

    pub fn spec(&self) -> &'static TaskSpec {
        self.spec
    }
    /// Steps taken in this episode.
    pub fn steps(&self) -> usize {
        self.steps
    }
    pub fn max_steps(&self) -> usize {
        self.max_steps
    }
    /// The current observation.
    pub fn obs(&self) -> &[f64; OBS_DIM] {
        &self.obs
    }
    /// The task vector of this episode.
    pub fn task_vector(&self) -> &[f64] {
        &self.task_vector
    }

    /// Draws a task vector uniformly from the task's range with a ChaCha8 generator seeded by `seed`
    /// (rejecting object-goal pairs closer than Meta-World allows).
    pub fn sample_task_vector(spec: &TaskSpec, seed: u64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        loop {
            let v: Vec<f64> = spec
                .reset_low
                .iter()
                .zip(spec.reset_high)
                .map(|(&lo, &hi)| lo + (hi - lo) * rng.gen::<f64>())
                .collect();
            if spec.check_vector(&v).is_ok() {
                return v;
            }
        }
    }

    /// Starts an episode with a task vector drawn from `seed`.
    pub fn reset(&mut self, seed: u64) -> Result<[f64; OBS_DIM], MetaWorldError> {
        let v = Self::sample_task_vector(self.spec, seed);
        self.reset_to(&v)
    }

    /// Starts an episode with an explicit task vector (Meta-World's `rand_vec`: for example the object and
    /// goal positions), as recorded by `scripts/metaworld/golden.py`.
    pub fn reset_to(&mut self, task_vector: &[f64]) -> Result<[f64; OBS_DIM], MetaWorldError> {
        self.spec.check_vector(task_vector)?;
        self.task_vector = task_vector.to_vec();
        self.task.prepare_model(&mut self.sim, task_vector);
        self.sim.data.reset();
        let init_tcp = self.sim.reset_hand(self.spec.hand_init);
        let target = self.task.reset(&mut self.sim, task_vector, init_tcp);
        let curr = self.sim.curr_obs(&self.task.objects(&self.sim));
        self.obs[..18].copy_from_slice(&curr);
        self.obs[18..36].copy_from_slice(&curr);
        self.obs[36..].copy_from_slice(&target);
        self.target = target;
        self.prev = curr;
        self.steps = 0;
        Ok(self.obs)
    }

    /// Applies one action (finite; components outside `[-1, 1]` are clipped).
    pub fn step(&mut self, action: &[f32]) -> Result<MwStep, MetaWorldError> {
        if action.len() != ACTION_DIM {
            return Err(MetaWorldError::ActionDim(action.len()));
        }
        if let Some((index, &value)) = action.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(MetaWorldError::NonFiniteAction { index, value });
        }
        if self.steps >= self.max_steps {
            return Err(MetaWorldError::EpisodeOver(self.steps));
        }
        let a = [
            action[0].clamp(-1.0, 1.0),
            action[1].clamp(-1.0, 1.0),
            action[2].clamp(-1.0, 1.0),
            action[3].clamp(-1.0, 1.0),
        ];
        self.sim
            .set_xyz_action([a[0], a[1], a[2]], self.spec.hand_low, self.spec.hand_high);
        let grip = a[3] as f64;
        self.sim.do_simulation([grip, -grip], FRAME_SKIP);
        self.steps += 1;
        self.sim.data.forward();
        let curr = self.sim.curr_obs(&self.task.objects(&self.sim));
        let mut obs = [0.0; OBS_DIM];
        obs[..18].copy_from_slice(&curr);
        obs[18..36].copy_from_slice(&self.prev);
        obs[36..].copy_from_slice(&self.target);
        self.prev = curr;
        self.clip_obs(&mut obs);
        self.obs = obs;
        let (reward, success) = self.task.evaluate(&self.sim, &obs, a);
        Ok(MwStep {
            obs,
            reward,
            success,
            truncated: self.steps == self.max_steps,
        })
    }

    /// Clips to Meta-World's observation space: hand positions, gripper openings and the goal.
    fn clip_obs(&self, obs: &mut [f64; OBS_DIM]) {
        for base in [0, 18] {
            for k in 0..3 {
                obs[base + k] = obs[base + k].max(OBS_HAND_LOW[k]).min(OBS_HAND_HIGH[k]);
            }
            obs[base + 3] = obs[base + 3].clamp(-1.0, 1.0);
        }
        for k in 0..3 {
            obs[36 + k] = obs[36 + k]
                .max(self.spec.goal_low[k])
                .min(self.spec.goal_high[k]);
        }
    }

    /// The expert's action for the current observation.
    pub fn expert_action(&self) -> [f32; 4] {
        expert_action(self.spec.name, &self.obs).unwrap_or([0.0; 4])
    }
}
