//! The Gaussian policy π(a|x) = N(μ(x), diag σ(x)²) of World4RL Eq. (1).
//!
//! * Image encoder: [`ConvEncoder`] on the frame at the world model's frame size; optionally the
//!   low-dimensional state (normalised by statistics stored in the checkpoint) is concatenated. The
//!   imagined environment has no state, so a policy refined in imagination must be image-only.
//! * Heads: a 2-layer MLP, then `μ = tanh(·)` in the normalised action box `[-1, 1]^A` and a
//!   state-dependent `log σ`, clamped to `[ln std_min, ln std_max]`. `std_max = 1` is the paper's cap
//!   `log σ ≤ 0` (§III-C); the lower bound keeps the likelihood finite and exploration alive.
//! * Actions are modelled in the normalised box and mapped to the environment's `[low, high]` affinely;
//!   sampled actions are clipped to the box when sent to an environment (the world model's two-hot
//!   encoding clamps them anyway), while their log-probability is computed on the unclipped sample.
//! * At evaluation the policy acts with its mean μ(x).
//! * Refinement may add a **residual** on the mean (`refine.ppo.residual_scale`, ResiP and Policy
//!   Decorator's idea): `μ(x) = tanh(W h) + s · tanh(r(h))`, `r` a two-layer MLP on the frozen trunk's
//!   features `h` whose last layer starts at zero, so the refined policy starts exactly at the one it
//!   refines and its mean moves at most `s` from it; the trunk and the mean head stay frozen, `r` and
//!   the log-σ head train.

use std::borrow::Borrow;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};
use w4rl_data::FrameRender;
use w4rl_envs::Obs;

use super::encoder::EncoderConfig;
use super::obs::random_shift;
pub use super::obs_batch::{ObsBatch, ObsHistory};
use super::trunk::Trunk;
use crate::util::checkpoint;
use crate::util::frames::{bytes_to_chw, chw_to_model};

/// Architecture and σ bounds of [`GaussianPolicy`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Image encoder (default: spatial softmax, strides `[2, 2, 1]`).
    pub encoder: EncoderConfig,
    /// Width of the two hidden layers of the head (default 256).
    pub hidden: i64,
    /// Feed the frame (default true).
    pub use_image: bool,
    /// Frames fed together, newest last; at an episode start the first frame is repeated. Default 1:
    /// with a history, behaviour cloning learns to continue the motion it sees (the "copycat" problem
    /// of BC with observation histories); measured on `turn-lever` with 50 demos, 33 % success with one
    /// frame against 4 % with two.
    pub frame_stack: usize,
    /// Feed the low-dimensional state too (default false: the imagined environment has no state).
    pub use_state: bool,
    /// Initial σ (the bias of the log-σ head; default 0.3).
    pub std_init: f64,
    /// Lower bound of σ (default 0.02).
    pub std_min: f64,
    /// Upper bound of σ (default 1.0: the paper's cap log σ ≤ 0).
    pub std_max: f64,
}

impl Default for PolicyConfig {
    /// The encoder uses spatial-softmax keypoints on an 8x8 map at 32 px (strides 2, 2, 1): pushing
    /// tasks need object positions finer than a pooled cell (measured on `push-block` with 50 demos:
    /// held-out action MSE 0.20 → 0.13 against 4x4 average pooling).
    fn default() -> Self {
        Self {
            encoder: EncoderConfig {
                strides: vec![2, 2, 1],
                spatial_softmax: true,
                ..EncoderConfig::default()
            },
            hidden: 256,
            use_image: true,
            frame_stack: 1,
            use_state: false,
            std_init: 0.3,
            std_min: 0.02,
            std_max: 1.0,
        }
    }
}

impl PolicyConfig {
    /// Checks value ranges.
    pub fn validate(&self) -> Result<()> {
        self.encoder.validate()?;
        ensure!(
            self.hidden > 0,
            "policy.hidden must be positive (got {})",
            self.hidden
        );
        ensure!(
            (1..=8).contains(&self.frame_stack),
            "policy.frame_stack must lie in 1..=8 (got {})",
            self.frame_stack
        );
        ensure!(
            self.use_image || self.use_state,
            "the policy needs an input: set policy.use_image or policy.use_state"
        );
        check_std_bounds(self.std_min, self.std_max)?;
        ensure!(
            self.std_init > 0.0 && self.std_init.is_finite(),
            "policy.std_init must be positive (got {})",
            self.std_init
        );
        Ok(())
    }
}

