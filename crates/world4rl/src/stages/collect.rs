//! The collection stages: expert demonstrations, BC-policy rollouts with random-action episodes, and
//! the held-out BC rollouts that no learner trains on.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tch::Device;
use w4rl_data::EpisodeKind;

use crate::eval::collect::{collect_recipe, CollectConfig, CollectSummary};
use crate::eval::evaluate::PolicyActor;
use crate::experiment::config::ExperimentConfig;
use crate::experiment::run::{stage_name, RunDir};
use crate::experiment::stage::Stage;
use crate::policy::gaussian::GaussianPolicy;

/// One task's part of a collection.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskCollect {
    /// Task.
    pub task: String,
    /// What was collected.
    pub summary: CollectSummary,
}

/// `collect-expert`: the scripted experts' demonstrations of every task into `RUN/dataset/`.
pub struct CollectExpert<'a> {
    /// The (resolved) experiment.
    pub cfg: &'a ExperimentConfig,
}

impl Stage for CollectExpert<'_> {
    type Record = CollectSummary;

    fn name(&self) -> String {
        stage_name::COLLECT_EXPERT.into()
    }

    fn run(&self, run: &RunDir) -> Result<CollectSummary> {
        let cfg = self.cfg;
        let pb = crate::util::progress::bar(0, "expert demos");
        let s = collect_recipe(
            &run.dataset(),
            &cfg.experiment.suite,
            &cfg.experiment.tasks,
            &cfg.experiment.env_config(),
            cfg.experiment.seed,
            &cfg.collect,
            None,
            &[EpisodeKind::Expert],
            |d, n| {
                pb.set_length(n as u64);
                pb.set_position(d as u64);
            },
        )?;
        pb.finish_and_clear();
        Ok(s)
    }
}

/// `collect-rollouts`: the stochastic BC policy's rollouts (D_rollout) and random-action episodes of
/// every task into `RUN/dataset/`.
pub struct CollectRollouts<'a> {
    /// The (resolved) experiment.
    pub cfg: &'a ExperimentConfig,
    /// Where the policies run.
    pub device: Device,
}

impl Stage for CollectRollouts<'_> {
    type Record = Vec<TaskCollect>;

    fn name(&self) -> String {
        stage_name::COLLECT_ROLLOUTS.into()
    }

    fn run(&self, run: &RunDir) -> Result<Vec<TaskCollect>> {
        collect_with_bc(
            self.cfg,
            run,
            &run.dataset(),
            &self.cfg.collect,
            self.cfg.experiment.seed,
            &[EpisodeKind::Policy, EpisodeKind::Random],
            self.device,
        )
    }
}

/// `collect-heldout`: `collect.heldout_episodes` stochastic BC rollouts per task into `RUN/heldout/`,
/// from a seed stream of their own.
pub struct CollectHeldout<'a> {
    /// The (resolved) experiment.
    pub cfg: &'a ExperimentConfig,
    /// Where the policies run.
    pub device: Device,
}

impl Stage for CollectHeldout<'_> {
    type Record = Vec<TaskCollect>;

    fn name(&self) -> String {
        stage_name::COLLECT_HELDOUT.into()
    }

    fn run(&self, run: &RunDir) -> Result<Vec<TaskCollect>> {
        collect_with_bc(
            self.cfg,
            run,
            &run.heldout(),
            &self.cfg.collect.heldout(),
            crate::util::seeds::heldout_base(self.cfg.experiment.seed),
            &[EpisodeKind::Policy],
            self.device,
        )
    }
}

/// Runs `recipe` (episode `kinds` only) for every task into `out`, the policy episodes from the task's
/// stochastic BC policy, under the collection seed stream of `base_seed`.
fn collect_with_bc(
    cfg: &ExperimentConfig,
    run: &RunDir,
    out: &std::path::Path,
    recipe: &CollectConfig,
    base_seed: u64,
    kinds: &[EpisodeKind],
    device: Device,
) -> Result<Vec<TaskCollect>> {
    let pb = crate::util::progress::bar(0, "rollouts");
    let mut summaries = Vec::new();
    for task in &cfg.experiment.tasks {
        let (policy, _) = GaussianPolicy::load(&run.bc_policy(task), device)
            .with_context(|| format!("loading the BC policy of '{task}'"))?;
        let mut actor = PolicyActor {
            policy: &policy,
            stochastic: true,
        };
        let summary = collect_recipe(
            out,
            &cfg.experiment.suite,
            std::slice::from_ref(task),
            &cfg.experiment.env_config(),
            base_seed,
            recipe,
            Some(&mut actor),
            kinds,
            |d, n| {
                pb.set_length(n as u64);
                pb.set_position(d as u64);
            },
        )?;
        summaries.push(TaskCollect {
            task: task.clone(),
            summary,
        });
    }
    pb.finish_and_clear();
    Ok(summaries)
}
