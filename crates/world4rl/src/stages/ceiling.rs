//! `refine-real/<task>`: the ceiling control ([`crate::eval::ceiling`]), the refinement's PPO in the real
//! environment with the run's classifier as the reward; and `refine-true/<task>`, the same with the
//! environment's true success as the reward.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tch::Device;
use w4rl_envs::EnvConfig;

use crate::eval::ceiling::ClassifierRewardEnv;
use crate::eval::evaluate::EvalConfig;
use crate::eval::selection::Choice;
use crate::experiment::run::{stage_name, RunDir};
use crate::experiment::stage::Stage;
use crate::ppo::{output_in, train, Hooks, PpoSummary};
use crate::reward::RewardClassifier;
use crate::stages::refine::{choose_refined, chooses_on_validation, load_start, RefineConfig};
use crate::world_model::outcome::SuccessRule;

/// What the ceiling control of a task records.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CeilingReport {
    /// Task.
    pub task: String,
    /// The PPO summary (success rates in the real environment as the reward judges them).
    pub ppo: PpoSummary,
    /// Last checkpoint (the one evaluated when no choice was made).
    pub last: PathBuf,
    /// Best checkpoint.
    pub best: PathBuf,
    /// The choice on validation scenes among the start, the snapshots and the last checkpoint
    /// (`refine.evaluate = "validation"`, as for the refined policy), when it was made.
    #[serde(default)]
    pub choice: Option<Choice>,
}

impl CeilingReport {
    /// The checkpoint that stands for the ceiling: the choice's, else the last (its mode is the
    /// choice's).
    pub fn standing(&self) -> &Path {
        self.choice.as_ref().map_or(&self.last, |c| &c.best().path)
    }
}

/// What rewards the ceiling control.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CeilingReward {
    /// The run's success classifier, under refinement's success rule (`refine-real/<task>`).
    Classifier,
    /// The environment's own success flag (`refine-true/<task>`).
    TrueSuccess,
}

/// Runs the ceiling control of `task`: writes `RUN/refine-real/<task>/{last,best}.safetensors` (or
/// `RUN/refine-true/<task>/…`) and `metrics.jsonl`.
pub struct RealEnvControl<'a> {
    /// What rewards PPO.
    pub reward: CeilingReward,
    /// `[refine]` (resolved): PPO settings and the success rule.
    pub cfg: &'a RefineConfig,
    /// The task.
    pub task: String,
    /// The real environment: frame size, horizon (`experiment.max_steps`) and render options.
    pub env: EnvConfig,
    /// `[eval]` with the experiment's seed: the validation scenes of the choice among checkpoints.
    pub eval: &'a EvalConfig,
    /// Where it runs.
    pub device: Device,
}

impl Stage for RealEnvControl<'_> {
    type Record = CeilingReport;

    fn name(&self) -> String {
        match self.reward {
            CeilingReward::Classifier => stage_name::ceiling(&self.task),
            CeilingReward::TrueSuccess => stage_name::ceiling_true(&self.task),
        }
    }

    /// The start policy, and the classifier when it is the reward.
    fn inputs(&self) -> Vec<String> {
        let mut inputs = vec![self.cfg.start.stage(&self.task)];
        if self.reward == CeilingReward::Classifier {
            inputs.push(stage_name::reward(&self.task));
        }
        inputs
    }

    fn run(&self, run: &RunDir) -> Result<CeilingReport> {
        let (cfg, task) = (self.cfg, self.task.as_str());
        let clf = match self.reward {
            CeilingReward::Classifier => Some(
                RewardClassifier::load(&run.classifier(task), self.device)
                    .with_context(|| {
                        format!(
                    "loading the reward classifier of '{task}' (run `world4rl train reward` first)"
                )
                    })?
                    .0,
            ),
            CeilingReward::TrueSuccess => None,
        };
        let mut policy = load_start(run, task, cfg.start, self.device)?;
        let mut env = match &clf {
            Some(clf) => ClassifierRewardEnv::new(
                task,
                cfg.ppo.num_envs,
                &self.env,
                clf,
                cfg.imagination.success_rule(),
            )?,
            // the real evaluation's rule: the first successful step
            None => ClassifierRewardEnv::true_success(
                task,
                cfg.ppo.num_envs,
                &self.env,
                SuccessRule { frames: 1 },
            )?,
        };
        let choosing = chooses_on_validation(cfg, self.eval, task);
        let out = output_in(&run.stage_dir(&self.name())?).with_snapshots(if choosing {
            cfg.checkpoint_every
        } else {
            0
        });
        let mut metrics = run.metrics(&self.name())?;
        metrics.truncate_after(0)?;
        let extra = serde_json::json!({"stage": self.name(), "task": task, "initial_policy": cfg.start.path(run, task)});
        let mut log = |v: &serde_json::Value| metrics.log(v);
        let hooks = Hooks {
            log: &mut log,
            monitor: None,
            monitor_every: 0,
        };
        tracing::info!(
            "ceiling control '{task}': PPO in {} real envs rewarded by {}",
            cfg.ppo.num_envs,
            match self.reward {
                CeilingReward::Classifier => "the classifier",
                CeilingReward::TrueSuccess => "the environment's success",
            }
        );
        let summary = train(&cfg.ppo, &mut env, &mut policy, &out, &extra, hooks)?;
        tracing::info!(
            "ceiling control '{task}': {} iterations, success as its reward judges it {:.2} -> {:.2}",
            summary.iterations,
            summary.first_success_rate,
            summary.best_success_rate,
        );
        drop(env);
        let choice = if choosing {
            Some(choose_refined(
                &out.candidates(&cfg.start.path(run, task), summary.iterations),
                task,
                self.eval,
                self.device,
                "ceiling control",
            )?)
        } else {
            None
        };
        Ok(CeilingReport {
            task: task.to_string(),
            ppo: summary,
            last: out.last,
            best: out.best,
            choice,
        })
    }
}
