//! The outcome check closed loop: does the world model predict how a *policy* ends an episode when
//! the policy acts on the imagined frames, as it does during refinement?
//!
//! The open-loop check ([`crate::world_model::outcome`]) replays recorded actions. Those actions were chosen by a
//! closed-loop policy looking at the real scene; once the imagined scene is a little off, they no
//! longer fit it, and nothing corrects the error. On `push-block` the real simulator itself turns a
//! nudge of half an arena unit at step 10 of such a replay into 6 outcome flips in 100 episodes
//! (`crates/cli/examples/replay_sensitivity.rs`), so the open-loop AUC measures the task's sensitivity
//! as much as the world model. Here the policy acts instead:
//!
//! * `episodes` are real rollouts of `policy` acting with its **mean action** (deterministic, so
//!   each scene has one real outcome), recorded by the caller from scenes no learner trained on;
//! * from each one's first frame, the same policy acts with its mean action on the imagined frames
//!   for as many steps as the real episode had, and the classifier judges every imagined frame;
//! * the imagined score (under the [`SuccessRule`](crate::world_model::outcome::SuccessRule)) is set against the
//!   recorded outcome exactly as in the open-loop check: success rates, agreement, ROC AUC with its
//!   bootstrap interval, and the classifier on the recorded real frames.
//!
//! Nothing here runs the real environment: the caller records the rollouts (the `eval world-model
//! --closed-loop` command does, from the held-out seed stream).

use anyhow::{ensure, Context, Result};
use tch::Tensor;
use w4rl_data::Episode;
use w4rl_envs::{check_action, ActionSpec};

use crate::policy::{GaussianPolicy, ObsHistory};
use crate::ppo::imagined_env::ImaginedEnv;
use crate::reward::RewardClassifier;
use crate::world_model::outcome::{agreement_of, frame_probs, OutcomeAgreement, OutcomeOptions};
use crate::world_model::{RollingContext, WorldModel};

/// Per-episode imagined scores of `policy` acting with its mean action on the imagined frames, from
/// the first frame of each of `episodes`, for as many steps as each episode has (see the module
/// docs). The world model's noise comes from the global libtorch generator: seed it for
/// reproducible scores.
pub fn closed_loop_scores(
    wm: &WorldModel,
    clf: &RewardClassifier,
    policy: &GaussianPolicy,
    episodes: &[&Episode],
    opts: &OutcomeOptions,
) -> Result<Vec<f64>> {
    ensure!(opts.batch > 0, "batch must be positive");
    ensure!(
        policy.spec().action_dim == wm.action_dim(),
        "the policy acts in {} dimensions, the world model's actions have {}",
        policy.spec().action_dim,
        wm.action_dim()
    );
    let _guard = tch::no_grad_guard();
    let spec = ActionSpec {
        dim: policy.spec().action_dim,
        low: policy.spec().action_low.clone(),
        high: policy.spec().action_high.clone(),
        meaning: Vec::new(),
    };
    let task = &policy.spec().task;
    let mut scores = Vec::with_capacity(episodes.len());
    for chunk in episodes.chunks(opts.batch) {
        let t_max = chunk.iter().map(|e| e.steps()).max().unwrap_or(0);
        let starts: Vec<(&Episode, usize)> = chunk.iter().map(|&e| (e, 0)).collect();
        let mut ctx = RollingContext::from_episodes(wm, &starts)?;
        let mut hist = ObsHistory::new(
            policy.config().frame_stack,
            ImaginedEnv::obs_of(&ctx.last_frame())?,
        );
        let mut probs: Vec<Vec<f64>> = chunk
            .iter()
            .map(|e| Vec::with_capacity(e.steps()))
            .collect();
        for t in 0..t_max {
            let mut flat = Vec::with_capacity(chunk.len() * spec.dim);
            for a in policy.act_mean(&hist.batch(policy, None)?)? {
                flat.extend(check_action(task, &spec, &a).context("the policy's action")?);
            }
            let a = Tensor::from_slice(&flat)
                .view([chunk.len() as i64, spec.dim as i64])
                .to_device(wm.device());
            let next = ctx.step(wm, &a)?;
            let p = frame_probs(clf, &next)?;
            for (i, obs) in ImaginedEnv::obs_of(&next)?.into_iter().enumerate() {
                // frames imagined after an episode's end are not judged
                if t < chunk[i].steps() {
                    probs[i].push(f64::from(p[i]));
                }
                hist.push(i, obs);
            }
        }
        scores.extend(probs.iter().map(|p| opts.rule.score(p)));
    }
    Ok(scores)
}

/// The closed-loop [`OutcomeAgreement`] of `policy` on `episodes`, its own real rollouts with its
/// mean action (`heldout` says whether their scenes are held out from every learner). Its
/// `auc_by_reset` is empty: resetting the context to real frames would not be closed loop.
pub fn closed_loop_agreement(
    wm: &WorldModel,
    clf: &RewardClassifier,
    policy: &GaussianPolicy,
    episodes: &[&Episode],
    heldout: bool,
    opts: &OutcomeOptions,
) -> Result<OutcomeAgreement> {
    ensure!(
        !episodes.is_empty(),
        "closed-loop outcome check: no episodes given"
    );
    let scores = closed_loop_scores(wm, clf, policy, episodes, opts)?;
    agreement_of(clf, episodes, heldout, opts, &scores, Vec::new())
}