/// Checks `0 < std_min <= std_max`.
pub fn check_std_bounds(std_min: f64, std_max: f64) -> Result<()> {
    ensure!(
        std_min > 0.0 && std_min.is_finite() && std_max.is_finite() && std_min <= std_max,
        "σ bounds must satisfy 0 < std_min <= std_max (got std_min = {std_min}, std_max = {std_max})"
    );
    Ok(())
}

/// What the data fixes about a policy: sizes and the action box.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Side of the input frames in pixels (the world model's frame size).
    pub image_size: usize,
    /// Action dimensions.
    pub action_dim: usize,
    /// Low-dimensional state length (0 when absent or unused).
    pub state_dim: usize,
    /// Lower action bound per dimension (environment units).
    pub action_low: Vec<f32>,
    /// Upper action bound per dimension.
    pub action_high: Vec<f32>,
    /// Task the policy was trained for (informative).
    #[serde(default)]
    pub task: String,
    /// Side of the frames of the data the policy was trained on (0 = `image_size`); real frames are
    /// rendered at this size and reduced to `image_size`, as the training frames were.
    #[serde(default)]
    pub render_size: usize,
    /// The render quality and camera of that data (the suite's defaults when empty): real frames are
    /// rendered with them.
    #[serde(default, skip_serializing_if = "FrameRender::is_default")]
    pub render: FrameRender,
}

impl PolicySpec {
    /// The size real frames are rendered at before being reduced to [`image_size`](Self::image_size).
    pub fn render_size(&self) -> usize {
        if self.render_size == 0 {
            self.image_size
        } else {
            self.render_size
        }
    }

    /// Checks internal consistency.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.image_size >= 8,
            "policy image_size must be at least 8 (got {})",
            self.image_size
        );
        ensure!(self.action_dim > 0, "action_dim must be positive");
        ensure!(
            self.action_low.len() == self.action_dim && self.action_high.len() == self.action_dim,
            "action bounds have {} / {} entries for action_dim {}",
            self.action_low.len(),
            self.action_high.len(),
            self.action_dim
        );
        for (lo, hi) in self.action_low.iter().zip(&self.action_high) {
            ensure!(
                lo.is_finite() && hi.is_finite() && lo < hi,
                "action bound [{lo}, {hi}] is not a box"
            );
        }
        Ok(())
    }
}

/// Output of the policy network.
#[derive(Debug)]
pub struct GaussianOut {
    /// Mean in the normalised action box, `[B, A]`.
    pub mean: Tensor,
    /// Clamped log-σ, `[B, A]`.
    pub log_std: Tensor,
}

impl GaussianOut {
    /// Log-density of normalised actions `a` (`[B, A]`), summed over dimensions: `[B]`.
    pub fn log_prob(&self, a: &Tensor) -> Tensor {
        gaussian_log_prob(&self.mean, &self.log_std, a)
    }

    /// Differential entropy, summed over dimensions: `[B]`.
    pub fn entropy(&self) -> Tensor {
        (&self.log_std + 0.5 * (1.0 + (2.0 * std::f64::consts::PI).ln())).sum_dim_intlist(
            -1,
            false,
            Kind::Float,
        )
    }

    /// KL(self ‖ other) of two diagonal Gaussians, summed over dimensions: `[B]`.
    pub fn kl_to(&self, other: &GaussianOut) -> Tensor {
        let var = (&self.log_std * 2.0).exp();
        let other_var = (&other.log_std * 2.0).exp();
        ((&other.log_std - &self.log_std)
            + (var + (&self.mean - &other.mean).square()) / (other_var * 2.0)
            - 0.5)
            .sum_dim_intlist(-1, false, Kind::Float)
    }

    /// A reparameterised sample `μ + σ ε`.
    pub fn sample(&self) -> Tensor {
        &self.mean + self.log_std.exp() * self.mean.randn_like()
    }
}

/// `log N(a; μ, σ²)` summed over the last dimension.
pub fn gaussian_log_prob(mean: &Tensor, log_std: &Tensor, a: &Tensor) -> Tensor {
    let z = (a - mean) / log_std.exp();
    (z.square() * -0.5 - log_std - 0.5 * (2.0 * std::f64::consts::PI).ln()).sum_dim_intlist(
        -1,
        false,
        Kind::Float,
    )
}

