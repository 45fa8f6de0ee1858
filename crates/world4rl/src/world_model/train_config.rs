//! `[world_model]`: the training settings of the world model (batch, optimiser, schedule, budgets,
//! EMA, hold-out, autoregressive steps, precision), its presets, and the section's TOML form (a named
//! preset with the file's keys on top).

use std::collections::BTreeMap;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use w4rl_data::EpisodeKind;

use super::{Precision, WorldModelConfig};
use crate::util::optim::AdamWConfig;

/// Learning-rate schedule after the warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    #[default]
    Constant,
    Cosine,
}

/// `[world_model]`: everything about training the world model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorldModelTrainConfig {
    /// The model (architecture, noise, sampler); default: the `cpu` preset.
    pub model: WorldModelConfig,
    /// Windows per batch.
    pub batch_size: usize,
    /// AdamW (lr, betas, eps, weight decay).
    pub optimizer: AdamWConfig,
    /// Linear learning-rate warm-up steps.
    pub warmup_steps: u64,
    /// After warm-up: `constant`, or `cosine` decay to `lr_min_factor · lr` over the budget (progress
    /// = the larger of step/max_steps and elapsed/max_minutes).
    pub lr_schedule: LrSchedule,
    /// Final learning rate of the cosine schedule, as a fraction of `optimizer.lr`.
    pub lr_min_factor: f64,
    /// Clip the global gradient norm to this (0 = off).
    pub grad_clip: f64,
    /// EMA decay of the weights used for imagination (ramped up as min(decay, (1+t)/(10+t))).
    pub ema_decay: f64,
    /// Stop after this many optimiser steps...
    pub max_steps: u64,
    /// ...or after this many minutes of training (summed over resumes; 0 = no time limit).
    pub max_minutes: f64,
    /// Fraction of the episodes of every task held out for validation and `eval world-model`.
    pub holdout_fraction: f64,
    /// Validation every this many steps (and at the end).
    pub val_every: u64,
    /// Batches of held-out windows in the (fixed) validation set.
    pub val_batches: usize,
    /// Log the training loss every this many steps.
    pub log_every: u64,
    /// Checkpoint every this many steps (and at the end).
    pub checkpoint_every: u64,
    /// Per-task sampling weights (missing: 1; 0 removes the task).
    pub task_weights: BTreeMap<String, f64>,
    /// Per-kind sampling weights, keys `expert`, `policy`, `random` (missing: 1).
    pub kind_weights: BTreeMap<EpisodeKind, f64>,
    /// Seed of the split, the sampler and the initialisation.
    pub seed: u64,
    /// Train on the model's own predictions (DIAMOND's `num_autoregressive_steps`, Atari 1, CS:GO
    /// 4): each window also predicts the next N frames from contexts in which its earlier
    /// predictions (one denoiser call at the training σ, quantised, no gradient) replace the real
    /// frames. A step costs about N + 1 passes. 0 = real contexts only.
    pub autoregressive_steps: usize,
    /// Extra loss weight of the pixels that moved between the last two context frames (dilated by
    /// `motion_radius`): weight `1 + motion_weight` there, 1 elsewhere. Only 2-4 % of the pixels of
    /// a tabletop frame change per step. 0 = uniform. An ablation, off by default: it did not raise
    /// the outcome AUC and made slide-handle's imagination worse (`docs/world_model.md`, History).
    pub motion_weight: f64,
    /// Dilation radius, in pixels of the model's frames, of the motion mask.
    pub motion_radius: i64,
    /// Number format of the training passes: `f32` (default), or `bf16` mixed precision: the
    /// weights, AdamW moments and EMA stay f32, and the forward and backward passes run on a
    /// bfloat16 copy of the weights refreshed every step. On CPUs with AVX-512 BF16/AMX a `cpu`
    /// preset step takes about 0.65x the time (2 cores, batch 16: 154 -> 99 ms), so a time budget
    /// buys about 1.5x the steps; elsewhere bfloat16 is emulated and slower. The saved model is f32.
    /// `auto`: bf16 where the CPU computes it natively, f32 elsewhere (the choice is recorded in the
    /// stage's `precision`).
    pub precision: Precision,
    /// The preset the section's other keys modify (`tiny`, `cpu` or `paper`; default `cpu`). Read
    /// from config files only: a resolved config holds every key and no preset.
    #[serde(skip_serializing)]
    pub preset: Option<String>,
}

impl Default for WorldModelTrainConfig {
    fn default() -> Self {
        Self::preset("cpu").expect("cpu preset exists")
    }
}

