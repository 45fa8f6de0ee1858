//! Training the success classifier with BCE (Eq. 3) on the frames of expert and policy-rollout episodes
//! of one task, labelled with their per-frame success flags (`C(frames[t]) -> success[t]`).
//!
//! CleanRL-style: every hyper-parameter in [`RewardConfig`], the loop in [`train_task`].
//! * **Class balance**: every minibatch holds as many successful as unsuccessful frames, whatever their
//!   ratio in the data.
//! * **Held-out metrics**: whole episodes are held out (stratified by episode success), and accuracy,
//!   precision, recall and F1 at the threshold are reported on their frames.
//! * **Robustness to generated frames**: the classifier labels world-model frames during refinement, and
//!   a classifier trained on crisp real frames alone is fooled by their artefacts (blur, a fading pusher
//!   or target: measured on `turn-lever`, it called such frames successful with P > 0.95). When the run
//!   already holds a world model (the pipeline trains it first), frames the world model imagines from
//!   real contexts with the recorded actions (1 to `world_model_horizon` steps ahead) join the training
//!   set with the success label of the real frame they stand for, and the held-out metrics are also
//!   reported on such frames. Far from a real context the world model drifts, and a classifier that
//!   only saw near frames is confidently wrong there; `world_model_horizon = 50` (whole episodes, as
//!   the imagined environment runs them) or `world_model_open_loop_frames` teach it what drifted
//!   frames of successful and failed episodes look like (docs/refinement.md has the measurements).
//!   Random shifts and Gaussian pixel noise are applied throughout.
//! * **Model selection on a validation split**: a share of the training episodes (`val_fraction`) is kept
//!   out of the gradient steps. Every `eval_every` steps the classifier is scored on their real and
//!   imagined frames; the weights with the best validation F1 are kept, and the decision threshold is
//!   calibrated on those frames. (Calibrating on the frames it was fitted to set the threshold too high:
//!   the held-out recall was 0.37-0.44 on `slide-handle` and `turn-lever`, against 0.99 on training frames.)

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{nn::OptimizerConfig, Device, Kind, Tensor};
use w4rl_data::{holdout_split, Dataset, Episode, EpisodeKind};

use super::classifier::{ClassifierConfig, RewardClassifier, RewardMode};
use super::metrics::BinaryMetrics;
use crate::optim::{restore_weights, snapshot_weights, WeightSnapshot};
use crate::policy::obs::{frames_to_u8, resize_u8, to_u8};
use crate::run::RunDir;
use crate::world_model::{Precision, RollingContext, WorldModel};

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
    /// Imagined frames added to the training set when a world model is available (0 = none; default
    /// 4000). Held-out metrics on imagined frames use up to half as many.
    pub world_model_frames: usize,
    /// Imagined frames are 1 to this many steps ahead of their real context (default 4).
    pub world_model_horizon: usize,
    /// More imagined frames, from whole episodes replayed open-loop from their first frames with
    /// their recorded actions (as the imagined environment runs them), each labelled with the
    /// success flag of the real frame it stands for; added to the `world_model_frames` (0 = none,
    /// the default). Held-out metrics on imagined frames then use up to half as many more.
    pub world_model_open_loop_frames: usize,
    /// Number format of the world model that imagines those frames (default `f32`). Use the
    /// precision refinement will use (`refine.world_model_precision`): the classifier judges the
    /// frames of that model.
    pub world_model_precision: Precision,
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
    /// [`RewardClassifier::with_members`].
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
            world_model_frames: 4000,
            world_model_horizon: 4,
            world_model_open_loop_frames: 0,
            world_model_precision: Precision::F32,
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