/// The Gaussian policy. It owns its variables.
pub struct GaussianPolicy {
    vs: nn::VarStore,
    cfg: PolicyConfig,
    spec: PolicySpec,
    trunk: Trunk,
    mean_head: nn::Linear,
    log_std_head: nn::Linear,
    residual: Option<Residual>,
    state_mean: Tensor,
    state_std: Tensor,
    log_std_bounds: (f64, f64),
}

/// The residual on the mean (`root/residual/{fc,out}`): `s · tanh(out(relu(fc(h))))`.
struct Residual {
    scale: f64,
    fc: nn::Linear,
    out: nn::Linear,
}

/// The variable-name prefix of the residual's layers.
const RESIDUAL: &str = "residual";

impl std::fmt::Debug for GaussianPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GaussianPolicy")
            .field("cfg", &self.cfg)
            .field("spec", &self.spec)
            .field("log_std_bounds", &self.log_std_bounds)
            .field("residual_scale", &self.residual_scale())
            .finish()
    }
}

impl GaussianPolicy {
    /// A freshly initialised policy on `device`.
    pub fn new(cfg: &PolicyConfig, spec: &PolicySpec, device: Device) -> Result<Self> {
        cfg.validate()?;
        spec.validate()?;
        if cfg.use_state && spec.state_dim == 0 {
            bail!(
                "policy.use_state is set but the data has no low-dimensional state (state_dim = 0)"
            );
        }
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let s = if cfg.use_state {
            spec.state_dim as i64
        } else {
            0
        };
        let channels = 3 * cfg.frame_stack as i64;
        let encoder = cfg.use_image.then_some((channels, &cfg.encoder));
        let trunk = Trunk::new(&root, encoder, s, cfg.hidden)?;
        let state_mean = root.zeros_no_train("state_mean", &[s.max(1)]);
        let state_std = root.ones_no_train("state_std", &[s.max(1)]);
        let a = spec.action_dim as i64;
        let small = nn::LinearConfig {
            ws_init: nn::Init::Uniform {
                lo: -1e-3,
                up: 1e-3,
            },
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        };
        let mean_head = nn::linear(&root / "mean", cfg.hidden, a, small);
        let log_std_head = nn::linear(
            &root / "log_std",
            cfg.hidden,
            a,
            nn::LinearConfig {
                bs_init: Some(nn::Init::Const(cfg.std_init.ln())),
                ..small
            },
        );
        Ok(Self {
            vs,
            cfg: cfg.clone(),
            spec: spec.clone(),
            trunk,
            mean_head,
            log_std_head,
            residual: None,
            state_mean,
            state_std,
            log_std_bounds: (cfg.std_min.ln(), cfg.std_max.ln()),
        })
    }

    /// The bound `s` of the residual on the mean, when the policy has one.
    pub fn residual_scale(&self) -> Option<f64> {
        self.residual.as_ref().map(|r| r.scale)
    }

    /// Adds the residual's layers, its output layer at zero (the policy acts as before).
    fn attach_residual(&mut self, scale: f64) -> Result<()> {
        ensure!(
            self.residual.is_none(),
            "the policy already has a residual (scale {}); refine the policy it was refined from",
            self.residual_scale().unwrap_or(f64::NAN)
        );
        ensure!(
            scale > 0.0 && scale <= 2.0,
            "a residual's scale must lie in (0, 2], the width of the normalised action box (got {scale})"
        );
        let root = self.vs.root() / RESIDUAL;
        let h = self.cfg.hidden;
        let a = self.spec.action_dim as i64;
        let fc = nn::linear(&root / "fc", h, h, Default::default());
        let zero = nn::LinearConfig {
            ws_init: nn::Init::Const(0.0),
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        };
        let out = nn::linear(&root / "out", h, a, zero);
        self.residual = Some(Residual { scale, fc, out });
        Ok(())
    }

