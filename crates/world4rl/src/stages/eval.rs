//! `eval`: every task's BC policy, the refined policy standing for it and, when it ran, the ceiling
//! control's policy, each evaluated in the real environment on the same evaluation seeds; a GIF of the
//! refined policy acting.

use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::Device;
use w4rl_envs::{make, EnvConfig};

use crate::config::ExperimentConfig;
use crate::evaluate::{evaluate_policy, EvalConfig, EvalReport};
use crate::policy::gaussian::GaussianPolicy;
use crate::run::{stage_name, Done, RunDir};
use crate::stage::Stage;
use crate::stages::ceiling::CeilingReport;
use crate::stages::refine::RefineReport;

/// One task's real success rates.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalRow {
    /// Task.
    pub task: String,
    /// The BC policy.
    pub bc: EvalReport,
    /// The policy standing as the refined one, when the task was refined.
    pub refined: Option<EvalReport>,
    /// The ceiling control's policy, when it ran.
    pub ceiling: Option<EvalReport>,
    /// The BC policy acting with samples of its Gaussian (its own σ) on the same seeds (`bc` acts as
    /// `[eval] sample` says, by default with the mean action): a Gaussian BC policy's mean action can
    /// be far weaker than its samples. Absent in runs of before 2026-12-04.
    #[serde(default)]
    pub bc_sampled: Option<EvalReport>,
    /// The refined policy acting with samples of its Gaussian (σ within refinement's cap).
    #[serde(default)]
    pub refined_sampled: Option<EvalReport>,
}

/// Evaluates every task's policies; writes `RUN/eval/<task>-refined.gif`.
pub struct Evaluate<'a> {
    /// The (resolved) experiment: tasks, `[eval]` and the seed.
    pub cfg: &'a ExperimentConfig,
    /// Where the policies run.
    pub device: Device,
}

impl Stage for Evaluate<'_> {
    type Record = Vec<EvalRow>;

    fn name(&self) -> String {
        stage_name::EVAL.into()
    }

    /// Stale when a task has no row, or when a task's refinement or ceiling control finished after
    /// the evaluation (its row has no entry for that policy): `refine.real_env_control` switched on
    /// in a finished run, say.
    fn stale(&self, run: &RunDir, done: &Done<Vec<EvalRow>>) -> Result<Option<String>> {
        Ok(eval_gap(&self.cfg.experiment.tasks, &done.record, |s| {
            run.is_done(s)
        }))
    }

    fn run(&self, run: &RunDir) -> Result<Vec<EvalRow>> {
        let seed = self.cfg.experiment.seed;
        let eval_cfg = EvalConfig {
            seed,
            ..self.cfg.eval.clone()
        };
        // every policy also with sampled actions, for the report's second table
        let sampled_cfg = EvalConfig {
            sample: true,
            ..eval_cfg.clone()
        };
        let mut rows = Vec::new();
        for task in &self.cfg.experiment.tasks {
            let (bc, _) = GaussianPolicy::load(&run.bc_policy(task), self.device)?;
            let bc_sampled = evaluate_policy(&bc, task, &sampled_cfg)?;
            let bc = evaluate_policy(&bc, task, &eval_cfg)?;
            let (refined, refined_sampled) =
                match run.done::<RefineReport>(&stage_name::refine(task))? {
                    Some(done) => {
                        let (p, _) = GaussianPolicy::load(&done.record.policy, self.device)?;
                        let gif = run.stage_dir(&self.name())?.join(gif_name(task));
                        policy_gif(&p, task, crate::seeds::eval_seed(seed, task, 0), &gif)?;
                        (
                            Some(evaluate_policy(&p, task, &eval_cfg)?),
                            Some(evaluate_policy(&p, task, &sampled_cfg)?),
                        )
                    }
                    None => (None, None),
                };
            let ceiling = match run.done::<CeilingReport>(&stage_name::ceiling(task))? {
                Some(done) => {
                    let (p, _) = GaussianPolicy::load(&done.record.last, self.device)?;
                    Some(evaluate_policy(&p, task, &eval_cfg)?)
                }
                None => None,
            };
            tracing::info!(
                "{task}: BC {:.1} %, refined {}",
                100.0 * bc.success_rate,
                refined.as_ref().map_or_else(
                    || "-".into(),
                    |r| format!("{:.1} %", 100.0 * r.success_rate)
                )
            );
            rows.push(EvalRow {
                task: task.clone(),
                bc,
                refined,
                ceiling,
                bc_sampled: Some(bc_sampled),
                refined_sampled,
            });
        }
        Ok(rows)
    }
}

