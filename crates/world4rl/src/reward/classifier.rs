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
//!
//! A classifier can carry **members**: further classifiers of the same task (e.g. one trained on
//! imagined frames near a real context beside one trained on whole open-loop replays) that must agree.
//! A frame is then a success only when every one of them calls it one (a pessimistic ensemble, the
//! guard of model-based offline RL against a learned reward the policy learns to exploit). The ensemble
//! reports one score on the first classifier's scale, `min_k g_k(p_k)`, where `g_k` maps member `k`'s
//! probability monotonically onto that scale so that its own threshold lands on the first one's:
//! `score > threshold` exactly when every member's `p_k > threshold_k`. Members are saved in the same
//! checkpoint file.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

use crate::policy::encoder::{ConvEncoder, EncoderConfig};
use crate::policy::obs::{random_dihedral, random_shift};
use crate::util::checkpoint;
use crate::util::frames::{chw_to_model, resize_chw};

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
    /// Classifiers that must also call a frame successful (see the module docs); never nested.
    members: Vec<RewardClassifier>,
}

/// Maps probability `p` of a classifier with threshold `from` onto the scale of threshold `to`:
/// piecewise linear and increasing, `from -> to`, `0 -> 0`, `1 -> 1`.
fn rescale(p: &Tensor, from: f64, to: f64) -> Tensor {
    let below = if from > 0.0 {
        p * (to / from)
    } else {
        p.zeros_like()
    };
    let above = (p - from) * ((1.0 - to) / (1.0 - from)) + to;
    below.where_self(&p.le(from), &above)
}