    /// Turns the policy into its own frozen base plus a zero-initialised residual on the mean of at
    /// most `scale` (in the normalised box): only the residual and the log-σ head train from now on
    /// (an optimiser built over [`var_store`](Self::var_store) skips the frozen variables, which get
    /// no gradients).
    pub fn add_residual(&mut self, scale: f64) -> Result<()> {
        self.attach_residual(scale)?;
        let residual = format!("{RESIDUAL}.");
        for (name, t) in self.vs.variables() {
            let trains = name.starts_with(&residual) || name.starts_with("log_std.");
            if !trains {
                let _ = t.set_requires_grad(false);
            }
        }
        Ok(())
    }

    /// The variables (for optimisers and checkpoints).
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// Mutable access to the variables.
    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    /// Architecture.
    pub fn config(&self) -> &PolicyConfig {
        &self.cfg
    }

    /// Sizes and action box.
    pub fn spec(&self) -> &PolicySpec {
        &self.spec
    }

    /// Device of the variables.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// An independent copy (same weights, σ bounds and state normalisation), e.g. a frozen reference.
    pub fn duplicate(&self) -> Result<Self> {
        let mut p = Self::new(&self.cfg, &self.spec, self.device())?;
        if let Some(scale) = self.residual_scale() {
            p.attach_residual(scale)?;
        }
        p.vs.copy(&self.vs)?;
        p.state_mean = self.state_mean.copy();
        p.state_std = self.state_std.copy();
        p.log_std_bounds = self.log_std_bounds;
        Ok(p)
    }

    /// Current σ bounds.
    pub fn std_bounds(&self) -> (f64, f64) {
        (self.log_std_bounds.0.exp(), self.log_std_bounds.1.exp())
    }

    /// Replaces the σ bounds (PPO applies its own, e.g. the paper's σ ≤ 1).
    pub fn set_std_bounds(&mut self, std_min: f64, std_max: f64) -> Result<()> {
        check_std_bounds(std_min, std_max)?;
        self.log_std_bounds = (std_min.ln(), std_max.ln());
        Ok(())
    }

    /// Sets the state normalisation `(s - mean) / std` (BC computes it from the demonstrations).
    pub fn set_state_normalizer(&mut self, mean: &[f32], std: &[f32]) -> Result<()> {
        if !self.cfg.use_state {
            return Ok(());
        }
        ensure!(
            mean.len() == self.spec.state_dim && std.len() == self.spec.state_dim,
            "state statistics have {} / {} entries, the policy expects {}",
            mean.len(),
            std.len(),
            self.spec.state_dim
        );
        let std: Vec<f32> = std.iter().map(|s| s.max(1e-3)).collect();
        tch::no_grad(|| {
            self.state_mean
                .copy_(&Tensor::from_slice(mean).to_device(self.device()));
            self.state_std
                .copy_(&Tensor::from_slice(&std).to_device(self.device()));
        });
        Ok(())
    }

    /// Network inputs from single observations (frames are resized to the policy's size). With
    /// `frame_stack > 1` each frame is repeated, as at an episode start; use [`ObsHistory`] to feed
    /// real histories.
    pub fn obs_batch<O: Borrow<Obs>>(&self, obs: &[O]) -> Result<ObsBatch> {
        let stacks: Vec<&[O]> = obs.chunks(1).collect();
        self.obs_batch_stacked(&stacks)
    }

    /// Network inputs from observation histories: `stacks[i]` holds the last observations of
    /// environment `i`, oldest first; the newest `frame_stack` frames are used (a shorter history is
    /// padded by repeating its oldest frame) and the state is the newest one's.
    pub fn obs_batch_stacked<O: Borrow<Obs>>(&self, stacks: &[&[O]]) -> Result<ObsBatch> {
        ensure!(!stacks.is_empty(), "no observations given");
        ensure!(
            stacks.iter().all(|s| !s.is_empty()),
            "an observation history is empty"
        );
        let dev = self.device();
        let n = stacks.len();
        let k = self.cfg.frame_stack.max(1);
        let image = if self.cfg.use_image {
            let size = stacks[0][0].borrow().size;
            let mut bytes = Vec::with_capacity(n * k * size * size * 3);
            for st in stacks {
                for j in 0..k {
                    // position j of k (oldest first) takes history entry len - k + j, clamped to 0
                    let idx = (st.len() + j).saturating_sub(k);
                    let o = st[idx].borrow();
                    ensure!(
                        o.size == size,
                        "observations of one batch have different frame sizes"
                    );
                    ensure!(
                        o.frame.len() == size * size * 3,
                        "an observation has {} frame bytes, expected {size}x{size}x3",
                        o.frame.len()
                    );
                    bytes.extend_from_slice(&o.frame);
                }
            }
            let t = bytes_to_chw(&bytes, n * k, size, self.spec.image_size, dev)?;
            let s = self.spec.image_size as i64;
            Some(t.view([n as i64, 3 * k as i64, s, s]))
        } else {
            None
        };
        let state = if self.cfg.use_state {
            let s = self.spec.state_dim;
            let mut v = Vec::with_capacity(n * s);
            for st in stacks {
                let o = st[st.len() - 1].borrow();
                ensure!(
                    o.state.len() == s,
                    "observation has a state of {} values, the policy expects {s}",
                    o.state.len()
                );
                v.extend_from_slice(&o.state);
            }
            Some(
                Tensor::from_slice(&v)
                    .view([n as i64, s as i64])
                    .to_device(dev),
            )
        } else {
            None
        };
        Ok(ObsBatch { image, state })
    }

