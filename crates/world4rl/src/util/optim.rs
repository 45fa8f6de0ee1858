//! AdamW with a saveable state, gradient clipping, warm-up and EMA weights.
//!
//! tch's built-in optimisers keep their moments inside libtorch where they cannot be checkpointed, so a
//! resumed run would restart them. This AdamW (Loshchilov & Hutter, decoupled weight decay) keeps the
//! first and second moments as tensors that go into the checkpoint, which makes a resume exact.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Kind, Tensor};

/// AdamW hyper-parameters.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
        }
    }
}

/// AdamW over the trainable variables of a VarStore.
pub struct AdamW {
    params: Vec<(String, Tensor)>,
    /// Per parameter: whether weight decay applies.
    decays: Vec<bool>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: i64,
    /// Hyper-parameters; `lr` may be changed between steps (schedules).
    pub cfg: AdamWConfig,
}

impl AdamW {
    /// Builds the optimiser for every trainable variable of `vs`.
    pub fn new(vs: &VarStore, cfg: AdamWConfig) -> Self {
        let mut params: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let m = params.iter().map(|(_, p)| p.zeros_like()).collect();
        let v = params.iter().map(|(_, p)| p.zeros_like()).collect();
        let decays = vec![true; params.len()];
        Self {
            params,
            decays,
            m,
            v,
            step: 0,
            cfg,
        }
    }

    /// Exempts the parameters whose names satisfy `exempt` from weight decay (DIAMOND's
    /// `configure_opt` keeps embeddings and norms out of it). Returns how many were exempted.
    pub fn exempt_from_decay(&mut self, exempt: impl Fn(&str) -> bool) -> usize {
        let mut n = 0;
        for (d, (name, _)) in self.decays.iter_mut().zip(&self.params) {
            if exempt(name) {
                *d = false;
                n += 1;
            }
        }
        n
    }

    /// Number of updates done so far.
    pub fn steps_done(&self) -> i64 {
        self.step
    }

    /// Clears the gradients.
    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    /// Scales gradients so their global L2 norm is at most `max_norm`; returns the norm before clipping.
    /// A non-finite norm is returned as is and the gradients are zeroed, so one bad batch cannot wreck
    /// the weights.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        let mut sq = 0.0;
        for (_, p) in &self.params {
            let g = p.grad();
            if g.defined() {
                sq += g.pow_tensor_scalar(2).sum(Kind::Double).double_value(&[]);
            }
        }
        let norm = sq.sqrt();
        tch::no_grad(|| {
            if !norm.is_finite() {
                for (_, p) in &self.params {
                    let mut g = p.grad();
                    if g.defined() {
                        let _ = g.zero_();
                    }
                }
            } else if norm > max_norm && max_norm > 0.0 {
                let scale = max_norm / (norm + 1e-6);
                for (_, p) in &self.params {
                    let mut g = p.grad();
                    if g.defined() {
                        let _ = g.g_mul_scalar_(scale);
                    }
                }
            }
        });
        norm
    }

    /// One AdamW update with the current gradients.
    pub fn step(&mut self) {
        self.step += 1;
        let c = &self.cfg;
        let bc1 = 1.0 - c.beta1.powi(self.step as i32);
        let bc2 = 1.0 - c.beta2.powi(self.step as i32);
        tch::no_grad(|| {
            for (i, (_, p)) in self.params.iter_mut().enumerate() {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let m = &mut self.m[i];
                let v = &mut self.v[i];
                let _ = m.g_mul_scalar_(c.beta1);
                let _ = m.g_add_(&(&g * (1.0 - c.beta1)));
                let _ = v.g_mul_scalar_(c.beta2);
                let _ = v.g_add_(&(&g * &g * (1.0 - c.beta2)));
                if c.weight_decay > 0.0 && self.decays[i] {
                    let _ = p.g_mul_scalar_(1.0 - c.lr * c.weight_decay);
                }
                let denom = (&*v / bc2).sqrt() + c.eps;
                let upd = (&*m / bc1) / denom * c.lr;
                let _ = p.g_sub_(&upd);
            }
        });
    }

    /// The optimiser state as named tensors (for a checkpoint), under `prefix`.
    pub fn state_tensors(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.params.len() + 1);
        for (i, (name, _)) in self.params.iter().enumerate() {
            out.push((format!("{prefix}m.{name}"), self.m[i].shallow_clone()));
            out.push((format!("{prefix}v.{name}"), self.v[i].shallow_clone()));
        }
        out.push((format!("{prefix}step"), Tensor::from_slice(&[self.step])));
        out
    }

    /// Restores a state written by [`AdamW::state_tensors`].
    pub fn load_state(
        &mut self,
        tensors: &BTreeMap<String, Tensor>,
        prefix: &str,
        origin: &Path,
    ) -> Result<()> {
        tch::no_grad(|| -> Result<()> {
            for (i, (name, p)) in self.params.iter().enumerate() {
                for (slot, store) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                    let key = format!("{prefix}{slot}.{name}");
                    let Some(t) = tensors.get(&key) else {
                        bail!("{}: optimiser state lacks '{key}'", origin.display());
                    };
                    if t.size() != p.size() {
                        bail!(
                            "{}: optimiser state '{key}' has shape {:?}, expected {:?}",
                            origin.display(),
                            t.size(),
                            p.size()
                        );
                    }
                    store.copy_(&t.to_device(p.device()));
                }
            }
            Ok(())
        })?;
        self.step = tensors
            .get(&format!("{prefix}step"))
            .map(|t| t.int64_value(&[0]))
            .unwrap_or(0);
        Ok(())
    }
}

