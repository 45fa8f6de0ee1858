//! The experiment's stages, in the paper's order (see [`crate::experiment::pipeline`]). Each loads its inputs from
//! the run directory, calls a learner (which knows nothing of the run's layout) and saves what it
//! returned; [`crate::experiment::stage::run_stage`] skips, times and records them.

pub mod bc;
pub mod ceiling;
pub mod collect;
pub mod eval;
pub mod fidelity;
pub mod refine;
pub mod report;
pub mod reward;
pub mod world_model;

/// The tasks of a per-task stage: `given` (the command line's) when it names any, else `configured`
/// (the section's) when it names any, else `otherwise` (every task of the dataset for the stage-1
/// learners, the experiment's tasks for refinement and its ceilings).
pub fn choose_tasks(
    given: &[String],
    configured: &[String],
    otherwise: impl FnOnce() -> Vec<String>,
) -> Vec<String> {
    if !given.is_empty() {
        given.to_vec()
    } else if !configured.is_empty() {
        configured.to_vec()
    } else {
        otherwise()
    }
}

/// [`choose_tasks`] falling back on every task of the dataset.
pub fn pick_tasks(
    given: &[String],
    configured: &[String],
    data: &w4rl_data::Dataset,
) -> Vec<String> {
    choose_tasks(given, configured, || data.tasks())
}