    /// μ and clamped log σ. `shift_pad > 0` applies random-shift augmentation to the frames (training).
    pub fn forward(&self, obs: &ObsBatch, shift_pad: i64) -> Result<GaussianOut> {
        let frames = match self.trunk.reads_frames() {
            true => {
                let img = obs
                    .image
                    .as_ref()
                    .context("the policy needs frames but the batch has none")?;
                Some(random_shift(&chw_to_model(img), shift_pad))
            }
            false => None,
        };
        let state = match self.cfg.use_state {
            true => {
                let s = obs
                    .state
                    .as_ref()
                    .context("the policy needs the low-dimensional state but the batch has none")?;
                Some((s.to_kind(Kind::Float) - &self.state_mean) / &self.state_std)
            }
            false => None,
        };
        let h = self.trunk.forward(frames.as_ref(), state)?;
        let base = self.mean_head.forward(&h).tanh();
        let mean = match &self.residual {
            Some(r) => base + h.apply(&r.fc).relu().apply(&r.out).tanh() * r.scale,
            None => base,
        };
        let log_std = self
            .log_std_head
            .forward(&h)
            .clamp(self.log_std_bounds.0, self.log_std_bounds.1);
        Ok(GaussianOut { mean, log_std })
    }

    /// Mean actions in environment units, one vector per row (evaluation).
    pub fn act_mean(&self, obs: &ObsBatch) -> Result<Vec<Vec<f32>>> {
        let out = tch::no_grad(|| self.forward(obs, 0))?;
        self.to_env_actions(&out.mean)
    }

    /// Samples of N(μ, σ²) in environment units, one vector per row (clipped to the box), drawn from
    /// libtorch's generator.
    pub fn act_sample(&self, obs: &ObsBatch) -> Result<Vec<Vec<f32>>> {
        let out = tch::no_grad(|| self.forward(obs, 0))?;
        self.to_env_actions(&out.sample())
    }

    /// Normalised actions `[B, A]` to environment actions (clipped to the box).
    pub fn to_env_actions(&self, a: &Tensor) -> Result<Vec<Vec<f32>>> {
        let a = a
            .detach()
            .to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .clamp(-1.0, 1.0);
        let (b, d) = (a.size()[0] as usize, a.size()[1] as usize);
        ensure!(
            d == self.spec.action_dim,
            "action tensor has {d} columns, expected {}",
            self.spec.action_dim
        );
        let flat = Vec::<f32>::try_from(a.flatten(0, -1)).context("reading actions")?;
        Ok((0..b)
            .map(|i| {
                (0..d)
                    .map(|j| {
                        let (lo, hi) = (self.spec.action_low[j], self.spec.action_high[j]);
                        lo + (flat[i * d + j] + 1.0) * 0.5 * (hi - lo)
                    })
                    .collect()
            })
            .collect())
    }

    /// Environment actions `[B * A]` (row-major) to the normalised box, as a `[B, A]` tensor.
    pub fn normalize_actions(&self, actions: &[f32]) -> Result<Tensor> {
        let d = self.spec.action_dim;
        ensure!(
            actions.len().is_multiple_of(d),
            "{} action values do not split into rows of {d}",
            actions.len()
        );
        let v: Vec<f32> = actions
            .iter()
            .enumerate()
            .map(|(k, &a)| {
                let (lo, hi) = (self.spec.action_low[k % d], self.spec.action_high[k % d]);
                (2.0 * (a - lo) / (hi - lo) - 1.0).clamp(-1.0, 1.0)
            })
            .collect();
        Ok(Tensor::from_slice(&v)
            .view([(actions.len() / d) as i64, d as i64])
            .to_device(self.device()))
    }

