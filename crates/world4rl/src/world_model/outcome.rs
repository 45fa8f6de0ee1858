//! The outcome check: do whole imagined episodes end the way the real ones did?
//!
//! Refinement inside the world model can only raise real success if, over whole episodes, imagined
//! success follows real success. Frame-level fidelity does not show whether it does. This module
//! replays recorded policy rollouts in the world model, open-loop from their first frame with their
//! recorded actions, lets the task's classifier judge every imagined frame, and sets the imagined
//! outcome against the recorded one:
//!
//! * the real and imagined success rates and the fraction of episodes with the same outcome;
//! * the ROC AUC of each episode's imagined success score against its real outcome (threshold-free;
//!   0.5 is chance), with a bootstrap 95 % interval over the episodes;
//! * **AUC(k)**: the same replays with the context reset to the real frames every `k` steps, which
//!   shows at which horizon the error compounds (k = 1 is one-step prediction; k ≥ the episode
//!   length is the open-loop replay);
//! * the same classifier and rule on the recorded real frames: the AUC imagination could reach with a
//!   perfect world model, which says whether a low AUC is the world model's or the classifier's.
//!
//! An episode's score under the success rule "k consecutive frames above the threshold"
//! ([`SuccessRule`], the imagined environment uses the same rule) is the largest, over its frames, of
//! the smallest probability in a run of k consecutive frames; it succeeds when the score exceeds
//! the classifier's threshold. The rollouts replayed should be held out from every learner (the
//! pipeline's `collect-heldout` stage records them); training rollouts make the check optimistic.

use anyhow::{ensure, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};
use w4rl_data::{Dataset, Episode, EpisodeKind};

use crate::reward::RewardClassifier;
use crate::util::frames::{bytes_to_chw, model_to_chw};
use crate::world_model::{RollingContext, WorldModel};

/// When an imagined episode counts as a success: `frames` consecutive imagined frames above the
/// classifier's threshold (1 = any frame). The imagined environment and the outcome check share it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuccessRule {
    /// Consecutive frames above the threshold (≥ 1).
    pub frames: usize,
}

impl Default for SuccessRule {
    fn default() -> Self {
        Self { frames: 1 }
    }
}

impl SuccessRule {
    /// One more judged frame of an episode: extends or breaks its run of frames above the threshold
    /// (`streak`) and says whether the rule is met. The imagined environment and the ceiling
    /// control judge their frames with it.
    pub fn judge(&self, streak: &mut usize, p: f32, threshold: f32) -> bool {
        *streak = if p > threshold { *streak + 1 } else { 0 };
        *streak >= self.frames.max(1)
    }

    /// The episode score of per-frame probabilities `p`: the largest, over runs of `frames`
    /// consecutive frames, of the smallest probability in the run (the largest probability for one
    /// frame; 0 for an episode shorter than the run).
    pub fn score(&self, p: &[f64]) -> f64 {
        let k = self.frames.max(1);
        p.windows(k)
            .map(|w| w.iter().copied().fold(f64::INFINITY, f64::min))
            .fold(0.0, f64::max)
    }
}

/// Replays `episodes` together from their first frames for `steps` steps: step `t` feeds every
/// episode's recorded action `t` (zeros once an episode has ended) to the world model and hands the
/// imagined frames `[B, 3, S, S]` to `on_frame(t, frames)`. With `reset_every = Some(k)`, the context
/// is rebuilt from the real frames ending at frame `t` before every step `t` that is a positive
/// multiple of `k`; `None` replays open-loop.
pub fn replay(
    wm: &WorldModel,
    episodes: &[&Episode],
    steps: usize,
    reset_every: Option<usize>,
    mut on_frame: impl FnMut(usize, &Tensor) -> Result<()>,
) -> Result<()> {
    let starts: Vec<(&Episode, usize)> = episodes.iter().map(|&e| (e, 0)).collect();
    let mut ctx = RollingContext::from_episodes(wm, &starts)?;
    for t in 0..steps {
        if reset_every.is_some_and(|k| k > 0 && t > 0 && t % k == 0) {
            let real: Vec<(&Episode, usize)> =
                episodes.iter().map(|&e| (e, t.min(e.steps()))).collect();
            ctx = RollingContext::from_episodes(wm, &real)?;
        }
        let acts: Vec<f32> = episodes
            .iter()
            .flat_map(|e| {
                if t < e.steps() {
                    e.action(t).to_vec()
                } else {
                    vec![0.0; e.meta.action_dim]
                }
            })
            .collect();
        let a = Tensor::from_slice(&acts)
            .view([episodes.len() as i64, wm.action_dim() as i64])
            .to_device(wm.device());
        on_frame(t, &ctx.step(wm, &a)?)?;
    }
    Ok(())
}