/// Linear warm-up from 0 to `lr` over `warmup` steps, then constant.
pub fn warmup_lr(lr: f64, warmup: u64, step: u64) -> f64 {
    if warmup == 0 {
        lr
    } else {
        lr * ((step + 1) as f64 / warmup as f64).min(1.0)
    }
}

/// Exponential moving average of weights: `target = decay * target + (1 - decay) * source`, for
/// VarStores built by the same code (same variable names).
pub fn ema_update(target: &VarStore, source: &VarStore, decay: f64) {
    let src = source.variables();
    tch::no_grad(|| {
        for (name, mut t) in target.variables() {
            if let Some(s) = src.get(&name) {
                let _ = t.g_mul_scalar_(decay);
                let _ = t.g_add_(&(s * (1.0 - decay)));
            }
        }
    });
}

/// Copies every variable of `source` into `target` (same names).
pub fn copy_weights(target: &VarStore, source: &VarStore) {
    let src = source.variables();
    tch::no_grad(|| {
        for (name, mut t) in target.variables() {
            if let Some(s) = src.get(&name) {
                t.copy_(s);
            }
        }
    });
}

/// Mixed-precision training: a low-precision (bfloat16) working copy of an f32 model.
///
/// The f32 `master` keeps the weights, the optimiser moments and the EMA; every step
/// [`refresh`](Self::refresh) rounds the master weights into the working copy, the forward and
/// backward passes run on the copy, and [`grads_to_master`](Self::grads_to_master) hands its
/// gradients, widened to f32, to the master's variables for the optimiser step. Keeping the update
/// in f32 matters: at lr 1e-3 an AdamW step changes a weight by about 1e-3 of its size, below
/// bfloat16's resolution of 2^-8, so updates applied to bfloat16 weights would mostly round away.
pub struct WorkingCopy {
    /// (master variable, working variable), by name.
    pairs: Vec<(Tensor, Tensor)>,
}

impl WorkingCopy {
    /// Pairs the trainable variables of `master` with the same-named ones of `working` (built by
    /// the same code, then cast to the working precision), and copies every variable of the master
    /// into the working copy once, the fixed ones included (random Fourier frequencies, say: drawn
    /// anew when the working copy was built, they would make it a different function).
    pub fn new(master: &VarStore, working: &VarStore) -> Result<Self> {
        let work = working.variables();
        let vars = master.variables();
        ensure!(
            work.len() == vars.len(),
            "the working copy has {} variables, the master {}",
            work.len(),
            vars.len()
        );
        let mut pairs = Vec::new();
        for (name, m) in vars {
            let Some(w) = work.get(&name) else {
                bail!("the working copy has no variable '{name}'");
            };
            if w.size() != m.size() {
                bail!(
                    "variable '{name}' has shape {:?} in the working copy, {:?} in the master",
                    w.size(),
                    m.size()
                );
            }
            let mut w = w.shallow_clone();
            tch::no_grad(|| w.copy_(&m));
            if m.requires_grad() {
                pairs.push((m, w));
            }
        }
        Ok(Self { pairs })
    }

    /// Copies the master weights into the working copy (rounding them) and clears its gradients.
    pub fn refresh(&mut self) {
        tch::no_grad(|| {
            for (m, w) in &mut self.pairs {
                w.copy_(m);
                let mut g = w.grad();
                if g.defined() {
                    let _ = g.detach_().zero_();
                }
            }
        });
    }

