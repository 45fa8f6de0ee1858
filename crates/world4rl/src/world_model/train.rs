//! Training the diffusion world model (World4RL §III-A, Eq. 7), CleanRL-style: every
//! hyper-parameter is in [`WorldModelTrainConfig`] at the top, the loop reads from top to bottom.
//!
//! One step: draw a batch of windows (L context frames + actions → next frame) from the training
//! episodes of all tasks pooled (optionally re-weighted per task and per kind), compute the EDM loss
//! of Eq. 7, AdamW with linear warm-up and gradient clipping, update the EMA weights. Every
//! `val_every` steps the EMA model's loss on a fixed set of windows from held-out episodes is logged.
//! Checkpoints go to the folder it is given (`RUN/world_model/` in a run):
//!
//! * `model.safetensors` — the EMA weights with the model config (what `dream`, `eval` and the
//!   imagined environment load with [`WorldModel::load`]);
//! * `train_state.safetensors` — raw weights, EMA weights, AdamW moments, step and elapsed time, so
//!   a re-run on the same folder resumes exactly where it stopped;
//! * `holdout.json` — the held-out episodes (task, kind, index), reused by `eval world-model`;
//! * `metrics.jsonl` and `config.toml` (a folder resumed under another config is refused).
//!
//! Defaults follow DIAMOND's Atari trainer (AdamW lr 1e-4, wd 1e-2, eps 1e-8, 100 warm-up steps,
//! grad-clip 1, batch 32) except where the CPU budget asks otherwise (see the presets).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::Device;
use w4rl_data::{Dataset, Episode, WindowConfig, WindowSampler};

use super::{Batch, Precision, TrainLossOptions, WorldModel};
use crate::util::metrics_log::MetricsLog;
use crate::util::optim::warmup_lr;

pub use super::holdout::{load_holdout, split_dataset, EpisodeId};
pub use super::learner::TrainPasses;
use super::learner::{Learner, Tally, TrainData};
pub use super::train_config::{LrSchedule, WorldModelTrainConfig};

/// What the training ended with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSummary {
    pub steps: u64,
    /// Training time, summed over resumes.
    pub seconds: f64,
    pub params: i64,
    pub final_train_loss: Option<f64>,
    pub final_val_loss: Option<f64>,
    pub train_episodes: usize,
    pub holdout_episodes: usize,
    pub stopped_by: String,
    /// The training passes' number format on the machine that ran the last of them (`f32` or
    /// `bf16`; `world_model.precision = "auto"` resolved). Absent in runs of before 2026-12-08.
    #[serde(default)]
    pub precision: Option<Precision>,
}

/// The files of a world-model training folder.
#[derive(Debug, Clone)]
pub struct WorldModelFiles {
    /// The folder.
    pub dir: PathBuf,
    /// The EMA weights with the model config.
    pub model: PathBuf,
    /// Raw weights, EMA, AdamW moments, step and elapsed time (for resuming).
    pub train_state: PathBuf,
    /// The held-out episodes.
    pub holdout: PathBuf,
    /// The training config.
    pub config: PathBuf,
    /// One JSON line per logged step.
    pub metrics: PathBuf,
}

impl WorldModelFiles {
    /// The files of the training folder `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            model: dir.join("model.safetensors"),
            train_state: dir.join("train_state.safetensors"),
            holdout: dir.join("holdout.json"),
            config: dir.join("config.toml"),
            metrics: dir.join("metrics.jsonl"),
            dir: dir.to_path_buf(),
        }
    }
}

/// Options that are not part of the experiment (they do not change the result).
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Show a progress bar (hidden anyway when stderr is not a terminal).
    pub progress: bool,
}

