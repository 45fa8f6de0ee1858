//! Acceptance of a refined policy by the world model itself: a paired comparison of two policies
//! inside the frozen world model, and the rule that keeps the BC policy unless refinement measurably
//! raised the imagined return.
//!
//! PPO in imagination optimises what the world model and the classifier say. Where their verdict is
//! mostly noise (a task whose imagined outcome ranks the real one poorly), the policy still drifts for
//! as many iterations as it is given, and the drift is as likely to hurt in the real environment as to
//! help. The check below asks the world model, on start states no learner trained on, whether the
//! refined policy beats its BC start by more than that noise:
//!
//! * both policies act with their **mean action** (as in the real evaluation), for `episodes` imagined
//!   episodes of the full horizon, from the **same start states** and with the **same world-model noise**
//!   (the global libtorch generator is reseeded before each batch), so the difference per episode is
//!   paired;
//! * each episode scores its **discounted success** γ^(t−1) at its first imagined success t (0 when it
//!   never succeeds): finishing sooner counts, as in PPO's objective;
//! * the refined policy is accepted when the lower end of the 95 % interval of the mean paired
//!   difference is above `margin`; otherwise the BC policy stands as the refined one.
//!
//! Nothing here touches the real environment. Measured on the demo (`docs/refinement.md`), the check
//! is right where the world model is (push-block) and wrong where it is not: it kept BC on turn-lever,
//! whose imagined success is saturated (real +14.5), and accepted slide-handle's refined policy (real
//! −4). A check that asks the world model cannot catch the world model's own errors; off by default.

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use w4rl_envs::VecEnv;

use w4rl_data::Dataset;

use crate::eval::evaluate::Z95;
use crate::policy::gaussian::{GaussianPolicy, ObsHistory};
use crate::ppo::imagined_env::{ImaginedEnv, ImaginedEnvConfig};
use crate::reward::RewardClassifier;
use crate::world_model::WorldModel;

/// `refine.accept`: which policy stands as the refined one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AcceptRule {
    /// The refined checkpoint, whatever the world model says of it.
    #[default]
    Always,
    /// The refined checkpoint only when its imagined discounted success beats the BC policy's on the
    /// same imagined episodes (paired 95 % interval above `refine.accept_margin`); else the BC policy.
    ImaginedGain,
}

/// What one policy did in the imagined episodes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ImaginedScores {
    /// Per episode: succeeded within the horizon.
    pub success: Vec<bool>,
    /// Per episode: γ^(t−1) at the first success step t, 0 without success.
    pub discounted: Vec<f64>,
}

impl ImaginedScores {
    /// Share of episodes that succeeded.
    pub fn success_rate(&self) -> f64 {
        mean(
            &self
                .success
                .iter()
                .map(|&s| f64::from(u8::from(s)))
                .collect::<Vec<_>>(),
        )
    }

    /// Mean discounted success.
    pub fn mean_discounted(&self) -> f64 {
        mean(&self.discounted)
    }
}

fn mean(x: &[f64]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    x.iter().sum::<f64>() / x.len() as f64
}

/// Runs `policy` with its mean action for `episodes` imagined episodes of `env`'s full horizon. Episode
/// `j` starts from the start state of seed `seed + j`, and the world-model noise of each batch is seeded
/// from `seed` and the batch index, so two policies run with the same `seed` see the same starts and
/// noise. `env` must not terminate on success (every row runs the horizon, which keeps the batches of
/// both policies the same shape).
pub fn run_policy(
    env: &mut ImaginedEnv,
    policy: &GaussianPolicy,
    episodes: usize,
    seed: u64,
    gamma: f64,
) -> Result<ImaginedScores> {
    ensure!(
        episodes > 0,
        "the acceptance check needs at least one episode"
    );
    ensure!(
        (0.0..=1.0).contains(&gamma),
        "gamma must lie in [0, 1], got {gamma}"
    );
    let n = env.num_envs();
    let horizon = env.horizon();
    let mut scores = ImaginedScores::default();
    let mut batch = 0u64;
    while scores.success.len() < episodes {
        let seeds: Vec<u64> = (0..n as u64)
            .map(|i| seed.wrapping_add(batch * n as u64 + i))
            .collect();
        tch::manual_seed((seed ^ 0x6163_6365_7074).wrapping_add(batch) as i64);
        let first = env.try_reset(&seeds)?;
        let mut hist = ObsHistory::new(policy.config().frame_stack, first);
        let mut first_success: Vec<Option<usize>> = vec![None; n];
        for t in 1..=horizon {
            let actions = policy.act_mean(&hist.batch(policy, None)?)?;
            let steps = env
                .step(&actions)
                .context("stepping the imagined environment")?;
            for (i, st) in steps.into_iter().enumerate() {
                if st.info.success && first_success[i].is_none() {
                    first_success[i] = Some(t);
                }
                hist.push(i, st.obs);
            }
        }
        for f in first_success
            .into_iter()
            .take(episodes - scores.success.len())
        {
            scores.success.push(f.is_some());
            scores
                .discounted
                .push(f.map_or(0.0, |t| gamma.powi(t as i32 - 1)));
        }
        batch += 1;
    }
    Ok(scores)
}

/// Two policies on the same imagined episodes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PairedComparison {
    /// Episodes per policy.
    pub episodes: usize,
    /// Imagined success rate of the baseline (the BC policy).
    pub baseline_success: f64,
    /// Imagined success rate of the candidate (the refined policy).
    pub candidate_success: f64,
    /// Mean discounted success of the baseline.
    pub baseline_discounted: f64,
    /// Mean discounted success of the candidate.
    pub candidate_discounted: f64,
    /// Mean paired difference of discounted success (candidate − baseline).
    pub gain: f64,
    /// Its 95 % interval (normal approximation of the paired mean).
    pub gain_ci: (f64, f64),
}