/// What training reports for one task.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClassifierReport {
    /// Task.
    pub task: String,
    /// Episodes trained on.
    pub train_episodes: usize,
    /// Held-out episodes.
    pub heldout_episodes: usize,
    /// Validation episodes (model selection and threshold).
    #[serde(default)]
    pub val_episodes: usize,
    /// Step whose weights were kept (best validation F1; the last step without a validation split).
    #[serde(default)]
    pub best_step: usize,
    /// Metrics on the validation frames (real and imagined) at the kept weights.
    #[serde(default)]
    pub val: Option<BinaryMetrics>,
    /// Real training frames.
    pub train_frames: usize,
    /// Successful training frames (real and imagined).
    pub train_positives: usize,
    /// Metrics on the real training frames (no augmentation).
    pub train: BinaryMetrics,
    /// Metrics on the held-out frames.
    pub heldout: BinaryMetrics,
    /// Metrics on world-model frames imagined from the held-out episodes (when a world model was given).
    pub heldout_world_model: Option<BinaryMetrics>,
    /// Imagined frames trained on.
    pub world_model_frames: usize,
    /// Decision threshold (calibrated or configured).
    pub threshold: f64,
    /// Backbone tensors copied from the pretrained file.
    pub pretrained_tensors: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// The reports of the ensemble's further members (`reward.members`), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<ClassifierReport>,
}

/// Frames and labels.
struct Frames {
    images: Tensor,
    labels: Vec<bool>,
}

fn load_frames(episodes: &[Episode], size: usize, device: Device) -> Result<Frames> {
    let mut images = Vec::with_capacity(episodes.len());
    let mut labels = Vec::new();
    for ep in episodes {
        let n = ep.steps() + 1;
        images.push(frames_to_u8(
            &ep.frames,
            n,
            ep.meta.image_size,
            size,
            device,
        )?);
        labels.extend(ep.success.iter().map(|&s| s == 1));
    }
    let images = if images.is_empty() {
        Tensor::zeros([0, 3, size as i64, size as i64], (Kind::Uint8, device))
    } else {
        Tensor::cat(&images, 0)
    };
    Ok(Frames { images, labels })
}

/// Frames the world model imagines from the episodes' real contexts by replaying their recorded
/// actions for up to `horizon` steps, each labelled with the success flag of the real frame it stands
/// for; at most `max` frames (start points drawn at random from `seed`). `u8 [N, 3, size, size]`.
pub fn imagined_frames(
    wm: &WorldModel,
    episodes: &[Episode],
    horizon: usize,
    max: usize,
    size: usize,
    seed: u64,
) -> Result<(Tensor, Vec<bool>)> {
    let mut starts: Vec<(usize, usize)> = Vec::new();
    for (e, ep) in episodes.iter().enumerate() {
        for t in (0..ep.steps()).step_by(horizon.max(1)) {
            starts.push((e, t));
        }
    }
    // a seeded shuffle, then enough starts for `max` frames
    starts.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    starts.truncate(max.div_ceil(horizon.max(1)));
    let dev = wm.device();
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    for chunk in starts.chunks(64) {
        let picks: Vec<(&Episode, usize)> = chunk.iter().map(|&(e, t)| (&episodes[e], t)).collect();
        let mut ctx = RollingContext::from_episodes(wm, &picks)?;
        for j in 0..horizon {
            // rows whose episode has a recorded action at t + j
            let live: Vec<bool> = picks.iter().map(|(ep, t)| t + j < ep.steps()).collect();
            if !live.iter().any(|&l| l) {
                break;
            }
            let mut acts = Vec::with_capacity(picks.len() * wm.action_dim());
            for (ep, t) in &picks {
                let k = (t + j).min(ep.steps() - 1);
                acts.extend_from_slice(ep.action(k));
            }
            let a = Tensor::from_slice(&acts).view([picks.len() as i64, wm.action_dim() as i64]);
            let next = to_u8(&ctx.step(wm, &a)?);
            let rows: Vec<i64> = (0..picks.len() as i64)
                .filter(|&r| live[r as usize])
                .collect();
            images.push(resize_u8(
                &next.index_select(0, &Tensor::from_slice(&rows).to_device(dev)),
                size,
            ));
            labels.extend(rows.iter().map(|&r| {
                let (ep, t) = picks[r as usize];
                ep.success[t + j + 1] == 1
            }));
        }
    }
    let images = if images.is_empty() {
        Tensor::zeros([0, 3, size as i64, size as i64], (Kind::Uint8, dev))
    } else {
        Tensor::cat(&images, 0)
    };
    Ok((images, labels))
}

