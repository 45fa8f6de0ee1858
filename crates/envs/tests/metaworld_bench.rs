//! The Rust half of `scripts/metaworld/bench.py` (ignored by default): runs `w4rl_envs::measure::bench`, the
//! code behind `world4rl env bench`, for the tasks in `MW_BENCH_TASKS` (comma-separated, default all eight),
//! `MW_BENCH_STEPS` steps (default 1000) with `MW_BENCH_SIZE` pixel frames (default 64), and prints one JSON
//! line per task. Render quality follows `WORLD4RL_METAWORLD_RENDER` (default `cheap`).
//!
//! ```text
//! cargo test --release -p w4rl-envs --features mujoco --test metaworld_bench -- --ignored --nocapture
//! ```
#![cfg(feature = "mujoco")]

use w4rl_envs::measure::bench;
use w4rl_envs::metaworld::TASKS;

fn var(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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
        let r = bench(&format!("metaworld/{task}"), size, steps)
            .unwrap_or_else(|e| panic!("{task}: {e}"));
        println!(
            "MW_BENCH {}",
            serde_json::json!({"task": task, "size": size, "steps": r.steps, "resets": r.resets,
                               "steps_per_sec": r.steps_per_sec, "seconds": r.seconds})
        );
    }
}
