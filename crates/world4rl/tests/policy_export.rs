//! `world4rl export policy`: the exported folder's plain-PyTorch module (`world4rl_policy.py`, run with
//! the project's `.venv` Python) gives the Rust policy's mean action on the same frames, for both
//! encoders, with and without the state, with a frame history.

mod common;

use common::python;
use std::path::Path;
use std::process::Command;

use tch::{Device, Kind, Tensor};
use w4rl_envs::Obs;
use world4rl::policy::{
    export, EncoderConfig, GaussianPolicy, ObsHistory, PolicyConfig, PolicySpec,
};
use world4rl::util::checkpoint::save_tensors;

/// Every weight random (the heads start near zero, which would hide mistakes), the same on every run:
/// a fixed seed, the variables in name order (the var store's map has none), and a scale at which the
/// tanh heads do not saturate (at 1.5 / sqrt(fan_in) some draws put every action on the box edge, which
/// made the non-vacuity check fail now and then).
fn randomise(policy: &GaussianPolicy) {
    tch::manual_seed(7);
    let mut vars: Vec<(String, Tensor)> = policy.var_store().variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (name, mut t) in vars {
            if name.starts_with("state_") {
                continue;
            }
            let fan_in: i64 = t.size()[1..].iter().product::<i64>().max(1);
            let r = t.randn_like() / (fan_in as f64).sqrt();
            t.copy_(&r);
        }
    });
}

fn spec(image_size: usize, render_size: usize, state_dim: usize) -> PolicySpec {
    PolicySpec {
        image_size,
        action_dim: 3,
        state_dim,
        action_low: vec![-1.0, -0.5, 0.0],
        action_high: vec![1.0, 2.0, 0.25],
        task: "push-block".into(),
        render_size,
        render: Default::default(),
    }
}

fn frames(n: usize, size: usize, seed: i64) -> Vec<Obs> {
    tch::manual_seed(seed);
    let t = Tensor::randint(
        256,
        [n as i64, (size * size * 3) as i64],
        (Kind::Uint8, Device::Cpu),
    );
    (0..n)
        .map(|i| Obs {
            frame: Vec::<u8>::try_from(t.get(i as i64)).unwrap(),
            size,
            state: vec![0.3 * i as f32, -1.0, 2.5 - i as f32],
        })
        .collect()
}

/// Runs the exported module on the given steps (each `[n, size, size, 3]` frames and `[n, S]` states)
/// in order, as one episode, and returns its actions per step.
fn python_actions(dir: &Path, steps: &[Vec<Obs>]) -> Vec<Vec<f32>> {
    let inputs = dir.join("inputs.safetensors");
    let mut tensors = Vec::new();
    for (k, obs) in steps.iter().enumerate() {
        let size = obs[0].size as i64;
        let bytes: Vec<u8> = obs.iter().flat_map(|o| o.frame.clone()).collect();
        let states: Vec<f32> = obs.iter().flat_map(|o| o.state.clone()).collect();
        tensors.push((
            format!("frames{k}"),
            Tensor::from_slice(&bytes).view([obs.len() as i64, size, size, 3]),
        ));
        tensors.push((
            format!("state{k}"),
            Tensor::from_slice(&states).view([obs.len() as i64, -1]),
        ));
    }
    save_tensors(&inputs, &tensors, &serde_json::json!({})).unwrap();
    let script = format!(
        "import sys, json\nsys.path.insert(0, {dir:?})\nfrom world4rl_policy import World4RLPolicy, load_safetensors\n\
         p = World4RLPolicy.from_pretrained({dir:?})\ni = load_safetensors({inputs:?})\nout = []\n\
         for k in range({n}):\n    out.append(p.select_action({{'observation.image': i[f'frames{{k}}'], 'observation.state': i[f'state{{k}}']}}).tolist())\n\
         print(json.dumps(out))\n",
        dir = dir.join("export").display().to_string(),
        inputs = inputs.display().to_string(),
        n = steps.len()
    );
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Vec<Vec<Vec<f32>>> = serde_json::from_slice(&out.stdout).unwrap();
    v.into_iter().flatten().collect()
}

fn assert_close(rust: &[Vec<f32>], py: &[Vec<f32>]) {
    assert_eq!(rust.len(), py.len());
    let mut worst = 0f32;
    for (a, b) in rust.iter().zip(py) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            worst = worst.max((x - y).abs());
        }
    }
    assert!(
        worst < 1e-5,
        "largest difference {worst}: {rust:?} vs {py:?}"
    );
    // the comparison is not vacuous: actions differ between rows (in some dimension: with random
    // weights one dimension can sit on the tanh's saturation for every row)
    assert!(
        rust.windows(2)
            .any(|w| w[0].iter().zip(&w[1]).any(|(a, b)| (a - b).abs() > 1e-3)),
        "{rust:?}"
    );
}

