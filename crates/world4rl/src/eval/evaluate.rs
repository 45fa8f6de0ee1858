//! Policy evaluation in the real environment: success rate with a 95 % Wilson score interval, mean
//! episode length and every episode's outcome (for paired comparisons, [`crate::eval::paired`]), on the
//! validation or the test seeds ([`crate::util::seeds::Split`]), both disjoint from every training seed.
//!
//! Episodes end on the first success (`terminate_on_success`), so the episode length measures speed;
//! the policy acts in an [`ActionMode`]: its mean action, samples of its Gaussian, or samples with σ
//! capped. Frames are rendered at the size the policy's training data had and reduced to the
//! policy's input size exactly as the training frames were.

use std::time::Instant;

use anyhow::{ensure, Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use w4rl_envs::{make, Env, EnvConfig, EnvError, Obs, Step};

use crate::eval::collect::BatchPolicy;
use crate::policy::gaussian::{GaussianPolicy, ObsHistory};
use crate::util::seeds::{eval_seed, Split};

/// How a Gaussian policy acts when it is evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "mode")]
pub enum ActionMode {
    /// The mean action μ.
    Mean,
    /// Samples of N(μ, σ²) with the policy's own σ (within its checkpoint's bounds).
    Sampled,
    /// Samples with σ capped at `std_max` (refinement's cap, `refine.ppo.std_max`).
    SampledCapped {
        /// The cap.
        std_max: f64,
    },
}

impl ActionMode {
    /// The modes a policy is read in: mean, sampled and, when `cap` is below every σ a policy can
    /// have (`cap < policy_std_max`), sampled with σ ≤ `cap`.
    pub fn all(cap: Option<f64>) -> Vec<ActionMode> {
        let mut v = vec![ActionMode::Mean, ActionMode::Sampled];
        if let Some(c) = cap {
            v.push(ActionMode::SampledCapped { std_max: c });
        }
        v
    }

    /// Whether the policy's Gaussian is sampled.
    pub fn samples(self) -> bool {
        !matches!(self, ActionMode::Mean)
    }
}

impl std::fmt::Display for ActionMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ActionMode::Mean => f.write_str("mean"),
            ActionMode::Sampled => f.write_str("sampled"),
            ActionMode::SampledCapped { std_max } => write!(f, "sampled σ≤{std_max}"),
        }
    }
}

/// The 95 % two-sided normal quantile.
pub const Z95: f64 = 1.959_963_984_540_054;

/// Wilson score interval of `successes` out of `n` at normal quantile `z` (e.g. [`Z95`]); `(0, 1)` for
/// `n = 0`.
pub fn wilson_interval(successes: usize, n: usize, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let n_f = n as f64;
    let p = successes.min(n) as f64 / n_f;
    let z2 = z * z;
    let denom = 1.0 + z2 / n_f;
    let center = (p + z2 / (2.0 * n_f)) / denom;
    let half = z / denom * (p * (1.0 - p) / n_f + z2 / (4.0 * n_f * n_f)).sqrt();
    ((center - half).max(0.0), (center + half).min(1.0))
}

/// Newcombe's hybrid score interval (his method 10) for the difference `p2 − p1` of two success
/// rates, `k1/n1` (e.g. BC) and `k2/n2` (e.g. the refined policy), built from their Wilson intervals
/// at quantile `z`. It treats the two samples as independent; on the same evaluation seeds, where
/// the two policies' outcomes are positively correlated, that makes it wider than a paired interval.
/// `(-1, 1)` when either sample is empty.
pub fn newcombe_difference_interval(
    k1: usize,
    n1: usize,
    k2: usize,
    n2: usize,
    z: f64,
) -> (f64, f64) {
    if n1 == 0 || n2 == 0 {
        return (-1.0, 1.0);
    }
    let p1 = k1.min(n1) as f64 / n1 as f64;
    let p2 = k2.min(n2) as f64 / n2 as f64;
    let (l1, u1) = wilson_interval(k1, n1, z);
    let (l2, u2) = wilson_interval(k2, n2, z);
    let d = p2 - p1;
    let lo = d - ((p2 - l2).powi(2) + (u1 - p1).powi(2)).sqrt();
    let hi = d + ((u2 - p2).powi(2) + (p1 - l1).powi(2)).sqrt();
    (lo.max(-1.0), hi.min(1.0))
}

