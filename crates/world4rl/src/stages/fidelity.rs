//! `fidelity`: how good the frozen world model is, imagining as refinement does (`[refine]`'s sampler,
//! precision and layout). Open-loop PSNR/SSIM per horizon against
//! copy-last-frame on its held-out episodes, a real | imagined GIF per task, the outcome check (held-out
//! BC rollouts replayed whole, judged by the classifier), the same check on each refined policy's own
//! rollouts from the same scenes, and the action-use check.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tch::Device;
use w4rl_data::{Dataset, EpisodeKind};

use crate::eval::collect::record_policy_rollouts;
use crate::eval::evaluate::PolicyActor;
use crate::experiment::config::ExperimentConfig;
use crate::experiment::run::{stage_name, RunDir};
use crate::experiment::stage::Stage;
use crate::policy::GaussianPolicy;
use crate::stages::refine::{load_world_model, RefineReport};
use crate::world_model::fidelity::{check, ActionUse, FidelityReport};
use crate::world_model::imagine::{replay_episode, side_by_side_gif};
use crate::world_model::outcome::{task_outcomes, Rollouts, TaskOutcome};
use crate::world_model::train::load_holdout;
use crate::world_model::WorldModel;

/// What the fidelity stage records.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FidelityRecord {
    /// PSNR/SSIM per horizon, of the model and of copy-last-frame.
    pub scores: FidelityReport,
    /// `RUN/fidelity/dream-<task>.gif`: a held-out expert episode beside its open-loop replay.
    pub gifs: Vec<PathBuf>,
    /// The outcome check per task (empty when `fidelity.outcome_episodes` is 0).
    pub outcomes: Vec<TaskOutcome>,
    /// The action-use check (when `fidelity.action_use_windows` > 0).
    pub action_use: Option<ActionUse>,
    /// The outcome check on each refined policy's own rollouts, recorded from the held-out rollouts'
    /// scenes (`fidelity.refined_outcome_episodes` per task; absent in runs of before 2026-12-04).
    #[serde(default)]
    pub refined_outcomes: Vec<TaskOutcome>,
}

/// Scores the run's world model.
pub struct Fidelity<'a> {
    /// The (resolved) experiment: `[fidelity]`, the tasks and the success rule.
    pub cfg: &'a ExperimentConfig,
    /// The training episodes (the world model's held-out ones are among them).
    pub data: &'a Dataset,
    /// Where the model runs.
    pub device: Device,
}

impl Stage for Fidelity<'_> {
    type Record = FidelityRecord;

    fn name(&self) -> String {
        stage_name::FIDELITY.into()
    }

    /// The world model, the classifiers that judge its episodes and, when the config checks the
    /// refined policies' own rollouts, each refinement (a task refined after the check has none).
    fn inputs(&self) -> Vec<String> {
        let tasks = &self.cfg.experiment.tasks;
        let mut inputs = vec![stage_name::WORLD_MODEL.to_string()];
        inputs.extend(tasks.iter().map(|t| stage_name::reward(t)));
        if self.cfg.fidelity.refined_outcome_episodes > 0 {
            inputs.extend(tasks.iter().map(|t| stage_name::refine(t)));
        }
        inputs
    }

    fn run(&self, run: &RunDir) -> Result<FidelityRecord> {
        let (cfg, tasks) = (self.cfg, &self.cfg.experiment.tasks);
        // the model as refinement imagines with it (`[refine]`'s sampler, precision and layout), so the
        // outcome check scores the imagination PPO was trained in
        let wm = load_world_model(&cfg.refine, run, self.device)?;
        let held = load_holdout(&run.world_model_dir(), self.data)?;
        // whole-episode replays of the held-out BC rollouts: does imagined success follow real success?
        let held_dir = run.heldout();
        let heldout = held_dir
            .exists()
            .then(|| Dataset::open(&held_dir))
            .transpose()
            .with_context(|| format!("opening the held-out rollouts {}", held_dir.display()))?;
        let checked = check(
            &wm,
            &held,
            &Rollouts {
                heldout: heldout.as_ref(),
                training: self.data,
            },
            |t| run.classifier(t),
            tasks,
            &cfg.fidelity,
            cfg.refine.imagination.success_rule(),
        )?;
        let dir = run.stage_dir(&self.name())?;
        let mut gifs = Vec::new();
        for task in tasks {
            let expert = held
                .iter()
                .find(|e| &e.meta.task == task && e.meta.kind == EpisodeKind::Expert);
            if let Some(ep) = expert {
                let path = dir.join(format!("dream-{}.gif", task.replace('/', "__")));
                let (real, fake) = replay_episode(&wm, ep, ep.meta.steps)?;
                side_by_side_gif(&path, &[&real, &fake], (128 / wm.image_size()).max(1), 10)?;
                gifs.push(path);
            }
        }
        let refined_outcomes = if cfg.fidelity.refined_outcome_episodes > 0 && heldout.is_some() {
            self.refined_outcomes(run, &wm, &dir.join("refined-rollouts"))?
        } else {
            Vec::new()
        };
        Ok(FidelityRecord {
            scores: checked.scores,
            gifs,
            outcomes: checked.outcomes,
            action_use: checked.action_use,
            refined_outcomes,
        })
    }
}

impl Fidelity<'_> {
    /// Records `fidelity.refined_outcome_episodes` rollouts of every refined task's policy into `out`,
    /// from the held-out rollouts' scenes (their seed stream) and acting as the evaluation does, then
    /// replays them as the held-out BC rollouts are replayed. A world model that PPO exploited calls
    /// the refined policy's failures successes: its imagined success stays up while the real one falls.
    fn refined_outcomes(
        &self,
        run: &RunDir,
        wm: &WorldModel,
        out: &Path,
    ) -> Result<Vec<TaskOutcome>> {
        let cfg = self.cfg;
        let n = cfg.fidelity.refined_outcome_episodes;
        // derived data: recorded afresh, so that a re-run refinement is never judged on old rollouts
        if out.exists() {
            std::fs::remove_dir_all(out)
                .with_context(|| format!("removing the old rollouts {}", out.display()))?;
        }
        let mut tasks = Vec::new();
        for task in &cfg.experiment.tasks {
            let Some(done) = run.done::<RefineReport>(&stage_name::refine(task))? else {
                continue;
            };
            let (policy, _) = GaussianPolicy::load(&done.record.policy, self.device)
                .with_context(|| format!("loading the refined policy of '{task}'"))?;
            let mut actor = PolicyActor {
                policy: &policy,
                stochastic: cfg.eval.sample,
            };
            record_policy_rollouts(
                out,
                cfg,
                task,
                crate::util::seeds::heldout_base(cfg.experiment.seed),
                n,
                &mut actor,
                |_, _| {},
            )?;
            tasks.push(task.clone());
        }
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let refined = Dataset::open(out)
            .with_context(|| format!("opening the refined rollouts {}", out.display()))?;
        task_outcomes(
            |t| run.classifier(t),
            wm,
            &Rollouts {
                heldout: Some(&refined),
                training: self.data,
            },
            &tasks,
            n,
            &cfg.fidelity
                .outcome_options(cfg.refine.imagination.success_rule()),
        )
    }
}
