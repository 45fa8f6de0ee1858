//! `bc/<task>`: BC\*, the Gaussian BC policy of one task trained on the dataset's expert episodes and
//! chosen on validation scenes; and `bc-filtered/<task>`, the data-matched control: the same learner
//! on the expert episodes plus the successful BC rollouts the world model and the classifier saw.
//!
//! With `bc.checkpoint_every` and `eval.validation_episodes` set, every checkpoint is kept
//! (`step-<k>.safetensors`) and read in every action mode on `validation_episodes` validation episodes;
//! the best (checkpoint, mode) stands as `policy.safetensors` and the stage's record says which
//! ([`crate::eval::selection`]). Without them the weights with the lowest held-out MSE stand, read with the
//! mean action.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tch::Device;
use w4rl_data::{Dataset, Episode, EpisodeKind};

use crate::eval::evaluate::{ActionMode, EvalConfig};
use crate::eval::selection::{choose, Choice};
use crate::experiment::run::{stage_name, RunDir};
use crate::experiment::stage::Stage;
use crate::policy::bc::{train_task_on, BcConfig, BcReport};
use crate::policy::gaussian::GaussianPolicy;

/// Which BC a stage trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BcKind {
    /// BC\*: the expert demonstrations (`bc/<task>`).
    Demos,
    /// The data-matched control: the demonstrations plus the successful BC rollouts of the training
    /// dataset (`bc-filtered/<task>`).
    Filtered,
}

/// What a BC stage records: the learner's report and, when it chose, the choice.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BcRecord {
    /// The learner's report.
    #[serde(flatten)]
    pub report: BcReport,
    /// The (checkpoint, mode) chosen on validation scenes, when the stage chose.
    #[serde(default)]
    pub choice: Option<Choice>,
    /// Successful rollouts added to the demonstrations (filtered BC).
    #[serde(default)]
    pub rollouts: usize,
}

impl BcRecord {
    /// The action mode BC is read in: the chosen one, else the mean.
    pub fn mode(&self) -> ActionMode {
        self.choice
            .as_ref()
            .map_or(ActionMode::Mean, |c| c.best().mode)
    }
}

/// Trains the BC policy of `task` into `RUN/bc/<task>/` (or `RUN/bc-filtered/<task>/`):
/// `policy.safetensors`, `metrics.jsonl` and, when it chooses, `step-<k>.safetensors`.
pub struct TrainBc<'a> {
    /// `[bc]` (resolved).
    pub cfg: &'a BcConfig,
    /// The training episodes.
    pub data: &'a Dataset,
    /// The task.
    pub task: String,
    /// Which BC.
    pub kind: BcKind,
    /// `[eval]` with the experiment's seed: the environments and seed base of the choice.
    pub eval: &'a EvalConfig,
    /// Where it trains.
    pub device: Device,
}

impl TrainBc<'_> {
    /// The successful policy rollouts of the task, for filtered BC.
    fn rollouts(&self) -> Result<Vec<Episode>> {
        if self.kind == BcKind::Demos {
            return Ok(Vec::new());
        }
        let task = self.task.as_str();
        let mut eps = self
            .data
            .load_where(|m| m.task == task && m.kind == EpisodeKind::Policy && m.success)
            .with_context(|| format!("loading the successful rollouts of '{task}'"))?;
        eps.sort_by_key(|e| e.meta.index);
        Ok(eps)
    }
}

impl Stage for TrainBc<'_> {
    type Record = BcRecord;

    fn name(&self) -> String {
        match self.kind {
            BcKind::Demos => stage_name::bc(&self.task),
            BcKind::Filtered => stage_name::bc_filtered(&self.task),
        }
    }

    fn run(&self, run: &RunDir) -> Result<BcRecord> {
        let name = self.name();
        let dir = run.stage_dir(&name)?;
        let mut metrics = run.metrics(&name)?;
        metrics.truncate_after(0)?;
        let rollouts = self.rollouts()?;
        let n_rollouts = rollouts.len();
        // a task of imported data may have no environment here: nothing to read checkpoints in
        let asked = self.eval.validation_episodes > 0 && self.cfg.checkpoint_every > 0;
        let has_env = w4rl_envs::task_names().contains(&self.task);
        let choosing = asked && has_env;
        if asked && !has_env {
            tracing::warn!(
                "{name}: task '{}' has no environment here; the last checkpoint stands, unchosen",
                self.task
            );
        }
        let mut checkpoints = Vec::new();
        let meta = |step: usize| serde_json::json!({"stage": name, "step": step});
        let (policy, report) = train_task_on(
            self.cfg,
            self.data,
            &self.task,
            rollouts,
            self.device,
            |v| metrics.log(&v),
            |step, p| {
                if choosing {
                    let path = dir.join(format!("step-{step}.safetensors"));
                    p.save(&path, meta(step))?;
                    checkpoints.push((Some(step), path));
                }
                Ok(())
            },
        )?;
        let path = dir.join("policy.safetensors");
        let choice = if choosing {
            let choice = choose(
                &checkpoints,
                &self.task,
                self.eval,
                self.eval.validation_episodes,
                self.device,
            )?;
            let best = choice.best();
            let (chosen, _) = GaussianPolicy::load(&best.path, self.device)?;
            chosen.save(
                &path,
                serde_json::json!({"stage": name, "report": report, "choice": best, "dataset": self.data.dir()}),
            )?;
            tracing::info!(
                "{name}: step {} read {} stands ({:.1} % on {} validation episodes)",
                best.step.unwrap_or(report.best_step),
                best.mode,
                100.0 * best.rate(),
                best.episodes
            );
            Some(choice)
        } else {
            policy.save(
                &path,
                serde_json::json!({"stage": name, "report": report, "dataset": self.data.dir()}),
            )?;
            None
        };
        tracing::info!(
            "{name}: {} demos + {n_rollouts} rollouts, held-out MSE {}",
            report.demos,
            report
                .val_mse
                .map_or("-".to_string(), |m| format!("{m:.4}"))
        );
        Ok(BcRecord {
            report,
            choice,
            rollouts: n_rollouts,
        })
    }
}
