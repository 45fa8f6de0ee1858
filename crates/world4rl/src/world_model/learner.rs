//! The world model's learner: the training data of a run, the model with its EMA copy and
//! optimiser, one optimisation step (in f32 or bf16 mixed precision) and its checkpoint.

use anyhow::{ensure, Result};
use tch::Device;
use w4rl_data::{Dataset, Episode, WindowConfig, WindowSampler};

use super::holdout::{split_dataset, EpisodeId};
use super::train::{sampler_seed, WorldModelFiles};
use super::train_config::WorldModelTrainConfig;
use super::{Batch, Precision, TrainLossOptions, WorldModel};
use crate::models::ActionEmbedding;
use crate::util::optim::{ema_update, AdamW, WorkingCopy};

/// Where a training step's forward and backward passes run: on the f32 model itself, or, with
/// `precision = "bf16"`, on a bfloat16 working copy of it whose gradients go back to the f32 weights
/// (mixed precision; see [`WorkingCopy`]).
pub struct TrainPasses {
    working: Option<(WorldModel, WorkingCopy)>,
}

impl TrainPasses {
    /// Builds the working copy of `model` that `precision` asks for on this machine (none for f32;
    /// `auto` is bf16 where the CPU computes it natively).
    pub fn new(model: &WorldModel, precision: Precision) -> Result<Self> {
        let working = match precision.resolved() {
            Precision::F32 => None,
            low => {
                let device = model.device();
                if crate::util::device::cpu_has_native_bf16() == Some(false)
                    && device == Device::Cpu
                {
                    tracing::warn!(
                        "world_model.precision = \"{low}\", but this CPU has no AVX-512 BF16/AMX: \
                         bfloat16 is emulated and training will be slower than in f32"
                    );
                }
                let mut w = WorldModel::new(model.config().clone(), model.action_dim(), device)?;
                w.set_precision(low);
                let copy = WorkingCopy::new(model.var_store(), w.var_store())?;
                Some((w, copy))
            }
        };
        Ok(Self { working })
    }

    /// The training loss of `batch` ([`WorldModel::train_loss`]), back-propagated into `model`'s
    /// gradients, which must be zero.
    pub fn loss_backward(
        &mut self,
        model: &WorldModel,
        batch: &Batch,
        opts: &TrainLossOptions,
    ) -> Result<f64> {
        let loss = match &mut self.working {
            None => {
                let loss = model.train_loss(batch, opts)?;
                loss.backward();
                loss
            }
            Some((w, copy)) => {
                copy.refresh();
                let loss = w.train_loss(batch, opts)?;
                loss.backward();
                copy.grads_to_master();
                loss
            }
        };
        Ok(loss.double_value(&[]))
    }
}

/// The data of one training run: the split, the window settings and the fixed validation batches.
pub(super) struct TrainData {
    pub(super) train: Vec<Episode>,
    pub(super) held: Vec<Episode>,
    pub(super) windows: WindowConfig,
    pub(super) val: Vec<Batch>,
}

impl TrainData {
    /// Splits `data` (all tasks pooled, held-out episodes per task), records the held-out episodes in
    /// `holdout.json` and draws the validation batches.
    pub(super) fn prepare(
        cfg: &WorldModelTrainConfig,
        data: &Dataset,
        paths: &WorldModelFiles,
        device: Device,
    ) -> Result<Self> {
        let spec = data.spec();
        let enc = &cfg.model.action_encoding;
        if spec.action_low.iter().any(|&l| (l as f64) < enc.low)
            || spec.action_high.iter().any(|&h| (h as f64) > enc.high)
        {
            tracing::warn!(
                "the dataset's action bounds {:?}..{:?} exceed the encoding's [{}, {}]: larger actions are clamped",
                spec.action_low,
                spec.action_high,
                enc.low,
                enc.high
            );
        }
        let (train, held) = split_dataset(data, cfg.holdout_fraction, cfg.seed)?;
        ensure!(
            !train.is_empty(),
            "no training episodes left after the hold-out split"
        );
        let held_ids: Vec<EpisodeId> = held.iter().map(EpisodeId::of).collect();
        w4rl_data::write_atomic(
            &paths.holdout,
            serde_json::to_string_pretty(&held_ids)?.as_bytes(),
        )?;
        let windows = WindowConfig {
            context: cfg.model.context,
            task_weights: cfg.task_weights.clone(),
            kind_weights: cfg.kind_weights.clone(),
            rollout: cfg.autoregressive_steps,
        };
        let val: Vec<Batch> = if held.is_empty() {
            Vec::new()
        } else {
            let plain = WindowConfig {
                context: cfg.model.context,
                ..Default::default()
            };
            let mut vs = WindowSampler::new(held.iter().collect(), plain, cfg.seed ^ 0xEA1)?;
            (0..cfg.val_batches)
                .map(|_| {
                    Batch::from_windows(&vs.sample(cfg.batch_size), cfg.model.image_size, device)
                })
                .collect::<Result<_>>()?
        };
        Ok(Self {
            train,
            held,
            windows,
            val,
        })
    }

    /// The training windows' sampler from `step` on (re-seeded at every checkpoint, so that a run
    /// resumed there draws what an uninterrupted one draws); libtorch's generator is re-seeded too.
    pub(super) fn sampler(
        &self,
        cfg: &WorldModelTrainConfig,
        step: u64,
    ) -> Result<WindowSampler<'_>> {
        let s = WindowSampler::new(
            self.train.iter().collect(),
            self.windows.clone(),
            sampler_seed(cfg.seed, step),
        )?;
        tch::manual_seed(sampler_seed(cfg.seed, step) as i64);
        Ok(s)
    }
}

