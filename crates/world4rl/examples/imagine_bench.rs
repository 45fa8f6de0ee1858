//! Times one imagination step of refinement: the Gaussian policy acting on the newest imagined
//! frames, the world model sampling the next frames from 4 context frames and actions, and the
//! success classifier judging them, for a batch of imagined environments ([`ImaginedEnv`], driven
//! as PPO's rollout drives it). Randomly initialised models; the start states are a small synthetic
//! dataset written to a temporary folder.
//!
//! ```text
//! cargo run --release -p world4rl --example imagine_bench -- [--preset cpu|wm64] [--batch 32]
//!     [--steps 20] [--warmup 3] [--threads 2] [--precision f32|bf16] [--channels-last]
//! ```
//!
//! Presets (the policy and the classifier always read 32 px frames, as in
//! `configs/tabletop-cpu.toml`):
//!
//! * `cpu`: the demo's world model (`WorldModelConfig::cpu`: 32 px, channels [32,32,64,64], depth
//!   1, attention at the 4x4 level, cond 256, 2 Euler steps; 2.04 M parameters);
//! * `wm64`: the bake-off's 64 px U-Net on the demo's recipe (channels [32,64,64,128], depth 2, no
//!   level attention, cond 256, 2 Euler steps; 5.74 M parameters), as `examples/wm_bench --spike`.
//!
//! The policy is `PolicyConfig::default()` (3x3 convs [32,64,64] with strides [2,2,1], spatial
//! softmax, 256 features, two hidden layers of 256, tanh mean and log-σ heads) and the classifier
//! `ClassifierConfig::default()` (3x3 convs [32,64,64] with stride 2, global average pooling, 256
//! features, a hidden layer of 128, one logit), with the tabletop suite's 2-D actions.
//!
//! `scripts/bench/imagination.sh` runs it alternately with the PyTorch reference
//! `scripts/bench/imagine_reference.py` (same shapes) and prints the ratio. Prints one JSON line.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use tch::{nn, Device};
use w4rl_data::{Dataset, DatasetSpec, DatasetWriter, Episode, EpisodeKind, FrameRender};
use w4rl_envs::{Obs, VecEnv};
use world4rl::diffusion::sigmas;
use world4rl::policy::{GaussianPolicy, PolicyConfig, PolicySpec};
use world4rl::ppo::imagined_env::{ImaginedEnv, ImaginedEnvConfig};
use world4rl::reward::{ClassifierConfig, RewardClassifier, RewardMode};
use world4rl::world_model::{Precision, WorldModel, WorldModelConfig};

/// Action dimensions of the tabletop suite (pusher displacement x, y).
const ACTION_DIM: usize = 2;
/// Frame side the policy and the classifier read (the demo's `bc.image_size`, `reward.image_size`).
const POLICY_SIZE: usize = 32;
/// Frame side of the recorded start episodes (`experiment.image_size` of the demo).
const DATA_SIZE: usize = 64;
/// Start episodes written to the temporary dataset.
const START_EPISODES: usize = 8;
/// Steps of each start episode.
const START_STEPS: usize = 20;
/// Task name of the synthetic start episodes.
const TASK: &str = "bench";
/// Decision threshold of the classifier (its value does not change the cost).
const THRESHOLD: f64 = 0.5;

/// The flags the example knows.
const FLAGS: [&str; 7] = [
    "--preset",
    "--batch",
    "--steps",
    "--warmup",
    "--threads",
    "--precision",
    "--channels-last",
];

/// The world model of a preset (see the module docs).
fn preset(name: &str) -> Result<WorldModelConfig> {
    match name {
        "cpu" => Ok(WorldModelConfig::cpu()),
        "wm64" => {
            let mut c = WorldModelConfig::cpu();
            c.image_size = 64;
            c.unet.channels = vec![32, 64, 64, 128];
            c.unet.depths = vec![2; 4];
            c.unet.attention = vec![false; 4];
            c.unet.cond_channels = 256;
            Ok(c)
        }
        other => bail!("unknown preset '{other}' (expected cpu or wm64)"),
    }
}

/// Median of a non-empty sample (the mean of the two middle values for an even count).
fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n.is_multiple_of(2) {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    } else {
        s[n / 2]
    }
}