/// What the evaluation `rows` lack for `tasks`, given which stages have finished: a task without a
/// row, or a finished refinement or ceiling control without its entry.
fn eval_gap(tasks: &[String], rows: &[EvalRow], finished: impl Fn(&str) -> bool) -> Option<String> {
    for task in tasks {
        let Some(row) = rows.iter().find(|r| r.task == *task) else {
            return Some(format!("it has no row for '{task}'"));
        };
        if row.refined.is_none() && finished(&stage_name::refine(task)) {
            return Some(format!("'{task}' was refined after it"));
        }
        if row.ceiling.is_none() && finished(&stage_name::ceiling(task)) {
            return Some(format!("the ceiling control of '{task}' finished after it"));
        }
    }
    None
}

/// `<task>-refined.gif`, with a suite-qualified task's `/` replaced.
pub fn gif_name(task: &str) -> String {
    format!("{}-refined.gif", task.replace('/', "__"))
}

/// Writes a GIF of one real-environment episode of `policy` (mean actions, ends on success).
pub fn policy_gif(policy: &GaussianPolicy, task: &str, seed: u64, path: &Path) -> Result<()> {
    let size = policy.spec().render_size();
    let cfg = EnvConfig {
        image_size: size,
        terminate_on_success: true,
        ..EnvConfig::default()
    };
    let mut env = make(task, &cfg)?;
    let mut obs = env.reset(seed);
    let mut frames = obs.frame.clone();
    loop {
        let a = policy.act_mean(&policy.obs_batch(&[&obs])?)?;
        let st = env.step(&a[0])?;
        frames.extend_from_slice(&st.obs.frame);
        obs = st.obs;
        if st.terminated || st.truncated {
            break;
        }
    }
    // hold the last frame a little
    let last = frames[frames.len() - size * size * 3..].to_vec();
    for _ in 0..5 {
        frames.extend_from_slice(&last);
    }
    w4rl_envs::gif::write_gif(path, &frames, size, (256 / size).max(1), 10)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(task: &str) -> EvalReport {
        EvalReport {
            task: task.into(),
            episodes: 10,
            successes: 5,
            success_rate: 0.5,
            ci_low: 0.2,
            ci_high: 0.8,
            mean_episode_length: 40.0,
            seed: 1,
            seconds: 1.0,
        }
    }

    #[test]
    fn an_evaluation_is_stale_when_a_policy_it_lacks_has_finished() {
        let tasks = vec!["push-block".to_string(), "turn-lever".to_string()];
        let row = |task: &str, refined: bool| EvalRow {
            task: task.into(),
            bc: report(task),
            refined: refined.then(|| report(task)),
            ceiling: None,
            bc_sampled: None,
            refined_sampled: None,
        };
        let rows = vec![row("push-block", true), row("turn-lever", false)];
        let only = |done: &'static [&'static str]| move |s: &str| done.contains(&s);
        // what finished is covered
        assert_eq!(eval_gap(&tasks, &rows, only(&["refine/push-block"])), None);
        // a refinement, or a ceiling control, that finished later
        let gap = eval_gap(&tasks, &rows, only(&["refine/turn-lever"])).unwrap();
        assert!(gap.contains("'turn-lever' was refined"), "{gap}");
        let gap = eval_gap(&tasks, &rows, only(&["refine-real/push-block"])).unwrap();
        assert!(gap.contains("ceiling control of 'push-block'"), "{gap}");
        // a task added to the config
        let gap = eval_gap(&tasks, &rows[..1], only(&[])).unwrap();
        assert!(gap.contains("no row for 'turn-lever'"), "{gap}");
    }
}
