//! The synthetic `dots` task the learning tests share: a 3x3 white dot on a dark 16x16 frame, an expert
//! action that is a fixed function of the dot's position, success when the dot is in the right half;
//! and small freshly initialised classifiers and policies for it.
#![allow(dead_code)] // not every test binary that includes this module uses all of it

use w4rl_data::{Dataset, DatasetSpec, DatasetWriter, Episode, EpisodeKind};
use world4rl::policy::{EncoderConfig, GaussianPolicy, PolicyConfig, PolicySpec};
use world4rl::reward::{ClassifierConfig, RewardClassifier, RewardMode};

pub const SIZE: usize = 16;

/// A 3x3 white dot at (x, y) on a dark background.
pub fn frame(x: usize, y: usize) -> Vec<u8> {
    let mut f = vec![20u8; SIZE * SIZE * 3];
    for r in y.saturating_sub(1)..(y + 2).min(SIZE) {
        for c in x.saturating_sub(1)..(x + 2).min(SIZE) {
            f[(r * SIZE + c) * 3..(r * SIZE + c) * 3 + 3].copy_from_slice(&[250, 250, 250]);
        }
    }
    f
}

/// The expert's action is a fixed function of the dot's position; success = dot in the right half.
pub fn action_of(x: usize, y: usize) -> Vec<f32> {
    vec![(x as f32 / 15.0) * 1.6 - 0.8, 0.8 - (y as f32 / 15.0) * 1.6]
}

pub fn synthetic_dataset(dir: &std::path::Path, episodes: usize, steps: usize) -> Dataset {
    synthetic_dataset_of(dir, episodes, steps, EpisodeKind::Expert)
}

pub fn synthetic_dataset_of(
    dir: &std::path::Path,
    episodes: usize,
    steps: usize,
    kind: EpisodeKind,
) -> Dataset {
    let spec = DatasetSpec {
        suite: "synthetic".into(),
        image_size: SIZE,
        action_dim: 2,
        action_low: vec![-1.0; 2],
        action_high: vec![1.0; 2],
        state_dim: 2,
        render: w4rl_data::FrameRender::default(),
    };
    let w = DatasetWriter::create(dir, spec.clone()).unwrap();
    let mut state = 12345u64;
    let mut rnd = |n: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) % n as u64) as usize
    };
    for e in 0..episodes {
        let (mut x, mut y) = (1 + rnd(7), 1 + rnd(14));
        let mut ep = Episode::start(
            &spec,
            "dots",
            kind,
            e,
            e as u64,
            &frame(x, y),
            &[x as f32, y as f32],
            false,
        )
        .unwrap();
        for _ in 0..steps {
            let a = action_of(x, y);
            x = 1 + rnd(14);
            y = 1 + rnd(14);
            ep.push(&a, 0.0, &frame(x, y), &[x as f32, y as f32], x >= 8)
                .unwrap();
        }
        w.write(&ep).unwrap();
    }
    Dataset::open(dir).unwrap()
}

pub fn small_encoder() -> EncoderConfig {
    EncoderConfig {
        channels: vec![16, 32],
        pool: 4,
        features: 64,
        ..Default::default()
    }
}

pub fn tiny_classifier(threshold: f64) -> RewardClassifier {
    let cfg = ClassifierConfig {
        encoder: small_encoder(),
        hidden: 16,
        ..Default::default()
    };
    RewardClassifier::new(
        &cfg,
        SIZE,
        threshold,
        RewardMode::Binary,
        "dots",
        tch::Device::Cpu,
    )
    .unwrap()
}

/// A freshly initialised small image policy for the 2-D `dots` task.
pub fn tiny_policy() -> GaussianPolicy {
    let spec = PolicySpec {
        image_size: SIZE,
        action_dim: 2,
        state_dim: 0,
        action_low: vec![-1.0; 2],
        action_high: vec![1.0; 2],
        task: "dots".into(),
        render_size: SIZE,
        render: Default::default(),
    };
    let cfg = PolicyConfig {
        encoder: small_encoder(),
        hidden: 16,
        ..Default::default()
    };
    GaussianPolicy::new(&cfg, &spec, tch::Device::Cpu).unwrap()
}