/// Options of the outcome check.
#[derive(Clone, Debug, PartialEq)]
pub struct OutcomeOptions {
    /// Replays per world-model call.
    pub batch: usize,
    /// The success rule.
    pub rule: SuccessRule,
    /// Reset intervals k of AUC(k) (empty: open-loop only).
    pub resets: Vec<usize>,
    /// Bootstrap resamples of the AUC interval (0: no interval).
    pub bootstrap: usize,
    /// Seed of the bootstrap and of the imagined noise (each task starts from it).
    pub seed: u64,
}

impl Default for OutcomeOptions {
    fn default() -> Self {
        Self {
            batch: 64,
            rule: SuccessRule::default(),
            resets: Vec::new(),
            bootstrap: 1000,
            seed: 0,
        }
    }
}

/// The AUC of one replay mode.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct AucEstimate {
    /// ROC AUC of the imagined score against the real outcome (`None` with one real outcome only).
    pub auc: Option<f64>,
    /// Bootstrap 95 % interval (percentiles 2.5 and 97.5 over resampled episode sets).
    pub ci: Option<[f64; 2]>,
    /// Fraction of episodes that succeeded in imagination.
    pub imagined_success_rate: f64,
}

/// AUC(k): the replay with the context reset to the real frames every `every` steps.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct ResetAuc {
    pub every: usize,
    #[serde(flatten)]
    pub estimate: AucEstimate,
}

/// Whether whole imagined episodes end the way the recorded ones did (see the module docs).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutcomeAgreement {
    /// Episodes replayed.
    pub episodes: usize,
    /// Whether they are held out from every learner (`false`: training rollouts, an optimistic test).
    #[serde(default)]
    pub heldout: bool,
    /// The success rule's consecutive frames.
    #[serde(default = "one")]
    pub success_frames: usize,
    /// Fraction that succeeded in reality (recorded).
    pub real_success_rate: f64,
    /// Fraction that succeeded in imagination (open-loop).
    pub imagined_success_rate: f64,
    /// Fraction whose imagined outcome equals the real one (open-loop).
    pub agreement: f64,
    /// Open-loop ROC AUC (`None` when all episodes had the same real outcome).
    pub auc: Option<f64>,
    /// Its bootstrap 95 % interval.
    #[serde(default)]
    pub auc_ci: Option<[f64; 2]>,
    /// AUC(k) for each reset interval asked for.
    #[serde(default)]
    pub auc_by_reset: Vec<ResetAuc>,
    /// The same rule and classifier on the recorded real frames (its `imagined_success_rate` is the
    /// share the classifier calls successful there): the most the imagined episodes can reach with
    /// this classifier, which separates the classifier's limit from the world model's.
    #[serde(default)]
    pub real_frames: Option<AucEstimate>,
}

impl OutcomeAgreement {
    /// One line for the log: the success rates, the agreement and the AUCs with their intervals.
    pub fn summary(&self) -> String {
        let resets: Vec<String> = self
            .auc_by_reset
            .iter()
            .map(|r| {
                format!(
                    "AUC({}) {}",
                    r.every,
                    fmt_auc(r.estimate.auc, r.estimate.ci)
                )
            })
            .collect();
        let real = self
            .real_frames
            .map(|r| format!("; on the real frames AUC {}", fmt_auc(r.auc, r.ci)))
            .unwrap_or_default();
        format!(
            "real success {:.0} %, imagined {:.0} %, same outcome {:.0} %, AUC {}{}{}{real}",
            100.0 * self.real_success_rate,
            100.0 * self.imagined_success_rate,
            100.0 * self.agreement,
            fmt_auc(self.auc, self.auc_ci),
            if resets.is_empty() { "" } else { "; " },
            resets.join(", ")
        )
    }
}

fn one() -> usize {
    1
}

