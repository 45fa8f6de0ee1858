//! `[reward]`: every hyper-parameter of the success classifier's training, and the ensemble members'
//! differences from it.

use std::path::PathBuf;

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};
use w4rl_data::EpisodeKind;

use super::classifier::{ClassifierConfig, RewardMode};
use crate::diffusion::SamplerConfig;
use crate::world_model::Precision;

/// `[reward]`: the success classifier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RewardConfig {
    /// Architecture.
    pub classifier: ClassifierConfig,
    /// Optional safetensors file of a pretrained backbone (e.g. torchvision's ResNet-18) to start from.
    pub pretrained: Option<PathBuf>,
    /// Name prefix of the backbone tensors inside `pretrained` (default none).
    pub pretrained_prefix: String,
    /// Tasks to train a classifier for (empty: every task of the dataset).
    pub tasks: Vec<String>,
    /// Episode kinds whose frames are used (default expert and policy, as in the paper).
    pub kinds: Vec<EpisodeKind>,
    /// Input frame size (frames are reduced by area averaging). In an experiment config 0 means the
    /// world model's frame size (`ExperimentConfig::resolve`); a learner called with 0 uses the
    /// dataset's.
    pub image_size: usize,
    /// Gradient steps (default 3000).
    pub steps: usize,
    /// Minibatch size, half successful frames (default 64).
    pub batch_size: usize,
    /// Adam learning rate (default 1e-3).
    pub lr: f64,
    /// Adam weight decay (default 0).
    pub weight_decay: f64,
    /// Random-shift augmentation in pixels (default 2).
    pub shift_pad: i64,
    /// Std of Gaussian noise added to the `[-1, 1]` input during training (default 0.03).
    pub noise_std: f64,
    /// Augment with random 90° rotations and mirror images (valid for top-down scenes). Default: on
    /// for the `tabletop` suite, off otherwise.
    pub dihedral: Option<bool>,
    /// Imagined frames added to the training set when a world model is available (0 = none, the
    /// default: refinement imagines 15-step branches from real contexts, where the classifier trained
    /// on real frames only was the better judge on every task, AUC(15) 0.99 / 0.95 / 0.90 against
    /// 0.95 / 0.95 / 0.79 with 4000 imagined frames, `docs/refinement.md`). Held-out metrics on
    /// imagined frames use up to half as many.
    pub world_model_frames: usize,
    /// Imagined frames are 1 to this many steps ahead of their real context (default 4).
    pub world_model_horizon: usize,
    /// More imagined frames, from whole episodes replayed open-loop from their first frames with
    /// their recorded actions (as the imagined environment runs them), each labelled with the
    /// success flag of the real frame it stands for; added to the `world_model_frames` (0 = none,
    /// the default). Held-out metrics on imagined frames then use up to half as many more.
    pub world_model_open_loop_frames: usize,
    /// Number format of the world model that imagines those frames (default `f32`). In an
    /// experiment config `resolve` sets it from `refine.world_model_precision` (the classifier judges
    /// the frames of the model refinement imagines with), and a file that writes another value than
    /// the default or refinement's is refused.
    pub world_model_precision: Precision,
    /// Channels-last f32 U-Net for those frames (default false); set from
    /// `refine.world_model_channels_last` like the precision.
    pub world_model_channels_last: bool,
    /// The sampler of the world model that imagines those frames (default: the model's own); set
    /// from `refine.sampler` like the precision.
    pub world_model_sampler: Option<SamplerConfig>,
    /// Fraction of episodes held out for the metrics (default 0.2).
    pub holdout_fraction: f64,
    /// Fraction of the remaining (training) episodes kept for model selection and threshold calibration
    /// (default 0.15; 0 = select the last weights and calibrate on the training frames).
    pub val_fraction: f64,
    /// Score the validation frames every this many steps and keep the best weights (default 250).
    pub eval_every: usize,
    /// Decision threshold on P(success). Default: calibrated after training as the threshold in
    /// `[0.5, 0.95]` that maximises F1 on the validation frames (balanced minibatches shift
    /// probabilities towards the minority class, so 0.5 would over-predict rare successes).
    pub threshold: Option<f64>,
    /// `binary` (default, 1[C > threshold]) or `probability`.
    pub reward: RewardMode,
    /// Log every this many steps (default 100).
    pub log_every: usize,
    /// Seed of the split, initialisation and sampling.
    pub seed: u64,
    /// Further classifiers per task, each trained like this one but on its own imagined frames, that
    /// must also call a frame successful (`[[reward.members]]`; default none). See
    /// [`RewardClassifier::with_members`]. An ablation: the pessimistic ensemble did no better than
    /// the one classifier (`docs/refinement.md`, "A classifier that has seen whole imagined episodes").
    pub members: Vec<MemberConfig>,
}