/// The learner's state: the model, its EMA copy, the optimiser, the training passes, the step and
/// the time trained by earlier invocations.
pub(super) struct Learner {
    pub(super) model: WorldModel,
    pub(super) ema: WorldModel,
    pub(super) opt: AdamW,
    pub(super) passes: TrainPasses,
    pub(super) step: u64,
    pub(super) elapsed_before: f64,
}

impl Learner {
    /// A fresh model (from `cfg.seed`), or the one of the train state in `paths` when there is one.
    pub(super) fn new_or_resumed(
        cfg: &WorldModelTrainConfig,
        action_dim: usize,
        device: Device,
        paths: &WorldModelFiles,
    ) -> Result<Self> {
        tch::manual_seed(cfg.seed as i64);
        let mut model = WorldModel::new(cfg.model.clone(), action_dim, device)?;
        let mut ema = WorldModel::new(cfg.model.clone(), action_dim, device)?;
        crate::util::optim::copy_weights(ema.var_store(), model.var_store());
        let mut opt = AdamW::new(model.var_store(), cfg.optimizer.clone());
        if cfg.model.action_embedding == ActionEmbedding::Embedding {
            // DIAMOND keeps embeddings out of weight decay
            opt.exempt_from_decay(|name| name.contains("act_emb"));
        }
        let passes = TrainPasses::new(&model, cfg.precision)?;
        let (mut step, mut elapsed_before) = (0u64, 0f64);
        if paths.train_state.exists() {
            let state = &paths.train_state;
            let (t, meta) = crate::util::checkpoint::load_tensors(state)?;
            crate::util::checkpoint::copy_into_varstore(&t, ema.var_store_mut(), "ema.", state)?;
            crate::util::checkpoint::copy_into_varstore(
                &t,
                model.var_store_mut(),
                "model.",
                state,
            )?;
            opt.load_state(&t, "opt.", state)?;
            step = meta["step"].as_u64().unwrap_or(0);
            elapsed_before = meta["elapsed_secs"].as_f64().unwrap_or(0.0);
        }
        Ok(Self {
            model,
            ema,
            opt,
            passes,
            step,
            elapsed_before,
        })
    }

    /// One optimiser step on `batch` (skipped when the loss or the gradient is not finite), then the
    /// EMA update. Returns the loss and the gradient norm.
    pub(super) fn optimise(
        &mut self,
        cfg: &WorldModelTrainConfig,
        batch: &Batch,
        loss_opts: &TrainLossOptions,
    ) -> Result<(f64, f64)> {
        self.opt.zero_grad();
        let loss = self.passes.loss_backward(&self.model, batch, loss_opts)?;
        let clip = if cfg.grad_clip > 0.0 {
            cfg.grad_clip
        } else {
            f64::INFINITY
        };
        let grad_norm = self.opt.clip_grad_norm(clip);
        if loss.is_finite() && grad_norm.is_finite() {
            self.opt.step();
        }
        let decay = cfg
            .ema_decay
            .min((1.0 + self.step as f64) / (10.0 + self.step as f64));
        ema_update(self.ema.var_store(), self.model.var_store(), decay);
        self.step += 1;
        Ok((loss, grad_norm))
    }

    /// Writes the train state and the EMA model.
    pub(super) fn save(&self, paths: &WorldModelFiles, secs: f64) -> Result<()> {
        let meta = serde_json::json!({"step": self.step, "elapsed_secs": secs});
        let mut all = crate::util::checkpoint::varstore_tensors(self.model.var_store(), "model.");
        all.extend(crate::util::checkpoint::varstore_tensors(
            self.ema.var_store(),
            "ema.",
        ));
        all.extend(self.opt.state_tensors("opt."));
        crate::util::checkpoint::save_tensors(&paths.train_state, &all, &meta)?;
        self.ema.save(&paths.model, meta)
    }
}

/// The training losses between two log lines, and the last logged ones.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) loss_sum: f64,
    pub(super) loss_n: u64,
    pub(super) bad_steps: u32,
    pub(super) last_train: Option<f64>,
    pub(super) last_val: Option<f64>,
}

impl Tally {
    /// Counts a step's loss; a non-finite one (whose update was skipped) is said, and 20 in a row
    /// end training.
    pub(super) fn add(&mut self, loss: f64, grad_norm: f64, step: u64) -> Result<()> {
        if loss.is_finite() && grad_norm.is_finite() {
            (self.bad_steps, self.loss_sum, self.loss_n) =
                (0, self.loss_sum + loss, self.loss_n + 1);
            return Ok(());
        }
        self.bad_steps += 1;
        tracing::warn!(
            "step {step}: non-finite loss {loss} or gradient norm {grad_norm}; update skipped"
        );
        ensure!(
            self.bad_steps < 20,
            "the world-model loss stayed non-finite for 20 steps (lower the learning rate?)"
        );
        Ok(())
    }

    /// The mean training loss since the last call.
    pub(super) fn take_mean(&mut self) -> f64 {
        let mean = self.loss_sum / self.loss_n as f64;
        (self.loss_sum, self.loss_n, self.last_train) = (0.0, 0, Some(mean));
        mean
    }
}
