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

use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{nn::OptimizerConfig, Device, Kind, Tensor};
use w4rl_data::{holdout_split, Dataset, Episode};

use super::classifier::RewardClassifier;
pub use super::config::{MemberConfig, RewardConfig};
use super::metrics::BinaryMetrics;
use crate::util::frames::{bytes_to_chw, model_to_chw, resize_chw};
use crate::util::optim::{restore_weights, snapshot_weights, WeightSnapshot};
use crate::world_model::{RollingContext, WorldModel};

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
        images.push(bytes_to_chw(
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
            let next = model_to_chw(&ctx.step(wm, &a)?);
            let rows: Vec<i64> = (0..picks.len() as i64)
                .filter(|&r| live[r as usize])
                .collect();
            images.push(resize_chw(
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

/// A task's episodes, split: whole episodes held out (stratified by episode success), and a
/// validation share of the training ones.
struct Split {
    train: Vec<Episode>,
    val: Vec<Episode>,
    held: Vec<Episode>,
}

impl Split {
    fn of(cfg: &RewardConfig, dataset: &Dataset, task: &str) -> Result<Self> {
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
        // each episode is read (and checked) once: its real frames and its imagined ones
        let load = |ks: Vec<usize>| -> Result<Vec<Episode>> {
            ks.into_iter().map(|i| Ok(dataset.load(i)?)).collect()
        };
        Ok(Self {
            train: load(fit.iter().map(|&k| entries[tr[k]]).collect())?,
            val: load(val.iter().map(|&k| entries[tr[k]]).collect())?,
            held: load(ho.iter().map(|&k| entries[k]).collect())?,
        })
    }
}

/// Adds the world model's imagined frames to the training and validation frames (short replays from
/// real contexts, then whole episodes open-loop); returns their number and the held-out episodes'
/// imagined frames.
fn add_imagined(
    cfg: &RewardConfig,
    wm: &WorldModel,
    split: &Split,
    size: usize,
    (train, val): (&mut Frames, &mut Frames),
) -> Result<(usize, Option<Frames>)> {
    let device = train.images.device();
    // `max` scales both kinds of frames with the share of episodes
    let longest = split
        .train
        .iter()
        .chain(&split.val)
        .chain(&split.held)
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
    let (imgs, labels) = imagine(&split.train, 1.0, cfg.seed)?;
    let n_wm = labels.len();
    train.images = Tensor::cat(&[&train.images, &imgs.to_device(device)], 0);
    train.labels.extend(labels);
    if !split.val.is_empty() {
        let share = split.val.len() as f64 / split.train.len().max(1) as f64;
        let (imgs, labels) = imagine(&split.val, share, cfg.seed ^ 2)?;
        val.images = Tensor::cat(&[&val.images, &imgs.to_device(device)], 0);
        val.labels.extend(labels);
    }
    let held = if split.held.is_empty() {
        None
    } else {
        let (imgs, labels) = imagine(&split.held, 0.5, cfg.seed ^ 1)?;
        Some(Frames {
            images: imgs.to_device(device),
            labels,
        })
    };
    Ok((n_wm, held))
}

/// The indices of the successful and of the unsuccessful training frames (both must exist).
fn classes(task: &str, labels: &[bool]) -> Result<(Vec<i64>, Vec<i64>)> {
    let pos: Vec<i64> = (0..labels.len() as i64)
        .filter(|&i| labels[i as usize])
        .collect();
    let neg: Vec<i64> = (0..labels.len() as i64)
        .filter(|&i| !labels[i as usize])
        .collect();
    if pos.is_empty() || neg.is_empty() {
        bail!(
            "task '{task}': the training frames hold {} successful and {} unsuccessful frames; the classifier needs both (collect expert episodes that succeed)",
            pos.len(),
            neg.len()
        );
    }
    Ok((pos, neg))
}

/// A fresh classifier (its backbone from `cfg.pretrained` when set) and the number of tensors taken
/// from there.
fn new_classifier(
    cfg: &RewardConfig,
    size: usize,
    task: &str,
    device: Device,
) -> Result<(RewardClassifier, usize)> {
    let mut clf = RewardClassifier::new(
        &cfg.classifier,
        size,
        cfg.threshold.unwrap_or(0.5),
        cfg.reward,
        task,
        device,
    )?;
    let pretrained = match &cfg.pretrained {
        Some(p) => clf
            .load_backbone(p, &cfg.pretrained_prefix)
            .with_context(|| {
                format!("initialising the classifier backbone from {}", p.display())
            })?,
        None => 0,
    };
    Ok((clf, pretrained))
}

/// The frames a classifier is fitted and judged on.
struct FitData<'a> {
    train: &'a Frames,
    val: &'a Frames,
    held: &'a Frames,
    held_wm: Option<&'a Frames>,
    pos: &'a [i64],
    neg: &'a [i64],
}

/// Balanced-BCE steps on `d.train`; every `eval_every` steps the validation F1 decides which weights
/// are kept (and calibrates the threshold). Returns the kept step and its validation metrics.
fn fit(
    cfg: &RewardConfig,
    clf: &mut RewardClassifier,
    d: &FitData,
    dihedral: bool,
    log: &mut impl FnMut(serde_json::Value) -> Result<()>,
) -> Result<(usize, Option<BinaryMetrics>)> {
    let (task, device) = (clf.task().to_string(), clf.device());
    let mut opt = tch::nn::Adam {
        wd: cfg.weight_decay,
        ..Default::default()
    }
    .build(clf.var_store(), cfg.lr)?;
    let pos_t = Tensor::from_slice(d.pos).to_device(device);
    let neg_t = Tensor::from_slice(d.neg).to_device(device);
    let half = (cfg.batch_size / 2) as i64;
    let labels = Tensor::cat(
        &[
            Tensor::ones([half], (Kind::Float, device)),
            Tensor::zeros([cfg.batch_size as i64 - half], (Kind::Float, device)),
        ],
        0,
    );
    let bar = crate::util::progress::bar(cfg.steps as u64, format!("reward {task}"));
    let (mut window, mut window_n) = (0.0, 0usize);
    // (step, calibrated threshold, validation metrics, weights) of the best validation F1 so far
    let mut best: Option<(usize, f64, BinaryMetrics, WeightSnapshot)> = None;
    for step in 1..=cfg.steps {
        crate::util::interrupt::check("classifier training")?;
        let draw = |n: usize, k: i64| Tensor::randint(n as i64, [k], (Kind::Int64, device));
        let ip = pos_t.index_select(0, &draw(d.pos.len(), half));
        let ineg = neg_t.index_select(0, &draw(d.neg.len(), cfg.batch_size as i64 - half));
        let x = d.train.images.index_select(0, &Tensor::cat(&[ip, ineg], 0));
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
        (window, window_n) = (window + l, window_n + 1);
        bar.inc(1);
        let mut val_f1 = None;
        if !d.val.labels.is_empty() && (step % cfg.eval_every == 0 || step == cfg.steps) {
            let probs = probabilities(clf, &d.val.images)?;
            let t = cfg
                .threshold
                .unwrap_or_else(|| best_f1_threshold(&probs, &d.val.labels));
            let m = metrics_at(&probs, &d.val.labels, t);
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
            if (step % (5 * cfg.log_every) == 0 || step == cfg.steps) && !d.held.labels.is_empty() {
                let m = evaluate_frames(clf, &d.held.images, &d.held.labels)?;
                rec["heldout_f1"] = m.f1.into();
                rec["heldout_accuracy"] = m.accuracy.into();
                if let Some(f) = d.held_wm.filter(|f| !f.labels.is_empty()) {
                    rec["heldout_world_model_f1"] =
                        evaluate_frames(clf, &f.images, &f.labels)?.f1.into();
                }
            }
            log(rec)?;
            bar.set_prefix(format!("bce {:.3}", window / window_n as f64));
            (window, window_n) = (0.0, 0);
        }
    }
    bar.finish_and_clear();
    match best {
        Some((step, t, m, weights)) => {
            restore_weights(clf.var_store(), &weights);
            clf.set_reward(t, cfg.reward)?;
            tracing::info!(
                "reward '{task}': kept step {step} (validation F1 {:.3}), threshold {t:.2}",
                m.f1
            );
            Ok((step, Some(m)))
        }
        None => {
            if cfg.threshold.is_none() {
                let probs = probabilities(clf, &d.train.images)?;
                let t = best_f1_threshold(&probs, &d.train.labels);
                tracing::info!("reward '{task}': calibrated threshold {t:.2} on training frames");
                clf.set_reward(t, cfg.reward)?;
            }
            Ok((cfg.steps, None))
        }
    }
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
    let split = Split::of(cfg, dataset, task)?;
    let mut train = load_frames(&split.train, size, device)?;
    let mut val = load_frames(&split.val, size, device)?;
    let held = load_frames(&split.held, size, device)?;
    let n_real = train.labels.len();
    let (mut n_wm, mut held_wm) = (0, None);
    if let (Some(wm), true) = (
        wm,
        cfg.world_model_frames + cfg.world_model_open_loop_frames > 0,
    ) {
        let t0 = Instant::now();
        (n_wm, held_wm) = add_imagined(cfg, wm, &split, size, (&mut train, &mut val))?;
        tracing::info!(
            "reward '{task}': {n_wm} imagined training frames in {:.0} s",
            t0.elapsed().as_secs_f64()
        );
    }
    let (pos, neg) = classes(task, &train.labels)?;
    tracing::info!(
        "reward '{task}': {} train frames ({} successful), {} validation frames, {} held-out frames",
        train.labels.len(),
        pos.len(),
        val.labels.len(),
        held.labels.len()
    );
    let (mut clf, pretrained_tensors) = new_classifier(cfg, size, task, device)?;
    let data = FitData {
        train: &train,
        val: &val,
        held: &held,
        held_wm: held_wm.as_ref(),
        pos: &pos,
        neg: &neg,
    };
    let (best_step, val_m) = fit(cfg, &mut clf, &data, dihedral, &mut log)?;
    let real = train.images.narrow(0, 0, n_real as i64);
    let report = ClassifierReport {
        task: task.to_string(),
        train_episodes: split.train.len(),
        heldout_episodes: split.held.len(),
        val_episodes: split.val.len(),
        best_step,
        val: val_m,
        train_frames: n_real,
        train_positives: pos.len(),
        train: evaluate_frames(&clf, &real, &train.labels[..n_real])?,
        heldout: evaluate_frames(&clf, &held.images, &held.labels)?,
        heldout_world_model: match &held_wm {
            Some(f) if !f.labels.is_empty() => Some(evaluate_frames(&clf, &f.images, &f.labels)?),
            _ => None,
        },
        world_model_frames: n_wm,
        threshold: clf.threshold(),
        pretrained_tensors,
        seconds: start.elapsed().as_secs_f64(),
        members: Vec::new(),
    };
    Ok((clf, report))
}
