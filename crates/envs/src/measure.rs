//! Measurements behind `world4rl env expert` and `world4rl env bench`.

use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::{
    make, make_noisy_expert, make_random_policy, rollout_with, Controller, EnvConfig, EnvError,
};

/// Success statistics of the scripted expert.
#[derive(Clone, Debug, Serialize)]
pub struct ExpertReport {
    /// Task name.
    pub task: String,
    /// Episodes run.
    pub episodes: usize,
    /// First seed; episode `i` uses `seed + i`.
    pub seed: u64,
    /// Gaussian action noise (std, action units).
    pub noise: f32,
    /// Fraction of episodes with a successful step.
    pub success_rate: f64,
    /// Mean episode length, episodes ending at their first success.
    pub mean_length: f64,
    /// Mean steps to the first success over successful episodes (0 if none).
    pub mean_steps_to_success: f64,
    /// Steps to the first success over successful episodes: median, 90th and 95th percentile (nearest
    /// rank) and maximum (all 0 if none). What a horizon has to cover.
    pub steps_to_success_quantiles: [usize; 4],
    /// Mean undiscounted return (dense reward) of the episodes, which end at their first success.
    pub mean_return: f64,
    /// Episode length limit of the task.
    pub max_steps: usize,
    /// Seeds of the failed episodes.
    pub failed_seeds: Vec<u64>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Runs the expert of `task` (with Gaussian action noise `noise`, 0 = none) for `episodes` episodes from
/// seeds `seed, seed + 1, ...`, in parallel on the rayon pool, in environments of `base` (its frame size,
/// horizon and render options). Episodes end at their first success.
pub fn expert_success(
    task: &str,
    episodes: usize,
    seed: u64,
    noise: f32,
    base: &EnvConfig,
) -> Result<ExpertReport, EnvError> {
    let t0 = Instant::now();
    let cfg = EnvConfig {
        terminate_on_success: true,
        ..base.clone()
    };
    let env0 = make(task, &cfg)?;
    let max_steps = env0.max_steps();
    let results: Vec<(u64, bool, usize, f32)> = (0..episodes)
        .into_par_iter()
        .map(|i| {
            let s = seed.wrapping_add(i as u64);
            let mut env = make(task, &cfg)?;
            let mut pol = make_noisy_expert(task, noise)?;
            let ep = rollout_with(env.as_mut(), pol.as_mut(), s, false)?;
            Ok((s, ep.any_success(), ep.steps, ep.total_reward()))
        })
        .collect::<Result<_, EnvError>>()?;
    let n = results.len().max(1) as f64;
    let succ: Vec<&(u64, bool, usize, f32)> = results.iter().filter(|r| r.1).collect();
    let mut lengths: Vec<usize> = succ.iter().map(|r| r.2).collect();
    lengths.sort_unstable();
    Ok(ExpertReport {
        task: task.to_string(),
        episodes,
        seed,
        noise,
        success_rate: succ.len() as f64 / n,
        mean_length: results.iter().map(|r| r.2 as f64).sum::<f64>() / n,
        mean_steps_to_success: if succ.is_empty() {
            0.0
        } else {
            succ.iter().map(|r| r.2 as f64).sum::<f64>() / succ.len() as f64
        },
        steps_to_success_quantiles: [
            nearest_rank(&lengths, 0.5),
            nearest_rank(&lengths, 0.9),
            nearest_rank(&lengths, 0.95),
            lengths.last().copied().unwrap_or(0),
        ],
        mean_return: results.iter().map(|r| f64::from(r.3)).sum::<f64>() / n,
        max_steps,
        failed_seeds: results.iter().filter(|r| !r.1).map(|r| r.0).collect(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The `q`-quantile of sorted values by the nearest-rank rule (0 when empty).
fn nearest_rank(sorted: &[usize], q: f64) -> usize {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// Speed of one environment on one thread.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Task name.
    pub task: String,
    /// Frame side in pixels.
    pub size: usize,
    /// Environment steps taken.
    pub steps: usize,
    /// Episodes started (resets).
    pub resets: usize,
    /// Steps per second, frames rendered at every step, uniform random actions, resets included.
    pub steps_per_sec: f64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Steps one environment of `task` with uniform random actions for `steps` steps on the calling thread,
/// rendering a frame of `cfg` (its size, quality and camera) at every step and resetting at the end of every
/// episode.
pub fn bench(task: &str, cfg: &EnvConfig, steps: usize) -> Result<BenchReport, EnvError> {
    let size = cfg.image_size;
    let mut env = make(task, cfg)?;
    let mut pol = make_random_policy(task)?;
    let mut episode = 0u64;
    let mut obs = env.reset(episode);
    pol.reset(episode);
    let mut resets = 1;
    let t0 = Instant::now();
    for _ in 0..steps {
        let a = pol.act(&obs);
        let st = env.step(&a)?;
        obs = st.obs;
        if st.terminated || st.truncated {
            episode += 1;
            obs = env.reset(episode);
            pol.reset(episode);
            resets += 1;
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    Ok(BenchReport {
        task: task.to_string(),
        size,
        steps,
        resets,
        steps_per_sec: steps as f64 / seconds.max(1e-9),
        seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::nearest_rank;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<usize> = (1..=20).collect();
        assert_eq!(nearest_rank(&v, 0.5), 10);
        assert_eq!(nearest_rank(&v, 0.9), 18);
        assert_eq!(nearest_rank(&v, 0.95), 19);
        assert_eq!(nearest_rank(&[7], 0.5), 7);
        assert_eq!(nearest_rank(&[], 0.5), 0);
    }
}
