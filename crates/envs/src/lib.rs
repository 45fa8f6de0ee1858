//! world4rl environments (no torch).
//!
//! * [`Env`]: one environment in the Gymnasium manner (`reset(seed) -> Obs`, `step(action) -> Step`), with an
//!   RGB frame and a privileged low-dimensional state per observation.
//! * [`VecEnv`] / [`SyncVecEnv`]: N environments stepped together (rayon), no auto-reset.
//! * [`tabletop`]: the embedded default suite (rapier2d physics, tiny-skia pixels): `push-t`, `push-block`,
//!   `turn-lever`, `slide-handle`, sharing one pusher and one 2-D action space.
//! * [`list_tasks`], [`make`], [`make_expert`]: the registry.
//! * [`Controller`] (the task experts), [`NoisyExpert`], [`RandomPolicy`], [`rollout`]: scripted controllers and recorded episodes.
//! * [`gif`]: animated GIFs of episodes.
//!
//! ```
//! use w4rl_envs::{make, make_expert, rollout, EnvConfig};
//! let mut env = make("push-block", &EnvConfig::default()).unwrap();
//! let mut expert = make_expert("push-block").unwrap();
//! let ep = rollout(env.as_mut(), expert.as_mut(), 7).unwrap();
//! assert_eq!(ep.frames.len(), (ep.steps + 1) * 64 * 64 * 3);
//! ```

mod env;
mod error;
pub mod gif;
pub mod measure;
#[cfg(feature = "mujoco")]
pub mod metaworld;
mod policy;
mod registry;
pub mod tabletop;
mod vec_env;

pub use env::{
    check_action, ActionSpec, Env, EnvConfig, Info, Obs, RenderOptions, RenderQuality, RewardKind,
    Step,
};
pub use error::EnvError;
pub use policy::{rollout, rollout_with, Controller, NoisyExpert, RandomPolicy, Rollout};
pub use registry::{
    list_tasks, make, make_expert, make_noisy_expert, make_random_policy, task_names, TaskInfo,
};
pub use vec_env::{expand_seeds, steps_in_parallel, SyncVecEnv, VecEnv};
