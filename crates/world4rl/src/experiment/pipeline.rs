//! `world4rl run CFG`: the whole experiment, in the paper's order, resumable stage by stage; and
//! `world4rl stage NAME`, one entry of the same list.
//!
//! ```text
//!  1 collect-expert    expert demonstrations of every task               RUN/dataset/
//!  2 bc                BC*: Gaussian BC per task (expert data only),     RUN/bc/<task>/
//!                      checkpoint and action mode chosen on validation scenes
//!  3 collect-rollouts  BC-policy rollouts + random-action episodes       RUN/dataset/
//!    collect-heldout   BC-policy rollouts no learner sees (outcome check) RUN/heldout/
//!    bc-filtered       the data-matched control (bc.filtered_control)    RUN/bc-filtered/<task>/
//!  4 world_model       diffusion world model, all tasks and kinds pooled RUN/world_model/
//!  5 reward            success classifier per task (expert + rollouts)   RUN/reward/<task>/
//!  6 refine            PPO inside the frozen world model, per task       RUN/refine/<task>/
//!    refine-real       the ceiling controls: classifier reward           RUN/refine-real/<task>/
//!                      (refine.real_env_control), true success           RUN/refine-true/<task>/
//!                      (refine.true_reward_control)
//!  7 eval              every policy on the test scenes, paired            RUN/eval/
//!  8 fidelity          the world model's fidelity and outcome check      RUN/fidelity/
//!  9 report            RUN/report.md and RUN/report.html                 RUN/
//! ```
//! Every stage runs through [`run_stage`]: one whose `done.json` exists is skipped unless it is
//! stale (`eval` and `fidelity` when a policy they lack finished after them); a partial one
//! resumes (collection skips written episodes, the world model resumes from its last checkpoint, the
//! others restart). Every file is written atomically, so killing the run at any moment and re-running
//! it loses nothing.

use std::path::PathBuf;

use anyhow::{Context, Result};
use tch::Device;
use w4rl_data::Dataset;

use crate::experiment::config::{ExperimentConfig, ResolvedConfig};
use crate::experiment::run::RunDir;
use crate::experiment::stage::{run_stage, Stage};
use crate::experiment::stage_id::StageId;
use crate::stages::{
    bc::{BcKind, TrainBc},
    ceiling::{CeilingReward, RealEnvControl},
    choose_tasks, collect,
    eval::Evaluate,
    fidelity::Fidelity,
    pick_tasks,
    refine::{accept_starts, RefineTask},
    report::WriteReport,
    reward,
    world_model::TrainWorldModel,
};

/// What one invocation runs on.
pub struct StageContext<'a> {
    /// The resolved experiment.
    pub cfg: &'a ResolvedConfig,
    /// The (locked) run directory.
    pub run: &'a RunDir,
    /// Where learners run.
    pub device: Device,
    /// Only these tasks for the per-task stages (empty: the stage's configured tasks).
    pub tasks: &'a [String],
}

impl StageContext<'_> {
    fn refine_tasks(&self) -> Vec<String> {
        choose_tasks(self.tasks, &self.cfg.refine.tasks, || {
            self.cfg.experiment.tasks.clone()
        })
    }

    fn dataset(&self) -> Result<Dataset> {
        let dir = self.run.dataset();
        Dataset::open(&dir).with_context(|| format!("opening the run's dataset {}", dir.display()))
    }
}

fn go<S: Stage>(ctx: &StageContext, stage: S) -> Result<()> {
    run_stage(ctx.run, &stage).map(|_| ())
}

