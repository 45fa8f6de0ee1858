//! World4RL in Rust: diffusion world model, reward classifier, BC policy, PPO in imagination, pipeline.
//!
//! Stage 1 trains three learners on one episode dataset (crate `w4rl_data`): the world model
//! ([`world_model`]), the reward classifier ([`reward`]) and the Gaussian BC policy ([`policy`]).
//! Stage 2 freezes the first two and refines the policy with PPO ([`ppo`]) in the imagined
//! environment ([`imagined_env`]). The stages ([`stages`], run by [`stage::run_stage`] in the order of
//! [`pipeline`]) load inputs from the run directory ([`run`]) and call the learners, which never touch it.

pub mod acceptance;
pub mod action_encoding;
pub mod ceiling;
pub mod checkpoint;
pub mod closed_loop;
pub mod collect;
pub mod config;
pub mod device;
pub mod diffusion;
pub mod evaluate;
pub mod frames;
pub mod imagined_env;
pub mod interrupt;
pub mod json_float;
pub mod machine;
pub mod metrics;
pub mod metrics_log;
pub mod models;
pub mod optim;
pub mod outcome;
pub mod paired;
pub mod pipeline;
pub mod playground;
pub mod policy;
pub mod ppo;
pub mod progress;
pub mod replicate;
pub mod report;
pub mod reward;
pub mod run;
pub mod seeds;
pub mod selection;
pub mod stage;
pub mod stage_id;
pub mod stages;
pub mod world_model;
