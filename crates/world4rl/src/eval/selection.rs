//! Choices made on validation scenes (World4RL's evaluation protocol, `docs/evaluation.md`): which of
//! a policy's checkpoints and which action mode stand for it. Every candidate is evaluated in the real
//! environment on the same validation seeds; the highest success wins, a tie going to the earlier
//! candidate (the earlier checkpoint, then mean before sampled). The test seeds are never read here.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::eval::evaluate::{evaluate_policy, ActionMode, EvalConfig};
use crate::policy::gaussian::GaussianPolicy;
use crate::util::seeds::Split;

/// One candidate's validation success.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The checkpoint's training step (`None`: the policy has one checkpoint).
    pub step: Option<usize>,
    /// The checkpoint file.
    pub path: PathBuf,
    /// How it acted.
    pub mode: ActionMode,
    /// Validation episodes solved.
    pub successes: usize,
    /// Validation episodes.
    pub episodes: usize,
}

impl Candidate {
    /// Validation success rate.
    pub fn rate(&self) -> f64 {
        self.successes as f64 / self.episodes.max(1) as f64
    }
}

/// What a choice looked at and what it chose.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Every candidate, in the order they were tried.
    pub candidates: Vec<Candidate>,
    /// Index of the chosen one in `candidates`.
    pub chosen: usize,
}

impl Choice {
    /// The chosen candidate.
    pub fn best(&self) -> &Candidate {
        &self.candidates[self.chosen]
    }

    /// The best validation success of each checkpoint step (for the report's curve).
    pub fn curve(&self, mode: ActionMode) -> Vec<(f64, f64)> {
        self.candidates
            .iter()
            .filter(|c| c.mode == mode)
            .filter_map(|c| Some((c.step? as f64, c.rate())))
            .collect()
    }
}

/// `policy` (checkpoint `step` of file `path`) in every mode of `modes` on the validation scenes of
/// `val`.
fn candidates_of(
    policy: &GaussianPolicy,
    step: Option<usize>,
    path: &Path,
    modes: &[ActionMode],
    task: &str,
    val: &EvalConfig,
) -> Result<Vec<Candidate>> {
    ensure!(!modes.is_empty(), "a choice needs at least one action mode");
    ensure!(val.episodes > 0, "a choice needs validation episodes");
    let mut out = Vec::with_capacity(modes.len());
    for &mode in modes {
        let r = evaluate_policy(policy, task, &val.with_mode(mode))?;
        tracing::info!(
            "{task}: {} {mode}: {:.1} % on {} validation episodes",
            step.map_or_else(|| "policy".to_string(), |s| format!("step {s}")),
            100.0 * r.success_rate,
            r.episodes
        );
        out.push(Candidate {
            step,
            path: path.to_path_buf(),
            mode,
            successes: r.successes,
            episodes: r.episodes,
        });
    }
    Ok(out)
}

/// The first candidate with the most validation successes.
fn best_of(candidates: Vec<Candidate>) -> Choice {
    let mut chosen = 0;
    for (i, c) in candidates.iter().enumerate() {
        if c.successes > candidates[chosen].successes {
            chosen = i;
        }
    }
    Choice { candidates, chosen }
}

/// Evaluates every checkpoint in `checkpoints` (`(step, file)`) in every action mode it is read in
/// ([`modes_for`] its own σ bound and `eval.std_cap`) on `episodes` validation episodes of `task` (seed
/// base and environments from `eval`) and chooses the best; a tie goes to the earlier checkpoint.
pub fn choose(
    checkpoints: &[(Option<usize>, PathBuf)],
    task: &str,
    eval: &EvalConfig,
    episodes: usize,
    device: Device,
) -> Result<Choice> {
    ensure!(
        !checkpoints.is_empty(),
        "a choice needs at least one checkpoint"
    );
    let val = eval.on(Split::Validation, episodes);
    let mut candidates = Vec::new();
    for (step, path) in checkpoints {
        let (policy, _) = GaussianPolicy::load(path, device)
            .with_context(|| format!("loading the checkpoint {}", path.display()))?;
        let modes = modes_for(policy.std_bounds().1, eval.std_cap);
        candidates.extend(candidates_of(&policy, *step, path, &modes, task, &val)?);
    }
    Ok(best_of(candidates))
}

/// The action mode of one loaded policy (file `path`): every mode of `modes` on `episodes`
/// validation episodes of `task`, the best chosen.
pub fn choose_mode(
    policy: &GaussianPolicy,
    path: &Path,
    modes: &[ActionMode],
    task: &str,
    eval: &EvalConfig,
    episodes: usize,
) -> Result<Choice> {
    let val = eval.on(Split::Validation, episodes);
    Ok(best_of(candidates_of(
        policy, None, path, modes, task, &val,
    )?))
}

/// The action modes a policy whose σ is capped at `policy_std_max` is read in: mean, sampled and,
/// when refinement caps σ lower (`cap`), sampled with σ ≤ `cap`.
pub fn modes_for(policy_std_max: f64, cap: f64) -> Vec<ActionMode> {
    ActionMode::all((cap < policy_std_max).then_some(cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(step: usize, mode: ActionMode, successes: usize) -> Candidate {
        Candidate {
            step: Some(step),
            path: PathBuf::from(format!("step-{step}")),
            mode,
            successes,
            episodes: 100,
        }
    }

    #[test]
    fn curve_reads_one_mode_in_step_order() {
        let c = Choice {
            candidates: vec![
                cand(10, ActionMode::Mean, 20),
                cand(10, ActionMode::Sampled, 30),
                cand(20, ActionMode::Mean, 40),
                cand(20, ActionMode::Sampled, 35),
            ],
            chosen: 2,
        };
        assert_eq!(c.curve(ActionMode::Mean), vec![(10.0, 0.2), (20.0, 0.4)]);
        assert_eq!(c.best().step, Some(20));
        assert_eq!(modes_for(1.0, 0.25).len(), 3);
        assert_eq!(modes_for(0.25, 0.25).len(), 2);
    }
}
