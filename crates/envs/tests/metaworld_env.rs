//! The `metaworld` suite through the crate's [`Env`] interface and registry: listing, frames (EGL, headless),
//! determinism, refused actions, episode limits, explicit task vectors, the registry's expert.
#![cfg(feature = "mujoco")]

use w4rl_envs::metaworld::{MetaWorld, MetaWorldConfig, MetaWorldEnv, RenderConfig, TASKS};
use w4rl_envs::{
    list_tasks, make, make_expert, make_random_policy, rollout_with, Env, EnvConfig, EnvError,
};

fn cfg(max_steps: usize) -> EnvConfig {
    EnvConfig {
        max_steps: Some(max_steps),
        ..EnvConfig::default()
    }
}

#[test]
fn registry_lists_the_eight_tasks() {
    let names: Vec<String> = list_tasks()
        .into_iter()
        .filter(|t| t.suite == "metaworld")
        .map(|t| t.name)
        .collect();
    assert_eq!(names.len(), 8);
    for t in TASKS.iter() {
        assert!(
            names.contains(&format!("metaworld/{}", t.name)),
            "{} missing from {names:?}",
            t.name
        );
    }
    for t in list_tasks().iter().filter(|t| t.suite == "metaworld") {
        assert_eq!((t.action_dim, t.max_steps), (4, 500));
    }
}

#[test]
fn frames_states_and_determinism() {
    let mut env = make("metaworld/soccer", &cfg(20)).expect("make");
    assert_eq!(
        (env.image_size(), env.state_dim(), env.action_spec().dim),
        (64, 39, 4)
    );
    let mut pol = make_random_policy("metaworld/soccer").expect("random policy");
    let a = rollout_with(env.as_mut(), pol.as_mut(), 3, true).expect("rollout");
    let b = rollout_with(env.as_mut(), pol.as_mut(), 3, true).expect("rollout");
    assert_eq!(a.steps, 20);
    assert_eq!(a.frames.len(), 21 * 64 * 64 * 3);
    assert_eq!(a.states.len(), 21 * 39);
    assert_eq!(a.frames, b.frames, "same seed, same actions: same frames");
    assert_eq!(a.states, b.states, "same seed, same actions: same states");
    // a real picture: many distinct colours, and the arm moves
    let f0 = a.frame(0);
    let distinct: std::collections::HashSet<&[u8]> = f0.chunks_exact(3).collect();
    assert!(
        distinct.len() > 50,
        "frame has only {} colours",
        distinct.len()
    );
    assert_ne!(a.frame(0), a.frame(20));
    let c = rollout_with(env.as_mut(), pol.as_mut(), 4, false).expect("rollout");
    assert_ne!(
        a.states[..39],
        c.states[..39],
        "another seed gives another start"
    );
    // a new environment (its renderer comes from the pool of dropped ones) renders the same frames
    drop(env);
    let mut env = make("metaworld/soccer", &cfg(20)).expect("make again");
    let d = rollout_with(env.as_mut(), pol.as_mut(), 3, true).expect("rollout");
    assert_eq!(a.frames, d.frames);
}

#[test]
fn bad_actions_are_refused_and_episodes_end() {
    let mut env = make("metaworld/button-press", &cfg(2)).expect("make");
    env.reset(0);
    assert!(matches!(
        env.step(&[f32::NAN, 0.0, 0.0, 0.0]),
        Err(EnvError::NonFiniteAction { index: 0, .. })
    ));
    assert!(matches!(
        env.step(&[0.0; 3]),
        Err(EnvError::ActionDim {
            expected: 4,
            got: 3,
            ..
        })
    ));
    // out of range: clipped, accepted
    let s = env.step(&[5.0, -5.0, 0.0, 2.0]).expect("clipped action");
    assert!(!s.truncated);
    let s = env.step(&[0.0; 4]).expect("second step");
    assert!(s.truncated);
    assert!(matches!(
        env.step(&[0.0; 4]),
        Err(EnvError::EpisodeOver { .. })
    ));
    env.reset(1);
    env.step(&[0.0; 4]).expect("stepping after reset");
}

