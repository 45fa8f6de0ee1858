//! World4RL in Rust: diffusion world model, reward classifier, BC policy, PPO in imagination, pipeline.
//!
//! Three layers, each in its own folders:
//!
//! * **Learners** take loaded episodes and models and return models and statistics; they never see
//!   the run directory or a real environment: the world model and its checks ([`world_model`], on
//!   [`diffusion`] and [`models`]), the reward classifier ([`reward`]), the Gaussian BC policy
//!   ([`policy`]) and PPO with the imagined environment it refines in ([`ppo`]); [`metrics`] scores
//!   frames.
//! * **The real environment**: collection, evaluation on validation and test scenes, the choices
//!   made on validation scenes, paired comparisons and the ceiling control ([`eval`]).
//! * **Stages**: the experiment's config, its typed list of stages, the rule that runs one, the run
//!   directory, replicates and the report ([`experiment`]); the stages themselves
//!   ([`stages`]) load inputs from the run directory and call the learners.
//!
//! [`util`] holds what every layer uses (checkpoints, devices, frame layouts, seed sets, the
//! optimiser, logs); [`playground`] is the session behind `world4rl play`.

pub mod diffusion;
pub mod eval;
pub mod experiment;
pub mod metrics;
pub mod models;
pub mod playground;
pub mod policy;
pub mod ppo;
pub mod reward;
pub mod stages;
pub mod util;
pub mod world_model;
