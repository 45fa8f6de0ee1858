//! The ceiling control of refinement: PPO with the refinement's settings, run in the **real**
//! environment with the success classifier as the reward (the environment's own success flag and
//! termination are never used), or, as a second control, with the environment's true success as the
//! reward ([`ClassifierRewardEnv::true_success`]): the two together separate the classifier's error
//! from the world model's.
//!
//! It answers the question the world model cannot: with a perfect simulator, how far would the same
//! PPO, the same budget and the same classifier-made reward take the BC policy? When refinement inside
//! the world model falls short of this, the world model is the cause; when this falls short too, the
//! policy side (PPO settings, budget, classifier) is. The episodes follow the imagined environment's
//! rules: a success is `success_frames` consecutive frames the classifier calls successful, it ends the
//! episode, and episodes are truncated at the task's step limit.

use anyhow::{ensure, Context, Result};
use tch::{Device, Kind};
use w4rl_envs::{
    expand_seeds, ActionSpec, EnvConfig, EnvError, Info, Obs, Step, SyncVecEnv, VecEnv,
};

use crate::ppo::RolloutEnv;
use crate::reward::{RewardClassifier, RewardMode};
use crate::world_model::outcome::SuccessRule;

/// Real environments whose reward, success and termination come from the classifier.
pub struct ClassifierRewardEnv<'a> {
    env: SyncVecEnv,
    /// `None`: the environment's own success flag judges (the true-reward control).
    clf: Option<&'a RewardClassifier>,
    rule: SuccessRule,
    /// Per env: consecutive frames above the threshold so far.
    streak: Vec<usize>,
}

impl<'a> ClassifierRewardEnv<'a> {
    /// `num_envs` real `task` environments of `base` (its frame size, horizon and render options; never
    /// terminated on real success) judged by `clf` under `rule`.
    pub fn new(
        task: &str,
        num_envs: usize,
        base: &EnvConfig,
        clf: &'a RewardClassifier,
        rule: SuccessRule,
    ) -> Result<Self> {
        Self::build(task, num_envs, base, Some(clf), rule)
    }

    /// `num_envs` real `task` environments rewarded by their own success flag (1 on the first
    /// successful step, which ends the episode), under `rule`'s number of consecutive frames.
    pub fn true_success(
        task: &str,
        num_envs: usize,
        base: &EnvConfig,
        rule: SuccessRule,
    ) -> Result<Self> {
        Self::build(task, num_envs, base, None, rule)
    }

    fn build(
        task: &str,
        num_envs: usize,
        base: &EnvConfig,
        clf: Option<&'a RewardClassifier>,
        rule: SuccessRule,
    ) -> Result<Self> {
        ensure!(num_envs > 0, "the ceiling control needs at least one env");
        let cfg = EnvConfig {
            terminate_on_success: false,
            ..base.clone()
        };
        let env = SyncVecEnv::make(task, num_envs, &cfg)
            .with_context(|| format!("making {num_envs} real '{task}' environments"))?;
        Ok(Self {
            env,
            clf,
            rule,
            streak: vec![0; num_envs],
        })
    }

    fn probs(&self, clf: &RewardClassifier, obs: &[&Obs]) -> Result<Vec<f32>> {
        let size = self.env.image_size();
        let bytes: Vec<u8> = obs.iter().flat_map(|o| o.frame.iter().copied()).collect();
        let frames = crate::util::frames::bytes_to_chw(
            &bytes,
            obs.len(),
            size,
            clf.image_size(),
            clf.device(),
        )?;
        Ok(Vec::<f32>::try_from(
            clf.prob_u8(&frames)
                .to_device(Device::Cpu)
                .to_kind(Kind::Float),
        )?)
    }
}

impl VecEnv for ClassifierRewardEnv<'_> {
    fn num_envs(&self) -> usize {
        self.env.num_envs()
    }

    fn action_spec(&self) -> &ActionSpec {
        self.env.action_spec()
    }

    fn image_size(&self) -> usize {
        self.env.image_size()
    }

    fn reset(&mut self, seeds: &[u64]) -> Vec<Obs> {
        let seeds = expand_seeds(seeds, self.streak.len());
        self.streak.iter_mut().for_each(|s| *s = 0);
        self.env.reset(&seeds)
    }

    fn step(&mut self, actions: &[Vec<f32>]) -> Result<Vec<Step>, EnvError> {
        let steps = self.env.step(actions)?;
        let obs: Vec<&Obs> = steps.iter().map(|s| &s.obs).collect();
        let (p, thr, mode) = match self.clf {
            Some(clf) => (
                self.probs(clf, &obs)
                    .map_err(|e| EnvError::Config(format!("classifier failed: {e:#}")))?,
                clf.threshold() as f32,
                clf.mode(),
            ),
            None => (
                steps
                    .iter()
                    .map(|s| f32::from(u8::from(s.info.success)))
                    .collect(),
                0.5,
                RewardMode::Binary,
            ),
        };
        let k = self.rule.frames.max(1);
        Ok(steps
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let success = self.rule.judge(&mut self.streak[i], p[i], thr);
                let reward = match mode {
                    RewardMode::Probability if k == 1 => p[i],
                    _ => f32::from(u8::from(success)),
                };
                Step {
                    obs: s.obs,
                    reward,
                    terminated: success,
                    truncated: !success && (s.truncated || s.terminated),
                    info: Info { success },
                }
            })
            .collect())
    }
}

impl RolloutEnv for ClassifierRewardEnv<'_> {
    fn reset_one(&mut self, i: usize, seed: u64) -> Result<Obs> {
        self.streak[i] = 0;
        Ok(self.env.reset_one(i, seed)?)
    }
}
