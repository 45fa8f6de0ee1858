//! Learning tests of the reward classifier and the BC policy on a synthetic, separable dataset.

use w4rl_data::{Dataset, Episode, EpisodeKind};
use world4rl::policy::bc::{self, BcConfig};
use world4rl::reward::{self, RewardConfig};

mod synthetic;
use synthetic::*;

#[test]
fn classifier_learns_a_separable_set_and_its_loss_falls() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let ds = synthetic_dataset(dir.path(), 20, 12);
    let mut cfg = RewardConfig {
        steps: 300,
        batch_size: 32,
        log_every: 10,
        noise_std: 0.0,
        ..Default::default()
    };
    cfg.classifier.encoder = small_encoder();
    cfg.classifier.hidden = 32;
    cfg.eval_every = 50;
    let mut losses = Vec::new();
    let mut val_f1 = Vec::new();
    let (clf, report) = reward::train_task(&cfg, &ds, "dots", None, tch::Device::Cpu, |v| {
        losses.push(v["bce"].as_f64().unwrap());
        if let Some(f) = v["val_f1"].as_f64() {
            val_f1.push((v["step"].as_u64().unwrap() as usize, f));
        }
        Ok(())
    })
    .unwrap();
    assert!(losses.first().unwrap() > &0.4, "{losses:?}");
    assert!(losses.last().unwrap() < &0.1, "{losses:?}");
    assert!(report.heldout.n > 0 && report.heldout.positives > 0);
    assert!(report.heldout.f1 >= 0.9, "{report:?}");
    // model selection: validation episodes are kept out of training, scored every 50 steps, and the
    // weights of the first best score come back (their F1 on the validation frames is the logged one)
    assert!(report.val_episodes > 0, "{report:?}");
    assert_eq!(val_f1.len(), 6, "{val_f1:?}");
    let best = val_f1.iter().fold(
        (0, f64::NEG_INFINITY),
        |b, &(s, f)| if f > b.1 { (s, f) } else { b },
    );
    assert_eq!(report.best_step, best.0, "{val_f1:?}");
    let kept = report.val.as_ref().unwrap().f1;
    assert!(
        (kept - best.1).abs() < 1e-9,
        "kept {kept}, logged {val_f1:?}"
    );
    // the saved classifier reproduces its decisions
    let path = dir.path().join("clf.safetensors");
    clf.save(&path, serde_json::json!({})).unwrap();
    let (back, _) = world4rl::reward::RewardClassifier::load(&path, tch::Device::Cpu).unwrap();
    let x = world4rl::util::frames::bytes_to_chw(&frame(12, 5), 1, SIZE, SIZE, tch::Device::Cpu)
        .unwrap();
    assert!(
        (clf.prob_u8(&x).double_value(&[0]) - back.prob_u8(&x).double_value(&[0])).abs() < 1e-6
    );
    assert!(back.prob_u8(&x).double_value(&[0]) > 0.5);
    // a policy checkpoint is refused as a classifier, with the file named
    let err = world4rl::policy::GaussianPolicy::load(&path, tch::Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("clf.safetensors"), "{err}");
}

#[test]
fn bc_nll_falls_and_fits_a_synthetic_mapping() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let ds = synthetic_dataset(dir.path(), 24, 12);
    let mut cfg = BcConfig {
        steps: 600,
        batch_size: 32,
        log_every: 50,
        lr: 1e-3,
        shift_pad: 0,
        demos: 20,
        val_demos: 4,
        weight_decay: 0.0,
        checkpoint_every: 0,
        ..Default::default()
    };
    cfg.policy.encoder = small_encoder();
    cfg.policy.hidden = 64;
    let mut nll = Vec::new();
    let (policy, report) = bc::train_task(&cfg, &ds, "dots", tch::Device::Cpu, |v| {
        nll.push(v["train_nll"].as_f64().unwrap());
        Ok(())
    })
    .unwrap();
    assert_eq!(report.demos, 20);
    assert_eq!(report.val_demos, 4);
    assert!(
        nll.last().unwrap() < &(nll.first().unwrap() - 1.0),
        "{nll:?}"
    );
    // held-out mean-action error in the normalised box (targets spread over ±0.8)
    assert!(report.val_mse.unwrap() < 0.02, "{report:?}");
    // the mean action of an unseen frame matches the mapping
    let obs = w4rl_envs::Obs {
        frame: frame(3, 12),
        size: SIZE,
        state: vec![],
    };
    let a = policy.act_mean(&policy.obs_batch(&[obs]).unwrap()).unwrap();
    let want = action_of(3, 12);
    assert!(
        (a[0][0] - want[0]).abs() < 0.25 && (a[0][1] - want[1]).abs() < 0.25,
        "{a:?} vs {want:?}"
    );
}