/// Evaluation options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Episodes (default 1000: paired intervals of about ±3 points); in `world4rl run`, the test
    /// episodes of every policy and action mode.
    pub episodes: usize,
    /// Validation episodes of every choice `world4rl run` makes on real success (BC's checkpoint and
    /// action mode, every other policy's action mode; default 200; 0 = no choice: every policy is read
    /// with its mean action and BC's weights are those with the lowest held-out MSE).
    pub validation_episodes: usize,
    /// Environments stepped together (default 50).
    pub num_envs: usize,
    /// Base of the evaluation seeds (default 0; the experiment seed in a pipeline).
    pub seed: u64,
    /// Rendered frame size; 0 = the size recorded in the policy (its training data's).
    pub render_size: usize,
    /// Episode length override; 0 = the task's. In an experiment, taken from `experiment.max_steps`.
    pub max_steps: usize,
    /// Act with samples of N(μ, σ²) (σ within the checkpoint's bounds) instead of the mean action μ
    /// (default false) where one mode is wanted (`eval policy`, the fidelity stage's closed-loop
    /// rollouts); the `eval` stage reads every policy in every [`ActionMode`]. The draws come from
    /// libtorch's generator, seeded from `seed`, so the same settings give the same episodes.
    pub sample: bool,
    /// The σ of the third action mode every choice and the `eval` stage read a policy in: sampled
    /// with σ ≤ `std_cap`, for a policy whose own bound is above it (default 0.25, refinement's cap
    /// before 2026-12-07; BC\* is chosen among its checkpoints in all three modes).
    pub std_cap: f64,
    /// With `sample`: cap σ at this value (set by the caller, never read from a file).
    #[serde(skip)]
    pub std_max: Option<f64>,
    /// The seed set (set by the caller, never read from a file; default validation).
    #[serde(skip)]
    pub split: Split,
}

impl EvalConfig {
    /// This config acting in `mode`.
    pub fn with_mode(&self, mode: ActionMode) -> EvalConfig {
        let (sample, std_max) = match mode {
            ActionMode::Mean => (false, None),
            ActionMode::Sampled => (true, None),
            ActionMode::SampledCapped { std_max } => (true, Some(std_max)),
        };
        EvalConfig {
            sample,
            std_max,
            ..self.clone()
        }
    }

    /// This config on the seeds of `split`, `episodes` of them.
    pub fn on(&self, split: Split, episodes: usize) -> EvalConfig {
        EvalConfig {
            split,
            episodes,
            ..self.clone()
        }
    }

    /// The action mode this config acts in.
    pub fn mode(&self) -> ActionMode {
        match (self.sample, self.std_max) {
            (false, _) => ActionMode::Mean,
            (true, None) => ActionMode::Sampled,
            (true, Some(std_max)) => ActionMode::SampledCapped { std_max },
        }
    }
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            episodes: 1000,
            validation_episodes: 200,
            num_envs: 50,
            seed: 0,
            render_size: 0,
            max_steps: 0,
            sample: false,
            std_cap: 0.25,
            std_max: None,
            split: Split::Validation,
        }
    }
}

/// The result of [`evaluate_policy`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EvalReport {
    /// Task.
    pub task: String,
    /// Episodes run.
    pub episodes: usize,
    /// Successful episodes.
    pub successes: usize,
    /// successes / episodes.
    pub success_rate: f64,
    /// Lower end of the 95 % Wilson interval.
    pub ci_low: f64,
    /// Upper end of the 95 % Wilson interval.
    pub ci_high: f64,
    /// Mean episode length (steps until success, or the episode limit).
    pub mean_episode_length: f64,
    /// Base of the evaluation seeds.
    pub seed: u64,
    /// Seconds.
    pub seconds: f64,
    /// The seed set (absent in runs of before 2026-12-06, which used today's validation stream's
    /// predecessor).
    #[serde(default)]
    pub split: Option<Split>,
    /// How the policy acted (absent in older runs).
    #[serde(default)]
    pub mode: Option<ActionMode>,
    /// Episode `i`'s outcome (1 success, 0 failure), in seed order: two policies evaluated on the same
    /// split and seed base met the same scenes, episode by episode (absent in older runs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outcomes: Vec<u8>,
}