#[test]
fn fast_quality_drops_only_the_reflections() {
    use w4rl_envs::RenderQuality::{Cheap, Fast, Full};
    let q = |quality| RenderConfig::with_size(64).with_quality(quality);
    assert!(q(Cheap).reflections && !q(Fast).reflections && q(Full).reflections);
    assert_eq!((q(Fast).msaa_samples, q(Fast).shadow_size), (0, 0));
    let err =
        serde_json::from_str::<w4rl_envs::RenderQuality>("\"ultra\"").expect_err("unknown quality");
    assert!(err.to_string().contains("`fast`"), "{err}");
    // the same state rendered with and without reflections: the scene is the same (most pixels
    // equal), the reflective floor, wall tops and gripper pads are not
    let frame = |render: RenderConfig| {
        let mut env = MetaWorldEnv::with_render("button-press", &cfg(5), render).expect("make");
        env.reset(3).frame
    };
    let (with, without) = (frame(q(Cheap)), frame(q(Fast)));
    assert_eq!(with.len(), without.len());
    let differ = with.iter().zip(&without).filter(|(a, b)| a != b).count();
    assert!(differ > 0, "reflections made no difference");
    assert!(
        differ * 4 < with.len(),
        "{differ} of {} bytes differ: more than the reflective surfaces",
        with.len()
    );
    // and renders stay deterministic without them
    assert_eq!(without, frame(q(Fast)));
    // the registry renders what `EnvConfig::render` asks for, not what the shell's variables say
    let via_registry = |quality, camera: &str| {
        let c = EnvConfig {
            render: w4rl_envs::RenderOptions {
                quality,
                camera: camera.into(),
            },
            ..cfg(5)
        };
        w4rl_envs::make("metaworld/button-press", &c)
            .expect("make")
            .reset(3)
            .frame
    };
    assert_eq!(via_registry(Fast, ""), without);
    assert_eq!(via_registry(Cheap, "corner"), with);
    assert_ne!(
        via_registry(Cheap, "topview"),
        with,
        "the camera is not applied"
    );
}

#[test]
fn explicit_task_vector_and_errors() {
    let mut env =
        MetaWorldEnv::with_render("hammer", &cfg(5), RenderConfig::with_size(32)).expect("make");
    let v = [0.05, 0.45, 0.0];
    let obs = env.reset_to(&v).expect("reset_to");
    assert_eq!(obs.frame.len(), 32 * 32 * 3);
    assert_eq!(env.task_vector(), &v[..]);
    // the hammer starts where the vector says
    assert!((obs.state[4] - 0.05).abs() < 1e-3 && (obs.state[5] - 0.45).abs() < 1e-3);
    let err = env.reset_to(&[0.5, 0.45, 0.0]).expect_err("out of range");
    assert!(err.to_string().contains("outside"), "{err}");
    let err = env.reset_to(&[0.0]).expect_err("wrong length");
    assert!(err.to_string().contains("expected 3 values"), "{err}");
    let bad_cam = RenderConfig {
        camera: "nope".into(),
        ..RenderConfig::default()
    };
    let err = MetaWorldEnv::with_render("hammer", &cfg(5), bad_cam)
        .err()
        .expect("bad camera refused");
    assert!(err.to_string().contains("no camera named 'nope'"), "{err}");
    assert!(make("metaworld/no-such-task", &EnvConfig::default()).is_err());
    let missing = MetaWorldConfig {
        assets: Some("/nonexistent/metaworld-assets".into()),
        ..MetaWorldConfig::default()
    };
    let err = MetaWorld::new("hammer", &missing)
        .err()
        .expect("missing assets refused");
    assert!(err.to_string().contains("scripts/setup-mujoco.sh"), "{err}");
}

#[test]
fn registry_expert_solves_button_press() {
    let c = EnvConfig {
        terminate_on_success: true,
        ..EnvConfig::default()
    };
    let mut env = make("metaworld/button-press", &c).expect("make");
    let mut expert = make_expert("metaworld/button-press").expect("expert");
    let ep = rollout_with(env.as_mut(), expert.as_mut(), 11, false).expect("rollout");
    assert!(
        ep.terminated && ep.any_success(),
        "no success in {} steps",
        ep.steps
    );
    assert!(
        ep.rewards.iter().all(|r| (0.0..=1.0).contains(r)),
        "dense reward / 10 is in [0, 1]"
    );
}

#[test]
fn envs_move_between_threads_and_batch() {
    // the same environment stepped from a new thread each step gives the frames of a single-threaded run
    let mut env = make("metaworld/lever-pull", &cfg(6)).expect("make");
    let mut pol = make_random_policy("metaworld/lever-pull").expect("random policy");
    let want = rollout_with(env.as_mut(), pol.as_mut(), 5, true).expect("rollout");
    let mut obs = env.reset(5);
    pol.reset(5);
    let mut frames = obs.frame.clone();
    for _ in 0..6 {
        let a = pol.act(&obs);
        let step =
            std::thread::scope(|s| s.spawn(|| env.step(&a)).join().expect("thread")).expect("step");
        frames.extend_from_slice(&step.obs.frame);
        obs = step.obs;
    }
    assert_eq!(frames, want.frames);

    // two environments stepped in parallel by the vectorised env
    use w4rl_envs::{SyncVecEnv, VecEnv};
    let mut venv = SyncVecEnv::make("metaworld/door-lock", 2, &cfg(4)).expect("vec env");
    let obs = venv.reset(&[1, 2]);
    assert_eq!(obs.len(), 2);
    assert_ne!(obs[0].state, obs[1].state);
    for _ in 0..4 {
        let steps = venv
            .step(&[vec![0.5, 0.0, 0.0, -1.0], vec![-0.5, 0.0, 0.0, 1.0]])
            .expect("vec step");
        assert!(steps.iter().all(|s| s.obs.frame.len() == 64 * 64 * 3));
    }
}