/// Writes `text` to `path` unless an identical file is there; a different one is an error (a run
/// folder resumed under another config would mix two experiments).
fn write_stage_config(path: &Path, cfg: &WorldModelTrainConfig) -> Result<()> {
    let text = toml::to_string_pretty(cfg).context("serialising the world-model config")?;
    if let Ok(old) = std::fs::read_to_string(path) {
        if old == text {
            return Ok(());
        }
        // written before a key with a default existed: the same experiment if it resolves the same
        let same = toml::from_str::<WorldModelTrainConfig>(&old)
            .map(|o| WorldModelTrainConfig { preset: None, ..o } == *cfg)
            .unwrap_or(false);
        if same {
            w4rl_data::write_atomic(path, text.as_bytes())?;
            return Ok(());
        }
        bail!(
            "{} was written by a run with a different world-model config; use another --out folder or delete it to start over",
            path.display()
        );
    }
    w4rl_data::write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// Multiplier of the learning rate at training progress `p` ∈ [0, 1].
fn schedule_factor(cfg: &WorldModelTrainConfig, p: f64) -> f64 {
    match cfg.lr_schedule {
        LrSchedule::Constant => 1.0,
        LrSchedule::Cosine => {
            let m = cfg.lr_min_factor;
            m + (1.0 - m) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
        }
    }
}

pub(super) fn sampler_seed(seed: u64, step: u64) -> u64 {
    crate::util::seeds::mix(seed ^ crate::util::seeds::mix(step.wrapping_add(0x5741)))
}

/// Mean loss of the EMA model over a fixed set of validation batches (fixed σ and noise draws).
fn validation_loss(model: &WorldModel, val: &[Batch], seed: u64) -> Result<f64> {
    let _g = tch::no_grad_guard();
    tch::manual_seed(seed as i64);
    let mut total = 0.0;
    for b in val {
        total += model.loss(b)?.loss.double_value(&[]);
    }
    Ok(total / val.len().max(1) as f64)
}

/// What a stop request at the checkpoint of `step` leaves.
fn interrupted_at(step: u64) -> crate::util::interrupt::Interrupted {
    crate::util::interrupt::Interrupted {
        stage: "world-model training".into(),
        at: if step == 0 {
            "before its first step".into()
        } else {
            format!("at its checkpoint of step {step}")
        },
    }
}

/// The training's progress bar (hidden without `opts.progress`), at `step`.
fn progress_bar(
    cfg: &WorldModelTrainConfig,
    opts: &TrainOptions,
    step: u64,
) -> indicatif::ProgressBar {
    let pb = crate::util::progress::bar(cfg.max_steps, "world model");
    if !opts.progress {
        pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    pb.set_position(step);
    pb
}

/// Whether a stop request ends training at `step`: only at a checkpoint (or before the first step),
/// so that a resume draws what the uninterrupted run draws. Says once how far training goes on.
fn stop_now(cfg: &WorldModelTrainConfig, step: u64, told: &mut bool) -> bool {
    if !crate::util::interrupt::stop_requested() {
        return false;
    }
    if step.is_multiple_of(cfg.checkpoint_every) {
        return true;
    }
    if !*told {
        let next = step.next_multiple_of(cfg.checkpoint_every);
        if next >= cfg.max_steps {
            tracing::warn!(
                "stop requested: the world model is {} steps from its end and finishes",
                cfg.max_steps - step
            );
        } else {
            tracing::warn!(
                "stop requested: the world model trains on to its next checkpoint, step {next} ({} steps); a second Ctrl-C stops at once and resumes from step {}",
                next - step,
                next - cfg.checkpoint_every
            );
        }
        *told = true;
    }
    false
}

/// Trains the world model on `data` into the folder `dir`, or resumes the training found there.
/// Stops at `max_steps` or `max_minutes`, whichever comes first.
pub fn train(
    cfg: &WorldModelTrainConfig,
    data: &Dataset,
    dir: &Path,
    device: Device,
    opts: &TrainOptions,
) -> Result<TrainSummary> {
    cfg.validate()?;
    let paths = WorldModelFiles::in_dir(dir);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_stage_config(&paths.config, cfg)?;
    let td = TrainData::prepare(cfg, data, &paths, device)?;
    let mut l = Learner::new_or_resumed(cfg, data.spec().action_dim, device, &paths)?;
    let params = l.model.param_count();
    let mut metrics = MetricsLog::open(&paths.metrics)?;
    if paths.train_state.exists() {
        metrics.truncate_after(l.step)?;
        tracing::info!(
            "resuming the world model at step {} ({:.1} min trained)",
            l.step,
            l.elapsed_before / 60.0
        );
    } else {
        tracing::info!(
            "training a world model with {params} parameters on {} episodes ({} held out)",
            td.train.len(),
            td.held.len()
        );
    }
    let loss_opts = TrainLossOptions {
        motion_weight: cfg.motion_weight,
        motion_radius: cfg.motion_radius,
    };
    let mut sampler = td.sampler(cfg, l.step)?;
    let budget_secs = if cfg.max_minutes > 0.0 {
        cfg.max_minutes * 60.0
    } else {
        f64::INFINITY
    };
    let pb = progress_bar(cfg, opts, l.step);
    let t0 = Instant::now();
    let before = l.elapsed_before;
    let elapsed = || before + t0.elapsed().as_secs_f64();
    let mut tally = Tally::default();
    let mut told_stop = false;
    let stopped_by = loop {
        if l.step >= cfg.max_steps {
            break "max_steps";
        }
        if stop_now(cfg, l.step, &mut told_stop) {
            break "interrupt";
        }
        if elapsed() >= budget_secs {
            break "max_minutes";
        }
        let progress = (l.step as f64 / cfg.max_steps.max(1) as f64)
            .max(elapsed() / budget_secs)
            .min(1.0);
        l.opt.cfg.lr =
            warmup_lr(cfg.optimizer.lr, cfg.warmup_steps, l.step) * schedule_factor(cfg, progress);
        let batch = Batch::from_windows(
            &sampler.sample(cfg.batch_size),
            cfg.model.image_size,
            device,
        )?;
        let (loss, grad_norm) = l.optimise(cfg, &batch, &loss_opts)?;
        tally.add(loss, grad_norm, l.step - 1)?;
        let step = l.step;
        pb.set_position(step);
        if step % cfg.log_every == 0 && tally.loss_n > 0 {
            let loss = tally.take_mean();
            pb.set_prefix(format!("loss {loss:.4}"));
            metrics.log(&serde_json::json!({"step": step, "loss": loss, "grad_norm": grad_norm, "lr": l.opt.cfg.lr, "elapsed_secs": elapsed()}))?;
        }
        if step % cfg.val_every == 0 && !td.val.is_empty() {
            let v = validation_loss(&l.ema, &td.val, cfg.seed ^ 0x7A1)?;
            tch::manual_seed(sampler_seed(cfg.seed, step) as i64);
            tally.last_val = Some(v);
            metrics.log(
                &serde_json::json!({"step": step, "val_loss": v, "elapsed_secs": elapsed()}),
            )?;
            tracing::info!(
                "world model step {step}: train loss {:.4}, held-out loss {v:.4}",
                tally.last_train.unwrap_or(f64::NAN)
            );
        }
        if step % cfg.checkpoint_every == 0 {
            l.save(&paths, elapsed())?;
            sampler = td.sampler(cfg, step)?;
        }
    };
    pb.finish_and_clear();
    if stopped_by == "interrupt" {
        return Err(interrupted_at(l.step).into());
    }
    // ---- final validation and checkpoint
    if !td.val.is_empty() && l.step % cfg.val_every != 0 {
        let v = validation_loss(&l.ema, &td.val, cfg.seed ^ 0x7A1)?;
        tally.last_val = Some(v);
        metrics
            .log(&serde_json::json!({"step": l.step, "val_loss": v, "elapsed_secs": elapsed()}))?;
    }
    let secs = elapsed();
    l.save(&paths, secs)?;
    tracing::info!(
        "world model trained: {} steps in {:.1} min (stopped by {stopped_by})",
        l.step,
        secs / 60.0
    );
    Ok(TrainSummary {
        steps: l.step,
        seconds: secs,
        params,
        final_train_loss: tally.last_train,
        final_val_loss: tally.last_val,
        train_episodes: td.train.len(),
        holdout_episodes: td.held.len(),
        stopped_by: stopped_by.into(),
        precision: Some(cfg.precision.resolved()),
    })
}

/// Mean loss of `model` over `batches` fixed batches drawn from `episodes` (for tests and reports).
pub fn mean_loss(
    model: &WorldModel,
    episodes: &[Episode],
    batches: usize,
    batch: usize,
    seed: u64,
) -> Result<f64> {
    let mut s = WindowSampler::new(
        episodes.iter().collect(),
        WindowConfig {
            context: model.context_len(),
            ..Default::default()
        },
        seed,
    )?;
    let val: Vec<Batch> = (0..batches)
        .map(|_| Batch::from_windows(&s.sample(batch), model.image_size(), model.device()))
        .collect::<Result<_>>()?;
    validation_loss(model, &val, seed)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::world_model::Precision;
    use w4rl_data::{DatasetSpec, DatasetWriter, EpisodeKind};

    /// A synthetic dataset: a bright square on a dark background moves by `round(2·action)` pixels per
    /// step (wrapping), so the next frame is a deterministic function of the last frame and action.
    pub(crate) fn synthetic_dataset(
        dir: &Path,
        episodes: usize,
        steps: usize,
        size: usize,
    ) -> Dataset {
        let spec = DatasetSpec {
            suite: "synthetic".into(),
            image_size: size,
            action_dim: 2,
            action_low: vec![-1.0; 2],
            action_high: vec![1.0; 2],
            state_dim: 0,
            render: w4rl_data::FrameRender::default(),
        };
        let w = DatasetWriter::create(dir, spec.clone()).unwrap();
        let draw = |x: i64, y: i64| -> Vec<u8> {
            let mut f = vec![20u8; size * size * 3];
            for dy in 0..4 {
                for dx in 0..4 {
                    let (px, py) = (
                        (x + dx).rem_euclid(size as i64) as usize,
                        (y + dy).rem_euclid(size as i64) as usize,
                    );
                    let o = (py * size + px) * 3;
                    f[o..o + 3].copy_from_slice(&[230, 180, 40]);
                }
            }
            f
        };
        let mut rng = 12345u64;
        let mut next = || {
            rng = crate::util::seeds::mix(rng);
            (rng >> 11) as f64 / (1u64 << 53) as f64
        };
        for e in 0..episodes {
            let task = if e % 2 == 0 { "a" } else { "b" };
            let (mut x, mut y) = ((next() * size as f64) as i64, (next() * size as f64) as i64);
            let mut ep = Episode::start(
                &spec,
                task,
                EpisodeKind::Random,
                e,
                e as u64,
                &draw(x, y),
                &[],
                false,
            )
            .unwrap();
            for _ in 0..steps {
                let a = [(next() * 2.0 - 1.0) as f32, (next() * 2.0 - 1.0) as f32];
                x += (a[0] * 2.0).round() as i64;
                y += (a[1] * 2.0).round() as i64;
                ep.push(&a, 0.0, &draw(x, y), &[], false).unwrap();
            }
            w.write(&ep).unwrap();
        }
        Dataset::open(dir).unwrap()
    }

    /// libtorch's OpenMP threads collapse on an oversubscribed machine; the training tests use one.
    pub(crate) fn one_thread() {
        tch::set_num_threads(1);
    }

    fn tiny_cfg(steps: u64) -> WorldModelTrainConfig {
        let mut cfg = WorldModelTrainConfig::preset("tiny").unwrap();
        cfg.max_steps = steps;
        cfg.holdout_fraction = 0.25;
        cfg.checkpoint_every = 20;
        cfg.val_every = 20;
        cfg
    }

    #[test]
    fn tiny_model_loss_falls_on_synthetic_data() {
        one_thread();
        let dir = tempfile::tempdir().unwrap();
        let data = synthetic_dataset(&dir.path().join("data"), 8, 16, 16);
        let run = dir.path().join("run");
        let cfg = tiny_cfg(120);
        // loss of the untrained model on held-out windows
        let (_, held) = split_dataset(&data, cfg.holdout_fraction, cfg.seed).unwrap();
        tch::manual_seed(cfg.seed as i64);
        let init = WorldModel::new(cfg.model.clone(), 2, Device::Cpu).unwrap();
        let before = mean_loss(&init, &held, 4, 16, 3).unwrap();
        let s = train(&cfg, &data, &run, Device::Cpu, &TrainOptions::default()).unwrap();
        assert_eq!(s.steps, 120);
        let (trained, extra) =
            WorldModel::load(&WorldModelFiles::in_dir(&run).model, Device::Cpu).unwrap();
        assert_eq!(extra["step"], 120);
        let after = mean_loss(&trained, &held, 4, 16, 3).unwrap();
        assert!(after < 0.6 * before, "held-out loss {before} -> {after}");
        // metrics.jsonl has training and validation lines; a re-run on the finished folder trains no further
        let lines = crate::util::metrics_log::read_metrics(run.join("metrics.jsonl")).unwrap();
        assert!(
            lines.iter().any(|l| l.get("val_loss").is_some())
                && lines.iter().any(|l| l.get("loss").is_some())
        );
        assert_eq!(
            train(&cfg, &data, &run, Device::Cpu, &TrainOptions::default())
                .unwrap()
                .steps,
            120
        );
        // a different config on the same run folder is refused
        let mut other = cfg.clone();
        other.batch_size = 4;
        assert!(train(&other, &data, &run, Device::Cpu, &TrainOptions::default()).is_err());
    }

    #[test]
    fn bf16_mixed_precision_training_learns_and_saves_f32() {
        one_thread();
        let dir = tempfile::tempdir().unwrap();
        let data = synthetic_dataset(&dir.path().join("data"), 8, 16, 16);
        let f32_cfg = tiny_cfg(120);
        let mut cfg = f32_cfg.clone();
        cfg.precision = Precision::Bf16;
        let (_, held) = split_dataset(&data, cfg.holdout_fraction, cfg.seed).unwrap();
        tch::manual_seed(cfg.seed as i64);
        let init = WorldModel::new(cfg.model.clone(), 2, Device::Cpu).unwrap();
        let before = mean_loss(&init, &held, 4, 16, 3).unwrap();
        let held_out_loss = |cfg: &WorldModelTrainConfig, name: &str| {
            let run = dir.path().join(name);
            let summary = train(cfg, &data, &run, Device::Cpu, &TrainOptions::default()).unwrap();
            // the format the passes ran in is recorded
            assert_eq!(summary.precision, Some(cfg.precision.resolved()));
            let (trained, _) =
                WorldModel::load(&WorldModelFiles::in_dir(&run).model, Device::Cpu).unwrap();
            assert!(trained
                .var_store()
                .variables()
                .values()
                .all(|v| v.kind() == tch::Kind::Float));
            mean_loss(&trained, &held, 4, 16, 3).unwrap()
        };
        let mixed = held_out_loss(&cfg, "bf16");
        let full = held_out_loss(&f32_cfg, "f32");
        assert!(mixed < 0.6 * before, "held-out loss {before} -> {mixed}");
        // the saved f32 model is as good as one trained in f32 for as many steps
        assert!(
            mixed < 1.3 * full,
            "bf16-trained {mixed} vs f32-trained {full}"
        );
    }

    /// libtorch's random generator is global to the process and other tests draw from it
    /// concurrently, so the exact-resume check runs alone in a child process of this test binary.
    #[test]
    fn resuming_reproduces_an_uninterrupted_run() {
        run_alone("world_model::train::tests::resume_in_own_process");
    }

    /// Runs the ignored test `name` (its full path) alone in a child process of this test binary and
    /// asserts that it passed: for tests that seed libtorch's global generator, which the other tests
    /// draw from concurrently.
    pub(crate) fn run_alone(name: &str) {
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                name,
                "--ignored",
                "--test-threads=1",
                "--nocapture",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
            "child test failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    #[ignore = "run by resuming_reproduces_an_uninterrupted_run in its own process"]
    fn resume_in_own_process() {
        one_thread();
        let dir = tempfile::tempdir().unwrap();
        let data = synthetic_dataset(&dir.path().join("data"), 6, 12, 16);
        let cfg = tiny_cfg(40);
        let straight = dir.path().join("straight");
        train(
            &cfg,
            &data,
            &straight,
            Device::Cpu,
            &TrainOptions::default(),
        )
        .unwrap();
        // interrupted after 20 steps: train to 20, then pretend the process died (remove the stage
        // config, which holds the shorter budget) and run again with the full budget
        let resumed = dir.path().join("resumed");
        train(
            &tiny_cfg(20),
            &data,
            &resumed,
            Device::Cpu,
            &TrainOptions::default(),
        )
        .unwrap();
        std::fs::remove_file(resumed.join("config.toml")).unwrap();
        let s = train(&cfg, &data, &resumed, Device::Cpu, &TrainOptions::default()).unwrap();
        assert_eq!(s.steps, 40);
        let (a, _) =
            WorldModel::load(&WorldModelFiles::in_dir(&straight).model, Device::Cpu).unwrap();
        let (b, _) =
            WorldModel::load(&WorldModelFiles::in_dir(&resumed).model, Device::Cpu).unwrap();
        let va = a.var_store().variables();
        let mut max_diff = 0f64;
        for (k, t) in b.var_store().variables() {
            max_diff = max_diff.max((t - &va[&k]).abs().max().double_value(&[]));
        }
        assert!(max_diff < 1e-6, "resumed weights differ by {max_diff}");
        let steps: Vec<u64> = crate::util::metrics_log::read_metrics(resumed.join("metrics.jsonl"))
            .unwrap()
            .iter()
            .filter(|l| l.get("loss").is_some())
            .map(|l| l["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, vec![20, 40]);
    }
}
