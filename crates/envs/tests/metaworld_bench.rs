//! The Rust half of `scripts/metaworld/bench.py` (ignored by default): runs `w4rl_envs::measure::bench`, the
//! code behind `world4rl env bench`, for the tasks in `MW_BENCH_TASKS` (comma-separated, default all eight),
//! `MW_BENCH_STEPS` steps (default 1000) with `MW_BENCH_SIZE` pixel frames (default 64), and prints one JSON
//! line per task. Render quality follows `MW_BENCH_RENDER` (`cheap`, the default, `fast` or `full`). `MW_BENCH_SIZE=0`
//! times the simulation alone (no frames: [`MetaWorld::step`] with uniform random actions).
//!
//! ```text
//! cargo test --release -p w4rl-envs --features mujoco --test metaworld_bench -- --ignored --nocapture
//! ```
#![cfg(feature = "mujoco")]

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use w4rl_envs::measure::bench;
use w4rl_envs::metaworld::{MetaWorld, MetaWorldConfig, TASKS};
use w4rl_envs::EnvConfig;

fn var(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Steps per second of the simulation alone, resets included.
fn state_only(task: &str, steps: usize) -> (f64, usize, f64) {
    let mut env = MetaWorld::new(task, &MetaWorldConfig::default()).expect("make");
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let (mut episode, mut resets) = (0u64, 1usize);
    env.reset(episode).expect("reset");
    let t0 = Instant::now();
    for _ in 0..steps {
        let a: [f32; 4] = std::array::from_fn(|_| rng.gen_range(-1.0..=1.0));
        if env.step(&a).expect("step").truncated {
            episode += 1;
            resets += 1;
            env.reset(episode).expect("reset");
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    (steps as f64 / seconds, resets, seconds)
}

#[test]
#[ignore = "benchmark; run by scripts/metaworld/bench.py"]
fn metaworld_bench() {
    let steps = var("MW_BENCH_STEPS", 1000);
    let size = var("MW_BENCH_SIZE", 64);
    let tasks: Vec<String> = match std::env::var("MW_BENCH_TASKS") {
        Ok(t) if !t.trim().is_empty() => t.split(',').map(|s| s.trim().to_string()).collect(),
        _ => TASKS.iter().map(|t| t.name.to_string()).collect(),
    };
    for task in tasks {
        let (steps_per_sec, resets, seconds) = if size == 0 {
            state_only(&task, steps)
        } else {
            let quality = std::env::var("MW_BENCH_RENDER").unwrap_or_else(|_| "cheap".into());
            let cfg = EnvConfig {
                render: w4rl_envs::RenderOptions {
                    quality: quality.parse().expect("MW_BENCH_RENDER"),
                    camera: String::new(),
                },
                ..EnvConfig::with_size(size)
            };
            let r = bench(&format!("metaworld/{task}"), &cfg, steps)
                .unwrap_or_else(|e| panic!("{task}: {e}"));
            (r.steps_per_sec, r.resets, r.seconds)
        };
        println!(
            "MW_BENCH {}",
            serde_json::json!({"task": task, "size": size, "steps": steps, "resets": resets,
                               "steps_per_sec": steps_per_sec, "seconds": seconds})
        );
    }
}
