//! The success classifier C_ψ(x) → P(success | x) of World4RL §III-A (Eq. 3), used as the sparse reward
//! `r_t = 1[C(x_{t+1}) > threshold]` (or the probability itself) inside the imagined environment.
//!
//! Two backbones:
//! * `small` (default): the policy side's [`ConvEncoder`], fast enough to label every imagined frame on a
//!   CPU;
//! * `resnet18`: torchvision's ResNet-18 layout (the paper's backbone; tensor names `conv1.weight`,
//!   `layer1.0.bn1.running_mean`, ...), so a user-supplied torchvision ResNet-18 safetensors file can
//!   initialise it through [`RewardClassifier::load_backbone`]. Its input is mapped to ImageNet
//!   normalisation.
//!
//! Both are followed by a 2-layer MLP head giving one logit.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

use crate::checkpoint;
use crate::policy::encoder::{ConvEncoder, EncoderConfig};
use crate::policy::obs::{random_dihedral, random_shift, resize_u8, to_float};

/// Which image backbone the classifier uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backbone {
    /// The small strided CNN ([`EncoderConfig`]).
    #[default]
    Small,
    /// torchvision's ResNet-18 without its final layer (512 features).
    Resnet18,
}

/// How the classifier's output becomes a reward.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RewardMode {
    /// `1[C(x) > threshold]` (the paper's sparse reward; default).
    #[default]
    Binary,
    /// `C(x)` itself.
    Probability,
}

/// Architecture of [`RewardClassifier`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassifierConfig {
    /// `small` (default) or `resnet18`.
    pub backbone: Backbone,
    /// The small backbone's layout (ignored for `resnet18`); default: global pooling (`pool = 1`).
    pub encoder: EncoderConfig,
    /// Hidden width of the head (default 128).
    pub hidden: i64,
}

impl Default for ClassifierConfig {
    /// The small backbone with **global** average pooling (`pool = 1`): success is a property of the
    /// whole scene (is the block inside the square, does the lever cover its target), and pooling away
    /// positions stops the network from memorising the few scene layouts of the training episodes
    /// (measured on the tabletop suite: held-out F1 0.14 → 0.89 on `turn-lever` with 96 episodes).
    fn default() -> Self {
        Self {
            backbone: Backbone::Small,
            encoder: EncoderConfig {
                pool: 1,
                ..EncoderConfig::default()
            },
            hidden: 128,
        }
    }
}

enum Body {
    Small(ConvEncoder),
    Resnet(nn::FuncT<'static>),
}

/// The classifier. It owns its variables.
pub struct RewardClassifier {
    vs: nn::VarStore,
    cfg: ClassifierConfig,
    image_size: usize,
    threshold: f64,
    mode: RewardMode,
    task: String,
    body: Body,
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl std::fmt::Debug for RewardClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RewardClassifier")
            .field("cfg", &self.cfg)
            .field("image_size", &self.image_size)
            .field("threshold", &self.threshold)
            .field("mode", &self.mode)
            .field("task", &self.task)
            .finish()
    }
}

impl RewardClassifier {
    /// A freshly initialised classifier for `image_size` frames.
    pub fn new(
        cfg: &ClassifierConfig,
        image_size: usize,
        threshold: f64,
        mode: RewardMode,
        task: &str,
        device: Device,
    ) -> Result<Self> {
        if image_size < 8 {
            bail!("the classifier's image size must be at least 8 pixels (got {image_size})");
        }
        if !(0.0..1.0).contains(&threshold) {
            bail!("reward.threshold must lie in [0, 1) (got {threshold})");
        }
        if cfg.hidden <= 0 {
            bail!(
                "reward.classifier.hidden must be positive (got {})",
                cfg.hidden
            );
        }
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let (body, feat) = match cfg.backbone {
            Backbone::Small => {
                let e = ConvEncoder::new(&root / "encoder", 3, &cfg.encoder)?;
                let f = e.features();
                (Body::Small(e), f)
            }
            Backbone::Resnet18 => (
                Body::Resnet(tch::vision::resnet::resnet18_no_final_layer(
                    &(&root / "backbone"),
                )),
                512,
            ),
        };
        let fc1 = nn::linear(&root / "fc1", feat, cfg.hidden, Default::default());
        let fc2 = nn::linear(&root / "fc2", cfg.hidden, 1, Default::default());
        Ok(Self {
            vs,
            cfg: cfg.clone(),
            image_size,
            threshold,
            mode,
            task: task.to_string(),
            body,
            fc1,
            fc2,
        })
    }

    /// The variables.
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// Input frame size.
    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// Decision threshold.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// Reward mode.
    pub fn mode(&self) -> RewardMode {
        self.mode
    }

    /// Task the classifier was trained for.
    pub fn task(&self) -> &str {
        &self.task
    }

    /// Device of the variables.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Logits `[B]` of float frames `[B, 3, h, w]` in `[-1, 1]` at the classifier's size.
    /// `train` switches batch-norm statistics (ResNet) on.
    pub fn logits(&self, x: &Tensor, train: bool) -> Tensor {
        let feat = match &self.body {
            Body::Small(e) => e.forward(x),
            Body::Resnet(r) => {
                let dev = x.device();
                let mean = Tensor::from_slice(&[0.485f32, 0.456, 0.406])
                    .view([1, 3, 1, 1])
                    .to_device(dev);
                let std = Tensor::from_slice(&[0.229f32, 0.224, 0.225])
                    .view([1, 3, 1, 1])
                    .to_device(dev);
                r.forward_t(&((((x + 1.0) * 0.5) - mean) / std), train)
            }
        };
        feat.apply(&self.fc1)
            .relu()
            .apply(&self.fc2)
            .squeeze_dim(-1)
    }

