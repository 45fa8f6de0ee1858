//! Scripted controllers ([`Controller`]: the task experts), their noisy and random variants, and recorded rollouts.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::{ActionSpec, Env, EnvError, Obs};

/// A scripted (not learned) controller: the task experts, [`NoisyExpert`] and [`RandomPolicy`].
///
/// Experts may read [`Obs::state`], the privileged low-dimensional state. `act` may return values outside the
/// action box; the environment clips them.
pub trait Controller: Send {
    /// Called at the start of every episode with the episode's seed.
    fn reset(&mut self, seed: u64);
    /// The action for this observation.
    fn act(&mut self, obs: &Obs) -> Vec<f32>;
}

impl Controller for Box<dyn Controller> {
    fn reset(&mut self, seed: u64) {
        (**self).reset(seed)
    }

    fn act(&mut self, obs: &Obs) -> Vec<f32> {
        (**self).act(obs)
    }
}

/// An expert whose actions get i.i.d. Gaussian noise of standard deviation `std` (in action units), then
/// clipped to the action box. The noise stream is seeded by the episode seed (deterministic).
pub struct NoisyExpert {
    inner: Box<dyn Controller>,
    std: f32,
    low: Vec<f32>,
    high: Vec<f32>,
    rng: ChaCha8Rng,
}

impl NoisyExpert {
    /// Wraps `inner`; `std <= 0` (or NaN) gives the noiseless expert.
    pub fn new(inner: Box<dyn Controller>, std: f32, spec: &ActionSpec) -> Self {
        Self {
            inner,
            std: if std.is_finite() { std.max(0.0) } else { 0.0 },
            low: spec.low.clone(),
            high: spec.high.clone(),
            rng: ChaCha8Rng::seed_from_u64(0),
        }
    }
}

impl Controller for NoisyExpert {
    fn reset(&mut self, seed: u64) {
        self.inner.reset(seed);
        self.rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6e6f_6973_7921);
    }

    fn act(&mut self, obs: &Obs) -> Vec<f32> {
        let mut a = self.inner.act(obs);
        if self.std > 0.0 {
            if let Ok(n) = Normal::new(0.0f32, self.std) {
                for x in a.iter_mut() {
                    *x += n.sample(&mut self.rng);
                }
            }
        }
        for (i, x) in a.iter_mut().enumerate() {
            if let (Some(&lo), Some(&hi)) = (self.low.get(i), self.high.get(i)) {
                *x = x.clamp(lo, hi);
            }
        }
        a
    }
}

/// Uniformly random actions in the action box, seeded by the episode seed.
pub struct RandomPolicy {
    low: Vec<f32>,
    high: Vec<f32>,
    rng: ChaCha8Rng,
}

impl RandomPolicy {
    /// A random policy for this action space.
    pub fn new(spec: &ActionSpec) -> Self {
        Self {
            low: spec.low.clone(),
            high: spec.high.clone(),
            rng: ChaCha8Rng::seed_from_u64(0),
        }
    }
}

impl Controller for RandomPolicy {
    fn reset(&mut self, seed: u64) {
        self.rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7261_6e64_6f6d);
    }

    fn act(&mut self, _obs: &Obs) -> Vec<f32> {
        self.low
            .iter()
            .zip(&self.high)
            .map(|(&lo, &hi)| {
                if hi > lo {
                    self.rng.gen_range(lo..=hi)
                } else {
                    lo
                }
            })
            .collect()
    }
}

/// One recorded episode, laid out as the dataset format expects (see `docs/CONTRACTS.md`): `T` steps,
/// `T + 1` frames; `frames[t]` is the observation before `actions[t]`.
#[derive(Clone, Debug, Default)]
pub struct Rollout {
    /// Seed passed to `reset`.
    pub seed: u64,
    /// Number of steps `T`.
    pub steps: usize,
    /// Frame side in pixels.
    pub image_size: usize,
    /// Action dimension.
    pub action_dim: usize,
    /// State dimension.
    pub state_dim: usize,
    /// `[T + 1, H, W, 3]` RGB bytes.
    pub frames: Vec<u8>,
    /// `[T, A]` actions as applied (clipped to the action box).
    pub actions: Vec<f32>,
    /// `[T]` rewards.
    pub rewards: Vec<f32>,
    /// `[T + 1]` success flag of each frame (0 or 1; `success[0]` is 0 in the tabletop suite).
    pub success: Vec<u8>,
    /// `[T + 1, S]` privileged states.
    pub states: Vec<f32>,
    /// Step index (1-based, so `frames[first_success]` is the first successful frame) of the first success.
    pub first_success: Option<usize>,
    /// The episode ended with `terminated`.
    pub terminated: bool,
}

impl Rollout {
    /// Whether any frame was successful.
    pub fn any_success(&self) -> bool {
        self.first_success.is_some()
    }

    /// Sum of rewards.
    pub fn total_reward(&self) -> f32 {
        self.rewards.iter().sum()
    }

    /// Frame `t` as RGB bytes.
    pub fn frame(&self, t: usize) -> &[u8] {
        let n = self.image_size * self.image_size * 3;
        &self.frames[t * n..(t + 1) * n]
    }
}

/// Runs one episode of `policy` in `env` from `seed` until `terminated` or `truncated`, recording everything.
///
/// With `frames = false` only one frame is kept (the initial one is still stored, later ones are dropped),
/// which is faster for success-rate evaluation.
pub fn rollout_with(
    env: &mut dyn Env,
    policy: &mut dyn Controller,
    seed: u64,
    frames: bool,
) -> Result<Rollout, EnvError> {
    let mut obs = env.reset(seed);
    policy.reset(seed);
    let spec = env.action_spec().clone();
    let mut r = Rollout {
        seed,
        image_size: obs.size,
        action_dim: spec.dim,
        state_dim: obs.state.len(),
        ..Rollout::default()
    };
    r.frames.extend_from_slice(&obs.frame);
    r.states.extend_from_slice(&obs.state);
    r.success.push(0);
    loop {
        let a = policy.act(&obs);
        let a = crate::check_action(env.task(), &spec, &a)?;
        let step = env.step(&a)?;
        r.steps += 1;
        r.actions.extend_from_slice(&a);
        r.rewards.push(step.reward);
        r.success.push(u8::from(step.info.success));
        if step.info.success && r.first_success.is_none() {
            r.first_success = Some(r.steps);
        }
        if frames {
            r.frames.extend_from_slice(&step.obs.frame);
        }
        r.states.extend_from_slice(&step.obs.state);
        obs = step.obs;
        if step.terminated || step.truncated {
            r.terminated = step.terminated;
            break;
        }
    }
    Ok(r)
}

/// [`rollout_with`] recording every frame.
pub fn rollout(
    env: &mut dyn Env,
    policy: &mut dyn Controller,
    seed: u64,
) -> Result<Rollout, EnvError> {
    rollout_with(env, policy, seed, true)
}