/// Trainable parameters of a variable store.
fn trainable(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}

/// Paints a `side x side` square of colour `rgb` at column `x`, row `y` of a `size x size` frame.
fn fill(frame: &mut [u8], size: usize, x: usize, y: usize, side: usize, rgb: [u8; 3]) {
    for r in y..(y + side).min(size) {
        for c in x..(x + side).min(size) {
            let i = (r * size + c) * 3;
            frame[i..i + 3].copy_from_slice(&rgb);
        }
    }
}

/// A tabletop-like frame: a light table, a red block and a dark pusher placed by episode and step.
fn scene(size: usize, episode: usize, t: usize) -> Vec<u8> {
    let mut f = [200u8, 200, 190].repeat(size * size);
    let block = size / 8;
    let span = size - block;
    let (bx, by) = ((episode * 7 + t) % span, (episode * 13 + 2 * t) % span);
    fill(&mut f, size, bx, by, block, [200, 60, 40]);
    let room = size - 2;
    let (px, py) = ((episode * 3 + 3 * t) % room, (episode * 5 + t) % room);
    fill(&mut f, size, px, py, 2, [30, 30, 30]);
    f
}

/// A deterministic action in `[-1, 1]^2` for step `t` of episode `episode`.
fn action(episode: usize, t: usize) -> Vec<f32> {
    vec![
        ((episode + t) % 21) as f32 / 10.0 - 1.0,
        ((3 * episode + 2 * t) % 21) as f32 / 10.0 - 1.0,
    ]
}

/// Writes the synthetic start episodes into `dir` and opens them as a dataset.
fn start_dataset(dir: &Path) -> Result<Dataset> {
    let spec = DatasetSpec {
        suite: "synthetic".into(),
        image_size: DATA_SIZE,
        action_dim: ACTION_DIM,
        action_low: vec![-1.0; ACTION_DIM],
        action_high: vec![1.0; ACTION_DIM],
        state_dim: 0,
        render: FrameRender::default(),
    };
    {
        let writer = DatasetWriter::create(dir, spec.clone())?;
        for e in 0..START_EPISODES {
            let first = scene(DATA_SIZE, e, 0);
            let mut ep = Episode::start(
                &spec,
                TASK,
                EpisodeKind::Expert,
                e,
                e as u64,
                &first,
                &[],
                false,
            )?;
            for t in 1..=START_STEPS {
                ep.push(&action(e, t - 1), 0.0, &scene(DATA_SIZE, e, t), &[], false)?;
            }
            writer.write(&ep)?;
        }
    }
    Ok(Dataset::open(dir)?)
}

