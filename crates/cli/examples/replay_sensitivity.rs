//! How much an open-loop replay of recorded actions depends on a tiny error: the yardstick of issue
//! #14 replays a closed-loop policy's recorded actions open loop in the world model, so any small
//! error of the imagined state is never corrected. This replays the same actions in the *real*
//! simulator, exactly and with one action nudged once, and reports how often the outcome flips and
//! how well the final object pose still ranks the recorded outcome.
//!
//! ```sh
//! cargo run --release -p world4rl-cli --example replay_sensitivity -- RUN/heldout/episodes/push-block \
//!     [--step 10] [--deltas 0.01,0.03,0.1] [--policy RUN/bc/push-block/policy.safetensors]
//! ```
//!
//! With `--policy`, the same nudges are also given to that policy acting closed loop (its mean action)
//! from the episodes' scenes, against its own un-nudged runs: a policy that sees the state corrects a
//! small error that open-loop actions carry to the end.
//!
//! A nudge of `delta` adds `delta` (in action units; one unit moves the pusher's target 50 arena units,
//! a 32x32 pixel is 16) to the action at `--step`, in a direction that varies with the episode. The
//! readout that ranks the outcomes is the task's dense reward (its progress), highest over the
//! episode; the drift is the final object pose's (centre in pixels, angle in degrees) against the
//! exact replay's. Works for every tabletop task (state layout in `w4rl_envs::tabletop`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use tch::Device;
use w4rl_envs::{make, EnvConfig, RewardKind};
use world4rl::policy::{GaussianPolicy, ObsHistory};

/// Arena units per pixel of a 32x32 frame.
const PX: f32 = 16.0;

struct Replay {
    success: bool,
    /// Highest dense reward over the episode.
    progress: f32,
    /// Object pose (centre x, y, angle) after the last step.
    end: [f32; 3],
    /// Object centre after every step.
    path: Vec<[f32; 2]>,
}

/// Where the actions come from: the episode's recorded ones, or a policy's mean action.
enum Actor<'a> {
    Recorded,
    Policy(&'a GaussianPolicy),
}

fn replay(
    ep: &w4rl_data::Episode,
    actor: &Actor,
    nudge: Option<(usize, [f32; 2])>,
) -> Result<Replay> {
    let cfg = EnvConfig {
        reward: RewardKind::Dense,
        ..EnvConfig::with_size(ep.meta.image_size)
    };
    let mut env = make(&ep.meta.task, &cfg)?;
    let mut obs = env.reset(ep.meta.seed);
    let mut hist = match actor {
        Actor::Policy(p) => Some(ObsHistory::new(p.config().frame_stack, vec![obs.clone()])),
        Actor::Recorded => None,
    };
    let mut progress = f32::NEG_INFINITY;
    let mut success = ep.success[0] == 1;
    let mut path = Vec::with_capacity(ep.meta.steps);
    for t in 0..ep.meta.steps {
        let mut a = match (actor, &hist) {
            (Actor::Policy(p), Some(h)) => p.act_mean(&h.batch(p, None)?)?.remove(0),
            _ => ep.action(t).to_vec(),
        };
        if let Some((k, d)) = nudge {
            if k == t {
                a[0] = (a[0] + d[0]).clamp(-1.0, 1.0);
                a[1] = (a[1] + d[1]).clamp(-1.0, 1.0);
            }
        }
        let step = env.step(&a)?;
        obs = step.obs;
        if let Some(h) = &mut hist {
            h.push(0, obs.clone());
        }
        progress = progress.max(step.reward);
        path.push([obs.state[4], obs.state[5]]);
        success |= step.info.success;
    }
    Ok(Replay {
        success,
        progress,
        end: [obs.state[4], obs.state[5], obs.state[6]],
        path,
    })
}

/// ROC AUC of `score` against `label` (ties count half; NaN with one class only).
fn auc(score: &[f32], label: &[bool]) -> f64 {
    let s: Vec<f64> = score.iter().map(|&x| f64::from(x)).collect();
    world4rl::reward::roc_auc(&s, label).unwrap_or(f64::NAN)
}

