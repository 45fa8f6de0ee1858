//! Behaviour cloning of the Gaussian policy on expert demonstrations (World4RL §III-A, Eq. 2):
//! `L_BC(ξ) = -E_{(x_t, a_t) ~ D_exp} [ log π_ξ(a_t | x_t) ]`, one policy per task.
//!
//! CleanRL-style: every hyper-parameter in [`BcConfig`], the loop reads top to bottom in [`train_task`].
//! The policy is trained on the first `demos` expert episodes of the task (by episode index); up to
//! `val_demos` further expert episodes, when the dataset has them, measure held-out NLL and MSE.

use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{nn::OptimizerConfig, Device, Kind, Tensor};
use w4rl_data::{Dataset, Episode, EpisodeKind};

use super::gaussian::{GaussianPolicy, ObsBatch, PolicyConfig, PolicySpec};
use super::obs::{dihedral as dihedral_frames, dihedral_actions, random_dihedral_picks};
use crate::util::frames::bytes_to_chw;
use crate::util::optim::{restore_weights, snapshot_weights, WeightSnapshot};

/// `[bc]`: behaviour cloning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BcConfig {
    /// Network architecture and σ bounds.
    pub policy: PolicyConfig,
    /// Tasks to train a policy for (empty: every task of the dataset).
    pub tasks: Vec<String>,
    /// Expert episodes per task used for training (the lowest indices; 0 = all of them).
    pub demos: usize,
    /// Per-task overrides of `demos` (`[bc.demos_per_task] push-block = 10`): the number of
    /// demonstrations is how a task's BC\* is placed where refinement has headroom.
    pub demos_per_task: std::collections::BTreeMap<String, usize>,
    /// Further expert episodes held out for validation when the dataset has them (default 5).
    pub val_demos: usize,
    /// Input frame size (frames are reduced by area averaging). In an experiment config 0 means the
    /// world model's frame size (`ExperimentConfig::resolve`); a learner called with 0 uses the
    /// dataset's.
    pub image_size: usize,
    /// Gradient steps (default 16000, with a checkpoint every 2000 read on validation scenes: the
    /// 6000-step BC of before was under-trained, and 12000 steps reached 73.5-79.5 % on turn-lever
    /// where 6000 landed anywhere in 40.5-76 % over BC seeds, `docs/evaluation.md`).
    pub steps: usize,
    /// Minibatch size (default 64).
    pub batch_size: usize,
    /// Adam learning rate (default 3e-4).
    pub lr: f64,
    /// Adam weight decay (default 1e-4).
    pub weight_decay: f64,
    /// Clip the gradient's global L2 norm to this before each step (default 10; 0 = off). The Gaussian
    /// NLL scales the mean's gradient by 1/σ², so once σ nears `std_min` a few transitions give
    /// gradients 20-50x the usual norm (40-100 on the demo's data); unclipped, such spikes collapsed
    /// slide-handle's BC to a constant action with σ pinned at `std_max`, for good on one seed of three
    /// (BC\* 1.5 % instead of 60 % with clipping, `docs/refinement.md`). The norm of every step is
    /// logged (`grad_norm`, `grad_norm_max` per log window in `metrics.jsonl`).
    pub max_grad_norm: f64,
    /// Learning-rate schedule over `steps`: `constant` (the default) or `cosine`, a half cosine from `lr`
    /// at the first step to 0 at the last, so the last weights settle instead of moving at the full
    /// step size until the end (Diffusion Policy and LeRobot train BC-style policies this way).
    /// Measured on the demo's tabletop data at 12000 steps (2 seeds): lower success than `constant` on
    /// turn-lever and slide-handle, so it is not the default (docs/refinement.md).
    pub lr_schedule: LrSchedule,
    /// Random-shift augmentation in pixels (default 2; 0 = off).
    pub shift_pad: i64,
    /// Augment with random 90° rotations and mirror images of the frame, transforming the 2-D action
    /// alike (valid when the action is a displacement in image axes and the task looks the same in
    /// every orientation, as in the tabletop suite). Default: on for `tabletop` data with 2-D actions
    /// and an image-only policy, off otherwise.
    pub dihedral: Option<bool>,
    /// Log the training loss every this many steps, and validate every 5x as many (default 100). With
    /// held-out demos, the weights with the lowest held-out MSE are kept.
    pub log_every: usize,
    /// Seed of initialisation and minibatch sampling.
    pub seed: u64,
    /// Hand the weights to the caller every this many steps and at the last step (0 = never; default
    /// 2000). The
    /// `bc` stage saves them and keeps the one with the highest success on `eval.validation_episodes`
    /// validation scenes (BC\*, `docs/evaluation.md`); the learner itself never sees an environment.
    /// Without checkpoints the weights with the lowest held-out MSE stand, read with the mean action.
    pub checkpoint_every: usize,
    /// Also train the data-matched control `bc-filtered/<task>`: this BC on the expert demos plus the
    /// successful BC rollouts of the training data (the real data the world model and the classifier
    /// saw, without imagination), chosen the same way (default true: refinement starts from it,
    /// `refine.start`).
    pub filtered_control: bool,
}