fn main() -> Result<()> {
    // as the CLI does (WORLD4RL_MALLOC=system measures glibc's defaults)
    let malloc = world4rl::util::alloc::keep_freed_memory()?.label();
    let args: Vec<String> = std::env::args().skip(1).collect();
    for a in args.iter().filter(|a| a.starts_with("--")) {
        ensure!(
            FLAGS.contains(&a.as_str()),
            "unknown flag {a} (known: {})",
            FLAGS.join(", ")
        );
    }
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let preset_name = get("--preset").unwrap_or_else(|| "cpu".into());
    let cfg = preset(&preset_name)?;
    // a numeric flag, its default when absent; a value that does not parse names the flag
    let number = |k: &str, default: usize| -> Result<usize> {
        get(k)
            .map(|v| v.parse::<usize>())
            .transpose()
            .with_context(|| k.to_string())
            .map(|v| v.unwrap_or(default))
    };
    let batch = number("--batch", 32)?;
    let steps = number("--steps", 20)?;
    let warm = number("--warmup", 3)?;
    let threads = i32::try_from(number("--threads", 2)?).context("--threads")?;
    let precision = get("--precision")
        .map(|p| p.parse::<Precision>())
        .transpose()?
        .unwrap_or_default();
    let channels_last = args.iter().any(|a| a == "--channels-last");
    ensure!(steps >= 1, "--steps must be at least 1");
    ensure!(batch >= 1, "--batch must be at least 1");
    ensure!(threads >= 1, "--threads must be at least 1");

    tch::set_num_threads(threads);
    tch::set_num_interop_threads(1);
    tch::manual_seed(0);
    let dev = Device::Cpu;

    let mut wm = WorldModel::new(cfg.clone(), ACTION_DIM, dev)?;
    wm.set_imagination(None, precision, channels_last)?;
    let spec = PolicySpec {
        image_size: POLICY_SIZE,
        action_dim: ACTION_DIM,
        state_dim: 0,
        action_low: vec![-1.0; ACTION_DIM],
        action_high: vec![1.0; ACTION_DIM],
        task: TASK.into(),
        render_size: DATA_SIZE,
        render: FrameRender::default(),
    };
    let policy = GaussianPolicy::new(&PolicyConfig::default(), &spec, dev)?;
    let clf = RewardClassifier::new(
        &ClassifierConfig::default(),
        POLICY_SIZE,
        THRESHOLD,
        RewardMode::Binary,
        TASK,
        dev,
    )?;
    let params_wm = wm.param_count();
    let params_policy = trainable(policy.var_store());
    let params_clf = trainable(clf.var_store());

    let tmp = tempfile::tempdir().context("creating a temporary folder for the start episodes")?;
    let data = start_dataset(tmp.path()).context("writing the synthetic start episodes")?;
    // no episode ends inside the measurement: the horizon outlasts it, successes do not terminate
    let env_cfg = ImaginedEnvConfig {
        horizon: warm + steps + 1,
        terminate_on_success: false,
        ..Default::default()
    };
    let mut env = ImaginedEnv::new(&wm, &clf, &data, TASK, batch, &env_cfg)?;
    let seeds: Vec<u64> = (0..batch as u64).collect();
    let mut obs: Vec<Obs> = env.try_reset(&seeds)?;
    let mut next_seed = batch as u64;

    let (mut total, mut pol, mut wm_ms, mut clf_ms) = (vec![], vec![], vec![], vec![]);
    for i in 0..warm + steps {
        let t0 = Instant::now();
        let ob = policy.obs_batch(obs.as_slice())?;
        let actions = policy.act_sample(&ob)?;
        let t_policy = t0.elapsed().as_secs_f64() * 1e3;
        let before = env.stats();
        let out = env
            .step(&actions)
            .context("stepping the imagined environments")?;
        let after = env.stats();
        let mut ended = Vec::new();
        obs = Vec::with_capacity(out.len());
        for (k, st) in out.into_iter().enumerate() {
            if st.terminated || st.truncated {
                ended.push(k);
            }
            obs.push(st.obs);
        }
        let t_total = t0.elapsed().as_secs_f64() * 1e3;
        if i >= warm {
            total.push(t_total);
            pol.push(t_policy);
            wm_ms.push((after.world_model_seconds - before.world_model_seconds) * 1e3);
            clf_ms.push((after.classifier_seconds - before.classifier_seconds) * 1e3);
        }
        // outside the timed step: rows that ended start again (none do with the horizon above)
        for k in ended {
            obs[k] = env.reset_row(k, next_seed)?;
            next_seed += 1;
        }
    }

    let step_ms = median(&total);
    let out = serde_json::json!({
        "bench": "imagine",
        "side": "world4rl",
        "preset": preset_name,
        "image_size": cfg.image_size,
        "channels": cfg.unet.channels,
        "depths": cfg.unet.depths,
        "attention": cfg.unet.attention,
        "cond_channels": cfg.unet.cond_channels,
        "sampler_steps": cfg.sampler.steps,
        "sigmas": sigmas(&cfg.sampler),
        "policy_size": POLICY_SIZE,
        "batch": batch,
        "threads": threads,
        "malloc": malloc,
        "peak_rss_mib": world4rl::util::memory::peak_mib(),
        "precision": precision,
        "channels_last": channels_last,
        "steps": steps,
        "warmup": warm,
        "params": {
            "world_model": params_wm,
            "policy": params_policy,
            "classifier": params_clf,
        },
        "params_total": params_wm + params_policy + params_clf,
        "imagine_step_ms_median": step_ms,
        "imagine_step_ms_min": total.iter().cloned().fold(f64::INFINITY, f64::min),
        "policy_ms_median": median(&pol),
        "world_model_ms_median": median(&wm_ms),
        "classifier_ms_median": median(&clf_ms),
        "transitions_per_sec": batch as f64 * 1e3 / step_ms,
    });
    println!("{out}");
    Ok(())
}