#[test]
fn an_episode_of_a_validation_or_test_scene_never_reaches_bc() {
    use world4rl::util::seeds::{eval_seed, Split};
    let dir = tempfile::tempdir().unwrap();
    let ds = synthetic_dataset(dir.path(), 3, 2);
    let cfg = BcConfig {
        steps: 2,
        val_demos: 0,
        ..Default::default()
    };
    for split in [Split::Validation, Split::Test] {
        // a rollout recorded on an evaluation scene, handed to BC as filtered BC's extra episodes
        let mut ep = ds.load_where(|m| m.index == 0).unwrap().remove(0);
        ep.meta.seed = eval_seed(0, split, "dots", 7);
        ep.meta.kind = EpisodeKind::Policy;
        let err = bc::train_task_on(
            &cfg,
            &ds,
            "dots",
            vec![ep],
            tch::Device::Cpu,
            |_| Ok(()),
            |_, _| Ok(()),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(&format!("{split} seed")) && err.contains("never be trained on"),
            "{err}"
        );
    }
    // training seeds pass
    assert!(bc::train_task_on(
        &cfg,
        &ds,
        "dots",
        vec![],
        tch::Device::Cpu,
        |_| Ok(()),
        |_, _| Ok(())
    )
    .is_ok());
}

#[test]
fn missing_task_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let ds = synthetic_dataset(dir.path(), 2, 3);
    let err = bc::train_task(&BcConfig::default(), &ds, "nope", tch::Device::Cpu, |_| {
        Ok(())
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("no expert episodes of task 'nope'"), "{err}");
    let err = reward::train_task(
        &RewardConfig::default(),
        &ds,
        "nope",
        None,
        tch::Device::Cpu,
        |_| Ok(()),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("'nope'"), "{err}");
}

mod imagination {
    use super::*;
    use w4rl_envs::VecEnv;
    use world4rl::experiment::run::RunDir;
    use world4rl::experiment::stage::run_stage;
    use world4rl::policy::GaussianPolicy;
    use world4rl::ppo::imagined_env::{ImaginedEnv, ImaginedEnvConfig};
    use world4rl::stages::refine::{RefineConfig, RefineTask};
    use world4rl::world_model::{WorldModel, WorldModelConfig};

    #[test]
    fn several_samples_of_a_step_share_the_context_and_the_first_rolls_the_window() {
        tch::set_num_threads(1);
        tch::manual_seed(2);
        let dir = tempfile::tempdir().unwrap();
        let ds = synthetic_dataset(dir.path(), 2, 6);
        let wm = WorldModel::new(WorldModelConfig::tiny(), 2, tch::Device::Cpu).unwrap();
        let eps = ds.load_where(|_| true).unwrap();
        let picks: Vec<_> = eps.iter().map(|e| (e, 2usize)).collect();
        let mut ctx = world4rl::world_model::RollingContext::from_episodes(&wm, &picks).unwrap();
        let a = tch::Tensor::from_slice(&[0.5f32, -0.5, 0.0, 0.25]).view([2, 2]);
        let samples = ctx.step_samples(&wm, &a, 3).unwrap();
        assert_eq!(samples.size(), vec![3, 2, 3, SIZE as i64, SIZE as i64]);
        // the window now ends with sample 0
        assert!(ctx.last_frame().equal(&samples.get(0)));
        // the samples differ (each has its own noise), so their disagreement measures something
        let d = (samples.get(1) - samples.get(0))
            .abs()
            .max()
            .double_value(&[]);
        assert!(d > 0.0, "three samples of one transition are identical");
        // an imagined environment with pessimism steps and pays only what every sample agrees on
        let always = tiny_classifier(0.0);
        let cfg = ImaginedEnvConfig {
            horizon: 3,
            start_max_step: 0,
            success_frames: 1,
            pessimism_samples: 2,
            ..Default::default()
        };
        let mut env = ImaginedEnv::new(&wm, &always, &ds, "dots", 2, &cfg).unwrap();
        env.reset(&[5]);
        let steps = env.step(&vec![vec![0.5, -0.5]; 2]).unwrap();
        assert!(steps.iter().all(|s| s.info.success && s.reward == 1.0));
        let never = tiny_classifier(0.999_999);
        let mut env = ImaginedEnv::new(&wm, &never, &ds, "dots", 2, &cfg).unwrap();
        env.reset(&[5]);
        let steps = env.step(&vec![vec![0.5, -0.5]; 2]).unwrap();
        assert!(steps.iter().all(|s| !s.info.success && s.reward == 0.0));
    }