fn median(mut v: Vec<f32>) -> f32 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .context("usage: replay_sensitivity EPISODE_DIR [--step K] [--deltas D,D]")?,
    );
    let (mut step, mut deltas) = (10usize, vec![0.01f32, 0.03, 0.1]);
    let mut policy_path: Option<PathBuf> = None;
    while let Some(a) = args.next() {
        let v = args.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--step" => step = v.parse()?,
            "--policy" => policy_path = Some(PathBuf::from(v)),
            "--deltas" => {
                deltas = v
                    .split(',')
                    .map(|x| x.parse::<f32>().with_context(|| format!("--deltas: {x}")))
                    .collect::<Result<_>>()?
            }
            _ => bail!("unknown option {a}"),
        }
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no episode files in {}", dir.display());
    }
    let eps: Vec<_> = files
        .iter()
        .map(|p| w4rl_data::read_episode(p).with_context(|| format!("reading {}", p.display())))
        .collect::<Result<_>>()?;
    tch::set_num_threads(1);
    let policy = policy_path
        .map(|p| {
            GaussianPolicy::load(&p, Device::Cpu)
                .with_context(|| format!("loading {}", p.display()))
        })
        .transpose()?
        .map(|(p, _)| p);
    let recorded: Vec<bool> = eps.iter().map(|e| e.success.contains(&1)).collect();
    println!(
        "{} episodes of {}; recorded success {:.0} %",
        eps.len(),
        dir.display(),
        100.0 * recorded.iter().filter(|&&y| y).count() as f64 / eps.len() as f64
    );
    println!("open loop (the recorded actions):");
    sensitivity(&eps, &Actor::Recorded, step, &deltas)?;
    if let Some(p) = &policy {
        println!("closed loop (the policy's mean action):");
        sensitivity(&eps, &Actor::Policy(p), step, &deltas)?;
    }
    Ok(())
}

/// Runs every episode exactly and with each nudge; reports flips and ranking against the exact runs.
fn sensitivity(
    eps: &[w4rl_data::Episode],
    actor: &Actor,
    step: usize,
    deltas: &[f32],
) -> Result<()> {
    let exact: Vec<Replay> = eps
        .iter()
        .map(|e| replay(e, actor, None))
        .collect::<Result<_>>()?;
    let outcome: Vec<bool> = exact.iter().map(|r| r.success).collect();
    let same = eps
        .iter()
        .zip(&outcome)
        .filter(|(e, &y)| e.success.contains(&1) == y)
        .count();
    println!(
        "  exact: success {:.0} %, {same}/{} outcomes as recorded; readout AUC {:.3}",
        100.0 * outcome.iter().filter(|&&y| y).count() as f64 / eps.len() as f64,
        eps.len(),
        auc(
            &exact.iter().map(|r| r.progress).collect::<Vec<_>>(),
            &outcome
        )
    );
    for &d in deltas {
        let nudged: Vec<Replay> = eps
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let th = i as f32 * 2.399_963; // golden angle: a different direction per episode
                replay(e, actor, Some((step, [d * th.cos(), d * th.sin()])))
            })
            .collect::<Result<_>>()?;
        let flips = nudged
            .iter()
            .zip(&outcome)
            .filter(|(r, &y)| r.success != y)
            .count();
        let drift: Vec<f32> = nudged
            .iter()
            .zip(&exact)
            .map(|(n, x)| {
                ((n.end[0] - x.end[0]).powi(2) + (n.end[1] - x.end[1]).powi(2)).sqrt() / PX
            })
            .collect();
        // how far the nudge has moved the object 5 steps later, before the task's dynamics amplify it
        let early: Vec<f32> = nudged
            .iter()
            .zip(&exact)
            .map(|(n, x)| {
                let t = (step + 5).min(n.path.len() - 1);
                let (a, b) = (n.path[t], x.path[t]);
                ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt() / PX
            })
            .collect();
        let turn: Vec<f32> = nudged
            .iter()
            .zip(&exact)
            .map(|(n, x)| (n.end[2] - x.end[2]).abs().to_degrees())
            .collect();
        println!(
            "  nudge {d} at step {step} ({:.1} arena units of target): outcome flips {flips}/{}; object off by median {:.3} px 5 steps later; final object pose off by median {:.2} px, {:.1} deg; readout AUC {:.3}",
            d * 50.0,
            eps.len(),
            median(early),
            median(drift),
            median(turn),
            auc(&nudged.iter().map(|r| r.progress).collect::<Vec<_>>(), &outcome)
        );
    }
    Ok(())
}
