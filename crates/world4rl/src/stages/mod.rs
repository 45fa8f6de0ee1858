//! The experiment's stages, in the paper's order (see [`crate::pipeline`]). Each loads its inputs from
//! the run directory, calls a learner (which knows nothing of the run's layout) and saves what it
//! returned; [`crate::stage::run_stage`] skips, times and records them.

pub mod bc;
pub mod ceiling;
pub mod collect;
pub mod eval;
pub mod fidelity;
pub mod refine;
pub mod report;
pub mod reward;
pub mod world_model;

/// `configured` when it names tasks, else every task of the dataset.
pub fn tasks_or_all(configured: &[String], data: &w4rl_data::Dataset) -> Vec<String> {
    if configured.is_empty() {
        data.tasks()
    } else {
        configured.to_vec()
    }
}