/// Steps `envs[rows[j]]` with `actions[j]` for every `j` (`rows` ascending) and returns
/// `(row, action, step)` in the order of `rows`. Environments whose step is costly
/// ([`Env::costly_step`]; none is marked so today) step in parallel on rayon's pool. Every environment
/// is independent, so the results are those of stepping them one by one.
pub(crate) fn step_rows(
    envs: &mut [Box<dyn Env>],
    rows: &[usize],
    actions: Vec<Vec<f32>>,
) -> Vec<(usize, Vec<f32>, Result<Step, EnvError>)> {
    debug_assert!(rows.windows(2).all(|w| w[0] < w[1]), "rows must ascend");
    let mut todo: Vec<Option<Vec<f32>>> = vec![None; envs.len()];
    for (&i, a) in rows.iter().zip(actions) {
        todo[i] = Some(a);
    }
    if w4rl_envs::steps_in_parallel(envs) {
        envs.par_iter_mut()
            .zip(todo.into_par_iter())
            .enumerate()
            .filter_map(step_one)
            .collect()
    } else {
        envs.iter_mut()
            .zip(todo)
            .enumerate()
            .filter_map(step_one)
            .collect()
    }
}

/// An environment of [`step_rows`] with its row and its action, if it steps.
type RowTodo<'a> = (usize, (&'a mut Box<dyn Env>, Option<Vec<f32>>));

/// One environment's step for [`step_rows`], when it has an action.
fn step_one((i, (env, a)): RowTodo<'_>) -> Option<(usize, Vec<f32>, Result<Step, EnvError>)> {
    a.map(|a| {
        let st = env.step(&a);
        (i, a, st)
    })
}

/// Runs `cfg.episodes` episodes of `task` on the seeds of `cfg.split` with the policy's mean action
/// (or, with `cfg.sample`, with samples of its Gaussian, σ capped at `cfg.std_max` when set).
pub fn evaluate_policy(
    policy: &GaussianPolicy,
    task: &str,
    cfg: &EvalConfig,
) -> Result<EvalReport> {
    ensure!(
        cfg.episodes > 0,
        "the number of evaluation episodes must be positive"
    );
    ensure!(cfg.num_envs > 0, "eval num_envs must be positive");
    let start = Instant::now();
    let capped;
    let policy = match cfg.std_max {
        Some(cap) if cfg.sample => {
            let mut p = policy.duplicate()?;
            let lo = p.std_bounds().0.min(cap);
            p.set_std_bounds(lo, cap)
                .context("the σ cap of a sampled evaluation must be a positive number")?;
            capped = p;
            &capped
        }
        _ => policy,
    };
    let render = if cfg.render_size > 0 {
        cfg.render_size
    } else {
        policy.spec().render_size()
    };
    let env_cfg = EnvConfig {
        image_size: render,
        terminate_on_success: true,
        max_steps: (cfg.max_steps > 0).then_some(cfg.max_steps),
        render: crate::eval::render::options(&policy.spec().render)?,
        ..EnvConfig::default()
    };
    let k = cfg.num_envs.min(cfg.episodes);
    let mut envs: Vec<Box<dyn Env>> = (0..k)
        .map(|_| make(task, &env_cfg))
        .collect::<Result<_, _>>()
        .with_context(|| format!("making the evaluation environment '{task}'"))?;
    ensure!(
        envs[0].action_spec().dim == policy.spec().action_dim,
        "the policy acts in {} dimensions but '{task}' expects {}; was it trained for another suite?",
        policy.spec().action_dim,
        envs[0].action_spec().dim
    );
    ensure!(
        !policy.config().use_state || envs[0].state_dim() == policy.spec().state_dim,
        "the policy reads a state of {} values but '{task}' has {}",
        policy.spec().state_dim,
        envs[0].state_dim()
    );
    if cfg.sample {
        tch::manual_seed(crate::util::seeds::mix(cfg.seed ^ 0x7361_6d70) as i64);
    }
    let seed_of = |i: usize| eval_seed(cfg.seed, cfg.split, task, i);
    let mut next = 0usize;
    let mut first = Vec::with_capacity(k);
    let mut episode = vec![0usize; k];
    for (i, env) in envs.iter_mut().enumerate() {
        first.push(env.reset(seed_of(next)));
        episode[i] = next;
        next += 1;
    }
    let mut outcomes = vec![0u8; cfg.episodes];
    let mut hist = ObsHistory::new(policy.config().frame_stack, first);
    let mut live = vec![true; k];
    let mut len = vec![0usize; k];
    let (mut successes, mut done_eps, mut total_len) = (0usize, 0usize, 0usize);
    while live.iter().any(|&l| l) {
        let rows: Vec<usize> = (0..k).filter(|&i| live[i]).collect();
        let obs = hist.batch(policy, Some(&rows))?;
        let actions = if cfg.sample {
            policy.act_sample(&obs)?
        } else {
            policy.act_mean(&obs)?
        };
        for (i, _, st) in step_rows(&mut envs, &rows, actions) {
            let st = st.with_context(|| format!("stepping '{task}'"))?;
            len[i] += 1;
            if st.terminated || st.truncated {
                done_eps += 1;
                successes += st.info.success as usize;
                outcomes[episode[i]] = st.info.success as u8;
                total_len += len[i];
                len[i] = 0;
                if next < cfg.episodes {
                    hist.reset(i, envs[i].reset(seed_of(next)));
                    episode[i] = next;
                    next += 1;
                } else {
                    live[i] = false;
                }
            } else {
                hist.push(i, st.obs);
            }
        }
    }
    let (lo, hi) = wilson_interval(successes, done_eps, Z95);
    Ok(EvalReport {
        task: task.to_string(),
        episodes: done_eps,
        successes,
        success_rate: successes as f64 / done_eps.max(1) as f64,
        ci_low: lo,
        ci_high: hi,
        mean_episode_length: total_len as f64 / done_eps.max(1) as f64,
        seed: cfg.seed,
        seconds: start.elapsed().as_secs_f64(),
        split: Some(cfg.split),
        mode: Some(cfg.mode()),
        outcomes,
    })
}