impl Default for BcConfig {
    fn default() -> Self {
        Self {
            policy: PolicyConfig::default(),
            tasks: Vec::new(),
            demos: 0,
            demos_per_task: Default::default(),
            val_demos: 5,
            image_size: 0,
            steps: 16000,
            batch_size: 64,
            lr: 3e-4,
            weight_decay: 1e-4,
            max_grad_norm: 10.0,
            lr_schedule: LrSchedule::Constant,
            shift_pad: 2,
            dihedral: None,
            log_every: 100,
            seed: 0,
            checkpoint_every: 2000,
            filtered_control: true,
        }
    }
}

impl BcConfig {
    /// Checks value ranges.
    pub fn validate(&self) -> Result<()> {
        self.policy.validate()?;
        ensure!(self.steps > 0, "bc.steps must be positive");
        ensure!(self.batch_size > 0, "bc.batch_size must be positive");
        ensure!(
            self.lr > 0.0 && self.lr.is_finite(),
            "bc.lr must be positive (got {})",
            self.lr
        );
        ensure!(
            self.max_grad_norm >= 0.0 && self.max_grad_norm.is_finite(),
            "bc.max_grad_norm must be >= 0 (0 = no clipping; got {})",
            self.max_grad_norm
        );
        ensure!(self.shift_pad >= 0, "bc.shift_pad must be >= 0");
        ensure!(self.log_every > 0, "bc.log_every must be positive");
        Ok(())
    }
}

/// `[bc] lr_schedule`: how the learning rate moves over the training steps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// `lr` at every step.
    #[default]
    Constant,
    /// `lr * (1 + cos(pi * (step - 1) / steps)) / 2`: `lr` at step 1, falling to near 0 at the last.
    Cosine,
}

