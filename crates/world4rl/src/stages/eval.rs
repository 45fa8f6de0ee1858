//! `eval`: every task's policies in the real environment, read as World4RL's evaluation protocol
//! says (`docs/evaluation.md`): BC\* (the `bc` stage's chosen checkpoint, in its chosen action mode),
//! the refined policy, and the controls that ran (filtered BC, the ceiling), each in the action mode
//! that wins on validation scenes, then every policy in every mode on the same **test** scenes
//! (`eval.episodes` of them). The record holds every episode's outcome, and the paired comparisons
//! the report leads with: refined − BC\*, refined − filtered BC, filtered BC − BC\* and each ceiling
//! − BC\*. A GIF of the refined policy acting.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tch::Device;
use w4rl_envs::{make, EnvConfig};

use crate::eval::evaluate::{evaluate_policy, ActionMode, EvalConfig, EvalReport};
use crate::eval::paired::{paired_difference, PairedDifference};
use crate::eval::selection::{choose_mode, modes_for, Choice};
use crate::experiment::config::ExperimentConfig;
use crate::experiment::run::{stage_name, Done, RunDir};
use crate::experiment::stage::Stage;
use crate::policy::gaussian::GaussianPolicy;
use crate::stages::bc::BcRecord;
use crate::stages::ceiling::CeilingReport;
use crate::stages::refine::RefineReport;
use crate::util::seeds::Split;

/// BC\*'s name in the records and the report.
pub const BC_STAR: &str = "BC*";
/// The refined policy's.
pub const REFINED: &str = "refined";
/// The refined policy's last checkpoint, read beside the refined policy when a choice on validation
/// scenes stood on another (an earlier snapshot or the start).
pub const REFINED_LAST: &str = "refined, last checkpoint";
/// The data-matched control's.
pub const FILTERED_BC: &str = "filtered BC";
/// The ceiling control's (PPO in the real environment, classifier reward).
pub const CEILING: &str = "ceiling";
/// The true-reward ceiling control's (PPO in the real environment, the environment's success).
pub const CEILING_TRUE: &str = "ceiling, true reward";

/// One policy of a task, read in every action mode on the test scenes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicyEval {
    /// [`BC_STAR`], [`REFINED`], [`FILTERED_BC`] or [`CEILING`].
    pub name: String,
    /// The mode that stands for the policy (chosen on validation scenes, or BC\*'s own choice).
    pub mode: ActionMode,
    /// The choice of `mode` made here on validation scenes (BC's is in its own stage's record).
    pub choice: Option<Choice>,
    /// The policy in every mode, on the test scenes.
    pub test: Vec<EvalReport>,
}

impl PolicyEval {
    /// The test evaluation in the policy's own mode.
    pub fn standing(&self) -> &EvalReport {
        self.test
            .iter()
            .find(|r| r.mode == Some(self.mode))
            .unwrap_or(&self.test[0])
    }

    /// The test evaluation in `mode`, when it ran.
    pub fn in_mode(&self, mode: ActionMode) -> Option<&EvalReport> {
        self.test.iter().find(|r| r.mode == Some(mode))
    }
}

/// A paired comparison on the test scenes: `other − base`, each in its own mode.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Comparison {
    /// The base policy's name.
    pub base: String,
    /// The other policy's name.
    pub other: String,
    /// The difference with its paired 95 % interval.
    pub diff: PairedDifference,
}

/// One task's real success rates.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalRow {
    /// Task.
    pub task: String,
    /// BC\* on the test scenes in its own mode (the BC policy with the mean action in runs of before
    /// 2026-12-06).
    pub bc: EvalReport,
    /// The refined policy in its own mode, when the task was refined.
    pub refined: Option<EvalReport>,
    /// The ceiling control's policy in its own mode, when it ran.
    pub ceiling: Option<EvalReport>,
    /// BC\* with samples of its Gaussian (its own σ) on the same scenes.
    #[serde(default)]
    pub bc_sampled: Option<EvalReport>,
    /// The refined policy with samples of its Gaussian (σ within refinement's cap).
    #[serde(default)]
    pub refined_sampled: Option<EvalReport>,
    /// Every policy in every mode (absent in runs of before 2026-12-06).
    #[serde(default)]
    pub policies: Vec<PolicyEval>,
    /// The paired comparisons on the test scenes (absent in older runs).
    #[serde(default)]
    pub comparisons: Vec<Comparison>,
}

