//! [`MetaWorldEnv`]: a Meta-World task as a [`crate::Env`] (frames + 39-D state), its scripted expert as a
//! [`crate::Expert`], and the registry entries of the `metaworld` suite.

use super::{
    expert_action, spec, MetaWorld, MetaWorldConfig, MetaWorldError, MetaWorldRenderer, MwStep,
    RenderConfig, TaskSpec, ACTION_DIM, DEFAULT_MAX_STEPS, OBS_DIM, TASKS,
};
use crate::{
    check_action, ActionSpec, Controller, Env, EnvConfig, EnvError, Info, Obs, RewardKind, Step,
    TaskInfo,
};

/// Suite name.
pub const SUITE: &str = "metaworld";
/// Registry names are `metaworld/<task>`.
pub const PREFIX: &str = "metaworld/";

/// The action space shared by the suite.
pub fn action_spec() -> ActionSpec {
    ActionSpec {
        dim: ACTION_DIM,
        low: vec![-1.0; ACTION_DIM],
        high: vec![1.0; ACTION_DIM],
        meaning: vec![
            "x displacement of the hand's mocap target, times 1/100 m (+x to the robot's right)"
                .into(),
            "y displacement of the hand's mocap target, times 1/100 m (+y away from the robot)"
                .into(),
            "z displacement of the hand's mocap target, times 1/100 m (+z up)".into(),
            "gripper: finger position controls [a, -a] (+1 closes, -1 opens)".into(),
        ],
    }
}

fn to_env_error(task: &str, e: MetaWorldError) -> EnvError {
    match e {
        MetaWorldError::ActionDim(got) => EnvError::ActionDim {
            task: task.to_string(),
            expected: ACTION_DIM,
            got,
        },
        MetaWorldError::NonFiniteAction { index, value } => EnvError::NonFiniteAction {
            task: task.to_string(),
            index,
            value,
        },
        MetaWorldError::EpisodeOver(steps) => EnvError::EpisodeOver {
            task: task.to_string(),
            steps,
        },
        other => EnvError::Config(other.to_string()),
    }
}

/// A Meta-World task as a [`crate::Env`]: RGB frames of the `corner` camera plus the 39-D observation as the
/// state (`f32`), Meta-World's dense reward divided by 10 (so in `[0, 1]`; 1 on success for most tasks) or
/// the sparse success reward.
///
/// Render quality and camera come from [`EnvConfig::render`]; [`MetaWorldEnv::with_render`] takes every
/// setting of [`RenderConfig`].
pub struct MetaWorldEnv {
    name: String,
    spec: &'static TaskSpec,
    action_spec: ActionSpec,
    cfg: EnvConfig,
    max_steps: usize,
    size: usize,
    env: MetaWorld,
    renderer: MetaWorldRenderer,
    over: bool,
    steps: usize,
    /// An error during `reset` (which cannot fail), reported by the next `step`.
    pending: Option<MetaWorldError>,
}

impl MetaWorldEnv {
    /// Makes `metaworld/<task>` (or `<task>`) with the size, quality and camera of `cfg`.
    pub fn new(task: &str, cfg: &EnvConfig) -> Result<Self, MetaWorldError> {
        let mut render = RenderConfig::with_size(cfg.image_size).with_quality(cfg.render.quality);
        if !cfg.render.camera.is_empty() {
            render.camera = cfg.render.camera.clone();
        }
        Self::with_render(task, cfg, render)
    }

    /// Makes the task with explicit render settings (`render.size` wins over `cfg.image_size`).
    pub fn with_render(
        task: &str,
        cfg: &EnvConfig,
        render: RenderConfig,
    ) -> Result<Self, MetaWorldError> {
        let short = task.strip_prefix(PREFIX).unwrap_or(task);
        let spec = spec(short).ok_or_else(|| MetaWorldError::UnknownTask(task.to_string()))?;
        if cfg.max_steps == Some(0) {
            return Err(MetaWorldError::Config(
                "max_steps is 0 but must be at least 1".into(),
            ));
        }
        render.validate()?;
        let max_steps = cfg.max_steps.unwrap_or(DEFAULT_MAX_STEPS);
        let size = render.size;
        let mw = MetaWorldConfig {
            max_steps,
            ..MetaWorldConfig::default()
        };
        let mut env = MetaWorld::new(spec.name, &mw)?;
        let renderer = MetaWorldRenderer::new(&mut env, &render)?;
        let mut env = MetaWorldEnv {
            name: format!("{PREFIX}{}", spec.name),
            spec,
            action_spec: action_spec(),
            cfg: EnvConfig {
                image_size: size,
                ..cfg.clone()
            },
            max_steps,
            size,
            env,
            renderer,
            over: false,
            steps: 0,
            pending: None,
        };
        env.try_reset(None, 0)?;
        Ok(env)
    }

