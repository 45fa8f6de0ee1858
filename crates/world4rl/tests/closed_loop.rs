//! The closed-loop outcome check (`world4rl::world_model::closed_loop`) on the synthetic `dots` task. In a test
//! binary of its own: it compares two runs under the same libtorch noise, and the global generator
//! is shared with every test that runs in parallel in the same process.

mod synthetic;

use synthetic::*;
use w4rl_data::Episode;
use world4rl::world_model::{WorldModel, WorldModelConfig};

#[test]
fn closed_loop_check_lets_the_policy_act_on_its_imagined_frames() {
    use w4rl_envs::Obs;
    use world4rl::world_model::closed_loop::{closed_loop_agreement, closed_loop_scores};
    use world4rl::world_model::outcome::{episode_scores, OutcomeOptions};
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let ds = synthetic_dataset(dir.path(), 12, 1);
    let eps = ds.load_where(|_| true).unwrap();
    let refs: Vec<&Episode> = eps.iter().collect();
    // random weights everywhere: a fresh model's output convolution is zero, and its frames
    // would not depend on the actions
    tch::manual_seed(1);
    let wm = WorldModel::new(WorldModelConfig::tiny(), 2, tch::Device::Cpu).unwrap();
    tch::no_grad(|| {
        for (_, mut v) in wm.var_store().variables() {
            let r = v.randn_like() * 0.1;
            v.copy_(&r);
        }
    });
    let clf = tiny_classifier(0.5);
    let policy = tiny_policy();
    let opts = OutcomeOptions {
        batch: 5,
        bootstrap: 100,
        ..Default::default()
    };
    // one-step episodes: the closed loop acts once, with the policy's mean action on the first
    // frame, so under the same world-model noise it is the open-loop replay of those actions. The
    // actions are taken in the check's own batches: a matrix product's rounding can depend on the
    // batch size (it did on the CI machine's CPU), and the comparison below is exact.
    let mut driven = eps.clone();
    for chunk in driven.chunks_mut(opts.batch) {
        let obs: Vec<Obs> = chunk
            .iter()
            .map(|e| Obs {
                frame: e.frame(0).to_vec(),
                size: SIZE,
                state: Vec::new(),
            })
            .collect();
        let acts = policy.act_mean(&policy.obs_batch(&obs).unwrap()).unwrap();
        for (e, a) in chunk.iter_mut().zip(acts) {
            e.actions = a.iter().map(|x| x.clamp(-1.0, 1.0)).collect();
        }
    }
    let driven_refs: Vec<&Episode> = driven.iter().collect();
    tch::manual_seed(3);
    let closed = closed_loop_scores(&wm, &clf, &policy, &refs, &opts).unwrap();
    tch::manual_seed(3);
    let open = episode_scores(&wm, &clf, &driven_refs, &opts, None).unwrap();
    assert_eq!(closed, open);
    // the recorded (expert) actions are not what the policy does, and give other frames
    tch::manual_seed(3);
    let recorded = episode_scores(&wm, &clf, &refs, &opts, None).unwrap();
    assert_ne!(closed, recorded);
    // longer episodes: one score per episode, in [0, 1], the same for the same seed
    let long = synthetic_dataset(&dir.path().join("long"), 7, 3);
    let long = long.load_where(|_| true).unwrap();
    let long_refs: Vec<&Episode> = long.iter().collect();
    tch::manual_seed(4);
    let a = closed_loop_scores(&wm, &clf, &policy, &long_refs, &opts).unwrap();
    tch::manual_seed(4);
    let b = closed_loop_scores(&wm, &clf, &policy, &long_refs, &opts).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.len(), 7);
    assert!(a.iter().all(|p| (0.0..=1.0).contains(p)), "{a:?}");
    // the agreement sets the scores against the recorded outcomes; no AUC(k) closed loop
    let o = closed_loop_agreement(&wm, &clf, &policy, &refs, true, &opts).unwrap();
    let real = eps.iter().filter(|e| e.success[1] == 1).count() as f64 / 12.0;
    assert_eq!((o.episodes, o.heldout), (12, true));
    assert_eq!(o.real_success_rate, real);
    assert!(o.auc_by_reset.is_empty());
    assert!(closed_loop_agreement(&wm, &clf, &policy, &[], true, &opts).is_err());
    // a policy whose actions the world model cannot take is refused
    let wm3 = WorldModel::new(WorldModelConfig::tiny(), 3, tch::Device::Cpu).unwrap();
    let err = closed_loop_scores(&wm3, &clf, &policy, &refs, &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("dimensions"), "{err}");
}