/// P(success) of `u8 [N, 3, h, w]` frames, in chunks.
pub fn probabilities(clf: &RewardClassifier, frames: &Tensor) -> Result<Vec<f32>> {
    let n = frames.size()[0];
    let mut out = Vec::with_capacity(n as usize);
    let mut start = 0;
    while start < n {
        let len = (n - start).min(512);
        let p = clf.prob_u8(&frames.narrow(0, start, len));
        out.extend(Vec::<f32>::try_from(
            p.to_device(Device::Cpu).to_kind(Kind::Float),
        )?);
        start += len;
    }
    Ok(out)
}

/// The threshold in `[0.5, 0.95]` (steps of 0.01) maximising F1; ties resolve to the middle of the
/// best range. Thresholds below 0.5 are not considered: a false success is worse than a missed one
/// when the classifier rewards imagined frames (it invites reward hacking of world-model errors).
pub fn best_f1_threshold(probs: &[f32], labels: &[bool]) -> f64 {
    let grid: Vec<f64> = (50..=95).map(|i| i as f64 / 100.0).collect();
    let f1s: Vec<f64> = grid
        .iter()
        .map(|&t| metrics_at(probs, labels, t).f1)
        .collect();
    let best = f1s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let hits: Vec<usize> = (0..grid.len()).filter(|&i| f1s[i] >= best - 1e-9).collect();
    grid[hits[hits.len() / 2]]
}

/// Metrics of the decisions `P(success) > threshold` against `labels`.
pub fn metrics_at(probs: &[f32], labels: &[bool], threshold: f64) -> BinaryMetrics {
    let pred: Vec<bool> = probs.iter().map(|&p| p as f64 > threshold).collect();
    BinaryMetrics::from_predictions(&pred, labels)
}

/// Metrics of `clf` on `u8 [N, 3, h, w]` frames against `labels`, at its threshold.
pub fn evaluate_frames(
    clf: &RewardClassifier,
    frames: &Tensor,
    labels: &[bool],
) -> Result<BinaryMetrics> {
    let n = frames.size()[0];
    ensure!(
        n as usize == labels.len(),
        "{n} frames but {} labels",
        labels.len()
    );
    Ok(metrics_at(
        &probabilities(clf, frames)?,
        labels,
        clf.threshold(),
    ))
}