    #[test]
    fn imagined_env_terminates_truncates_and_resets() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
        let dir = tempfile::tempdir().unwrap();
        let ds = synthetic_dataset(dir.path(), 4, 6);
        let wm = WorldModel::new(WorldModelConfig::tiny(), 2, tch::Device::Cpu).unwrap();
        // threshold 0: every imagined frame is a success
        let always = tiny_classifier(0.0);
        // real first frames only, and any one successful frame ends an episode
        let cfg = ImaginedEnvConfig {
            horizon: 3,
            start_max_step: 0,
            success_frames: 1,
            ..Default::default()
        };
        let mut env = ImaginedEnv::new(&wm, &always, &ds, "dots", 3, &cfg).unwrap();
        assert_eq!(env.horizon(), 3);
        assert_eq!(env.num_start_episodes(), 4);
        let obs = env.reset(&[7]);
        assert_eq!(obs.len(), 3);
        assert_eq!(obs[0].frame.len(), SIZE * SIZE * 3);
        // a start state is a real first frame of the task's episodes
        assert!(ds
            .load_where(|_| true)
            .unwrap()
            .iter()
            .any(|e| e.frame(0) == obs[0].frame.as_slice()));
        let steps = env.step(&vec![vec![0.5, -0.5]; 3]).unwrap();
        assert!(steps
            .iter()
            .all(|s| s.terminated && s.reward == 1.0 && s.info.success));
        // finished episodes must be reset before stepping again
        let err = env.step(&vec![vec![0.0, 0.0]; 3]).unwrap_err().to_string();
        assert!(err.contains("reset"), "{err}");
        for i in 0..3 {
            env.reset_row(i, i as u64).unwrap();
        }
        // bad actions are refused without moving anything
        assert!(env.step(&[vec![0.0, 0.0]]).is_err());
        assert!(env.step(&vec![vec![f32::NAN, 0.0]; 3]).is_err());

        // a threshold above every probability: episodes are truncated at the horizon
        let never = tiny_classifier(0.999_999);
        let mut env = ImaginedEnv::new(&wm, &never, &ds, "dots", 2, &cfg).unwrap();
        env.reset(&[1]);
        for t in 1..=3 {
            let steps = env.step(&vec![vec![0.0, 0.0]; 2]).unwrap();
            assert!(steps
                .iter()
                .all(|s| !s.terminated && s.reward == 0.0 && s.truncated == (t == 3)));
        }
        assert!(ImaginedEnv::new(&wm, &never, &ds, "nope", 2, &cfg).is_err());