/// The paired difference of two score sets of the same episodes.
pub fn paired(baseline: &ImaginedScores, candidate: &ImaginedScores) -> Result<PairedComparison> {
    let n = baseline.discounted.len();
    ensure!(
        n == candidate.discounted.len() && n > 0,
        "paired comparison needs the same non-zero number of episodes ({} vs {})",
        n,
        candidate.discounted.len()
    );
    let d: Vec<f64> = candidate
        .discounted
        .iter()
        .zip(&baseline.discounted)
        .map(|(c, b)| c - b)
        .collect();
    let m = mean(&d);
    let var = if n > 1 {
        d.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64
    } else {
        0.0
    };
    let half = Z95 * (var / n as f64).sqrt();
    Ok(PairedComparison {
        episodes: n,
        baseline_success: baseline.success_rate(),
        candidate_success: candidate.success_rate(),
        baseline_discounted: baseline.mean_discounted(),
        candidate_discounted: candidate.mean_discounted(),
        gain: m,
        gain_ci: (m - half, m + half),
    })
}

/// Runs `baseline` and `candidate` on the same imagined episodes of `env` (see [`run_policy`]).
pub fn compare(
    env: &mut ImaginedEnv,
    baseline: &GaussianPolicy,
    candidate: &GaussianPolicy,
    episodes: usize,
    seed: u64,
    gamma: f64,
) -> Result<PairedComparison> {
    let b = run_policy(env, baseline, episodes, seed, gamma)?;
    let c = run_policy(env, candidate, episodes, seed, gamma)?;
    paired(&b, &c)
}

/// How the acceptance check runs (`refine.accept_*`).
#[derive(Clone, Debug, PartialEq)]
pub struct AcceptConfig {
    /// Imagined episodes per policy.
    pub episodes: usize,
    /// Imagined environments stepped together.
    pub num_envs: usize,
    /// Episode length in imagined steps.
    pub horizon: usize,
    /// Consecutive frames of an imagined success (as in refinement).
    pub success_frames: usize,
    /// Discount of the score.
    pub gamma: f64,
    /// The lower end of the gain's interval must exceed this.
    pub margin: f64,
    /// Seed of the start states and the world-model noise.
    pub seed: u64,
}

/// Compares `candidate` with `baseline` in the frozen world model `wm`, judged by `clf`, from the
/// start states of `task` in `starts`, and applies [`AcceptRule::ImaginedGain`].
pub fn check(
    wm: &WorldModel,
    clf: &RewardClassifier,
    starts: &Dataset,
    task: &str,
    baseline: &GaussianPolicy,
    candidate: &GaussianPolicy,
    cfg: &AcceptConfig,
) -> Result<Acceptance> {
    let env_cfg = ImaginedEnvConfig {
        horizon: cfg.horizon,
        terminate_on_success: false,
        success_frames: cfg.success_frames,
        ..ImaginedEnvConfig::default()
    };
    let n = cfg.num_envs.min(cfg.episodes).max(1);
    let mut env = ImaginedEnv::new(wm, clf, starts, task, n, &env_cfg)?;
    let comparison = compare(
        &mut env,
        baseline,
        candidate,
        cfg.episodes,
        cfg.seed,
        cfg.gamma,
    )?;
    Ok(Acceptance::judge(comparison, cfg.margin))
}

/// The verdict of [`AcceptRule::ImaginedGain`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Acceptance {
    /// The comparison behind it.
    pub comparison: PairedComparison,
    /// The margin the interval had to clear.
    pub margin: f64,
    /// True: the refined policy stands; false: the BC policy stands.
    pub accepted: bool,
}

impl Acceptance {
    /// Applies the rule to a comparison.
    pub fn judge(comparison: PairedComparison, margin: f64) -> Self {
        let accepted = comparison.gain_ci.0 > margin;
        Self {
            comparison,
            margin,
            accepted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(d: &[f64]) -> ImaginedScores {
        ImaginedScores {
            success: d.iter().map(|&x| x > 0.0).collect(),
            discounted: d.to_vec(),
        }
    }

    #[test]
    fn paired_difference_and_interval() {
        let b = scores(&[0.0, 0.5, 0.9, 0.0]);
        let c = scores(&[0.8, 0.6, 0.9, 0.0]);
        let p = paired(&b, &c).unwrap();
        // differences 0.8, 0.1, 0, 0: mean 0.225, sample sd 0.3862
        assert!((p.gain - 0.225).abs() < 1e-12);
        let half = Z95 * (0.149_166_666_666_666_67f64 / 4.0).sqrt();
        assert!((p.gain_ci.0 - (0.225 - half)).abs() < 1e-9);
        assert!((p.baseline_success - 0.5).abs() < 1e-12);
        assert!((p.candidate_success - 0.75).abs() < 1e-12);
        // noisy gain: not accepted at margin 0; a clear one is
        assert!(!Acceptance::judge(p, 0.0).accepted);
        let clear = paired(&scores(&[0.0; 8]), &scores(&[0.5; 8])).unwrap();
        assert!(Acceptance::judge(clear, 0.0).accepted);
    }

    #[test]
    fn paired_refuses_unequal_episode_counts() {
        assert!(paired(&scores(&[0.1]), &scores(&[0.1, 0.2])).is_err());
        assert!(paired(&scores(&[]), &scores(&[])).is_err());
    }
}