/// The classifier's success probability of each imagined frame `[B, 3, S, S]` in [-1, 1] (judged as
/// the u8 frames the imagined environment hands out).
pub(crate) fn frame_probs(clf: &RewardClassifier, frames: &Tensor) -> Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(
        clf.prob_u8(&model_to_chw(frames))
            .to_device(Device::Cpu)
            .to_kind(Kind::Float),
    )?)
}

/// Per-episode scores of `episodes` replayed in `wm` and judged by `clf` (see [`replay`]).
pub fn episode_scores(
    wm: &WorldModel,
    clf: &RewardClassifier,
    episodes: &[&Episode],
    opts: &OutcomeOptions,
    reset_every: Option<usize>,
) -> Result<Vec<f64>> {
    ensure!(opts.batch > 0, "batch must be positive");
    let _guard = tch::no_grad_guard();
    let mut scores = Vec::with_capacity(episodes.len());
    for chunk in episodes.chunks(opts.batch) {
        let t_max = chunk.iter().map(|e| e.steps()).max().unwrap_or(0);
        let mut probs: Vec<Vec<f64>> = chunk
            .iter()
            .map(|e| Vec::with_capacity(e.steps()))
            .collect();
        replay(wm, chunk, t_max, reset_every, |t, next| {
            let p = frame_probs(clf, next)?;
            // frames imagined after an episode's end are not judged
            for (i, e) in chunk.iter().enumerate() {
                if t < e.steps() {
                    probs[i].push(f64::from(p[i]));
                }
            }
            Ok(())
        })?;
        scores.extend(probs.iter().map(|p| opts.rule.score(p)));
    }
    Ok(scores)
}

/// Per-episode scores of the recorded frames `1..=T` of `episodes` judged by `clf` (the frames the
/// imagined ones stand for), under the same rule as [`episode_scores`].
pub fn real_frame_scores(
    clf: &RewardClassifier,
    episodes: &[&Episode],
    rule: SuccessRule,
) -> Result<Vec<f64>> {
    let _guard = tch::no_grad_guard();
    let mut scores = Vec::with_capacity(episodes.len());
    for e in episodes {
        let n = e.steps();
        if n == 0 {
            scores.push(0.0);
            continue;
        }
        let size = e.meta.image_size;
        let bytes = &e.frames[e.frame_len()..(n + 1) * e.frame_len()];
        let frames = bytes_to_chw(bytes, n, size, size, clf.device())?;
        let p: Vec<f64> = crate::reward::train::probabilities(clf, &frames)?
            .into_iter()
            .map(f64::from)
            .collect();
        scores.push(rule.score(&p));
    }
    Ok(scores)
}

/// ROC AUC of `scores` against `labels` with a bootstrap 95 % interval from `resamples` resampled
/// episode sets (resamples with one class only are skipped; no interval below 20 usable ones).
pub fn auc_with_interval(
    scores: &[f64],
    labels: &[bool],
    resamples: usize,
    seed: u64,
) -> (Option<f64>, Option<[f64; 2]>) {
    let auc = crate::reward::roc_auc(scores, labels);
    if auc.is_none() || resamples == 0 {
        return (auc, None);
    }
    let n = scores.len();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xB007);
    let mut aucs = Vec::with_capacity(resamples);
    let (mut s, mut l) = (vec![0.0; n], vec![false; n]);
    for _ in 0..resamples {
        for k in 0..n {
            let i = rng.gen_range(0..n);
            s[k] = scores[i];
            l[k] = labels[i];
        }
        if let Some(a) = crate::reward::roc_auc(&s, &l) {
            aucs.push(a);
        }
    }
    if aucs.len() < 20 {
        return (auc, None);
    }
    aucs.sort_by(f64::total_cmp);
    let q = |p: f64| aucs[((aucs.len() - 1) as f64 * p).round() as usize];
    (auc, Some([q(0.025), q(0.975)]))
}

/// Measures [`OutcomeAgreement`] on `episodes` (`heldout` says whether they are held out).
pub fn outcome_agreement(
    wm: &WorldModel,
    clf: &RewardClassifier,
    episodes: &[&Episode],
    heldout: bool,
    opts: &OutcomeOptions,
) -> Result<OutcomeAgreement> {
    ensure!(!episodes.is_empty(), "outcome agreement: no episodes given");
    let open = episode_scores(wm, clf, episodes, opts, None)?;
    let mut auc_by_reset = Vec::new();
    for &k in &opts.resets {
        ensure!(k > 0, "outcome check: reset intervals must be positive");
        let scores = episode_scores(wm, clf, episodes, opts, Some(k))?;
        auc_by_reset.push((k, scores));
    }
    agreement_of(clf, episodes, heldout, opts, &open, auc_by_reset)
}