impl EvalRow {
    /// The policy named `name`, when it was evaluated.
    pub fn policy(&self, name: &str) -> Option<&PolicyEval> {
        self.policies.iter().find(|p| p.name == name)
    }

    /// The gap recovered, (refined − BC\*) / (ceiling − BC\*) with the classifier-rewarded ceiling,
    /// when both ran and the ceiling moved.
    pub fn gap_recovered(&self) -> Option<f64> {
        let gain = self.comparison(BC_STAR, REFINED)?;
        let ceiling = self.comparison(BC_STAR, CEILING)?;
        (ceiling.diff.abs() > 1e-9).then(|| gain.diff / ceiling.diff)
    }

    /// The comparison `other − base`, when it was made.
    pub fn comparison(&self, base: &str, other: &str) -> Option<&PairedDifference> {
        self.comparisons
            .iter()
            .find(|c| c.base == base && c.other == other)
            .map(|c| &c.diff)
    }
}

/// Evaluates every task's policies; writes `RUN/eval/<task>-refined.gif`.
pub struct Evaluate<'a> {
    /// The (resolved) experiment: tasks, `[eval]` and the seed.
    pub cfg: &'a ExperimentConfig,
    /// Where the policies run.
    pub device: Device,
}

impl Evaluate<'_> {
    /// The `[eval]` section with the experiment's seed as the base of the evaluation seeds.
    fn eval_cfg(&self) -> EvalConfig {
        self.cfg.eval_config()
    }

    /// Reads `policy` (loaded from `path`) in every mode on the test scenes; `mode` stands for it, or,
    /// when `None`, the mode that wins on validation scenes (the mean action when no validation
    /// episodes are set).
    fn read(
        &self,
        name: &str,
        task: &str,
        policy: &GaussianPolicy,
        path: &Path,
        mode: Option<ActionMode>,
    ) -> Result<PolicyEval> {
        let eval = self.eval_cfg();
        let mut modes = modes_for(policy.std_bounds().1, eval.std_cap);
        if let Some(m) = mode.filter(|m| !modes.contains(m)) {
            // a mode chosen elsewhere (BC's own stage, under another σ cap) is always read
            modes.push(m);
        }
        let (mode, choice) = match mode {
            Some(m) => (m, None),
            None if eval.validation_episodes > 0 => {
                let c = choose_mode(policy, path, &modes, task, &eval, eval.validation_episodes)?;
                (c.best().mode, Some(c))
            }
            None => (ActionMode::Mean, None),
        };
        let test = eval.on(Split::Test, eval.episodes);
        let mut reports = Vec::new();
        for m in modes {
            reports.push(evaluate_policy(policy, task, &test.with_mode(m))?);
        }
        tracing::info!(
            "{task}: {name} read {mode}: {:.1} % on {} test episodes",
            100.0
                * reports
                    .iter()
                    .find(|r| r.mode == Some(mode))
                    .map_or(f64::NAN, |r| r.success_rate),
            eval.episodes
        );
        Ok(PolicyEval {
            name: name.into(),
            mode,
            choice,
            test: reports,
        })
    }

    /// Reads `policy` as [`Self::read`] does, in the mode of `choice` (made on validation scenes by
    /// the stage that wrote the policy) and with that choice recorded; with none, `read` chooses.
    fn read_chosen(
        &self,
        name: &str,
        task: &str,
        policy: &GaussianPolicy,
        path: &Path,
        choice: Option<Choice>,
    ) -> Result<PolicyEval> {
        let mut p = self.read(
            name,
            task,
            policy,
            path,
            choice.as_ref().map(|c| c.best().mode),
        )?;
        if choice.is_some() {
            p.choice = choice;
        }
        Ok(p)
    }
}

