//! The scripted experts solve their tasks: success (at any step, Meta-World's convention) in at least 90 % of
//! 50 seeded episodes of 500 steps, for each of the eight tasks. State only (no rendering; frames do not change
//! the physics), a few seconds. The expert reads the observation rounded to `f32`, as it does through
//! [`w4rl_envs::Env`] (`world4rl env expert metaworld/<task> --episodes 50` runs the same episodes with frames).
#![cfg(feature = "mujoco")]

use w4rl_envs::metaworld::{expert_action, MetaWorld, MetaWorldConfig, TASKS};

const EPISODES: u64 = 50;

/// Success rate and mean steps to the first success over `EPISODES` seeds.
fn expert_success(task: &str) -> (f64, f64) {
    let mut env =
        MetaWorld::new(task, &MetaWorldConfig::default()).unwrap_or_else(|e| panic!("{task}: {e}"));
    let (mut ok, mut steps_sum) = (0u32, 0usize);
    for seed in 0..EPISODES {
        env.reset(seed)
            .unwrap_or_else(|e| panic!("{task}: reset {seed}: {e}"));
        for _ in 0..env.max_steps() {
            let obs = env.obs().map(|v| v as f32 as f64);
            let a = expert_action(task, &obs).expect("expert");
            let s = env.step(&a).unwrap_or_else(|e| panic!("{task}: step: {e}"));
            if s.success {
                ok += 1;
                steps_sum += env.steps();
                break;
            }
        }
    }
    (
        ok as f64 / EPISODES as f64,
        steps_sum as f64 / ok.max(1) as f64,
    )
}

#[test]
fn every_expert_succeeds_in_90_percent_of_50_episodes() {
    let mut failures = Vec::new();
    for spec in TASKS.iter() {
        let (rate, mean_steps) = expert_success(spec.name);
        println!(
            "{:<14} success {:.2} (mean steps to success {:.0})",
            spec.name, rate, mean_steps
        );
        if rate < 0.9 {
            failures.push(format!("{}: {rate:.2}", spec.name));
        }
    }
    assert!(
        failures.is_empty(),
        "experts below 0.9 success: {}",
        failures.join(", ")
    );
}