#[test]
fn exported_spatial_softmax_policy_matches_rust_on_frames_rendered_larger() {
    let dir = tempfile::tempdir().unwrap();
    let policy =
        GaussianPolicy::new(&PolicyConfig::default(), &spec(32, 64, 0), Device::Cpu).unwrap();
    randomise(&policy);
    let ckpt = dir.path().join("policy.safetensors");
    policy.save(&ckpt, serde_json::json!({})).unwrap();
    let (policy, _) = GaussianPolicy::load(&ckpt, Device::Cpu).unwrap();
    let summary = export::export_policy(&policy, &ckpt, &dir.path().join("export")).unwrap();
    assert!(summary.parameters > 10_000);
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("export/config.json")).unwrap())
            .unwrap();
    assert_eq!(
        cfg["input_features"]["observation.image"]["shape"],
        serde_json::json!([3, 64, 64])
    );
    assert_eq!(
        cfg["output_features"]["action"]["shape"],
        serde_json::json!([3])
    );
    assert!(cfg["input_features"].get("observation.state").is_none());

    let obs = frames(6, 64, 1);
    let rust = policy.act_mean(&policy.obs_batch(&obs).unwrap()).unwrap();
    let py = python_actions(dir.path(), &[obs]);
    assert_close(&rust, &py);
}

#[test]
fn exported_pooled_policy_with_state_and_history_matches_rust_step_by_step() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = PolicyConfig {
        encoder: EncoderConfig {
            channels: vec![8, 16],
            strides: vec![2, 1],
            spatial_softmax: false,
            pool: 3,
            features: 32,
        },
        hidden: 48,
        frame_stack: 2,
        use_state: true,
        ..PolicyConfig::default()
    };
    let mut policy = GaussianPolicy::new(&cfg, &spec(24, 24, 3), Device::Cpu).unwrap();
    randomise(&policy);
    policy
        .set_state_normalizer(&[0.5, -1.0, 1.0], &[2.0, 0.5, 3.0])
        .unwrap();
    let ckpt = dir.path().join("policy.safetensors");
    policy.save(&ckpt, serde_json::json!({})).unwrap();
    export::export_policy(&policy, &ckpt, &dir.path().join("export")).unwrap();

    // three steps of one episode: the first repeats its frame, the next ones stack two
    let steps: Vec<Vec<Obs>> = (0..3).map(|k| frames(4, 24, 10 + k)).collect();
    let mut history = ObsHistory::new(2, steps[0].clone());
    let mut rust = policy
        .act_mean(&history.batch(&policy, None).unwrap())
        .unwrap();
    for step in &steps[1..] {
        for (i, o) in step.iter().enumerate() {
            history.push(i, o.clone());
        }
        rust.extend(
            policy
                .act_mean(&history.batch(&policy, None).unwrap())
                .unwrap(),
        );
    }
    let py = python_actions(dir.path(), &steps);
    assert_close(&rust, &py);
}

#[test]
fn export_refuses_a_folder_with_other_files_and_a_non_policy_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let policy =
        GaussianPolicy::new(&PolicyConfig::default(), &spec(32, 32, 0), Device::Cpu).unwrap();
    let out = dir.path().join("export");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let err = export::export_policy(&policy, Path::new("p.safetensors"), &out).unwrap_err();
    assert!(err.to_string().contains("notes.txt"), "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "mine"
    );
    // an earlier export is overwritten in place
    std::fs::remove_file(out.join("notes.txt")).unwrap();
    export::export_policy(&policy, Path::new("p.safetensors"), &out).unwrap();
    export::export_policy(&policy, Path::new("p.safetensors"), &out).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, export::FILES.to_vec());
    // the weights file is not a policy checkpoint
    let err = GaussianPolicy::load(&out.join("model.safetensors"), Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("not a policy checkpoint"), "{err}");
}

#[test]
fn exported_residual_policy_matches_rust() {
    // a policy refined as a bounded residual on its frozen start (`refine.ppo.residual_scale`)
    let dir = tempfile::tempdir().unwrap();
    let mut policy =
        GaussianPolicy::new(&PolicyConfig::default(), &spec(32, 32, 0), Device::Cpu).unwrap();
    policy.add_residual(0.3).unwrap();
    randomise(&policy);
    let ckpt = dir.path().join("policy.safetensors");
    policy.save(&ckpt, serde_json::json!({})).unwrap();
    let (policy, _) = GaussianPolicy::load(&ckpt, Device::Cpu).unwrap();
    assert_eq!(policy.residual_scale(), Some(0.3));
    export::export_policy(&policy, &ckpt, &dir.path().join("export")).unwrap();
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("export/config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["residual"]["scale"], serde_json::json!(0.3));

    let obs = frames(6, 32, 2);
    let rust = policy.act_mean(&policy.obs_batch(&obs).unwrap()).unwrap();
    let py = python_actions(dir.path(), &[obs]);
    assert_close(&rust, &py);
}