/// Trains the classifier of one task; `wm`, when given, adds imagined frames (see the module docs);
/// `log` receives one JSON object per logging step.
pub fn train_task(
    cfg: &RewardConfig,
    dataset: &Dataset,
    task: &str,
    wm: Option<&WorldModel>,
    device: Device,
    mut log: impl FnMut(serde_json::Value) -> Result<()>,
) -> Result<(RewardClassifier, ClassifierReport)> {
    cfg.validate()?;
    let start = Instant::now();
    tch::manual_seed(cfg.seed as i64);
    let size = if cfg.image_size == 0 {
        dataset.spec().image_size
    } else {
        cfg.image_size
    };
    let dihedral = cfg.dihedral.unwrap_or(dataset.spec().suite == "tabletop");

    // ---- data: whole episodes held out, stratified by episode success
    let entries: Vec<usize> = dataset
        .entries()
        .iter()
        .enumerate()
        .filter(|(_, e)| e.meta.task == task && cfg.kinds.contains(&e.meta.kind))
        .map(|(i, _)| i)
        .collect();
    if entries.is_empty() {
        bail!(
            "the dataset {} has no {:?} episodes of task '{task}' (tasks: {})",
            dataset.dir().display(),
            cfg.kinds,
            dataset.tasks().join(", ")
        );
    }
    let keys: Vec<&str> = entries
        .iter()
        .map(|&i| {
            if dataset.entries()[i].meta.success {
                "success"
            } else {
                "failure"
            }
        })
        .collect();
    let (tr, ho) = holdout_split(&keys, cfg.holdout_fraction, cfg.seed);
    // the validation episodes come out of the training ones, stratified the same way
    let tr_keys: Vec<&str> = tr.iter().map(|&k| keys[k]).collect();
    let (fit, val) = holdout_split(&tr_keys, cfg.val_fraction, cfg.seed ^ 0x5eed);
    let train_entries: Vec<usize> = fit.iter().map(|&k| entries[tr[k]]).collect();
    let val_entries: Vec<usize> = val.iter().map(|&k| entries[tr[k]]).collect();
    let held_entries: Vec<usize> = ho.iter().map(|&k| entries[k]).collect();
    // each episode is read (and checked) once: its real frames and, below, its imagined ones
    let load = |entries: &[usize]| -> Result<Vec<Episode>> {
        entries.iter().map(|&i| Ok(dataset.load(i)?)).collect()
    };
    let (train_eps, val_eps, held_eps) = (
        load(&train_entries)?,
        load(&val_entries)?,
        load(&held_entries)?,
    );
    let mut train = load_frames(&train_eps, size, device)?;
    let mut val = load_frames(&val_eps, size, device)?;
    let held = load_frames(&held_eps, size, device)?;
    let n_real = train.labels.len();
    let (mut n_wm, mut held_wm) = (0, None);
    if let (Some(wm), true) = (
        wm,
        cfg.world_model_frames + cfg.world_model_open_loop_frames > 0,
    ) {
        let t0 = Instant::now();
        // short replays from real contexts, then whole episodes open-loop: `max` scales both
        let longest = train_eps
            .iter()
            .chain(&val_eps)
            .chain(&held_eps)
            .map(|e| e.steps())
            .max()
            .unwrap_or(1)
            .max(1);
        let imagine = |eps: &[Episode], share: f64, seed: u64| -> Result<(Tensor, Vec<bool>)> {
            let mut parts = Vec::new();
            let mut labels = Vec::new();
            for (horizon, max) in [
                (cfg.world_model_horizon, cfg.world_model_frames),
                (longest, cfg.world_model_open_loop_frames),
            ] {
                if max == 0 {
                    continue;
                }
                let n = ((max as f64 * share).ceil() as usize).max(1);
                let (i, l) = imagined_frames(wm, eps, horizon, n, size, seed)?;
                parts.push(i);
                labels.extend(l);
            }
            Ok((Tensor::cat(&parts, 0), labels))
        };
        let (imgs, labels) = imagine(&train_eps, 1.0, cfg.seed)?;
        n_wm = labels.len();
        train.images = Tensor::cat(&[&train.images, &imgs.to_device(device)], 0);
        train.labels.extend(labels);
        if !val_eps.is_empty() {
            let share = val_eps.len() as f64 / train_eps.len().max(1) as f64;
            let (imgs, labels) = imagine(&val_eps, share, cfg.seed ^ 2)?;
            val.images = Tensor::cat(&[&val.images, &imgs.to_device(device)], 0);
            val.labels.extend(labels);
        }
        if !held_entries.is_empty() {
            let (imgs, labels) = imagine(&held_eps, 0.5, cfg.seed ^ 1)?;
            held_wm = Some(Frames {
                images: imgs.to_device(device),
                labels,
            });
        }
        tracing::info!(
            "reward '{task}': {n_wm} imagined training frames in {:.0} s",
            t0.elapsed().as_secs_f64()
        );
    }
    let pos: Vec<i64> = (0..train.labels.len() as i64)
        .filter(|&i| train.labels[i as usize])
        .collect();
    let neg: Vec<i64> = (0..train.labels.len() as i64)
        .filter(|&i| !train.labels[i as usize])
        .collect();
    if pos.is_empty() || neg.is_empty() {
        bail!(
            "task '{task}': the training frames hold {} successful and {} unsuccessful frames; the classifier needs both (collect expert episodes that succeed)",
            pos.len(),
            neg.len()
        );
    }
    tracing::info!(
        "reward '{task}': {} train frames ({} successful), {} validation frames, {} held-out frames",
        train.labels.len(),
        pos.len(),
        val.labels.len(),
        held.labels.len()
    );
    let pos_t = Tensor::from_slice(&pos).to_device(device);
    let neg_t = Tensor::from_slice(&neg).to_device(device);

    // ---- model
    let mut clf = RewardClassifier::new(
        &cfg.classifier,
        size,
        cfg.threshold.unwrap_or(0.5),
        cfg.reward,
        task,
        device,
    )?;
    let pretrained_tensors = match &cfg.pretrained {
        Some(p) => clf
            .load_backbone(p, &cfg.pretrained_prefix)
            .with_context(|| {
                format!("initialising the classifier backbone from {}", p.display())
            })?,
        None => 0,
    };
    let mut opt = tch::nn::Adam {
        wd: cfg.weight_decay,
        ..Default::default()
    }
    .build(clf.var_store(), cfg.lr)?;

    // ---- balanced BCE
    let half = (cfg.batch_size / 2) as i64;
    let labels = Tensor::cat(
        &[
            Tensor::ones([half], (Kind::Float, device)),
            Tensor::zeros([cfg.batch_size as i64 - half], (Kind::Float, device)),
        ],
        0,
    );
    let bar = crate::progress::bar(cfg.steps as u64, format!("reward {task}"));
    let (mut window, mut window_n) = (0.0, 0usize);
    // (step, calibrated threshold, validation metrics, weights) of the best validation F1 so far
    let mut best: Option<(usize, f64, BinaryMetrics, WeightSnapshot)> = None;
    for step in 1..=cfg.steps {
        crate::interrupt::check("classifier training")?;
        let ip = pos_t.index_select(
            0,
            &Tensor::randint(pos.len() as i64, [half], (Kind::Int64, device)),
        );
        let ineg = neg_t.index_select(
            0,
            &Tensor::randint(
                neg.len() as i64,
                [cfg.batch_size as i64 - half],
                (Kind::Int64, device),
            ),
        );
        let x = train.images.index_select(0, &Tensor::cat(&[ip, ineg], 0));
        let logits = clf.logits_augmented(&x, cfg.shift_pad, cfg.noise_std, dihedral);
        let loss = logits.binary_cross_entropy_with_logits::<Tensor>(
            &labels,
            None,
            None,
            tch::Reduction::Mean,
        );
        opt.backward_step(&loss);
        let l = loss.double_value(&[]);
        ensure!(
            l.is_finite(),
            "reward '{task}': the loss became {l} at step {step}; lower reward.lr"
        );
        window += l;
        window_n += 1;
        bar.inc(1);
        let mut val_f1 = None;
        if !val.labels.is_empty() && (step % cfg.eval_every == 0 || step == cfg.steps) {
            let probs = probabilities(&clf, &val.images)?;
            let t = cfg
                .threshold
                .unwrap_or_else(|| best_f1_threshold(&probs, &val.labels));
            let m = metrics_at(&probs, &val.labels, t);
            val_f1 = Some(m.f1);
            if best.as_ref().is_none_or(|b| m.f1 > b.2.f1) {
                best = Some((step, t, m, snapshot_weights(clf.var_store())));
            }
        }
        if step % cfg.log_every == 0 || step == cfg.steps {
            let mut rec =
                serde_json::json!({"task": task, "step": step, "bce": window / window_n as f64});
            if let Some(f1) = val_f1 {
                rec["val_f1"] = f1.into();
            }
            if (step % (5 * cfg.log_every) == 0 || step == cfg.steps) && !held.labels.is_empty() {
                let m = evaluate_frames(&clf, &held.images, &held.labels)?;
                rec["heldout_f1"] = m.f1.into();
                rec["heldout_accuracy"] = m.accuracy.into();
                if let Some(f) = held_wm.as_ref().filter(|f| !f.labels.is_empty()) {
                    rec["heldout_world_model_f1"] =
                        evaluate_frames(&clf, &f.images, &f.labels)?.f1.into();
                }
            }
            log(rec)?;
            bar.set_prefix(format!("bce {:.3}", window / window_n as f64));
            window = 0.0;
            window_n = 0;
        }
    }
    bar.finish_and_clear();
    let (best_step, val_m) = match best {
        Some((step, t, m, weights)) => {
            restore_weights(clf.var_store(), &weights);
            clf.set_reward(t, cfg.reward)?;
            tracing::info!(
                "reward '{task}': kept step {step} (validation F1 {:.3}), threshold {t:.2}",
                m.f1
            );
            (step, Some(m))
        }
        None => {
            if cfg.threshold.is_none() {
                let probs = probabilities(&clf, &train.images)?;
                let t = best_f1_threshold(&probs, &train.labels);
                tracing::info!("reward '{task}': calibrated threshold {t:.2} on training frames");
                clf.set_reward(t, cfg.reward)?;
            }
            (cfg.steps, None)
        }
    };
    let train_m = evaluate_frames(
        &clf,
        &train.images.narrow(0, 0, n_real as i64),
        &train.labels[..n_real],
    )?;
    let held_m = evaluate_frames(&clf, &held.images, &held.labels)?;
    let held_wm_m = match &held_wm {
        Some(f) if !f.labels.is_empty() => Some(evaluate_frames(&clf, &f.images, &f.labels)?),
        _ => None,
    };
    let report = ClassifierReport {
        task: task.to_string(),
        train_episodes: train_entries.len(),
        heldout_episodes: held_entries.len(),
        val_episodes: val_entries.len(),
        best_step,
        val: val_m,
        train_frames: n_real,
        train_positives: pos.len(),
        train: train_m,
        heldout: held_m,
        heldout_world_model: held_wm_m,
        world_model_frames: n_wm,
        threshold: clf.threshold(),
        pretrained_tensors,
        seconds: start.elapsed().as_secs_f64(),
        members: Vec::new(),
    };
    Ok((clf, report))
}