impl Stage for Evaluate<'_> {
    type Record = Vec<EvalRow>;

    fn name(&self) -> String {
        stage_name::EVAL.into()
    }

    /// Every policy it reads: BC\*, the refined policy and the controls of every task (a refinement,
    /// a control or BC itself trained again makes the evaluation stale).
    fn inputs(&self) -> Vec<String> {
        self.cfg
            .experiment
            .tasks
            .iter()
            .flat_map(|task| {
                [
                    stage_name::bc(task),
                    stage_name::refine(task),
                    stage_name::bc_filtered(task),
                    stage_name::ceiling(task),
                    stage_name::ceiling_true(task),
                ]
            })
            .collect()
    }

    /// Stale when a task has no row (a task added to the config).
    fn stale(&self, _run: &RunDir, done: &Done<Vec<EvalRow>>) -> Result<Option<String>> {
        Ok(missing_task(&self.cfg.experiment.tasks, &done.record))
    }

    fn run(&self, run: &RunDir) -> Result<Vec<EvalRow>> {
        let seed = self.cfg.experiment.seed;
        let mut rows = Vec::new();
        for task in &self.cfg.experiment.tasks {
            let bc_mode = run
                .done::<BcRecord>(&stage_name::bc(task))?
                .map_or(ActionMode::Mean, |d| d.record.mode());
            let load = |path: &Path, what: &str| {
                GaussianPolicy::load(path, self.device)
                    .map(|(p, _)| p)
                    .with_context(|| format!("loading the {what} policy of '{task}'"))
            };
            let bc_path = run.bc_policy(task);
            let bc = load(&bc_path, BC_STAR)?;
            let mut policies = vec![self.read(BC_STAR, task, &bc, &bc_path, Some(bc_mode))?];
            if let Some(done) = run.done::<RefineReport>(&stage_name::refine(task))? {
                let rec = &done.record;
                let path = &rec.policy;
                let policy = load(path, REFINED)?;
                policies.push(self.read_chosen(
                    REFINED,
                    task,
                    &policy,
                    path,
                    rec.choice.clone(),
                )?);
                let gif = run.stage_dir(&self.name())?.join(gif_name(task));
                policy_gif(
                    &policy,
                    task,
                    crate::util::seeds::eval_seed(seed, Split::Test, task, 0),
                    self.cfg.experiment.max_steps,
                    &gif,
                )?;
                if let Some(last) = last_of(rec.choice.as_ref(), rec.ppo.iterations) {
                    let policy = load(&rec.last, REFINED_LAST)?;
                    policies.push(self.read_chosen(
                        REFINED_LAST,
                        task,
                        &policy,
                        &rec.last,
                        Some(last),
                    )?);
                }
            }
            if let Some(done) = run.done::<BcRecord>(&stage_name::bc_filtered(task))? {
                let path = run.bc_filtered_policy(task);
                let policy = load(&path, FILTERED_BC)?;
                policies.push(self.read(
                    FILTERED_BC,
                    task,
                    &policy,
                    &path,
                    Some(done.record.mode()),
                )?);
            }
            for (stage, name) in [
                (stage_name::ceiling(task), CEILING),
                (stage_name::ceiling_true(task), CEILING_TRUE),
            ] {
                if let Some(done) = run.done::<CeilingReport>(&stage)? {
                    let path = done.record.standing();
                    let policy = load(path, name)?;
                    let choice = done.record.choice.clone();
                    policies.push(self.read_chosen(name, task, &policy, path, choice)?);
                }
            }
            let row = row_of(task, policies)?;
            tracing::info!(
                "{task}: {}",
                row.comparisons
                    .iter()
                    .map(|c| format!("{} − {} {} points", c.other, c.base, c.diff.cell()))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            rows.push(row);
        }
        Ok(rows)
    }
}