/// A [`GaussianPolicy`] acting for data collection ([`BatchPolicy`]): mean actions, or samples.
///
/// Stateless: with `frame_stack > 1` every observation is fed as the first of an episode (its frame
/// repeated). Use [`HistoryActor`] to feed real frame histories.
pub struct PolicyActor<'p> {
    /// The policy.
    pub policy: &'p GaussianPolicy,
    /// Sample from N(μ, σ²) instead of acting with μ.
    pub stochastic: bool,
}

impl BatchPolicy for PolicyActor<'_> {
    fn act(&mut self, obs: &[&Obs]) -> Result<Vec<Vec<f32>>> {
        let batch = self.policy.obs_batch(obs)?;
        if self.stochastic {
            self.policy.act_sample(&batch)
        } else {
            self.policy.act_mean(&batch)
        }
    }
}

/// A [`GaussianPolicy`] acting for data collection with frame histories ([`BatchPolicy`]).
///
/// Row `i` of consecutive [`act`](BatchPolicy::act) calls is taken to be the same episode; a call with
/// another number of observations starts new episodes, and so does [`reset`](Self::reset), which must
/// be called before each new batch of episodes of the same size.
pub struct HistoryActor<'p> {
    policy: &'p GaussianPolicy,
    stochastic: bool,
    hist: Option<ObsHistory>,
}

impl<'p> HistoryActor<'p> {
    /// An actor with empty histories.
    pub fn new(policy: &'p GaussianPolicy, stochastic: bool) -> Self {
        Self {
            policy,
            stochastic,
            hist: None,
        }
    }

    /// Forgets the histories: the next call starts new episodes.
    pub fn reset(&mut self) {
        self.hist = None;
    }
}