/// Path of the classifier of `task` in a run: `RUN/reward/<task>/classifier.safetensors`.
pub fn checkpoint_path(run: &RunDir, task: &str) -> PathBuf {
    run.checkpoint(&format!("reward/{task}"), "classifier")
}

/// Trains (or skips, when done) the classifier of every configured task, with imagined frames when the
/// run holds a world model (`RUN/world_model/model.safetensors`); writes
/// `RUN/reward/<task>/{classifier.safetensors, metrics.jsonl, done.json}`.
pub fn train_all(
    cfg: &RewardConfig,
    dataset: &Dataset,
    run: &RunDir,
    device: Device,
) -> Result<Vec<ClassifierReport>> {
    let tasks = if cfg.tasks.is_empty() {
        dataset.tasks()
    } else {
        cfg.tasks.clone()
    };
    let wm_path = crate::world_model::train::StagePaths::new(run.path()).model;
    let imagined = std::iter::once((cfg.world_model_frames, cfg.world_model_open_loop_frames))
        .chain(
            cfg.members
                .iter()
                .map(|m| (m.world_model_frames, m.world_model_open_loop_frames)),
        )
        .any(|(near, open)| near + open > 0);
    let wm = if imagined && wm_path.exists() {
        let mut wm = WorldModel::load(&wm_path, device)
            .with_context(|| format!("loading the run's world model {}", wm_path.display()))?
            .0;
        wm.set_precision(cfg.world_model_precision);
        Some(wm)
    } else {
        None
    };
    let mut reports = Vec::new();
    for task in &tasks {
        let stage = format!("reward/{task}");
        if let Some(done) = run.done_summary(&stage) {
            if let Ok(r) = serde_json::from_value::<ClassifierReport>(done) {
                tracing::info!("reward '{task}': already trained, skipping");
                reports.push(r);
                continue;
            }
        }
        let mut metrics = run.metrics(&stage)?;
        metrics.truncate_after(0)?;
        let (clf, mut report) =
            train_task(cfg, dataset, task, wm.as_ref(), device, |v| metrics.log(&v))?;
        let mut members = Vec::new();
        for k in 0..cfg.members.len() {
            tracing::info!("reward '{task}': ensemble member {}", k + 1);
            let (m, r) = train_task(
                &cfg.member(k),
                dataset,
                task,
                wm.as_ref(),
                device,
                |mut v| {
                    if let Some(o) = v.as_object_mut() {
                        o.insert("member".into(), (k + 1).into());
                    }
                    metrics.log(&v)
                },
            )?;
            members.push(m);
            report.members.push(r);
        }
        let clf = clf.with_members(members)?;
        clf.save(
            &checkpoint_path(run, task),
            serde_json::json!({"stage": "reward", "report": report, "dataset": dataset.dir()}),
        )?;
        run.mark_done(&stage, &serde_json::to_value(&report)?)?;
        reports.push(report);
    }
    Ok(reports)
}