/// The last checkpoint's own choice of mode (the choice's candidates, pointing at the last
/// checkpoint's best mode), when the refined policy was chosen on validation scenes and the choice
/// stood on an earlier iteration.
fn last_of(choice: Option<&Choice>, iterations: u64) -> Option<Choice> {
    let c = choice?;
    let last = Some(iterations as usize);
    if c.best().step == last {
        return None;
    }
    let mut chosen = None;
    for (i, x) in c.candidates.iter().enumerate() {
        if x.step == last && chosen.is_none_or(|j: usize| x.successes > c.candidates[j].successes) {
            chosen = Some(i);
        }
    }
    Some(Choice {
        candidates: c.candidates.clone(),
        chosen: chosen?,
    })
}

/// A task's row from its evaluated policies: the standing readings and the paired comparisons.
fn row_of(task: &str, policies: Vec<PolicyEval>) -> Result<EvalRow> {
    let find = |n: &str| policies.iter().find(|p| p.name == n);
    let bc = find(BC_STAR).context("BC* was not evaluated")?;
    let mut comparisons = Vec::new();
    for (base, other) in [
        (BC_STAR, REFINED),
        (FILTERED_BC, REFINED),
        (BC_STAR, REFINED_LAST),
        (FILTERED_BC, REFINED_LAST),
        (BC_STAR, FILTERED_BC),
        (BC_STAR, CEILING),
        (BC_STAR, CEILING_TRUE),
    ] {
        if let (Some(b), Some(o)) = (find(base), find(other)) {
            comparisons.push(Comparison {
                base: base.into(),
                other: other.into(),
                diff: paired_difference(&b.standing().outcomes, &o.standing().outcomes)?,
            });
        }
    }
    Ok(EvalRow {
        task: task.into(),
        bc: bc.standing().clone(),
        refined: find(REFINED).map(|p| p.standing().clone()),
        ceiling: find(CEILING).map(|p| p.standing().clone()),
        bc_sampled: bc.in_mode(ActionMode::Sampled).cloned(),
        refined_sampled: find(REFINED).and_then(|p| p.in_mode(ActionMode::Sampled).cloned()),
        comparisons,
        policies,
    })
}

/// "it has no row for `task`" for the first task of `tasks` without a row.
fn missing_task(tasks: &[String], rows: &[EvalRow]) -> Option<String> {
    tasks
        .iter()
        .find(|task| !rows.iter().any(|r| r.task == **task))
        .map(|task| format!("it has no row for '{task}'"))
}

/// `<task>-refined.gif`, with a suite-qualified task's `/` replaced.
pub fn gif_name(task: &str) -> String {
    format!("{}-refined.gif", task.replace('/', "__"))
}