impl std::fmt::Debug for RewardClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RewardClassifier")
            .field("cfg", &self.cfg)
            .field("image_size", &self.image_size)
            .field("threshold", &self.threshold)
            .field("mode", &self.mode)
            .field("task", &self.task)
            .field("members", &self.members)
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
            members: Vec::new(),
        })
    }

    /// This classifier with `members` that must also call a frame successful (see the module docs).
    /// Members must judge the same task; they keep their own thresholds and image sizes.
    pub fn with_members(mut self, members: Vec<RewardClassifier>) -> Result<Self> {
        for m in &members {
            if m.task != self.task {
                bail!(
                    "a classifier of task '{}' cannot join one of task '{}'",
                    m.task,
                    self.task
                );
            }
            if !m.members.is_empty() {
                bail!("classifier ensembles cannot be nested");
            }
        }
        self.members = members;
        Ok(self)
    }

    /// The members (empty for a single classifier).
    pub fn members(&self) -> &[RewardClassifier] {
        &self.members
    }

    /// Combines this classifier's probabilities `p` with the members' on the same frames (`member_p`
    /// gives a member's probabilities): `min` of the probabilities mapped onto this one's scale.
    fn combine(&self, p: Tensor, member_p: impl Fn(&RewardClassifier) -> Tensor) -> Tensor {
        self.members.iter().fold(p, |acc, m| {
            acc.minimum(&rescale(&member_p(m), m.threshold, self.threshold))
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
        let mut x = random_shift(&chw_to_model(frames), shift_pad);
        if dihedral {
            x = random_dihedral(&x);
        }
        if noise_std > 0.0 {
            x = &x + x.randn_like() * noise_std;
        }
        self.logits(&x, true)
    }

    /// P(success) `[B]` of `u8` frames `[B, 3, H, W]` (resized to the classifier's size when needed);
    /// with members, the ensemble's score (module docs).
    pub fn prob_u8(&self, frames: &Tensor) -> Tensor {
        let own = tch::no_grad(|| {
            let x = chw_to_model(&resize_chw(
                &frames.to_device(self.device()),
                self.image_size,
            ));
            self.logits(&x, false).sigmoid()
        });
        self.combine(own, |m| m.prob_u8(frames).to_device(self.device()))
    }

    /// P(success) `[B]` of float frames in `[-1, 1]` at the classifier's size (e.g. world-model
    /// output); with members, the ensemble's score (members of another size see resized frames).
    pub fn prob(&self, x: &Tensor) -> Tensor {
        let own = tch::no_grad(|| self.logits(&x.to_device(self.device()), false).sigmoid());
        self.combine(own, |m| {
            if m.image_size == self.image_size {
                m.prob(x).to_device(self.device())
            } else {
                m.prob_u8(&crate::util::frames::model_to_chw(x))
                    .to_device(self.device())
            }
        })
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

    fn header(&self) -> serde_json::Value {
        serde_json::json!({
            "config": self.cfg,
            "image_size": self.image_size,
            "threshold": self.threshold,
            "mode": self.mode,
            "task": self.task,
        })
    }

    /// Writes the classifier (and its members, tensors `member<k>.model.*`) atomically to `path`,
    /// with `extra` metadata.
    pub fn save(&self, path: &Path, extra: serde_json::Value) -> Result<()> {
        let mut meta = self.header();
        meta["kind"] = "reward-classifier".into();
        meta["extra"] = extra;
        let mut tensors = checkpoint::varstore_tensors(&self.vs, "model.");
        if !self.members.is_empty() {
            meta["members"] = self.members.iter().map(Self::header).collect();
            for (k, m) in self.members.iter().enumerate() {
                tensors.extend(checkpoint::varstore_tensors(
                    &m.vs,
                    &format!("member{}.model.", k + 1),
                ));
            }
        }
        checkpoint::save_tensors(path, &tensors, &meta)
    }

    fn from_header(meta: &serde_json::Value, path: &Path, device: Device) -> Result<Self> {
        let bad = || format!("{}: bad classifier metadata", path.display());
        let cfg: ClassifierConfig =
            serde_json::from_value(meta["config"].clone()).with_context(bad)?;
        let image_size = meta["image_size"].as_u64().with_context(bad)? as usize;
        let threshold = meta["threshold"].as_f64().with_context(bad)?;
        let mode: RewardMode = serde_json::from_value(meta["mode"].clone()).with_context(bad)?;
        let task = meta["task"].as_str().unwrap_or_default().to_string();
        Self::new(&cfg, image_size, threshold, mode, &task, device).with_context(bad)
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
        let mut c = Self::from_header(&meta, path, device)?;
        checkpoint::copy_into_varstore(&tensors, &mut c.vs, "model.", path)?;
        let mut members = Vec::new();
        if let Some(list) = meta.get("members") {
            let list = list
                .as_array()
                .with_context(|| format!("{}: bad classifier metadata", path.display()))?;
            for (k, m) in list.iter().enumerate() {
                let mut member = Self::from_header(m, path, device)?;
                let prefix = format!("member{}.model.", k + 1);
                checkpoint::copy_into_varstore(&tensors, &mut member.vs, &prefix, path)?;
                members.push(member);
            }
        }
        let c = c
            .with_members(members)
            .with_context(|| path.display().to_string())?;
        Ok((c, meta["extra"].clone()))
    }

    /// Overrides the threshold and reward mode (e.g. from the refinement config). Members keep their
    /// own thresholds.
    pub fn set_reward(&mut self, threshold: f64, mode: RewardMode) -> Result<()> {
        if !(0.0..1.0).contains(&threshold) {
            bail!("the reward threshold must lie in [0, 1) (got {threshold})");
        }
        self.threshold = threshold;
        self.mode = mode;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classifier whose probability is `p` on every frame (zero last-layer weights, bias logit(p)).
    fn constant(p: f64, threshold: f64, size: usize) -> RewardClassifier {
        let c = RewardClassifier::new(
            &ClassifierConfig::default(),
            size,
            threshold,
            RewardMode::Binary,
            "push-block",
            Device::Cpu,
        )
        .unwrap();
        tch::no_grad(|| {
            let mut fc2 = c.fc2.ws.shallow_clone();
            let _ = fc2.zero_();
            let mut b = c.fc2.bs.as_ref().unwrap().shallow_clone();
            let _ = b.fill_((p / (1.0 - p)).ln());
        });
        c
    }

    fn frames(size: i64) -> Tensor {
        Tensor::randint(256, [5, 3, size, size], (Kind::Uint8, Device::Cpu))
    }

    #[test]
    fn rescale_maps_threshold_onto_threshold_and_keeps_order() {
        let p = Tensor::from_slice(&[0.0f32, 0.1, 0.3, 0.5, 0.9, 1.0]);
        let q = Vec::<f32>::try_from(rescale(&p, 0.3, 0.6)).unwrap();
        let want = [
            0.0,
            0.2,
            0.6,
            0.6 + 0.2 * 0.4 / 0.7,
            0.6 + 0.6 * 0.4 / 0.7,
            1.0,
        ];
        for (a, b) in q.iter().zip(want) {
            assert!((f64::from(*a) - b).abs() < 1e-6, "{q:?}");
        }
        assert!(q.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn ensemble_succeeds_only_when_every_member_does() {
        // primary threshold 0.6, member threshold 0.3 (a member of another frame size)
        for (p0, p1, success) in [
            (0.7, 0.4, true),
            (0.7, 0.2, false),
            (0.5, 0.9, false),
            (0.95, 0.31, true),
        ] {
            let e = constant(p0, 0.6, 16)
                .with_members(vec![constant(p1, 0.3, 8)])
                .unwrap();
            let s = Vec::<f32>::try_from(e.prob_u8(&frames(16))).unwrap();
            assert_eq!(s.len(), 5);
            for v in &s {
                assert_eq!(f64::from(*v) > e.threshold(), success, "{p0} {p1}: {v}");
                assert!(
                    f64::from(*v) <= p0 + 1e-6,
                    "the score never exceeds the primary's"
                );
            }
            let r = Vec::<f32>::try_from(e.reward_of(&e.prob_u8(&frames(16)))).unwrap();
            assert!(r.iter().all(|&x| x == f32::from(u8::from(success))));
        }
        // without members, the probability is the classifier's own
        let single = constant(0.45, 0.6, 16);
        let s = Vec::<f32>::try_from(single.prob_u8(&frames(16))).unwrap();
        assert!(s.iter().all(|v| (v - 0.45).abs() < 1e-6), "{s:?}");
    }

    #[test]
    fn ensemble_round_trips_through_one_file_and_a_bad_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("classifier.safetensors");
        let a = RewardClassifier::new(
            &ClassifierConfig::default(),
            16,
            0.55,
            RewardMode::Binary,
            "push-block",
            Device::Cpu,
        )
        .unwrap();
        let b = RewardClassifier::new(
            &ClassifierConfig::default(),
            8,
            0.35,
            RewardMode::Binary,
            "push-block",
            Device::Cpu,
        )
        .unwrap();
        let e = a.with_members(vec![b]).unwrap();
        e.save(&path, serde_json::json!({"x": 1})).unwrap();
        let (back, extra) = RewardClassifier::load(&path, Device::Cpu).unwrap();
        assert_eq!(extra["x"], 1);
        assert_eq!(back.members().len(), 1);
        assert_eq!(back.members()[0].threshold(), 0.35);
        assert_eq!(back.members()[0].image_size(), 8);
        let x = frames(16);
        let (s0, s1) = (
            Vec::<f32>::try_from(e.prob_u8(&x)).unwrap(),
            Vec::<f32>::try_from(back.prob_u8(&x)).unwrap(),
        );
        assert_eq!(s0, s1);

        // members of another task, nested ensembles: refused
        let mut other = constant(0.5, 0.5, 8);
        other.task = "turn-lever".into();
        let err = constant(0.5, 0.5, 8).with_members(vec![other]).unwrap_err();
        assert!(err.to_string().contains("turn-lever"), "{err}");
        let nested = constant(0.5, 0.5, 8)
            .with_members(vec![constant(0.5, 0.5, 8)])
            .unwrap();
        assert!(constant(0.5, 0.5, 8).with_members(vec![nested]).is_err());

        // a file whose metadata lists a member without its tensors
        let (mut tensors, meta) = checkpoint::load_tensors(&path).unwrap();
        tensors.retain(|k, _| !k.starts_with("member1."));
        let list: Vec<(String, Tensor)> = tensors.into_iter().collect();
        let cut = dir.path().join("cut.safetensors");
        checkpoint::save_tensors(&cut, &list, &meta).unwrap();
        let err = format!(
            "{:#}",
            RewardClassifier::load(&cut, Device::Cpu).unwrap_err()
        );
        assert!(err.contains("member1.model."), "{err}");
        assert!(err.contains("cut.safetensors"), "{err}");
    }
}