    /// Writes the policy (weights, architecture, spec, σ bounds, `extra`) atomically to `path`.
    pub fn save(&self, path: &Path, extra: serde_json::Value) -> Result<()> {
        let meta = serde_json::json!({
            "kind": "gaussian-policy",
            "config": self.cfg,
            "spec": self.spec,
            "std_bounds": [self.std_bounds().0, self.std_bounds().1],
            "residual": self.residual_scale().map(|s| serde_json::json!({"scale": s})),
            "extra": extra,
        });
        checkpoint::save(path, &self.vs, &meta)
    }

    /// Loads a policy written by [`save`](Self::save); returns it and its `extra` metadata.
    pub fn load(path: &Path, device: Device) -> Result<(Self, serde_json::Value)> {
        let (tensors, meta) = checkpoint::load_tensors(path)?;
        if meta.get("kind").and_then(|k| k.as_str()) != Some("gaussian-policy") {
            bail!(
                "{} is not a policy checkpoint (its metadata kind is {}); pass a file written by `world4rl train bc` or `world4rl refine`",
                path.display(),
                meta.get("kind").map_or("missing".to_string(), |k| k.to_string())
            );
        }
        let cfg: PolicyConfig = serde_json::from_value(meta["config"].clone())
            .with_context(|| format!("{}: bad policy config in metadata", path.display()))?;
        let spec: PolicySpec = serde_json::from_value(meta["spec"].clone())
            .with_context(|| format!("{}: bad policy spec in metadata", path.display()))?;
        let mut p = Self::new(&cfg, &spec, device)?;
        if let Some(r) = meta.get("residual").filter(|r| !r.is_null()) {
            let scale = r["scale"].as_f64().with_context(|| {
                format!("{}: the residual's metadata has no scale", path.display())
            })?;
            p.attach_residual(scale)
                .with_context(|| format!("{}: bad residual in metadata", path.display()))?;
        }
        checkpoint::copy_into_varstore(&tensors, &mut p.vs, "model.", path)?;
        let bounds = meta["std_bounds"].as_array();
        let lo = bounds.and_then(|v| v.first()).and_then(|x| x.as_f64());
        let hi = bounds.and_then(|v| v.get(1)).and_then(|x| x.as_f64());
        if let (Some(lo), Some(hi)) = (lo, hi) {
            p.set_std_bounds(lo, hi)
                .with_context(|| format!("{}: bad σ bounds in metadata", path.display()))?;
        }
        Ok((p, meta["extra"].clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(mean: &[f32], log_std: &[f32]) -> GaussianOut {
        GaussianOut {
            mean: Tensor::from_slice(mean).view([1, -1]),
            log_std: Tensor::from_slice(log_std).view([1, -1]),
        }
    }

    fn small_policy() -> GaussianPolicy {
        let cfg = PolicyConfig {
            encoder: EncoderConfig {
                channels: vec![8, 8],
                strides: vec![2, 1],
                spatial_softmax: true,
                pool: 4,
                features: 16,
            },
            hidden: 32,
            ..PolicyConfig::default()
        };
        let spec = PolicySpec {
            image_size: 16,
            action_dim: 2,
            state_dim: 0,
            action_low: vec![-1.0, -1.0],
            action_high: vec![1.0, 1.0],
            task: "t".into(),
            render_size: 0,
            render: Default::default(),
        };
        tch::manual_seed(3);
        let p = GaussianPolicy::new(&cfg, &spec, Device::Cpu).unwrap();
        // heads away from zero so the base's mean is not trivially 0
        tch::no_grad(|| {
            for (name, mut t) in p.var_store().variables() {
                if name.starts_with("mean.") {
                    t.copy_(&(t.randn_like() * 0.3));
                }
            }
        });
        p
    }

    fn obs(n: usize) -> Vec<Obs> {
        tch::manual_seed(11);
        let t = Tensor::randint(256, [n as i64, 16 * 16 * 3], (Kind::Uint8, Device::Cpu));
        (0..n)
            .map(|i| Obs {
                frame: Vec::<u8>::try_from(t.get(i as i64)).unwrap(),
                size: 16,
                state: vec![],
            })
            .collect()
    }

    fn max_abs(a: &Tensor) -> f64 {
        a.abs().max().double_value(&[])
    }

    #[test]
    fn a_residual_starts_at_its_base_moves_at_most_its_scale_and_trains_alone() {
        use tch::nn::OptimizerConfig;
        let mut p = small_policy();
        let base = p.duplicate().unwrap();
        let ob = p.obs_batch(&obs(6)).unwrap();
        let before = base.forward(&ob, 0).unwrap();
        p.add_residual(0.2).unwrap();
        assert_eq!(p.residual_scale(), Some(0.2));
        let start = p.forward(&ob, 0).unwrap();
        // exactly the base: the residual's output layer starts at zero
        assert_eq!(max_abs(&(&start.mean - &before.mean)), 0.0);
        assert_eq!(max_abs(&(&start.log_std - &before.log_std)), 0.0);

        // a few optimiser steps pushing every mean towards +1: only the residual and log σ move
        let frozen: Vec<(String, Tensor)> = p
            .var_store()
            .variables()
            .into_iter()
            .filter(|(n, _)| !n.starts_with("residual.") && !n.starts_with("log_std."))
            .map(|(n, t)| (n, t.copy()))
            .collect();
        let mut opt = tch::nn::Adam::default().build(p.var_store(), 0.05).unwrap();
        for _ in 0..30 {
            let o = p.forward(&ob, 0).unwrap();
            let loss = (-&o.mean + 1.0).square().mean(Kind::Float) + o.log_std.mean(Kind::Float);
            opt.zero_grad();
            loss.backward();
            opt.clip_grad_norm(1.0);
            opt.step();
        }
        let vars = p.var_store().variables();
        for (name, old) in &frozen {
            assert_eq!(max_abs(&(&vars[name] - old)), 0.0, "{name} moved");
        }
        let after = p.forward(&ob, 0).unwrap();
        let moved = &after.mean - &before.mean;
        assert!(max_abs(&moved) > 0.1, "the residual did not learn");
        assert!(max_abs(&moved) <= 0.2 + 1e-6, "the residual left its bound");
        assert!(max_abs(&(&after.log_std - &before.log_std)) > 0.0);

        // saved and loaded (and duplicated), it acts the same
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.safetensors");
        p.save(&path, serde_json::json!({})).unwrap();
        let (q, _) = GaussianPolicy::load(&path, Device::Cpu).unwrap();
        assert_eq!(q.residual_scale(), Some(0.2));
        for r in [&q, &p.duplicate().unwrap()] {
            let o = r.forward(&ob, 0).unwrap();
            assert_eq!(max_abs(&(&o.mean - &after.mean)), 0.0);
        }
        // a residual on a residual, or one out of its range, is refused
        let e = p.add_residual(0.1).unwrap_err().to_string();
        assert!(e.contains("already has a residual"), "{e}");
        for bad in [0.0, -0.1, 2.5, f64::NAN] {
            assert!(small_policy().add_residual(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kl_of_diagonal_gaussians_matches_the_closed_form() {
        let kl = |a: &GaussianOut, b: &GaussianOut| a.kl_to(b).double_value(&[0]);
        let std_normal = out(&[0.0, 0.0], &[0.0, 0.0]);
        assert!(kl(&std_normal, &std_normal).abs() < 1e-7);
        // a mean shift of 1 in one dimension: 1/2
        assert!((kl(&out(&[1.0, 0.0], &[0.0, 0.0]), &std_normal) - 0.5).abs() < 1e-6);
        // σ = e^-1 against σ = 1: 1 + e^-2 / 2 - 1/2
        let want = 1.0 + (-2.0f64).exp() / 2.0 - 0.5;
        assert!((kl(&out(&[0.0], &[-1.0]), &out(&[0.0], &[0.0])) - want).abs() < 1e-6);
        // not symmetric: the other way is -1 + e^2 / 2 - 1/2
        let back = -1.0 + 2.0f64.exp() / 2.0 - 0.5;
        assert!((kl(&out(&[0.0], &[0.0]), &out(&[0.0], &[-1.0])) - back).abs() < 1e-5);
    }
}