/// Writes a GIF of one real-environment episode of `policy` (mean actions, ends on success or after
/// `max_steps` steps, 0 = the task's own limit).
pub fn policy_gif(
    policy: &GaussianPolicy,
    task: &str,
    seed: u64,
    max_steps: usize,
    path: &Path,
) -> Result<()> {
    let size = policy.spec().render_size();
    let cfg = EnvConfig {
        image_size: size,
        max_steps: (max_steps > 0).then_some(max_steps),
        terminate_on_success: true,
        render: crate::eval::render::options(&policy.spec().render)?,
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

    fn report(task: &str, mode: ActionMode, outcomes: Vec<u8>) -> EvalReport {
        let k = outcomes.iter().map(|&o| o as usize).sum::<usize>();
        EvalReport {
            task: task.into(),
            episodes: outcomes.len(),
            successes: k,
            success_rate: k as f64 / outcomes.len() as f64,
            ci_low: 0.0,
            ci_high: 1.0,
            mean_episode_length: 40.0,
            seed: 1,
            seconds: 1.0,
            split: Some(Split::Test),
            mode: Some(mode),
            outcomes,
        }
    }

    fn policy(name: &str, mode: ActionMode, mean: Vec<u8>, sampled: Vec<u8>) -> PolicyEval {
        PolicyEval {
            name: name.into(),
            mode,
            choice: None,
            test: vec![
                report("t", ActionMode::Mean, mean),
                report("t", ActionMode::Sampled, sampled),
            ],
        }
    }

    #[test]
    fn a_row_compares_each_policy_in_its_own_mode_on_the_same_scenes() {
        let bc = policy(
            BC_STAR,
            ActionMode::Sampled,
            vec![0, 0, 0, 1],
            vec![1, 1, 0, 0],
        );
        let refined = policy(
            REFINED,
            ActionMode::Mean,
            vec![1, 1, 1, 0],
            vec![0, 0, 0, 0],
        );
        let row = row_of("t", vec![bc, refined]).unwrap();
        // BC* stands with its samples (2 of 4), the refined policy with its mean (3 of 4)
        assert_eq!(row.bc.successes, 2);
        assert_eq!(row.refined.as_ref().unwrap().successes, 3);
        let d = row.comparison(BC_STAR, REFINED).unwrap();
        assert_eq!((d.both, d.only_base, d.only_other), (2, 0, 1));
        assert!((d.diff - 0.25).abs() < 1e-12);
        assert!(row.comparison(FILTERED_BC, REFINED).is_none());
        assert!(row_of("t", vec![]).is_err());
    }

    #[test]
    fn the_last_checkpoint_is_read_beside_an_earlier_choice_in_its_own_best_mode() {
        use crate::eval::selection::Candidate;
        let cand = |step: usize, mode: ActionMode, successes: usize| Candidate {
            step: Some(step),
            path: format!("iter-{step}").into(),
            mode,
            successes,
            episodes: 100,
        };
        let choice = |chosen: usize| Choice {
            candidates: vec![
                cand(0, ActionMode::Mean, 50),
                cand(0, ActionMode::Sampled, 60),
                cand(30, ActionMode::Mean, 55),
                cand(30, ActionMode::Sampled, 52),
            ],
            chosen,
        };
        // the start stood: the last checkpoint is read in its better mode (mean, 55)
        let last = last_of(Some(&choice(1)), 30).unwrap();
        assert_eq!(last.best().step, Some(30));
        assert_eq!(last.best().mode, ActionMode::Mean);
        // the last checkpoint stood, or no choice was made: nothing more to read
        assert!(last_of(Some(&choice(2)), 30).is_none());
        assert!(last_of(None, 30).is_none());
    }

    #[test]
    fn an_evaluation_reads_every_policy_of_every_task_and_misses_no_task() {
        let tasks = vec!["push-block".to_string(), "turn-lever".to_string()];
        let mut cfg = ExperimentConfig::default();
        cfg.experiment.tasks = tasks.clone();
        let stage = Evaluate {
            cfg: &cfg,
            device: Device::Cpu,
        };
        let inputs = stage.inputs();
        for want in [
            "bc/push-block",
            "refine/turn-lever",
            "bc-filtered/push-block",
            "refine-real/turn-lever",
            "refine-true/push-block",
        ] {
            assert!(inputs.iter().any(|i| i == want), "{want} not in {inputs:?}");
        }
        let row = |task: &str| {
            row_of(
                task,
                vec![policy(BC_STAR, ActionMode::Mean, vec![1], vec![0])],
            )
            .unwrap()
        };
        let rows = vec![row("push-block"), row("turn-lever")];
        assert_eq!(missing_task(&tasks, &rows), None);
        let gap = missing_task(&tasks, &rows[..1]).unwrap();
        assert!(gap.contains("no row for 'turn-lever'"), "{gap}");
    }
}