        // a rule of 2 consecutive frames: the first success (and reward) comes at the second step
        let two = ImaginedEnvConfig {
            success_frames: 2,
            ..cfg.clone()
        };
        let mut env = ImaginedEnv::new(&wm, &always, &ds, "dots", 2, &two).unwrap();
        env.reset(&[3]);
        let first = env.step(&vec![vec![0.0, 0.0]; 2]).unwrap();
        assert!(first
            .iter()
            .all(|s| !s.terminated && !s.info.success && s.reward == 0.0));
        let second = env.step(&vec![vec![0.0, 0.0]; 2]).unwrap();
        assert!(second
            .iter()
            .all(|s| s.terminated && s.info.success && s.reward == 1.0));
    }

    #[test]
    fn ceiling_env_is_rewarded_and_ended_by_the_classifier_only() {
        use world4rl::eval::ceiling::ClassifierRewardEnv;
        use world4rl::ppo::RolloutEnv;
        use world4rl::world_model::outcome::SuccessRule;
        tch::set_num_threads(1);
        tch::manual_seed(0);
        // every frame successful, a rule of 2 frames: success, reward and the end at step 2
        let always = tiny_classifier(0.0);
        let mut env = ClassifierRewardEnv::new(
            "push-block",
            2,
            &w4rl_envs::EnvConfig::with_size(32),
            &always,
            SuccessRule { frames: 2 },
        )
        .unwrap();
        assert_eq!(env.reset(&[5]).len(), 2);
        let first = env.step(&vec![vec![0.0, 0.0]; 2]).unwrap();
        assert!(first
            .iter()
            .all(|s| !s.terminated && !s.truncated && s.reward == 0.0 && !s.info.success));
        let second = env.step(&vec![vec![0.0, 0.0]; 2]).unwrap();
        assert!(second
            .iter()
            .all(|s| s.terminated && s.reward == 1.0 && s.info.success));
        env.reset_one(0, 9).unwrap();
        assert!(env.step(&[vec![f32::NAN, 0.0], vec![0.0, 0.0]]).is_err());
        // never successful: the real task's own end truncates, without reward
        let never = tiny_classifier(0.999_999);
        let mut env = ClassifierRewardEnv::new(
            "push-block",
            1,
            &w4rl_envs::EnvConfig::with_size(32),
            &never,
            SuccessRule::default(),
        )
        .unwrap();
        env.reset(&[1]);
        let mut steps = 0;
        loop {
            let s = env.step(&[vec![0.3, 0.3]]).unwrap().remove(0);
            steps += 1;
            assert!(!s.terminated && s.reward == 0.0);
            if s.truncated {
                break;
            }
            assert!(steps < 1000, "the episode never ended");
        }
        assert_eq!(steps, 50, "push-block episodes last 50 steps");
    }

    #[test]
    fn true_reward_ceiling_env_is_rewarded_and_ended_by_the_real_success() {
        use w4rl_envs::Controller;
        use world4rl::eval::ceiling::ClassifierRewardEnv;
        use world4rl::world_model::outcome::SuccessRule;
        // the scripted expert solves push-block: reward 1 and the end exactly at its first real success,
        // 0 before it
        let mut env = ClassifierRewardEnv::true_success(
            "push-block",
            1,
            &w4rl_envs::EnvConfig::with_size(32),
            SuccessRule { frames: 1 },
        )
        .unwrap();
        let mut expert = w4rl_envs::make_expert("push-block").unwrap();
        env.reset(&[3]);
        let mut real = w4rl_envs::make(
            "push-block",
            &w4rl_envs::EnvConfig {
                image_size: 32,
                terminate_on_success: true,
                ..Default::default()
            },
        )
        .unwrap();
        let mut real_obs = real.reset(3);
        expert.reset(3);
        let mut steps = 0;
        loop {
            let a = expert.act(&real_obs);
            let s = env.step(std::slice::from_ref(&a)).unwrap().remove(0);
            let r = real.step(&a).unwrap();
            steps += 1;
            assert_eq!(s.info.success, r.info.success, "step {steps}");
            if r.info.success {
                assert!(s.terminated && s.reward == 1.0);
                break;
            }
            assert!(!s.terminated && s.reward == 0.0);
            assert!(steps < 50, "the expert never succeeded");
            real_obs = r.obs;
        }
    }

    #[test]
    fn outcome_agreement_compares_whole_replays_with_recorded_outcomes() {
        use world4rl::world_model::outcome::{outcome_agreement, OutcomeOptions, SuccessRule};
        tch::set_num_threads(1);
        tch::manual_seed(0);
        let dir = tempfile::tempdir().unwrap();
        // one step per episode: success when the dot lands in the right half, about half of them
        let ds = synthetic_dataset(dir.path(), 12, 1);
        let eps = ds.load_where(|_| true).unwrap();
        let eps: Vec<&Episode> = eps.iter().collect();
        let real = eps.iter().filter(|e| e.success[1] == 1).count() as f64 / 12.0;
        assert!(
            real > 0.0 && real < 1.0,
            "the test needs both outcomes ({real})"
        );
        let wm = WorldModel::new(WorldModelConfig::tiny(), 2, tch::Device::Cpu).unwrap();
        // batches of 5 over 12 episodes: the last batch is partial; AUC(1) asked for
        let opts = OutcomeOptions {
            batch: 5,
            resets: vec![1],
            bootstrap: 200,
            ..Default::default()
        };
        let clf = tiny_classifier(0.0);
        let always = outcome_agreement(&wm, &clf, &eps, false, &opts).unwrap();
        assert_eq!(always.episodes, 12);
        assert!(!always.heldout);
        assert_eq!(always.real_success_rate, real);
        assert_eq!(always.imagined_success_rate, 1.0);
        assert!((always.agreement - real).abs() < 1e-12);
        let auc = always.auc.expect("both outcomes are present");
        assert!((0.0..=1.0).contains(&auc));
        assert_eq!(always.auc_by_reset.len(), 1);
        assert_eq!(always.auc_by_reset[0].every, 1);
        // the classifier on the recorded frames: the frame after each action (frame 1 here), not
        // the first one, scored as the imagined frames are
        let real_frames = always
            .real_frames
            .expect("the real-frame ceiling is measured");
        let by_hand: Vec<f64> = eps
            .iter()
            .map(|e| {
                let f = world4rl::util::frames::bytes_to_chw(
                    e.frame(1),
                    1,
                    SIZE,
                    SIZE,
                    tch::Device::Cpu,
                )
                .unwrap();
                clf.prob_u8(&f).double_value(&[0])
            })
            .collect();
        let labels: Vec<bool> = eps.iter().map(|e| e.success[1] == 1).collect();
        assert_eq!(
            real_frames.auc,
            world4rl::reward::roc_auc(&by_hand, &labels)
        );
        assert_eq!(real_frames.imagined_success_rate, 1.0);
        assert!(real_frames.ci.is_some());
        let big = OutcomeOptions {
            batch: 64,
            ..opts.clone()
        };
        let never = outcome_agreement(&wm, &tiny_classifier(0.999_999), &eps, false, &big).unwrap();
        assert_eq!(never.imagined_success_rate, 0.0);
        assert_eq!(never.real_frames.unwrap().imagined_success_rate, 0.0);
        assert!((never.agreement - (1.0 - real)).abs() < 1e-12);
        // a rule of two consecutive frames cannot be met in one-step episodes
        let two = OutcomeOptions {
            rule: SuccessRule { frames: 2 },
            ..big.clone()
        };
        let strict = outcome_agreement(&wm, &tiny_classifier(0.0), &eps, false, &two).unwrap();
        assert_eq!(
            (strict.imagined_success_rate, strict.success_frames),
            (0.0, 2)
        );
        // a single outcome has no ranking to score
        let solved: Vec<&Episode> = eps.iter().copied().filter(|e| e.success[1] == 1).collect();
        let one = outcome_agreement(&wm, &tiny_classifier(0.5), &solved, false, &opts).unwrap();
        assert_eq!(
            (one.real_success_rate, one.auc, one.auc_ci),
            (1.0, None, None)
        );
        assert!(outcome_agreement(&wm, &tiny_classifier(0.5), &[], false, &opts).is_err());

        // from a run: the task's classifier is loaded; a dataset without policy rollouts has nothing
        // to replay, and a run without a classifier is an error that says which stage to run
        use world4rl::world_model::outcome::{task_outcome_agreement, Rollouts};
        let run = RunDir::open(dir.path().join("run")).unwrap();
        let path = run.classifier("dots");
        let training = Rollouts {
            heldout: None,
            training: &ds,
        };
        let err = task_outcome_agreement(&path, &wm, &training, "dots", 8, &opts)
            .unwrap_err()
            .to_string();
        assert!(err.contains("train reward"), "{err}");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        tiny_classifier(0.5)
            .save(&path, serde_json::json!({}))
            .unwrap();
        assert!(
            task_outcome_agreement(&path, &wm, &training, "dots", 8, &opts)
                .unwrap()
                .is_none()
        );
        // held-out policy rollouts are preferred, and said to be held out
        let held = synthetic_dataset_of(&dir.path().join("held"), 6, 2, EpisodeKind::Policy);
        let both = Rollouts {
            heldout: Some(&held),
            training: &ds,
        };
        let o = task_outcome_agreement(&path, &wm, &both, "dots", 4, &opts)
            .unwrap()
            .unwrap();
        assert!(o.heldout);
        assert_eq!(o.episodes, 4);
    }

    #[test]
    fn classifier_trains_on_imagined_frames_too() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
        let dir = tempfile::tempdir().unwrap();
        let ds = synthetic_dataset(dir.path(), 10, 8);
        let wm = WorldModel::new(WorldModelConfig::tiny(), 2, tch::Device::Cpu).unwrap();
        let mut cfg = RewardConfig {
            steps: 20,
            batch_size: 16,
            log_every: 10,
            world_model_frames: 30,
            world_model_horizon: 3,
            ..Default::default()
        };
        cfg.classifier.encoder = small_encoder();
        let (_, report) =
            reward::train_task(&cfg, &ds, "dots", Some(&wm), tch::Device::Cpu, |_| Ok(())).unwrap();
        assert!((20..=32).contains(&report.world_model_frames), "{report:?}");
        assert_eq!(report.train.n, report.train_frames, "{report:?}");
        let held = report
            .heldout_world_model
            .expect("held-out imagined metrics");
        assert!(held.n > 0 && held.n <= 16, "{held:?}");
    }

    #[test]
    fn open_loop_imagined_frames_are_whole_episodes_labelled_by_the_real_flags() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
        let dir = tempfile::tempdir().unwrap();
        let ds = synthetic_dataset(dir.path(), 5, 8);
        let eps: Vec<Episode> = (0..5).map(|i| ds.load(i).unwrap()).collect();
        let wm = WorldModel::new(WorldModelConfig::tiny(), 2, tch::Device::Cpu).unwrap();
        // a horizon as long as the episodes: every episode once, from its first frame to its end
        let (frames, labels) = reward::train::imagined_frames(&wm, &eps, 8, 1000, 8, 3).unwrap();
        assert_eq!(frames.size(), vec![40, 3, 8, 8]);
        assert_eq!(labels.len(), 40);
        let real: usize = eps
            .iter()
            .map(|e| e.success[1..].iter().filter(|&&s| s == 1).count())
            .sum();
        assert_eq!(labels.iter().filter(|&&l| l).count(), real);
        // `max` counts frames: 16 frames are two whole episodes
        let (_, two) = reward::train::imagined_frames(&wm, &eps, 8, 16, 8, 3).unwrap();
        assert_eq!(two.len(), 16);
        // the classifier takes them beside the near ones
        let mut cfg = RewardConfig {
            steps: 10,
            batch_size: 16,
            log_every: 10,
            world_model_frames: 12,
            world_model_horizon: 3,
            world_model_open_loop_frames: 16,
            ..Default::default()
        };
        cfg.classifier.encoder = small_encoder();
        let (_, report) =
            reward::train_task(&cfg, &ds, "dots", Some(&wm), tch::Device::Cpu, |_| Ok(())).unwrap();
        let near_only = RewardConfig {
            world_model_open_loop_frames: 0,
            ..cfg.clone()
        };
        let (_, near) =
            reward::train_task(&near_only, &ds, "dots", Some(&wm), tch::Device::Cpu, |_| {
                Ok(())
            })
            .unwrap();
        assert!(
            report.world_model_frames >= near.world_model_frames + 8,
            "{} vs {}",
            report.world_model_frames,
            near.world_model_frames
        );
    }

    #[test]
    fn acceptance_pairs_episodes_and_scores_the_first_success() {
        use world4rl::ppo::acceptance::{check, run_policy, AcceptConfig};
        tch::set_num_threads(1);
        tch::manual_seed(0);
        let dir = tempfile::tempdir().unwrap();
        let ds = synthetic_dataset(dir.path(), 4, 6);
        let wm = WorldModel::new(WorldModelConfig::tiny(), 2, tch::Device::Cpu).unwrap();
        let (a, b) = (tiny_policy(), tiny_policy());
        // every frame succeeds: the first success is step 1, discounted 1; 5 episodes in batches of 3
        let always = tiny_classifier(0.0);
        let cfg = ImaginedEnvConfig {
            horizon: 3,
            terminate_on_success: false,
            start_max_step: 0,
            success_frames: 1,
            ..Default::default()
        };
        let mut env = ImaginedEnv::new(&wm, &always, &ds, "dots", 3, &cfg).unwrap();
        let s = run_policy(&mut env, &a, 5, 11, 0.9).unwrap();
        assert_eq!(s.success, vec![true; 5]);
        assert_eq!(s.discounted, vec![1.0; 5]);
        // with 2 frames in a row required, the first success is step 2: 0.9
        let cfg2 = ImaginedEnvConfig {
            success_frames: 2,
            ..cfg.clone()
        };
        let mut env2 = ImaginedEnv::new(&wm, &always, &ds, "dots", 3, &cfg2).unwrap();
        let s = run_policy(&mut env2, &a, 4, 11, 0.9).unwrap();
        assert!(
            s.discounted.iter().all(|&d| (d - 0.9).abs() < 1e-12),
            "{s:?}"
        );
        // never: all zero
        let never = tiny_classifier(0.9999);
        let mut env3 = ImaginedEnv::new(&wm, &never, &ds, "dots", 3, &cfg).unwrap();
        let s = run_policy(&mut env3, &a, 4, 11, 0.9).unwrap();
        assert_eq!(s.discounted, vec![0.0; 4]);
        // the same policy twice on the same seed sees the same starts and world-model noise: the
        // paired gain is exactly 0 and the candidate is not accepted (an untrained classifier's
        // probabilities all sit within float noise of 0.5, so the verdicts come from a 2-frame rule on
        // a threshold below them)
        let mid = tiny_classifier(0.05);
        let acc = AcceptConfig {
            episodes: 6,
            num_envs: 4,
            horizon: 3,
            success_frames: 2,
            gamma: 0.99,
            margin: 0.0,
            seed: 3,
        };
        let same = check(&wm, &mid, &ds, "dots", &a, &a, &acc).unwrap();
        assert_eq!(same.comparison.gain, 0.0);
        assert_eq!(same.comparison.gain_ci, (0.0, 0.0));
        assert!(!same.accepted);
        // two different policies: the reported rates are those of separate runs on the same seed
        let diff = check(&wm, &mid, &ds, "dots", &a, &b, &acc).unwrap();
        let mut env4 = ImaginedEnv::new(&wm, &mid, &ds, "dots", 4, &cfg2).unwrap();
        let sb = run_policy(&mut env4, &b, 6, 3, 0.99).unwrap();
        assert_eq!(diff.comparison.candidate_discounted, sb.mean_discounted());
        assert!((sb.mean_discounted() - 0.99).abs() < 1e-12, "{sb:?}");
        // a wrong task is a clear error
        assert!(check(&wm, &mid, &ds, "nope", &a, &b, &acc).is_err());
    }

    #[test]
    fn refine_runs_end_to_end_on_a_run_directory() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
        let dir = tempfile::tempdir().unwrap();
        let ds = synthetic_dataset(&dir.path().join("data"), 4, 6);
        let run = RunDir::open(dir.path().join("run")).unwrap();
        let wm = WorldModel::new(WorldModelConfig::tiny(), 2, tch::Device::Cpu).unwrap();
        wm.save(&run.world_model(), serde_json::json!({})).unwrap();
        run.stage_dir("reward/dots").unwrap();
        tiny_classifier(0.5)
            .save(&run.classifier("dots"), serde_json::json!({}))
            .unwrap();
        run.stage_dir("bc/dots").unwrap();
        tiny_policy()
            .save(&run.bc_policy("dots"), serde_json::json!({}))
            .unwrap();
        let mut cfg = RefineConfig {
            start: world4rl::stages::refine::RefineStart::Bc,
            monitor_every: 0,
            ..Default::default()
        };
        cfg.imagination.start_max_step = 0;
        cfg.imagination.success_frames = 1;
        cfg.ppo.num_envs = 4;
        cfg.ppo.rollout_steps = 4;
        cfg.ppo.minibatch_size = 8;
        cfg.ppo.iterations = 3;
        cfg.ppo.critic_warmup_iters = 1;
        cfg.imagination.horizon = 3;
        let eval = world4rl::eval::evaluate::EvalConfig::default();
        let refine = |cfg: &RefineConfig, task: &str, accept: Option<&Dataset>| {
            let stage = RefineTask {
                cfg,
                data: &ds,
                accept_starts: accept,
                task: task.to_string(),
                device: tch::Device::Cpu,
                monitor_seed: 0,
                max_steps: 0,
                eval: &eval,
            };
            run_stage(&run, &stage).map(|d| d.record)
        };
        let r = refine(&cfg, "dots", None).unwrap();
        assert_eq!(r.ppo.iterations, 3);
        assert_eq!(r.ppo.env_steps, 3 * 4 * 4);
        assert_eq!(r.imagination.steps, 12);
        let (best, meta) = GaussianPolicy::load(&r.best, tch::Device::Cpu).unwrap();
        assert_eq!(meta["checkpoint"], "best");
        let (lo, hi) = best.std_bounds();
        assert!((lo - cfg.ppo.std_min).abs() < 1e-9 && (hi - cfg.ppo.std_max).abs() < 1e-9);
        assert!(r.last.exists());
        let lines =
            world4rl::util::metrics_log::read_metrics(run.path().join("refine/dots/metrics.jsonl"))
                .unwrap();
        assert_eq!(lines.len(), 3);
        assert!(run.is_done("refine/dots"));
        // without an acceptance check, on a task with no environment to choose in, the standing
        // policy is the last checkpoint
        assert!(r.acceptance.is_none() && r.choice.is_none());
        assert_eq!(
            std::fs::read(&r.policy).unwrap(),
            std::fs::read(&r.last).unwrap()
        );
        // with it: a paired comparison in imagination decides between BC and the refined policy
        cfg.accept = world4rl::ppo::acceptance::AcceptRule::ImaginedGain;
        // (a choice on validation scenes and the imagined acceptance check are refused together)
        assert!(cfg.validate().is_err());
        cfg.evaluate = world4rl::stages::refine::RefinedCheckpoint::Last;
        cfg.accept_episodes = 6;
        // and with the KL penalty to the starting policy, whose value is logged once the actor moves
        cfg.ppo.kl_to_initial = 1.0;
        // a finished stage is skipped and keeps its record; without its done.json it runs again
        assert!(refine(&cfg, "dots", Some(&ds))
            .unwrap()
            .acceptance
            .is_none());
        std::fs::remove_file(run.path().join("refine/dots/done.json")).unwrap();
        let r = refine(&cfg, "dots", Some(&ds)).unwrap();
        let a = r.acceptance.expect("the acceptance check ran");
        assert_eq!(a.comparison.episodes, 6);
        let (lo, hi) = a.comparison.gain_ci;
        assert!(lo <= a.comparison.gain && a.comparison.gain <= hi, "{a:?}");
        let lines =
            world4rl::util::metrics_log::read_metrics(run.path().join("refine/dots/metrics.jsonl"))
                .unwrap();
        let kl: Vec<f64> = lines
            .iter()
            .map(|l| l["kl_initial"].as_f64().unwrap())
            .collect();
        assert_eq!(
            kl[0], 0.0,
            "the critic warm-up does not move the actor: {kl:?}"
        );
        assert!(kl[2] > 0.0 && kl[2].is_finite(), "{kl:?}");
        let standing = std::fs::read(&r.policy).unwrap();
        let expected = if a.accepted {
            &r.last
        } else {
            &run.bc_policy("dots")
        };
        assert_eq!(standing, std::fs::read(expected).unwrap());
        // a missing stage-1 artefact is a clear error naming what to run
        let err = refine(&cfg, "other", None).unwrap_err();
        assert!(format!("{err:#}").contains("train reward"), "{err:#}");
    }
}