impl LrSchedule {
    /// The learning rate of `step` (1-based) of `steps`, for a base rate `lr`.
    pub fn at(self, lr: f64, step: usize, steps: usize) -> f64 {
        match self {
            LrSchedule::Constant => lr,
            LrSchedule::Cosine => {
                let progress = (step.saturating_sub(1)) as f64 / steps.max(1) as f64;
                lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

/// What BC reports for one task.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BcReport {
    /// Task.
    pub task: String,
    /// Expert episodes trained on.
    pub demos: usize,
    /// (frame, action) pairs trained on.
    pub transitions: usize,
    /// Held-out expert episodes.
    pub val_demos: usize,
    /// Training NLL averaged over the last logging window.
    #[serde(deserialize_with = "crate::util::json_float::nan_if_null")]
    pub train_nll: f64,
    /// Held-out NLL (None without held-out episodes).
    pub val_nll: Option<f64>,
    /// Held-out MSE of the mean action in the normalised box.
    pub val_mse: Option<f64>,
    /// Step of the kept weights (lowest held-out MSE; the last step without held-out demos).
    pub best_step: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Tensors of a set of (frame, action, state) pairs.
pub struct BcData {
    /// Inputs.
    pub obs: ObsBatch,
    /// Normalised actions `[N, A]`.
    pub actions: Tensor,
    /// Raw states `[N, S]` (for the normaliser; `S` may be 0).
    pub states: Tensor,
}

/// The policy spec implied by a dataset for `task` at input size `image_size` (0 = the dataset's).
pub fn spec_for(
    dataset: &Dataset,
    task: &str,
    image_size: usize,
    cfg: &PolicyConfig,
) -> PolicySpec {
    let s = dataset.spec();
    PolicySpec {
        image_size: if image_size == 0 {
            s.image_size
        } else {
            image_size
        },
        action_dim: s.action_dim,
        state_dim: if cfg.use_state { s.state_dim } else { 0 },
        action_low: s.action_low.clone(),
        action_high: s.action_high.clone(),
        task: task.to_string(),
        render_size: s.image_size,
        render: s.render.clone(),
    }
}

/// Every `(frames[t], actions[t])` pair (`t < T`) of the episodes, as tensors for `policy`.
pub fn pairs(episodes: &[&Episode], policy: &GaussianPolicy) -> Result<BcData> {
    let spec = policy.spec();
    let dev = policy.device();
    let (mut images, mut actions, mut states) = (Vec::new(), Vec::new(), Vec::new());
    let mut sd = 0;
    for ep in episodes {
        let t = ep.steps();
        if t == 0 {
            continue;
        }
        let size = ep.meta.image_size;
        sd = ep.meta.state_dim;
        if policy.config().use_image {
            // frames 0..t at the policy's size, then stacks of the last `k` frames (repeating frame 0)
            let k = policy.config().frame_stack.max(1) as i64;
            let f = bytes_to_chw(
                &ep.frames[..t * ep.frame_len()],
                t,
                size,
                spec.image_size,
                dev,
            )?;
            let idx: Vec<i64> = (0..t as i64)
                .flat_map(|i| (0..k).map(move |j| (i - k + 1 + j).max(0)))
                .collect();
            let s = spec.image_size as i64;
            let stacked = f
                .index_select(0, &Tensor::from_slice(&idx).to_device(dev))
                .view([t as i64, 3 * k, s, s]);
            images.push(stacked);
        }
        actions.push(policy.normalize_actions(&ep.actions)?);
        states.push(Tensor::from_slice(&ep.states[..t * sd]).view([t as i64, sd as i64]));
    }
    ensure!(!actions.is_empty(), "the episodes hold no transitions");
    let states = Tensor::cat(&states, 0).to_device(dev);
    let obs = ObsBatch {
        image: (!images.is_empty()).then(|| Tensor::cat(&images, 0)),
        state: (policy.config().use_state && sd > 0).then(|| states.shallow_clone()),
    };
    Ok(BcData {
        obs,
        actions: Tensor::cat(&actions, 0),
        states,
    })
}

/// Loads the expert episodes of `task`: `(train, validation)` by episode index.
pub fn expert_episodes(
    dataset: &Dataset,
    task: &str,
    demos: usize,
    val_demos: usize,
) -> Result<(Vec<Episode>, Vec<Episode>)> {
    let mut eps = dataset
        .load_where(|m| m.task == task && m.kind == EpisodeKind::Expert)
        .with_context(|| {
            format!(
                "loading the expert episodes of '{task}' from {}",
                dataset.dir().display()
            )
        })?;
    if eps.is_empty() {
        bail!(
            "the dataset {} has no expert episodes of task '{task}' (tasks: {}); collect some first",
            dataset.dir().display(),
            dataset.tasks().join(", ")
        );
    }
    eps.sort_by_key(|e| e.meta.index);
    let n_train = if demos == 0 {
        eps.len()
    } else {
        demos.min(eps.len())
    };
    if demos > eps.len() {
        tracing::warn!(
            "bc: '{task}' has only {} expert episodes, {demos} were asked for",
            eps.len()
        );
    }
    let val: Vec<Episode> = eps.split_off(n_train).into_iter().take(val_demos).collect();
    Ok((eps, val))
}

/// The global L2 norm of the gradients of `vs`'s trainable variables; when `max_norm > 0` and the norm is
/// larger, the gradients are scaled down to that norm. Returns the norm before clipping.
fn clip_grad_norm(vs: &tch::nn::VarStore, max_norm: f64) -> f64 {
    tch::no_grad(|| {
        let grads: Vec<Tensor> = vs
            .trainable_variables()
            .iter()
            .map(Tensor::grad)
            .filter(Tensor::defined)
            .collect();
        if grads.is_empty() {
            return 0.0;
        }
        let norms: Vec<Tensor> = grads.iter().map(Tensor::norm).collect();
        let norm = Tensor::stack(&norms, 0).norm().double_value(&[]);
        if max_norm > 0.0 && norm > max_norm {
            let scale = max_norm / (norm + 1e-6);
            for mut g in grads {
                let _ = g.g_mul_scalar_(scale);
            }
        }
        norm
    })
}

/// Mean NLL and MSE (normalised box) of `policy` on `data`, without augmentation.
pub fn evaluate(policy: &GaussianPolicy, data: &BcData) -> Result<(f64, f64)> {
    tch::no_grad(|| {
        let n = data.actions.size()[0];
        let (mut nll, mut mse) = (0.0, 0.0);
        let mut start = 0;
        while start < n {
            let len = (n - start).min(1024);
            let idx =
                Tensor::arange_start(start, start + len, (Kind::Int64, data.actions.device()));
            let out = policy.forward(&data.obs.select(&idx), 0)?;
            let a = data.actions.index_select(0, &idx);
            nll -= out.log_prob(&a).sum(Kind::Float).double_value(&[]);
            mse += (&out.mean - &a)
                .square()
                .mean_dim(-1, false, Kind::Float)
                .sum(Kind::Float)
                .double_value(&[]);
            start += len;
        }
        Ok((nll / n as f64, mse / n as f64))
    })
}

/// Trains the BC policy of one task; `log` receives one JSON object per logging step.
pub fn train_task(
    cfg: &BcConfig,
    dataset: &Dataset,
    task: &str,
    device: Device,
    log: impl FnMut(serde_json::Value) -> Result<()>,
) -> Result<(GaussianPolicy, BcReport)> {
    train_task_on(cfg, dataset, task, Vec::new(), device, log, |_, _| Ok(()))
}

/// Trains the BC policy of one task on its expert demonstrations plus `extra` episodes (filtered
/// BC: the successful policy rollouts); `log` receives one JSON object per logging step and
/// `checkpoint` the policy every `cfg.checkpoint_every` steps and at the last step (before the
/// weights with the lowest held-out MSE are restored).
pub fn train_task_on(
    cfg: &BcConfig,
    dataset: &Dataset,
    task: &str,
    extra: Vec<Episode>,
    device: Device,
    mut log: impl FnMut(serde_json::Value) -> Result<()>,
    mut checkpoint: impl FnMut(usize, &GaussianPolicy) -> Result<()>,
) -> Result<(GaussianPolicy, BcReport)> {
    cfg.validate()?;
    let start = Instant::now();
    tch::manual_seed(cfg.seed as i64);

    // ---- data
    let demos = cfg.demos_per_task.get(task).copied().unwrap_or(cfg.demos);
    let (mut train_eps, val_eps) = expert_episodes(dataset, task, demos, cfg.val_demos)?;
    let n_expert = train_eps.len();
    train_eps.extend(extra);
    for e in train_eps.iter().chain(&val_eps) {
        crate::util::seeds::ensure_training_seed(
            e.meta.seed,
            &format!("episode {} ({:?}) of '{task}'", e.meta.index, e.meta.kind),
        )?;
    }
    let spec = spec_for(dataset, task, cfg.image_size, &cfg.policy);
    let mut policy = GaussianPolicy::new(&cfg.policy, &spec, device)?;
    let train = pairs(&train_eps.iter().collect::<Vec<_>>(), &policy)?;
    let val = if val_eps.is_empty() {
        None
    } else {
        Some(pairs(&val_eps.iter().collect::<Vec<_>>(), &policy)?)
    };
    if cfg.policy.use_state {
        let m = Vec::<f32>::try_from(train.states.mean_dim(0, false, Kind::Float))?;
        let s = Vec::<f32>::try_from(train.states.std_dim(0, false, false))?;
        policy.set_state_normalizer(&m, &s)?;
    }
    let n = train.actions.size()[0];
    let dihedral = cfg.dihedral.unwrap_or(
        dataset.spec().suite == "tabletop" && spec.action_dim == 2 && !cfg.policy.use_state,
    );
    ensure!(
        !dihedral || (spec.action_dim == 2 && !cfg.policy.use_state),
        "bc.dihedral needs 2-D displacement actions and an image-only policy"
    );
    tracing::info!(
        "bc '{task}': {n_expert} demos, {} other episodes, {n} transitions, {} held-out demos",
        train_eps.len() - n_expert,
        val_eps.len()
    );

    // ---- optimisation
    let mut opt = tch::nn::Adam {
        wd: cfg.weight_decay,
        ..Default::default()
    }
    .build(policy.var_store(), cfg.lr)?;
    let bar = crate::util::progress::bar(cfg.steps as u64, format!("bc {task}"));
    let (mut window, mut window_n, mut last_train) = (0.0, 0usize, f64::NAN);
    let (mut grad_sum, mut grad_max) = (0.0f64, 0.0f64);
    let mut best: Option<(f64, usize, WeightSnapshot)> = None;
    for step in 1..=cfg.steps {
        crate::util::interrupt::check("BC training")?;
        if cfg.lr_schedule != LrSchedule::Constant {
            opt.set_lr(cfg.lr_schedule.at(cfg.lr, step, cfg.steps));
        }
        let idx = Tensor::randint(n, [cfg.batch_size as i64], (Kind::Int64, device));
        let mut obs = train.obs.select(&idx);
        let mut target = train.actions.index_select(0, &idx);
        if dihedral {
            let picks = random_dihedral_picks(cfg.batch_size as i64);
            obs.image = obs.image.map(|x| dihedral_frames(&x, &picks));
            target = dihedral_actions(&target, &picks);
        }
        let out = policy.forward(&obs, cfg.shift_pad)?;
        let loss = -out.log_prob(&target).mean(Kind::Float);
        opt.zero_grad();
        loss.backward();
        let g = clip_grad_norm(policy.var_store(), cfg.max_grad_norm);
        opt.step();
        let l = loss.double_value(&[]);
        ensure!(
            l.is_finite(),
            "bc '{task}': the loss became {l} at step {step}; lower bc.lr"
        );
        window += l;
        window_n += 1;
        grad_sum += g;
        grad_max = grad_max.max(g);
        bar.inc(1);
        if step % cfg.log_every == 0 || step == cfg.steps {
            last_train = window / window_n as f64;
            let mut rec = serde_json::json!({
                "task": task,
                "step": step,
                "train_nll": last_train,
                "grad_norm": grad_sum / window_n as f64,
                "grad_norm_max": grad_max,
            });
            if step % (5 * cfg.log_every) == 0 || step == cfg.steps {
                if let Some(v) = &val {
                    let (nll, mse) = evaluate(&policy, v)?;
                    rec["val_nll"] = nll.into();
                    rec["val_mse"] = mse.into();
                    if best.as_ref().is_none_or(|(b, _, _)| mse < *b) {
                        best = Some((mse, step, snapshot_weights(policy.var_store())));
                    }
                }
            }
            log(rec)?;
            bar.set_prefix(format!("nll {last_train:.3}"));
            window = 0.0;
            window_n = 0;
            grad_sum = 0.0;
            grad_max = 0.0;
        }
        if cfg.checkpoint_every > 0 && (step % cfg.checkpoint_every == 0 || step == cfg.steps) {
            checkpoint(step, &policy)?;
        }
    }
    bar.finish_and_clear();
    let mut best_step = cfg.steps;
    if let Some((_, step, weights)) = best {
        restore_weights(policy.var_store(), &weights);
        best_step = step;
    }
    let (val_nll, val_mse) = match &val {
        Some(v) => {
            let (a, b) = evaluate(&policy, v)?;
            (Some(a), Some(b))
        }
        None => (None, None),
    };
    let report = BcReport {
        task: task.to_string(),
        demos: n_expert,
        transitions: n as usize,
        val_demos: val_eps.len(),
        train_nll: last_train,
        val_nll,
        val_mse,
        best_step,
        seconds: start.elapsed().as_secs_f64(),
    };
    Ok((policy, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gradient_above_the_bound_is_scaled_to_it_and_its_norm_reported() {
        // two variables with gradients (3, 4) and (12): global norm 13
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let a = vs.root().var("a", &[2], tch::nn::Init::Const(0.0));
        let b = vs.root().var("b", &[1], tch::nn::Init::Const(0.0));
        let grads = |max: f64| {
            let loss = (&a * Tensor::from_slice(&[3.0f32, 4.0])).sum(Kind::Float) + &b * 12.0;
            for v in vs.trainable_variables() {
                let mut g = v.grad();
                if g.defined() {
                    let _ = g.zero_();
                }
            }
            loss.sum(Kind::Float).backward();
            let norm = clip_grad_norm(&vs, max);
            let ga = Vec::<f32>::try_from(a.grad()).unwrap();
            let gb = Vec::<f32>::try_from(b.grad()).unwrap();
            (norm, ga, gb)
        };
        let (norm, ga, gb) = grads(0.0);
        assert!((norm - 13.0).abs() < 1e-5);
        assert_eq!((ga, gb), (vec![3.0, 4.0], vec![12.0]), "0 = no clipping");
        let (norm, ga, gb) = grads(100.0);
        assert!((norm - 13.0).abs() < 1e-5);
        assert_eq!(
            (ga, gb),
            (vec![3.0, 4.0], vec![12.0]),
            "below the bound: unchanged"
        );
        let (norm, ga, gb) = grads(1.3);
        assert!((norm - 13.0).abs() < 1e-5, "the norm before clipping");
        for (got, want) in ga.iter().chain(&gb).zip([0.3, 0.4, 1.2]) {
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
    }

    #[test]
    fn cosine_schedule_starts_at_lr_halves_midway_and_ends_near_zero() {
        let (lr, steps) = (3e-4, 1000);
        let s = LrSchedule::Cosine;
        assert_eq!(s.at(lr, 1, steps), lr);
        assert!((s.at(lr, 501, steps) - lr / 2.0).abs() < 1e-12);
        assert!(s.at(lr, steps, steps) < lr * 1e-4);
        let rates: Vec<f64> = (1..=steps).map(|k| s.at(lr, k, steps)).collect();
        assert!(rates.windows(2).all(|w| w[1] < w[0]), "falls at every step");
        assert!((1..=steps).all(|k| LrSchedule::Constant.at(lr, k, steps) == lr));
    }

    #[test]
    fn schedule_is_read_by_name_and_an_unknown_one_is_refused() {
        let c: BcConfig = toml::from_str("lr_schedule = \"cosine\"").unwrap();
        assert_eq!(c.lr_schedule, LrSchedule::Cosine);
        assert_eq!(BcConfig::default().lr_schedule, LrSchedule::Constant);
        let err = toml::from_str::<BcConfig>("lr_schedule = \"step\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cosine"), "{err}");
    }
}