/// The [`OutcomeAgreement`] of imagined episode scores `imagined` (one per episode of `episodes`)
/// with the recorded outcomes, plus the AUC(k) of the scores `(k, scores)` of `resets` and the
/// classifier on the recorded real frames. Shared by the open-loop and the closed-loop checks.
pub(crate) fn agreement_of(
    clf: &RewardClassifier,
    episodes: &[&Episode],
    heldout: bool,
    opts: &OutcomeOptions,
    imagined: &[f64],
    resets: Vec<(usize, Vec<f64>)>,
) -> Result<OutcomeAgreement> {
    ensure!(!episodes.is_empty(), "outcome agreement: no episodes given");
    ensure!(
        imagined.len() == episodes.len(),
        "{} imagined scores for {} episodes",
        imagined.len(),
        episodes.len()
    );
    let real: Vec<bool> = episodes
        .iter()
        .map(|e| e.success.iter().skip(1).any(|&s| s == 1))
        .collect();
    let thr = clf.threshold();
    let n = episodes.len() as f64;
    let estimate = |scores: &[f64], salt: u64| {
        let (auc, ci) = auc_with_interval(scores, &real, opts.bootstrap, opts.seed ^ salt);
        let imagined = scores.iter().filter(|&&p| p > thr).count() as f64 / n;
        AucEstimate {
            auc,
            ci,
            imagined_success_rate: imagined,
        }
    };
    let called: Vec<bool> = imagined.iter().map(|&p| p > thr).collect();
    let open_est = estimate(imagined, 0);
    let auc_by_reset = resets
        .iter()
        .map(|(k, scores)| ResetAuc {
            every: *k,
            estimate: estimate(scores, *k as u64),
        })
        .collect();
    let real_frames = estimate(&real_frame_scores(clf, episodes, opts.rule)?, 0x4EA1);
    Ok(OutcomeAgreement {
        episodes: episodes.len(),
        heldout,
        success_frames: opts.rule.frames,
        real_success_rate: real.iter().filter(|&&b| b).count() as f64 / n,
        imagined_success_rate: open_est.imagined_success_rate,
        agreement: real.iter().zip(&called).filter(|(a, b)| a == b).count() as f64 / n,
        auc: open_est.auc,
        auc_ci: open_est.ci,
        auc_by_reset,
        real_frames: Some(real_frames),
    })
}

/// The first `n` policy rollouts of `task` in `data`.
fn policy_rollouts(data: &Dataset, task: &str, n: usize) -> Result<Vec<Episode>> {
    let mut eps = Vec::new();
    for (i, e) in data.entries().iter().enumerate() {
        if eps.len() < n && e.meta.task == task && e.meta.kind == EpisodeKind::Policy {
            eps.push(data.load(i)?);
        }
    }
    Ok(eps)
}

/// Where the replayed rollouts come from: the held-out rollouts when there are any for the task,
/// else the training dataset's (an optimistic test, said in the result and the log).
pub struct Rollouts<'a> {
    pub heldout: Option<&'a Dataset>,
    pub training: &'a Dataset,
}

/// One task's [`OutcomeAgreement`], as the fidelity stage stores it in its `done.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskOutcome {
    /// Task name.
    pub task: String,
    /// Its whole-episode agreement.
    pub agreement: OutcomeAgreement,
}

/// [`outcome_agreement`] of `wm` with the classifier of `task` stored at `classifier`, on the task's
/// first `episodes` rollouts of `rollouts`. `None` when there are no policy rollouts of the task.
pub fn task_outcome_agreement(
    classifier: &std::path::Path,
    wm: &WorldModel,
    rollouts: &Rollouts,
    task: &str,
    episodes: usize,
    opts: &OutcomeOptions,
) -> Result<Option<OutcomeAgreement>> {
    let (clf, _) = RewardClassifier::load(classifier, wm.device()).with_context(|| {
        format!("loading the reward classifier of '{task}' (run `world4rl train reward` first)")
    })?;
    let held = match rollouts.heldout {
        Some(d) => policy_rollouts(d, task, episodes)?,
        None => Vec::new(),
    };
    let (eps, heldout) = if held.is_empty() {
        (policy_rollouts(rollouts.training, task, episodes)?, false)
    } else {
        (held, true)
    };
    if eps.is_empty() {
        return Ok(None);
    }
    let refs: Vec<&Episode> = eps.iter().collect();
    outcome_agreement(wm, &clf, &refs, heldout, opts).map(Some)
}

