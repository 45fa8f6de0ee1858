//! The value network of PPO.

use anyhow::{Context, Result};
use tch::nn;
use tch::{Kind, Tensor};

use super::PpoConfig;
use crate::policy::gaussian::{GaussianPolicy, ObsBatch};
use crate::policy::trunk::Trunk;
use crate::util::frames::chw_to_model;

/// The value network V_φ(x): its own image encoder (and the state when the policy uses it) and an MLP.
pub struct Critic {
    vs: nn::VarStore,
    trunk: Trunk,
    out: nn::Linear,
    state: Option<(Tensor, Tensor)>,
}

impl Critic {
    /// A critic for the inputs of `policy`.
    pub fn new(cfg: &PpoConfig, policy: &GaussianPolicy) -> Result<Self> {
        let vs = nn::VarStore::new(policy.device());
        let root = vs.root();
        let pc = policy.config();
        let enc_cfg = cfg
            .critic_encoder
            .clone()
            .unwrap_or_else(|| pc.encoder.clone());
        let s = if pc.use_state {
            policy.spec().state_dim as i64
        } else {
            0
        };
        let encoder = pc
            .use_image
            .then_some((3 * pc.frame_stack as i64, &enc_cfg));
        let trunk = Trunk::new(&root, encoder, s, cfg.critic_hidden)?;
        let zero = nn::LinearConfig {
            ws_init: nn::Init::Const(0.0),
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        };
        let out = nn::linear(&root / "out", cfg.critic_hidden, 1, zero);
        let mut critic = Self {
            vs,
            trunk,
            out,
            state: None,
        };
        let pv = policy.var_store().variables();
        if pc.use_state {
            let m = pv
                .get("state_mean")
                .context("policy lacks state statistics")?;
            let sd = pv
                .get("state_std")
                .context("policy lacks state statistics")?;
            critic.state = Some((m.detach().copy(), sd.detach().copy()));
        }
        if cfg.critic_from_policy && pc.use_image && pc.encoder == enc_cfg {
            let cv = critic.vs.variables();
            tch::no_grad(|| {
                for (name, mut var) in cv {
                    if let Some(src) = pv.get(&name).filter(|_| name.starts_with("encoder.")) {
                        var.copy_(src);
                    }
                }
            });
        }
        Ok(critic)
    }

    /// The variables.
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// V(x) `[B]`.
    pub fn forward(&self, obs: &ObsBatch) -> Result<Tensor> {
        let frames = match self.trunk.reads_frames() {
            true => Some(chw_to_model(
                obs.image.as_ref().context("the critic needs frames")?,
            )),
            false => None,
        };
        let state = match &self.state {
            Some((m, s)) => {
                let st = obs.state.as_ref().context("the critic needs the state")?;
                Some((st.to_kind(Kind::Float) - m) / s)
            }
            None => None,
        };
        Ok(self
            .trunk
            .forward(frames.as_ref(), state)?
            .apply(&self.out)
            .squeeze_dim(-1))
    }
}