impl BatchPolicy for HistoryActor<'_> {
    fn act(&mut self, obs: &[&Obs]) -> Result<Vec<Vec<f32>>> {
        let k = self.policy.config().frame_stack;
        let h = match self.hist.take() {
            Some(mut h) if h.len() == obs.len() => {
                for (i, o) in obs.iter().enumerate() {
                    h.push(i, (*o).clone());
                }
                h
            }
            _ => ObsHistory::new(k, obs.iter().map(|o| (*o).clone()).collect()),
        };
        let batch = h.batch(self.policy, None)?;
        self.hist = Some(h);
        if self.stochastic {
            self.policy.act_sample(&batch)
        } else {
            self.policy.act_mean(&batch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tabletop environment that declares its step costly, so [`step_rows`] steps it on rayon's pool.
    struct Costly(Box<dyn Env>);

    impl Env for Costly {
        fn task(&self) -> &str {
            self.0.task()
        }
        fn suite(&self) -> &str {
            self.0.suite()
        }
        fn action_spec(&self) -> &w4rl_envs::ActionSpec {
            self.0.action_spec()
        }
        fn max_steps(&self) -> usize {
            self.0.max_steps()
        }
        fn state_dim(&self) -> usize {
            self.0.state_dim()
        }
        fn image_size(&self) -> usize {
            self.0.image_size()
        }
        fn reset(&mut self, seed: u64) -> Obs {
            self.0.reset(seed)
        }
        fn step(&mut self, action: &[f32]) -> Result<Step, EnvError> {
            self.0.step(action)
        }
        fn costly_step(&self) -> bool {
            true
        }
    }

    #[test]
    fn batched_steps_equal_one_by_one() {
        // four push-block scenes, three of them stepped (row 1 is finished), one by one and on rayon's
        // pool: both must give exactly the steps of stepping each environment alone, in the rows' order
        let cfg = EnvConfig::default();
        let fresh = |costly: bool| -> Vec<Box<dyn Env>> {
            (0..4u64)
                .map(|s| {
                    let mut e = make("push-block", &cfg).unwrap();
                    e.reset(100 + s);
                    if costly {
                        Box::new(Costly(e)) as Box<dyn Env>
                    } else {
                        e
                    }
                })
                .collect()
        };
        let rows = [0usize, 2, 3];
        for costly in [false, true] {
            let mut batched = fresh(costly);
            let mut alone = fresh(false);
            for t in 0..20 {
                let actions: Vec<Vec<f32>> = rows
                    .iter()
                    .map(|&i| {
                        let (t, i) = (t as f32, i as f32);
                        vec![((t + i) * 0.37).sin(), (t * i * 0.11).cos()]
                    })
                    .collect();
                let got = step_rows(&mut batched, &rows, actions.clone());
                assert_eq!(got.len(), rows.len());
                for ((i, a, st), (&j, b)) in got.into_iter().zip(rows.iter().zip(&actions)) {
                    assert_eq!((i, &a), (j, b));
                    let want = alone[j].step(b).unwrap();
                    assert_eq!(st.unwrap(), want, "env {j}, step {t}, costly {costly}");
                }
            }
            // a bad action is reported for its row, the other row steps
            let got = step_rows(&mut batched, &[1, 2], vec![vec![0.0; 7], vec![0.0, 0.0]]);
            assert!(got[0].2.is_err() && got[1].2.is_ok());
        }
    }

    #[test]
    fn wilson_known_values() {
        // reference values (e.g. statsmodels proportion_confint(method="wilson"))
        let cases = [
            (0usize, 10usize, 0.0, 0.277_532),
            (5, 10, 0.236_593, 0.763_407),
            (8, 10, 0.490_162, 0.943_318),
            (50, 100, 0.403_832, 0.596_168),
            (100, 100, 0.963_007, 1.0),
        ];
        for (k, n, lo, hi) in cases {
            let (l, h) = wilson_interval(k, n, Z95);
            assert!(
                (l - lo).abs() < 1e-5 && (h - hi).abs() < 1e-5,
                "{k}/{n}: ({l}, {h}) vs ({lo}, {hi})"
            );
        }
        assert_eq!(wilson_interval(0, 0, Z95), (0.0, 1.0));
    }

    #[test]
    fn newcombe_known_values() {
        // Newcombe (1998), Statistics in Medicine 17:873, example (a): 56/70 against 48/80, method 10
        // gives 0.0524 to 0.3339
        let (lo, hi) = newcombe_difference_interval(48, 80, 56, 70, Z95);
        assert!(
            (lo - 0.0524).abs() < 1e-4 && (hi - 0.3339).abs() < 1e-4,
            "({lo}, {hi})"
        );
        // the other direction mirrors it
        let (lo2, hi2) = newcombe_difference_interval(56, 70, 48, 80, Z95);
        assert!((lo2 + hi).abs() < 1e-12 && (hi2 + lo).abs() < 1e-12);
        // a difference at the boundary stays inside [-1, 1] and excludes 0
        let (lo, hi) = newcombe_difference_interval(5, 5, 0, 5, Z95);
        assert!(lo >= -1.0 && hi < 0.0, "({lo}, {hi})");
        assert_eq!(newcombe_difference_interval(0, 0, 3, 10, Z95), (-1.0, 1.0));
    }
}