    /// The task's static description.
    pub fn task_spec(&self) -> &'static TaskSpec {
        self.spec
    }

    /// Starts an episode from an explicit task vector (Meta-World's `rand_vec`), e.g. to replay a recorded one.
    pub fn reset_to(&mut self, task_vector: &[f64]) -> Result<Obs, MetaWorldError> {
        self.try_reset(Some(task_vector.to_vec()), 0)
    }

    /// The task vector of the current episode.
    pub fn task_vector(&self) -> &[f64] {
        self.env.task_vector()
    }

    /// The simulation behind this environment (observation, task vector, expert action).
    pub fn inner(&self) -> &MetaWorld {
        &self.env
    }

    fn try_reset(&mut self, vector: Option<Vec<f64>>, seed: u64) -> Result<Obs, MetaWorldError> {
        self.over = false;
        self.steps = 0;
        self.pending = None;
        let obs = match &vector {
            Some(v) => self.env.reset_to(v)?,
            None => self.env.reset(seed)?,
        };
        let frame = self.renderer.render(&mut self.env)?;
        Ok(make_obs(&obs, frame, self.size))
    }

    /// Steps and returns Meta-World's own values too (raw reward in `[0, 10]`, `f64` observation).
    pub fn step_raw(&mut self, action: &[f32]) -> Result<(MwStep, Vec<u8>), EnvError> {
        if let Some(e) = self.pending.take() {
            self.over = true;
            return Err(to_env_error(&self.name, e));
        }
        let a = check_action(&self.name, &self.action_spec, action)?;
        if self.over {
            return Err(EnvError::EpisodeOver {
                task: self.name.clone(),
                steps: self.steps,
            });
        }
        let res = self
            .env
            .step(&a)
            .and_then(|s| Ok((s, self.renderer.render(&mut self.env)?)));
        match res {
            Ok((s, frame)) => {
                self.steps += 1;
                if s.truncated || (self.cfg.terminate_on_success && s.success) {
                    self.over = true;
                }
                Ok((s, frame))
            }
            Err(e) => Err(to_env_error(&self.name, e)),
        }
    }
}

fn make_obs(obs: &[f64; OBS_DIM], frame: Vec<u8>, size: usize) -> Obs {
    Obs {
        frame,
        size,
        state: obs.iter().map(|&v| v as f32).collect(),
    }
}

impl Env for MetaWorldEnv {
    fn task(&self) -> &str {
        &self.name
    }
    fn suite(&self) -> &str {
        SUITE
    }
    fn action_spec(&self) -> &ActionSpec {
        &self.action_spec
    }
    fn max_steps(&self) -> usize {
        self.max_steps
    }
    fn state_dim(&self) -> usize {
        OBS_DIM
    }
    fn image_size(&self) -> usize {
        self.size
    }

    fn reset(&mut self, seed: u64) -> Obs {
        match self.try_reset(None, seed) {
            Ok(obs) => obs,
            Err(e) => {
                // `Env::reset` cannot fail: hand back a blank observation and report the error on `step`
                self.pending = Some(e);
                Obs {
                    frame: vec![0; self.size * self.size * 3],
                    size: self.size,
                    state: vec![0.0; OBS_DIM],
                }
            }
        }
    }

    fn step(&mut self, action: &[f32]) -> Result<Step, EnvError> {
        let (s, frame) = self.step_raw(action)?;
        let reward = match self.cfg.reward {
            RewardKind::Dense => (s.reward / 10.0) as f32,
            RewardKind::Sparse => f32::from(u8::from(s.success)),
        };
        Ok(Step {
            obs: make_obs(&s.obs, frame, self.size),
            reward,
            terminated: self.cfg.terminate_on_success && s.success,
            truncated: s.truncated,
            info: Info { success: s.success },
        })
    }
}

/// The scripted expert of a Meta-World task (see [`expert_action`]); reads the 39-D state.
pub struct MetaWorldExpert {
    task: &'static str,
}

impl MetaWorldExpert {
    pub fn new(task: &str) -> Result<Self, MetaWorldError> {
        let short = task.strip_prefix(PREFIX).unwrap_or(task);
        let spec = spec(short).ok_or_else(|| MetaWorldError::UnknownTask(task.to_string()))?;
        Ok(MetaWorldExpert { task: spec.name })
    }
}

impl Controller for MetaWorldExpert {
    fn reset(&mut self, _seed: u64) {}

    fn act(&mut self, obs: &Obs) -> Vec<f32> {
        if obs.state.len() != OBS_DIM {
            return vec![0.0; ACTION_DIM];
        }
        let mut o = [0.0f64; OBS_DIM];
        for (d, s) in o.iter_mut().zip(&obs.state) {
            *d = *s as f64;
        }
        expert_action(self.task, &o)
            .map(|a| a.to_vec())
            .unwrap_or_else(|| vec![0.0; ACTION_DIM])
    }
}

/// The suite's tasks for the registry.
pub fn list_tasks() -> Vec<TaskInfo> {
    TASKS
        .iter()
        .map(|t| TaskInfo {
            name: format!("{PREFIX}{}", t.name),
            suite: SUITE.to_string(),
            action_dim: ACTION_DIM,
            max_steps: DEFAULT_MAX_STEPS,
            description: format!("Meta-World v3 {}: {}", t.name, t.description),
        })
        .collect()
}

/// Makes `metaworld/<task>` for the registry; `None` when the name is not of this suite.
pub fn make(task: &str, cfg: &EnvConfig) -> Option<Result<Box<dyn Env>, EnvError>> {
    let short = task.strip_prefix(PREFIX)?;
    spec(short)?;
    Some(
        cfg.validate()
            .and_then(|_| MetaWorldEnv::new(task, cfg).map_err(|e| to_env_error(task, e)))
            .map(|e| Box::new(e) as Box<dyn Env>),
    )
}

/// The expert of `metaworld/<task>` for the registry; `None` when the name is not of this suite.
pub fn make_expert(task: &str) -> Option<Box<dyn Controller>> {
    let short = task.strip_prefix(PREFIX)?;
    spec(short)?;
    MetaWorldExpert::new(short)
        .ok()
        .map(|e| Box::new(e) as Box<dyn Controller>)
}