/// Runs the stage `id` of the experiment in the run directory: for a per-task stage, one stage per
/// task.
pub fn run_stage_id(ctx: &StageContext, id: StageId) -> Result<()> {
    let (cfg, device) = (ctx.cfg, ctx.device);
    anyhow::ensure!(
        ctx.tasks.is_empty() || id.per_task(),
        "`--task` narrows a per-task stage ({}); the stage `{id}` works on every task of the config at \
         once: run it without `--task`, or give the config only the tasks you want",
        StageId::ALL
            .into_iter()
            .filter(|s| s.per_task())
            .map(StageId::name)
            .collect::<Vec<_>>()
            .join(", "),
    );
    match id {
        StageId::CollectExpert => go(ctx, collect::CollectExpert { cfg }),
        StageId::Bc => bc(ctx, BcKind::Demos),
        StageId::BcFiltered if cfg.bc.filtered_control => bc(ctx, BcKind::Filtered),
        StageId::BcFiltered => Ok(()),
        StageId::CollectRollouts => go(ctx, collect::CollectRollouts { cfg, device }),
        StageId::CollectHeldout if cfg.collect.heldout_episodes > 0 => {
            go(ctx, collect::CollectHeldout { cfg, device })
        }
        StageId::CollectHeldout => Ok(()),
        StageId::WorldModel => {
            let data = ctx.dataset()?;
            go(
                ctx,
                TrainWorldModel {
                    cfg: &cfg.world_model,
                    data: &data,
                    device,
                    progress: true,
                },
            )
        }
        StageId::Reward => {
            let data = ctx.dataset()?;
            let tasks = pick_tasks(ctx.tasks, &cfg.reward.tasks, &data);
            let wm = reward::imagination_model(&cfg.reward, ctx.run, &tasks, device)?;
            for task in tasks {
                go(
                    ctx,
                    reward::TrainReward {
                        cfg: &cfg.reward,
                        data: &data,
                        task,
                        world_model: wm.as_ref(),
                        device,
                    },
                )?;
            }
            Ok(())
        }
        StageId::Refine => refine(ctx),
        StageId::RefineReal if cfg.refine.real_env_control || cfg.refine.true_reward_control => {
            let rewards = [
                (cfg.refine.real_env_control, CeilingReward::Classifier),
                (cfg.refine.true_reward_control, CeilingReward::TrueSuccess),
            ];
            let eval = cfg.eval_config();
            for task in ctx.refine_tasks() {
                for (_, reward) in rewards.iter().filter(|r| r.0) {
                    go(
                        ctx,
                        RealEnvControl {
                            reward: *reward,
                            cfg: &cfg.refine,
                            task: task.clone(),
                            env: cfg.experiment.env_config(),
                            eval: &eval,
                            device,
                        },
                    )?;
                }
            }
            Ok(())
        }
        StageId::RefineReal => {
            tracing::info!(
                "refine-real: nothing to do, refine.real_env_control and refine.true_reward_control are off (set them, or run `world4rl refine --real-env`)"
            );
            Ok(())
        }
        StageId::Eval => go(ctx, Evaluate { cfg, device }),
        StageId::Fidelity => {
            let data = ctx.dataset()?;
            go(
                ctx,
                Fidelity {
                    cfg,
                    data: &data,
                    device,
                },
            )
        }
        StageId::Report => go(ctx, WriteReport { cfg }),
    }
}

/// `bc` or `bc-filtered`: one BC policy per task, chosen on validation scenes.
fn bc(ctx: &StageContext, kind: BcKind) -> Result<()> {
    let cfg = ctx.cfg;
    let data = ctx.dataset()?;
    let eval = cfg.eval_config();
    for task in pick_tasks(ctx.tasks, &cfg.bc.tasks, &data) {
        go(
            ctx,
            TrainBc {
                cfg: &cfg.bc,
                data: &data,
                task,
                kind,
                eval: &eval,
                device: ctx.device,
            },
        )?;
    }
    Ok(())
}

/// `refine`: PPO in imagination for every refined task; the acceptance check starts from the
/// held-out rollouts when there are any.
fn refine(ctx: &StageContext) -> Result<()> {
    let cfg = ctx.cfg;
    let data = ctx.dataset()?;
    let heldout = accept_starts(&cfg.refine, ctx.run)?;
    let eval = cfg.eval_config();
    for task in ctx.refine_tasks() {
        go(
            ctx,
            RefineTask {
                cfg: &cfg.refine,
                data: &data,
                accept_starts: heldout.as_ref(),
                task,
                device: ctx.device,
                monitor_seed: cfg.experiment.seed,
                max_steps: cfg.experiment.max_steps,
                eval: &eval,
            },
        )?;
    }
    Ok(())
}

/// Runs (or resumes) the whole pipeline: every stage of [`StageId::ALL`] in order. `cfg` is the file as
/// written (the run keeps it so); every stage trains from its resolved values, as the stage commands
/// do. Returns the path of the HTML report.
pub fn run(cfg: &ExperimentConfig, run: &RunDir, device: Device) -> Result<PathBuf> {
    run.write_config(cfg)?;
    let cfg = &cfg.resolve();
    let ctx = StageContext {
        cfg,
        run,
        device,
        tasks: &[],
    };
    let overall = crate::util::progress::bar(StageId::ALL.len() as u64, "pipeline");
    for id in StageId::ALL {
        overall.set_prefix(id.name());
        if matches!(id, StageId::WorldModel | StageId::Report) {
            // the gates measured so far: before the world model (expert, BC*), then every one
            crate::experiment::gates::log(&crate::experiment::gates::read(cfg, run)?);
        }
        run_stage_id(&ctx, id)?;
        overall.inc(1);
    }
    overall.finish_and_clear();
    Ok(run.path().join("report.html"))
}