/// An AUC with its interval as the log and the report print it: `0.83 [0.74, 0.91]`, `0.83` or `-`.
pub fn fmt_auc(e: Option<f64>, ci: Option<[f64; 2]>) -> String {
    match (e, ci) {
        (Some(a), Some([lo, hi])) => format!("{a:.2} [{lo:.2}, {hi:.2}]"),
        (Some(a), None) => format!("{a:.2}"),
        _ => "-".into(),
    }
}

/// [`task_outcome_agreement`] for each of `tasks` (`classifier(task)` gives the checkpoint), each
/// result logged; a task without recorded policy rollouts is skipped with a warning.
pub fn task_outcomes(
    classifier: impl Fn(&str) -> std::path::PathBuf,
    wm: &WorldModel,
    rollouts: &Rollouts,
    tasks: &[String],
    episodes: usize,
    opts: &OutcomeOptions,
) -> Result<Vec<TaskOutcome>> {
    let mut out = Vec::new();
    for task in tasks {
        // each task's imagined noise from the seed: a task's result does not depend on the others
        tch::manual_seed(opts.seed as i64);
        let Some(o) =
            task_outcome_agreement(&classifier(task), wm, rollouts, task, episodes, opts)?
        else {
            tracing::warn!("{task}: no recorded policy rollouts to replay whole");
            continue;
        };
        if !o.heldout {
            tracing::warn!(
                "{task}: no held-out rollouts; replaying training rollouts (an optimistic test)"
            );
        }
        tracing::info!(
            "{task}: {} {} rollouts replayed whole; {}",
            o.episodes,
            if o.heldout { "held-out" } else { "training" },
            o.summary()
        );
        out.push(TaskOutcome {
            task: task.clone(),
            agreement: o,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_rule_scores_runs_of_consecutive_frames() {
        let p = [0.1, 0.9, 0.2, 0.8, 0.7, 0.95, 0.3];
        assert_eq!(SuccessRule { frames: 1 }.score(&p), 0.95);
        // runs of 2: min(0.8, 0.7) = 0.7, min(0.7, 0.95) = 0.7 -> 0.7
        assert_eq!(SuccessRule { frames: 2 }.score(&p), 0.7);
        assert_eq!(SuccessRule { frames: 3 }.score(&p), 0.7);
        assert_eq!(SuccessRule { frames: 4 }.score(&p), 0.3);
        assert_eq!(SuccessRule { frames: 8 }.score(&p), 0.0);
    }

    #[test]
    fn bootstrap_interval_brackets_the_auc_and_narrows_with_more_episodes() {
        // a noisy but informative score: positives shifted up
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let make = |n: usize, rng: &mut ChaCha8Rng| {
            let labels: Vec<bool> = (0..n).map(|i| i % 3 != 0).collect();
            let scores: Vec<f64> = labels
                .iter()
                .map(|&l| rng.gen::<f64>() + if l { 0.4 } else { 0.0 })
                .collect();
            (scores, labels)
        };
        let (s, l) = make(60, &mut rng);
        let (auc, ci) = auc_with_interval(&s, &l, 500, 1);
        let (auc, [lo, hi]) = (auc.unwrap(), ci.unwrap());
        assert!(lo < auc && auc < hi, "{lo} {auc} {hi}");
        assert!(
            lo > 0.5,
            "an informative score's interval stays above chance: {lo}"
        );
        let (s2, l2) = make(600, &mut rng);
        let [lo2, hi2] = auc_with_interval(&s2, &l2, 500, 1).1.unwrap();
        assert!(hi2 - lo2 < 0.6 * (hi - lo), "{} vs {}", hi2 - lo2, hi - lo);
        // deterministic from the seed; no interval with one class or no resamples
        assert_eq!(
            auc_with_interval(&s, &l, 500, 1),
            auc_with_interval(&s, &l, 500, 1)
        );
        assert_eq!(auc_with_interval(&s, &[true; 60], 500, 1), (None, None));
        assert!(auc_with_interval(&s, &l, 0, 1).1.is_none());
    }
}