    /// Training-time logits of `u8` frames with random-shift and Gaussian-noise augmentation.
    pub fn logits_augmented(
        &self,
        frames: &Tensor,
        shift_pad: i64,
        noise_std: f64,
        dihedral: bool,
    ) -> Tensor {
        let mut x = random_shift(&to_float(frames), shift_pad);
        if dihedral {
            x = random_dihedral(&x);
        }
        if noise_std > 0.0 {
            x = &x + x.randn_like() * noise_std;
        }
        self.logits(&x, true)
    }

    /// P(success) `[B]` of `u8` frames `[B, 3, H, W]` (resized to the classifier's size when needed).
    pub fn prob_u8(&self, frames: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let x = to_float(&resize_u8(
                &frames.to_device(self.device()),
                self.image_size,
            ));
            self.logits(&x, false).sigmoid()
        })
    }

    /// P(success) `[B]` of float frames in `[-1, 1]` at the classifier's size (e.g. world-model output).
    pub fn prob(&self, x: &Tensor) -> Tensor {
        tch::no_grad(|| self.logits(&x.to_device(self.device()), false).sigmoid())
    }

    /// The reward of probabilities `p` (`[B]`): thresholded or the probability, by mode.
    pub fn reward_of(&self, p: &Tensor) -> Tensor {
        match self.mode {
            RewardMode::Binary => p.gt(self.threshold).to_kind(Kind::Float),
            RewardMode::Probability => p.shallow_clone(),
        }
    }

    /// Initialises the backbone from a safetensors file of a pretrained network (for `resnet18`, e.g.
    /// torchvision's `resnet18` weights saved with `safetensors.torch.save_file`). Tensor `prefix + name`
    /// of the file initialises backbone variable `name` when the shapes agree; the head stays random.
    /// Returns how many tensors were copied; copying none is an error.
    pub fn load_backbone(&mut self, path: &Path, prefix: &str) -> Result<usize> {
        let (tensors, _) = checkpoint::load_tensors(path)?;
        let body_prefix = match self.cfg.backbone {
            Backbone::Small => "encoder.",
            Backbone::Resnet18 => "backbone.",
        };
        let mut copied = 0;
        let mut mismatched = Vec::new();
        tch::no_grad(|| {
            for (name, mut var) in self.vs.variables() {
                let Some(short) = name.strip_prefix(body_prefix) else {
                    continue;
                };
                if let Some(src) = tensors.get(&format!("{prefix}{short}")) {
                    if src.size() == var.size() {
                        var.copy_(&src.to_kind(var.kind()).to_device(var.device()));
                        copied += 1;
                    } else {
                        mismatched.push(short.to_string());
                    }
                }
            }
        });
        if copied == 0 {
            bail!(
                "{}: no tensor matched the {:?} backbone (looked for names like '{prefix}{}'{}); check reward.pretrained_prefix and reward.classifier.backbone",
                path.display(),
                self.cfg.backbone,
                if self.cfg.backbone == Backbone::Resnet18 { "conv1.weight" } else { "conv0.weight" },
                if mismatched.is_empty() { String::new() } else { format!(", {} had other shapes", mismatched.len()) }
            );
        }
        tracing::info!(
            "reward: initialised {copied} backbone tensors from {}",
            path.display()
        );
        Ok(copied)
    }

    /// Writes the classifier atomically to `path`, with `extra` metadata.
    pub fn save(&self, path: &Path, extra: serde_json::Value) -> Result<()> {
        let meta = serde_json::json!({
            "kind": "reward-classifier",
            "config": self.cfg,
            "image_size": self.image_size,
            "threshold": self.threshold,
            "mode": self.mode,
            "task": self.task,
            "extra": extra,
        });
        checkpoint::save(path, &self.vs, &meta)
    }

    /// Loads a classifier written by [`save`](Self::save); returns it and its `extra` metadata.
    pub fn load(path: &Path, device: Device) -> Result<(Self, serde_json::Value)> {
        let (tensors, meta) = checkpoint::load_tensors(path)?;
        if meta.get("kind").and_then(|k| k.as_str()) != Some("reward-classifier") {
            bail!(
                "{} is not a reward-classifier checkpoint; pass a file written by `world4rl train reward`",
                path.display()
            );
        }
        let bad = || format!("{}: bad classifier metadata", path.display());
        let cfg: ClassifierConfig =
            serde_json::from_value(meta["config"].clone()).with_context(bad)?;
        let image_size = meta["image_size"].as_u64().with_context(bad)? as usize;
        let threshold = meta["threshold"].as_f64().with_context(bad)?;
        let mode: RewardMode = serde_json::from_value(meta["mode"].clone()).with_context(bad)?;
        let task = meta["task"].as_str().unwrap_or_default().to_string();
        let mut c = Self::new(&cfg, image_size, threshold, mode, &task, device)?;
        checkpoint::copy_into_varstore(&tensors, &mut c.vs, "model.", path)?;
        Ok((c, meta["extra"].clone()))
    }

    /// Overrides the threshold and reward mode (e.g. from the refinement config).
    pub fn set_reward(&mut self, threshold: f64, mode: RewardMode) -> Result<()> {
        if !(0.0..1.0).contains(&threshold) {
            bail!("the reward threshold must lie in [0, 1) (got {threshold})");
        }
        self.threshold = threshold;
        self.mode = mode;
        Ok(())
    }
}