/// `[[reward.members]]`: what a further classifier of the ensemble trains on differently; everything
/// else is the `[reward]` section's (its seed is offset by the member's number).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// As `reward.world_model_frames`.
    pub world_model_frames: usize,
    /// As `reward.world_model_horizon`.
    pub world_model_horizon: usize,
    /// As `reward.world_model_open_loop_frames` (default 0).
    #[serde(default)]
    pub world_model_open_loop_frames: usize,
}

impl RewardConfig {
    /// The config that trains member `k` (0-based) of the ensemble.
    pub fn member(&self, k: usize) -> RewardConfig {
        let m = &self.members[k];
        RewardConfig {
            world_model_frames: m.world_model_frames,
            world_model_horizon: m.world_model_horizon,
            world_model_open_loop_frames: m.world_model_open_loop_frames,
            seed: self.seed.wrapping_add(k as u64 + 1),
            members: Vec::new(),
            ..self.clone()
        }
    }
}

impl Default for RewardConfig {
    fn default() -> Self {
        Self {
            classifier: ClassifierConfig::default(),
            pretrained: None,
            pretrained_prefix: String::new(),
            tasks: Vec::new(),
            kinds: vec![EpisodeKind::Expert, EpisodeKind::Policy],
            image_size: 0,
            steps: 3000,
            batch_size: 64,
            lr: 1e-3,
            weight_decay: 0.0,
            shift_pad: 2,
            noise_std: 0.03,
            dihedral: None,
            world_model_frames: 0,
            world_model_horizon: 4,
            world_model_open_loop_frames: 0,
            world_model_precision: Precision::F32,
            world_model_channels_last: false,
            world_model_sampler: None,
            holdout_fraction: 0.2,
            val_fraction: 0.15,
            eval_every: 250,
            threshold: None,
            reward: RewardMode::Binary,
            log_every: 100,
            seed: 0,
            members: Vec::new(),
        }
    }
}

impl RewardConfig {
    /// Checks value ranges.
    pub fn validate(&self) -> Result<()> {
        ensure!(self.steps > 0, "reward.steps must be positive");
        ensure!(self.batch_size >= 2, "reward.batch_size must be at least 2");
        ensure!(
            self.lr > 0.0 && self.lr.is_finite(),
            "reward.lr must be positive"
        );
        ensure!(self.shift_pad >= 0, "reward.shift_pad must be >= 0");
        ensure!(self.noise_std >= 0.0, "reward.noise_std must be >= 0");
        ensure!(
            (0.0..1.0).contains(&self.holdout_fraction),
            "reward.holdout_fraction must lie in [0, 1) (got {})",
            self.holdout_fraction
        );
        if let Some(t) = self.threshold {
            ensure!(
                (0.0..1.0).contains(&t),
                "reward.threshold must lie in [0, 1) (got {t})"
            );
        }
        ensure!(
            !self.kinds.is_empty(),
            "reward.kinds is empty: list at least one episode kind"
        );
        ensure!(self.log_every > 0, "reward.log_every must be positive");
        ensure!(
            (0.0..1.0).contains(&self.val_fraction),
            "reward.val_fraction must lie in [0, 1) (got {})",
            self.val_fraction
        );
        ensure!(self.eval_every > 0, "reward.eval_every must be positive");
        ensure!(
            self.world_model_horizon > 0,
            "reward.world_model_horizon must be positive"
        );
        for (k, m) in self.members.iter().enumerate() {
            ensure!(
                m.world_model_horizon > 0,
                "reward.members[{k}].world_model_horizon must be positive"
            );
        }
        Ok(())
    }
}
