//! Behaviour of the environments, the registry, the experts and the batched wrapper.

use w4rl_envs::tabletop::{push_t, STATE_DIM};
use w4rl_envs::{
    gif, list_tasks, make, make_expert, make_noisy_expert, make_random_policy, rollout,
    rollout_with, Controller, Env, EnvConfig, EnvError, Obs, RewardKind, SyncVecEnv, VecEnv,
};

/// The tabletop tasks (other suites, such as Meta-World behind the `mujoco` feature, have their own tests).
fn tasks() -> Vec<String> {
    list_tasks()
        .into_iter()
        .filter(|t| t.suite == "tabletop")
        .map(|t| t.name)
        .collect()
}

/// A fixed pseudo-random action sequence (independent of the crate's RNG use).
fn actions(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    (0..n).map(|_| vec![next(), next()]).collect()
}

#[test]
fn registry_lists_the_tabletop_suite() {
    let list = list_tasks();
    assert!(list.len() >= 4);
    for name in ["push-t", "push-block", "turn-lever", "slide-handle"] {
        let t = list.iter().find(|t| t.name == name).expect(name);
        assert_eq!(t.suite, "tabletop");
        assert_eq!(t.action_dim, 2);
        assert!(t.max_steps >= 50);
    }
    let json = serde_json::to_string(&list).unwrap();
    assert!(json.contains("\"push-t\""));
}

#[test]
fn unknown_task_names_the_known_ones() {
    let err = make("push-x", &EnvConfig::default()).err().expect("error");
    assert!(matches!(err, EnvError::UnknownTask { .. }));
    let msg = err.to_string();
    assert!(msg.contains("push-x") && msg.contains("push-t") && msg.contains("slide-handle"));
    assert!(make_expert("nope").is_err());
}

#[test]
fn bad_config_is_refused() {
    assert!(matches!(
        make("push-t", &EnvConfig::with_size(0)),
        Err(EnvError::Config(_))
    ));
    let cfg = EnvConfig {
        max_steps: Some(0),
        ..EnvConfig::default()
    };
    assert!(make("push-t", &cfg).is_err());
    // the tabletop has one renderer and one camera: another is refused, not silently ignored
    let cfg = EnvConfig {
        render: w4rl_envs::RenderOptions {
            quality: w4rl_envs::RenderQuality::Fast,
            camera: String::new(),
        },
        ..EnvConfig::default()
    };
    match make("push-t", &cfg) {
        Err(EnvError::Config(m)) => assert!(m.contains("fast quality"), "{m}"),
        other => panic!("expected a config error, got {:?}", other.map(|_| ())),
    }
    let q: w4rl_envs::RenderQuality = "full".parse().unwrap();
    assert_eq!(q.name(), "full");
    let e = "ultra".parse::<w4rl_envs::RenderQuality>().unwrap_err();
    assert!(e.to_string().contains("'ultra'"), "{e}");
}

#[test]
fn observation_layout() {
    for task in tasks() {
        for size in [32, 33, 64] {
            let mut env = make(&task, &EnvConfig::with_size(size)).unwrap();
            assert_eq!(env.image_size(), size);
            assert_eq!(env.state_dim(), STATE_DIM);
            assert_eq!(env.suite(), "tabletop");
            assert_eq!(env.task(), task);
            let spec = env.action_spec().clone();
            assert_eq!(
                (
                    spec.dim,
                    spec.low.len(),
                    spec.high.len(),
                    spec.meaning.len()
                ),
                (2, 2, 2, 2)
            );
            let obs = env.reset(3);
            assert_eq!(obs.size, size);
            assert_eq!(obs.frame.len(), size * size * 3);
            assert_eq!(obs.state.len(), STATE_DIM);
            assert!(obs.state.iter().all(|v| v.is_finite()));
            // The frame is not blank: the pusher's blue is somewhere.
            assert!(obs.frame.chunks_exact(3).any(|p| p[2] > 180 && p[0] < 120));
            let st = env.step(&[0.3, -0.2]).unwrap();
            assert_eq!(st.obs.frame.len(), size * size * 3);
            assert!((0.0..=1.0).contains(&st.reward));
        }
    }
}

