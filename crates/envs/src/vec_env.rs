//! Batched environments: the [`VecEnv`] trait and [`SyncVecEnv`].

use rayon::prelude::*;

use crate::{check_action, make, ActionSpec, Env, EnvConfig, EnvError, Obs, Step};

/// N environments stepped together, the interface PPO uses for both the real environments and the imagined
/// environment over the world model.
///
/// No auto-reset: after an environment reports `terminated` or `truncated`, the caller resets it (all of them
/// with [`reset`](VecEnv::reset), or one of them through the implementation's own API).
pub trait VecEnv {
    /// Number of environments.
    fn num_envs(&self) -> usize;
    /// The action space, shared by all environments.
    fn action_spec(&self) -> &ActionSpec;
    /// Side of the frames in pixels, shared by all environments.
    fn image_size(&self) -> usize;
    /// Resets every environment, `seeds[i]` for environment `i`. A shorter list is continued by counting up
    /// from its last seed (so `&[s]` gives seeds `s, s+1, ...`; an empty list counts from 0).
    fn reset(&mut self, seeds: &[u64]) -> Vec<Obs>;
    /// Steps every environment, `actions[i]` for environment `i`. The batch size and every action are checked
    /// before any environment moves, so an invalid action changes nothing.
    fn step(&mut self, actions: &[Vec<f32>]) -> Result<Vec<Step>, EnvError>;
}

/// Owns N boxed environments and steps them together: in parallel on the rayon thread pool when their steps
/// are costly ([`Env::costly_step`]), one by one otherwise (the same rule as evaluation and collection; a
/// tabletop step takes microseconds, and Meta-World's parallel rendering once crashed Mesa, `docs/speed.md`).
/// Every environment is independent, so the results are the same either way.
///
/// No auto-reset (see [`VecEnv`]); [`SyncVecEnv::reset_one`] resets a single environment.
pub struct SyncVecEnv {
    envs: Vec<Box<dyn Env>>,
    spec: ActionSpec,
    size: usize,
}

impl SyncVecEnv {
    /// Batches environments; they must share the action spec and the image size.
    pub fn new(envs: Vec<Box<dyn Env>>) -> Result<Self, EnvError> {
        let first = envs
            .first()
            .ok_or_else(|| EnvError::Mismatch("no environments given; pass at least one".into()))?;
        let spec = first.action_spec().clone();
        let size = first.image_size();
        for e in &envs {
            if e.action_spec() != &spec || e.image_size() != size {
                return Err(EnvError::Mismatch(format!(
                    "`{}` ({} px, action dim {}) differs from `{}` ({} px, action dim {}); use one suite and one image size",
                    e.task(),
                    e.image_size(),
                    e.action_spec().dim,
                    first.task(),
                    size,
                    spec.dim
                )));
            }
        }
        Ok(Self { envs, spec, size })
    }

    /// `n` copies of one task.
    pub fn make(task: &str, n: usize, cfg: &EnvConfig) -> Result<Self, EnvError> {
        let envs = (0..n)
            .map(|_| make(task, cfg))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(envs)
    }

    /// Resets environment `i` only.
    pub fn reset_one(&mut self, i: usize, seed: u64) -> Result<Obs, EnvError> {
        let len = self.envs.len();
        let env = self
            .envs
            .get_mut(i)
            .ok_or(EnvError::IndexOutOfRange { index: i, len })?;
        Ok(env.reset(seed))
    }

    /// The environments.
    pub fn envs(&self) -> &[Box<dyn Env>] {
        &self.envs
    }
}

impl VecEnv for SyncVecEnv {
    fn num_envs(&self) -> usize {
        self.envs.len()
    }

    fn action_spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn image_size(&self) -> usize {
        self.size
    }

    fn reset(&mut self, seeds: &[u64]) -> Vec<Obs> {
        let seeds = expand_seeds(seeds, self.envs.len());
        if steps_in_parallel(&self.envs) {
            self.envs
                .par_iter_mut()
                .zip(seeds.par_iter())
                .map(|(e, &s)| e.reset(s))
                .collect()
        } else {
            self.envs
                .iter_mut()
                .zip(&seeds)
                .map(|(e, &s)| e.reset(s))
                .collect()
        }
    }

    fn step(&mut self, actions: &[Vec<f32>]) -> Result<Vec<Step>, EnvError> {
        if actions.len() != self.envs.len() {
            return Err(EnvError::BatchSize {
                expected: self.envs.len(),
                got: actions.len(),
            });
        }
        for (e, a) in self.envs.iter().zip(actions) {
            check_action(e.task(), &self.spec, a)?;
        }
        if steps_in_parallel(&self.envs) {
            self.envs
                .par_iter_mut()
                .zip(actions.par_iter())
                .map(|(e, a)| e.step(a))
                .collect()
        } else {
            self.envs
                .iter_mut()
                .zip(actions)
                .map(|(e, a)| e.step(a))
                .collect()
        }
    }
}

/// Whether a batch of `envs` steps on rayon's pool: when any of them declares its step costly
/// ([`Env::costly_step`]). The one rule for every batch of real environments (this type, evaluation and
/// collection).
pub fn steps_in_parallel(envs: &[Box<dyn Env>]) -> bool {
    envs.iter().any(|e| e.costly_step())
}

/// The seed of every environment given a possibly shorter list (see [`VecEnv::reset`]).
pub fn expand_seeds(seeds: &[u64], n: usize) -> Vec<u64> {
    (0..n)
        .map(|i| match seeds.get(i) {
            Some(&s) => s,
            None => match seeds.last() {
                Some(&last) => last.wrapping_add((i + 1 - seeds.len()) as u64),
                None => i as u64,
            },
        })
        .collect()
}