    /// Sets each master variable's gradient to the working copy's, as f32. The master's gradients
    /// must be zero (after `AdamW::zero_grad`) or not yet allocated.
    pub fn grads_to_master(&mut self) {
        let mut first_time: Option<Tensor> = None;
        for (m, w) in &self.pairs {
            let g = w.grad();
            if !g.defined() {
                continue;
            }
            let g = g.to_kind(Kind::Float);
            let mut mg = m.grad();
            if mg.defined() {
                tch::no_grad(|| mg.copy_(&g));
            } else {
                // tch cannot assign `.grad`: a backward pass of Σ m·g allocates it as g
                let term = (m * g.detach()).sum(Kind::Float);
                first_time = Some(match first_time {
                    Some(t) => t + term,
                    None => term,
                });
            }
        }
        if let Some(t) = first_time {
            t.backward();
        }
    }
}

/// Named copies of a model's variables, to come back to later (the best validation step, say).
pub type WeightSnapshot = Vec<(String, Tensor)>;

/// A copy of every variable (and buffer) of `vs`.
pub fn snapshot_weights(vs: &VarStore) -> WeightSnapshot {
    vs.variables()
        .into_iter()
        .map(|(k, v)| (k, v.detach().copy()))
        .collect()
}

/// Writes a [`snapshot_weights`] copy back into `vs` (variables of the same names).
pub fn restore_weights(vs: &VarStore, weights: &[(String, Tensor)]) {
    let vars = vs.variables();
    tch::no_grad(|| {
        for (k, w) in weights {
            if let Some(mut v) = vars.get(k).map(|v| v.shallow_clone()) {
                v.copy_(w);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::{self, Module};

    #[test]
    fn restore_brings_back_the_snapshot_weights() {
        tch::manual_seed(0);
        let vs = VarStore::new(tch::Device::Cpu);
        let lin = nn::linear(vs.root() / "l", 4, 3, Default::default());
        let x = Tensor::rand([5, 4], (Kind::Float, tch::Device::Cpu));
        let before = lin.forward(&x);
        let saved = snapshot_weights(&vs);
        // change every weight, as further training would
        tch::no_grad(|| {
            for (_, mut v) in vs.variables() {
                let _ = v.g_add_scalar_(0.05);
            }
        });
        assert!(f64::try_from((lin.forward(&x) - &before).abs().max()).unwrap() > 1e-4);
        restore_weights(&vs, &saved);
        assert_eq!(
            f64::try_from((lin.forward(&x) - &before).abs().max()).unwrap(),
            0.0
        );
    }

    #[test]
    fn bf16_working_copy_trains_where_bf16_weights_stall() {
        let dev = tch::Device::Cpu;
        tch::manual_seed(0);
        let x = Tensor::randn([256, 3], (Kind::Float, dev));
        let w = Tensor::from_slice(&[1.5f32, -2.0, 0.5]).view([3, 1]);
        let y = x.matmul(&w) + 0.3;
        let cfg = AdamWConfig {
            lr: 1e-3,
            weight_decay: 0.0,
            ..Default::default()
        };
        // a linear layer plus a fixed (non-trainable) random offset, like the U-Net's Fourier
        // frequencies
        struct Model {
            lin: nn::Linear,
            offset: Tensor,
        }
        let loss_of = |m: &Model| {
            let k = m.lin.ws.kind();
            ((m.lin.forward(&x.to_kind(k)) + &m.offset).to_kind(Kind::Float) - &y)
                .pow_tensor_scalar(2)
                .mean(Kind::Float)
        };
        let make_seeded = |seed: i64| {
            tch::manual_seed(seed);
            let vs = VarStore::new(dev);
            let lin = nn::linear(vs.root(), 3, 1, Default::default());
            let mut offset = vs.root().zeros_no_train("offset", &[1]);
            tch::no_grad(|| offset.copy_(&Tensor::randn([1], (Kind::Float, dev))));
            (vs, Model { lin, offset })
        };
        let make = || make_seeded(1);

        // mixed precision: f32 master, bf16 working copy (built from another seed: the copy takes
        // the master's weights and its fixed offset)
        let (master_vs, master) = make();
        let (mut work_vs, work) = make_seeded(2);
        work_vs.bfloat16();
        let mut copy = WorkingCopy::new(&master_vs, &work_vs).unwrap();
        copy.refresh();
        let gap = (loss_of(&work) - loss_of(&master)).abs().double_value(&[]);
        assert!(
            gap < 0.02 * loss_of(&master).double_value(&[]),
            "copy differs by {gap}"
        );
        let mut opt = AdamW::new(&master_vs, cfg.clone());
        let first = loss_of(&master).double_value(&[]);
        for i in 0..3000 {
            opt.zero_grad();
            copy.refresh();
            loss_of(&work).backward();
            copy.grads_to_master();
            if i < 2 {
                // the master's gradient is the f32 one, up to bf16 rounding of the forward pass
                let exact = {
                    let (vs, m) = make();
                    copy_weights(&vs, &master_vs);
                    loss_of(&m).backward();
                    m.lin.ws.grad()
                };
                let err = f64::try_from((master.lin.ws.grad() - &exact).abs().max()).unwrap();
                let scale = f64::try_from(exact.abs().max()).unwrap();
                assert!(
                    err < 0.05 * scale,
                    "step {i}: gradient off by {err} of {scale}"
                );
            }
            opt.step();
        }
        let mixed = loss_of(&master).double_value(&[]);

        // bf16 weights updated in place: steps of lr = 1e-3 round away on weights near 1
        let (mut pure_vs, pure) = make();
        pure_vs.bfloat16();
        let mut opt = AdamW::new(&pure_vs, cfg);
        for _ in 0..3000 {
            opt.zero_grad();
            loss_of(&pure).backward();
            opt.step();
        }
        let stalled = loss_of(&pure).double_value(&[]);
        assert!(mixed < first * 1e-2, "mixed precision: {first} -> {mixed}");
        assert!(
            mixed < stalled * 0.1,
            "mixed {mixed} vs bf16 weights {stalled}"
        );
    }

    #[test]
    fn exempted_parameters_are_not_weight_decayed() {
        let vs = VarStore::new(tch::Device::Cpu);
        let root = vs.root();
        let a = (&root / "act_emb").var("weight", &[4], tch::nn::Init::Const(1.0));
        let b = (&root / "conv").var("weight", &[4], tch::nn::Init::Const(1.0));
        let mut opt = AdamW::new(
            &vs,
            AdamWConfig {
                lr: 0.1,
                weight_decay: 0.5,
                ..Default::default()
            },
        );
        assert_eq!(opt.exempt_from_decay(|n| n.contains("act_emb")), 1);
        // zero gradients: only the decay moves a weight
        let loss = (&a * 0.0).sum(Kind::Float) + (&b * 0.0).sum(Kind::Float);
        loss.backward();
        opt.step();
        assert_eq!(a.double_value(&[0]), 1.0);
        assert!((b.double_value(&[0]) - 0.95).abs() < 1e-6);
    }

    #[test]
    fn adamw_fits_a_line_and_resumes_exactly() {
        tch::manual_seed(0);
        let x = Tensor::randn([64, 3], (Kind::Float, tch::Device::Cpu));
        let w = Tensor::from_slice(&[1.5f32, -2.0, 0.5]).view([3, 1]);
        let y = x.matmul(&w) + 0.3;
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let lin = nn::linear(vs.root(), 3, 1, Default::default());
        let cfg = AdamWConfig {
            lr: 0.05,
            weight_decay: 0.0,
            ..Default::default()
        };
        let mut opt = AdamW::new(&vs, cfg.clone());
        let loss_of = |l: &nn::Linear| (l.forward(&x) - &y).pow_tensor_scalar(2).mean(Kind::Float);
        let first = loss_of(&lin).double_value(&[]);
        for _ in 0..200 {
            opt.zero_grad();
            loss_of(&lin).backward();
            opt.clip_grad_norm(10.0);
            opt.step();
        }
        let last = loss_of(&lin).double_value(&[]);
        assert!(last < first * 1e-3, "{first} -> {last}");

        // checkpoint the state, take 5 more steps; a restored copy takes the same 5 steps identically
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opt.safetensors");
        let mut all = crate::util::checkpoint::varstore_tensors(&vs, "model.");
        all.extend(opt.state_tensors("opt."));
        crate::util::checkpoint::save_tensors(&path, &all, &serde_json::json!({})).unwrap();
        for _ in 0..5 {
            opt.zero_grad();
            loss_of(&lin).backward();
            opt.step();
        }
        let mut vs2 = nn::VarStore::new(tch::Device::Cpu);
        let lin2 = nn::linear(vs2.root(), 3, 1, Default::default());
        let (t, _) = crate::util::checkpoint::load_tensors(&path).unwrap();
        crate::util::checkpoint::copy_into_varstore(&t, &mut vs2, "model.", &path).unwrap();
        let mut opt2 = AdamW::new(&vs2, cfg);
        opt2.load_state(&t, "opt.", &path).unwrap();
        for _ in 0..5 {
            opt2.zero_grad();
            loss_of(&lin2).backward();
            opt2.step();
        }
        assert!(lin.ws.equal(&lin2.ws));
        assert_eq!(opt.steps_done(), opt2.steps_done());
    }
}