#[test]
fn same_seed_and_actions_give_identical_frames_and_states() {
    for task in tasks() {
        let acts = actions(60, 11);
        let run = |env: &mut Box<dyn Env>| {
            let mut frames = vec![env.reset(42)];
            let mut rewards = Vec::new();
            for a in &acts {
                match env.step(a) {
                    Ok(st) => {
                        rewards.push(st.reward);
                        frames.push(st.obs);
                    }
                    Err(EnvError::EpisodeOver { .. }) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            (frames, rewards)
        };
        let cfg = EnvConfig::with_size(32);
        let mut a = make(&task, &cfg).unwrap();
        let mut b = make(&task, &cfg).unwrap();
        // b has a different history before the seeded reset.
        b.reset(7);
        for x in actions(15, 3) {
            b.step(&x).unwrap();
        }
        let (fa, ra) = run(&mut a);
        let (fb, rb) = run(&mut b);
        assert_eq!(fa, fb, "{task}: frames/states differ");
        assert_eq!(ra, rb, "{task}: rewards differ");
        // Another seed gives another episode.
        let other = a.reset(43);
        assert_ne!(other.state, fa[0].state, "{task}");
    }
}

#[test]
fn non_finite_or_wrong_length_actions_are_refused_without_effect() {
    for task in tasks() {
        let mut env = make(&task, &EnvConfig::with_size(32)).unwrap();
        let mut reference = make(&task, &EnvConfig::with_size(32)).unwrap();
        env.reset(5);
        reference.reset(5);
        for bad in [
            vec![f32::NAN, 0.0],
            vec![0.0, f32::INFINITY],
            vec![f32::NEG_INFINITY, 0.0],
        ] {
            let err = env.step(&bad).expect_err("non-finite action accepted");
            assert!(matches!(err, EnvError::NonFiniteAction { .. }), "{err}");
            assert!(err.to_string().contains("finite"));
        }
        for bad in [vec![], vec![0.1], vec![0.1, 0.2, 0.3]] {
            let err = env.step(&bad).expect_err("wrong length accepted");
            assert!(matches!(err, EnvError::ActionDim { got, .. } if got == bad.len()));
        }
        let a = env.step(&[0.5, 0.5]).unwrap();
        let b = reference.step(&[0.5, 0.5]).unwrap();
        assert_eq!(a.obs, b.obs, "{task}: a refused action changed the state");
    }
}

#[test]
fn out_of_range_actions_are_clipped() {
    for task in tasks() {
        let mut a = make(&task, &EnvConfig::with_size(32)).unwrap();
        let mut b = make(&task, &EnvConfig::with_size(32)).unwrap();
        a.reset(9);
        b.reset(9);
        for (big, clipped) in [
            ([5.0, -7.0], [1.0, -1.0]),
            ([1e30, 0.25], [1.0, 0.25]),
            ([-1.5, 1.0001], [-1.0, 1.0]),
        ] {
            let sa = a.step(&big).unwrap();
            let sb = b.step(&clipped).unwrap();
            assert_eq!(sa.obs, sb.obs, "{task}");
            assert_eq!(sa.reward, sb.reward, "{task}");
        }
    }
}

#[test]
fn episodes_truncate_at_max_steps_and_then_refuse_steps() {
    let cfg = EnvConfig {
        image_size: 16,
        max_steps: Some(5),
        ..EnvConfig::default()
    };
    let mut env = make("push-block", &cfg).unwrap();
    assert_eq!(env.max_steps(), 5);
    env.reset(1);
    for t in 1..=5 {
        let st = env.step(&[0.0, 0.0]).unwrap();
        assert_eq!(st.truncated, t == 5);
        assert!(!st.terminated);
    }
    assert!(matches!(
        env.step(&[0.0, 0.0]),
        Err(EnvError::EpisodeOver { .. })
    ));
    env.reset(2);
    assert!(env.step(&[0.0, 0.0]).is_ok());
}

#[test]
fn initial_states_are_never_successful() {
    for task in tasks() {
        let cfg = EnvConfig {
            image_size: 8,
            max_steps: Some(2),
            ..EnvConfig::default()
        };
        let mut env = make(&task, &cfg).unwrap();
        let mut hold = HoldStill;
        for seed in 0..200 {
            let ep = rollout_with(env.as_mut(), &mut hold, seed, false).unwrap();
            assert!(!ep.any_success(), "{task} seed {seed}");
            assert_eq!(ep.success[0], 0);
        }
    }
}

struct HoldStill;
impl Controller for HoldStill {
    fn reset(&mut self, _seed: u64) {}
    fn act(&mut self, _obs: &Obs) -> Vec<f32> {
        vec![0.0, 0.0]
    }
}

#[test]
fn push_t_coverage_is_exact_at_the_goal() {
    assert!((push_t::coverage(push_t::GOAL) - 1.0).abs() < 1e-4);
    let [x, y, th] = push_t::GOAL;
    // Shifted by 30 units along x: the stem (30 wide, rotated) and the bar lose a known share, so coverage
    // drops well below the threshold but stays positive.
    let c = push_t::coverage([x + 30.0, y, th]);
    assert!(c > 0.2 && c < 0.9, "{c}");
    assert_eq!(push_t::coverage([x + 400.0, y, th]), 0.0);
}

#[test]
fn experts_solve_their_tasks() {
    // A reduced version of `world4rl env expert TASK --episodes 100` (which gives >= 0.98 on every task).
    let n = 12;
    for task in tasks() {
        let cfg = EnvConfig {
            image_size: 16,
            terminate_on_success: true,
            ..EnvConfig::default()
        };
        let mut env = make(&task, &cfg).unwrap();
        let mut expert = make_expert(&task).unwrap();
        let wins = (0..n)
            .filter(|&s| {
                rollout_with(env.as_mut(), expert.as_mut(), 100 + s, false)
                    .unwrap()
                    .any_success()
            })
            .count();
        let rate = wins as f64 / n as f64;
        assert!(rate >= 0.9, "{task}: expert success {rate}");
    }
}

#[test]
fn rollouts_have_the_dataset_layout_and_sparse_reward_works() {
    let cfg = EnvConfig {
        image_size: 16,
        reward: RewardKind::Sparse,
        ..EnvConfig::default()
    };
    let mut env = make("slide-handle", &cfg).unwrap();
    let mut expert = make_expert("slide-handle").unwrap();
    let ep = rollout(env.as_mut(), expert.as_mut(), 4).unwrap();
    let t = ep.steps;
    assert_eq!(t, 50);
    assert_eq!(ep.frames.len(), (t + 1) * 16 * 16 * 3);
    assert_eq!(ep.actions.len(), t * 2);
    assert_eq!(ep.rewards.len(), t);
    assert_eq!(ep.success.len(), t + 1);
    assert_eq!(ep.states.len(), (t + 1) * STATE_DIM);
    assert!(ep.any_success());
    for (r, s) in ep.rewards.iter().zip(&ep.success[1..]) {
        assert_eq!(*r, f32::from(*s));
    }
    assert!(ep.actions.iter().all(|a| (-1.0..=1.0).contains(a)));
}

#[test]
fn noisy_and_random_policies_are_seeded() {
    for make_pol in [
        (|| make_noisy_expert("push-block", 0.5).unwrap()) as fn() -> Box<dyn Controller>,
        || make_random_policy("push-block").unwrap(),
    ] {
        let mut env = make("push-block", &EnvConfig::with_size(8)).unwrap();
        let mut p1 = make_pol();
        let mut p2 = make_pol();
        let a = rollout(env.as_mut(), p1.as_mut(), 3).unwrap();
        let b = rollout(env.as_mut(), p2.as_mut(), 3).unwrap();
        let c = rollout(env.as_mut(), p1.as_mut(), 4).unwrap();
        assert_eq!(a.actions, b.actions);
        assert_ne!(a.actions, c.actions);
        assert!(a.actions.iter().all(|x| (-1.0..=1.0).contains(x)));
    }
    // Noise 0 is the expert itself.
    let mut env = make("turn-lever", &EnvConfig::with_size(8)).unwrap();
    let a = rollout(
        env.as_mut(),
        make_noisy_expert("turn-lever", 0.0).unwrap().as_mut(),
        1,
    )
    .unwrap();
    let b = rollout(env.as_mut(), make_expert("turn-lever").unwrap().as_mut(), 1).unwrap();
    assert_eq!(a.actions, b.actions);
}

#[test]
fn vec_env_matches_single_envs() {
    let cfg = EnvConfig::with_size(16);
    let mut venv = SyncVecEnv::make("push-t", 3, &cfg).unwrap();
    assert_eq!(venv.num_envs(), 3);
    assert_eq!(venv.image_size(), 16);
    let obs = venv.reset(&[10]);
    let mut singles: Vec<Box<dyn Env>> = (0..3).map(|_| make("push-t", &cfg).unwrap()).collect();
    for (i, e) in singles.iter_mut().enumerate() {
        assert_eq!(e.reset(10 + i as u64), obs[i]);
    }
    let acts = actions(3 * 8, 5);
    for chunk in acts.chunks(3) {
        let batch = venv.step(chunk).unwrap();
        for (i, e) in singles.iter_mut().enumerate() {
            assert_eq!(e.step(&chunk[i]).unwrap(), batch[i]);
        }
    }
    // Wrong batch size, or one bad action: refused, nothing moves.
    assert!(matches!(
        venv.step(&acts[..2]),
        Err(EnvError::BatchSize { .. })
    ));
    let bad = vec![vec![0.1, 0.1], vec![f32::NAN, 0.0], vec![0.1, 0.1]];
    assert!(venv.step(&bad).is_err());
    let good = vec![vec![0.2, 0.1]; 3];
    let batch = venv.step(&good).unwrap();
    for (i, e) in singles.iter_mut().enumerate() {
        assert_eq!(e.step(&good[i]).unwrap(), batch[i]);
    }
    assert_eq!(venv.reset_one(1, 11).unwrap(), singles[1].reset(11));
    assert!(matches!(
        venv.reset_one(3, 0),
        Err(EnvError::IndexOutOfRange { index: 3, len: 3 })
    ));
    // Mixed image sizes cannot be batched.
    let mixed = vec![
        make("push-t", &EnvConfig::with_size(16)).unwrap(),
        make("push-t", &EnvConfig::with_size(32)).unwrap(),
    ];
    assert!(matches!(SyncVecEnv::new(mixed), Err(EnvError::Mismatch(_))));
    // Different tasks of one suite can share a batch.
    let multi = vec![
        make("push-t", &cfg).unwrap(),
        make("turn-lever", &cfg).unwrap(),
    ];
    assert!(SyncVecEnv::new(multi).is_ok());
}

#[test]
fn expert_gif_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/lever.gif");
    let s = gif::expert_gif("turn-lever", 2, 16, 2, Some(10), &path).unwrap();
    assert!(s.frames_written <= 10 && s.frames_written >= 2);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..6], b"GIF89a");
    assert!(gif::write_gif(&path, &[0u8; 10], 16, 1, 10).is_err());
    assert!(gif::write_gif(&path, &[0u8; 16 * 16 * 3], 16, 1000, 10).is_err());
    assert!(gif::write_gif(&path, &[0u8; 16 * 16 * 3], 16, usize::MAX, 10).is_err());
}