impl WorldModelTrainConfig {
    /// Training presets matching [`WorldModelConfig::preset`]:
    /// * `tiny`: 200 steps, batch 8 — a smoke test;
    /// * `cpu`: the demo's recipe, 8000 steps (28-40 minutes on 2 cores, by the day's VM), each also
    ///   predicting one frame from its own prediction (`autoregressive_steps = 1`, which raised the
    ///   held-out outcome AUC at equal time more than any other lever measured, `docs/world_model.md`);
    ///   batch 16 and lr 1e-3 with cosine decay (at equal time, more smaller steps learned faster in
    ///   the probes); a step budget, not a time budget, so any machine trains the same model;
    /// * `paper`: DIAMOND's CS:GO-sized run for a GPU (lr 1e-4, grad-clip 10, many steps).
    pub fn preset(name: &str) -> Result<Self> {
        let model = WorldModelConfig::preset(name)?;
        let base = Self {
            model,
            batch_size: 32,
            optimizer: AdamWConfig {
                lr: 1e-4,
                weight_decay: 1e-2,
                eps: 1e-8,
                ..Default::default()
            },
            warmup_steps: 100,
            lr_schedule: LrSchedule::Constant,
            lr_min_factor: 0.1,
            grad_clip: 1.0,
            ema_decay: 0.999,
            max_steps: 100_000,
            max_minutes: 0.0,
            holdout_fraction: 0.1,
            val_every: 500,
            val_batches: 8,
            log_every: 50,
            checkpoint_every: 500,
            task_weights: BTreeMap::new(),
            kind_weights: BTreeMap::new(),
            seed: 0,
            autoregressive_steps: 0,
            motion_weight: 0.0,
            motion_radius: 2,
            precision: Precision::F32,
            preset: None,
        };
        Ok(match name {
            "tiny" => Self {
                batch_size: 8,
                max_steps: 200,
                val_every: 100,
                val_batches: 2,
                log_every: 20,
                checkpoint_every: 100,
                warmup_steps: 20,
                ema_decay: 0.99,
                optimizer: AdamWConfig {
                    lr: 1e-3,
                    ..base.optimizer.clone()
                },
                ..base
            },
            "cpu" => Self {
                batch_size: 16,
                max_steps: 8_000,
                max_minutes: 0.0,
                autoregressive_steps: 1,
                optimizer: AdamWConfig {
                    lr: 1e-3,
                    ..base.optimizer.clone()
                },
                lr_schedule: LrSchedule::Cosine,
                ema_decay: 0.995,
                val_every: 500,
                ..base
            },
            "paper" => Self {
                max_steps: 1_000_000,
                grad_clip: 10.0,
                val_every: 5_000,
                checkpoint_every: 5_000,
                log_every: 100,
                ..base
            },
            _ => base,
        })
    }

    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        ensure!(
            self.batch_size >= 1,
            "world_model.batch_size must be at least 1"
        );
        ensure!(
            self.optimizer.lr > 0.0 && self.optimizer.lr.is_finite(),
            "world_model.optimizer.lr must be positive"
        );
        ensure!(
            (0.0..1.0).contains(&self.ema_decay),
            "world_model.ema_decay must be in [0, 1)"
        );
        ensure!(
            self.max_minutes >= 0.0,
            "world_model.max_minutes must be >= 0"
        );
        ensure!(
            (0.0..=1.0).contains(&self.lr_min_factor),
            "world_model.lr_min_factor must be in [0, 1]"
        );
        ensure!(
            (0.0..1.0).contains(&self.holdout_fraction),
            "world_model.holdout_fraction must be in [0, 1)"
        );
        ensure!(
            self.log_every >= 1 && self.val_every >= 1 && self.checkpoint_every >= 1,
            "world_model: log/val/checkpoint intervals must be >= 1"
        );
        ensure!(
            self.motion_weight >= 0.0 && self.motion_weight.is_finite() && self.motion_radius >= 0,
            "world_model.motion_weight and motion_radius must be >= 0"
        );
        Ok(())
    }
}

fn merge_toml(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_table() && v.is_table() => merge_toml(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

impl WorldModelTrainConfig {
    /// Resolves a `[world_model]` table: its `preset` (default `cpu`) with the other keys on top.
    pub fn from_table(mut table: toml::Table) -> Result<Self> {
        let preset = match table.remove("preset") {
            None => "cpu".to_string(),
            Some(toml::Value::String(s)) => s,
            Some(other) => {
                bail!("world_model.preset must be a string (tiny, cpu or paper), got {other}")
            }
        };
        // strict pass on the user's keys alone: unknown keys and wrong types are reported here
        let user = toml::Value::Table(table);
        Self::deserialize(user.clone())
            .map_err(|e| anyhow::anyhow!("[world_model]: {}", e.message()))?;
        let mut merged =
            toml::Value::try_from(Self::preset(&preset)?).context("serialising the preset")?;
        merge_toml(&mut merged, user);
        let cfg = Self::deserialize(merged)
            .map_err(|e| anyhow::anyhow!("[world_model]: {}", e.message()))?;
        cfg.validate()?;
        Ok(cfg)
    }
}
