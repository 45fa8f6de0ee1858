//! The session behind `world4rl play`: one imagined episode at a time inside the frozen world model,
//! driven by a person's actions or by a policy, judged frame by frame by the task's classifier, with an
//! optional real environment fed the same actions (DIAMOND's "play in the world model").
//!
//! * **Reset** picks a recorded episode of the task (held-out rollouts when the run has them) and starts
//!   from its first frame, padded like the imagined environment's start states; the real environment,
//!   when present, is reset with that episode's seed, so both start from the same scene.
//! * **Step** takes the person's action (or the policy's mean action on the imagined frames it has seen),
//!   clipped to the action box, samples the next frame, and scores it with the classifier under the
//!   imagined environment's success rule.
//! * The frames of the current episode are kept, for a GIF on request.
//!
//! The session owns every tensor; the server runs it on one thread.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use tch::{Kind, Tensor};
use w4rl_data::Episode;
use w4rl_envs::{Env, Obs};

use crate::policy::{GaussianPolicy, ObsHistory};
use crate::reward::RewardClassifier;
use crate::util::frames::model_to_chw;
use crate::world_model::outcome::SuccessRule;
use crate::world_model::{RollingContext, WorldModel};

/// What a task brings to the playground.
pub struct PlayTask {
    /// Task name.
    pub name: String,
    /// Its success classifier.
    pub classifier: RewardClassifier,
    /// Policies that can take the controls, by name (`bc`, `refined`).
    pub policies: Vec<(String, GaussianPolicy)>,
    /// Recorded episodes whose first frames start imagined episodes.
    pub starts: Vec<Episode>,
    /// A real environment of the task, fed the same actions (`--real`).
    pub real: Option<Box<dyn Env>>,
}

/// Who chooses the actions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Driver {
    /// The person at the page.
    Human,
    /// The named policy of the task.
    Policy(String),
}

/// Everything the page shows after a reset or a step.
#[derive(Clone, Debug)]
pub struct View {
    /// The imagined frame, `size × size × 3` RGB bytes.
    pub imagined: Vec<u8>,
    /// Its side.
    pub size: usize,
    /// The real frame and its side, with a real environment.
    pub real: Option<(Vec<u8>, usize)>,
    /// Steps since the reset.
    pub step: usize,
    /// The task's episode length in the data (steps past it are allowed; the page marks them).
    pub horizon: usize,
    /// Classifier probability of the imagined frame.
    pub prob: f32,
    /// The classifier's decision threshold.
    pub threshold: f32,
    /// Whether the imagined episode has succeeded (by the success rule) so far.
    pub success: bool,
    /// Whether the real episode has succeeded so far.
    pub real_success: Option<bool>,
    /// The action of the last step.
    pub action: Vec<f32>,
    /// Milliseconds the last step took (world model, classifier, policy, real env).
    pub step_ms: f64,
    /// The recorded episode the imagined one started from.
    pub start_episode: usize,
}

/// Per-task state that survives a task switch.
struct TaskState {
    horizon: usize,
    next_start: usize,
}

/// The playground session (see the module docs).
pub struct PlaySession {
    wm: WorldModel,
    tasks: Vec<PlayTask>,
    state: Vec<TaskState>,
    task: usize,
    rule: SuccessRule,
    driver: Driver,
    ctx: RollingContext,
    hist: ObsHistory,
    step: usize,
    streak: usize,
    success: bool,
    real_success: bool,
    real_over: bool,
    start_episode: usize,
    /// Frames of the current episode (imagined, then the real one beside it when present).
    recording: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    last: View,
}

fn imagined_bytes(frame: &Tensor) -> Result<Vec<u8>> {
    // [1, 3, S, S] in [-1, 1] -> S x S x 3 bytes
    Ok(Vec::<u8>::try_from(
        crate::util::frames::model_to_hwc(frame)
            .to_device(tch::Device::Cpu)
            .flatten(0, -1),
    )?)
}

impl PlaySession {
    /// A session over `tasks` (at least one, each with at least one start episode), starting on
    /// `tasks[0]`, driven by `driver`; `success_frames` is the imagined environment's success rule.
    pub fn new(
        wm: WorldModel,
        tasks: Vec<PlayTask>,
        driver: Driver,
        success_frames: usize,
    ) -> Result<Self> {
        ensure!(!tasks.is_empty(), "the playground needs at least one task");
        for t in &tasks {
            ensure!(
                !t.starts.is_empty(),
                "no recorded episode of '{}' to start from",
                t.name
            );
            for e in &t.starts {
                ensure!(
                    e.meta.action_dim == wm.action_dim(),
                    "the episodes of '{}' have {}-dimensional actions, the world model {}",
                    t.name,
                    e.meta.action_dim,
                    wm.action_dim()
                );
            }
        }
        let state = tasks
            .iter()
            .map(|t| TaskState {
                horizon: t.starts.iter().map(|e| e.steps()).max().unwrap_or(0),
                next_start: 0,
            })
            .collect();
        let ctx = RollingContext::from_episodes(&wm, &[(&tasks[0].starts[0], 0)])?;
        let first = ctx.last_frame();
        let size = wm.image_size();
        let obs = Obs {
            frame: imagined_bytes(&first)?,
            size,
            state: Vec::new(),
        };
        let mut s = Self {
            hist: ObsHistory::new(1, vec![obs]),
            wm,
            tasks,
            state,
            task: 0,
            rule: SuccessRule {
                frames: success_frames.max(1),
            },
            driver: Driver::Human,
            ctx,
            step: 0,
            streak: 0,
            success: false,
            real_success: false,
            real_over: false,
            start_episode: 0,
            recording: Vec::new(),
            last: View {
                imagined: Vec::new(),
                size,
                real: None,
                step: 0,
                horizon: 0,
                prob: 0.0,
                threshold: 0.0,
                success: false,
                real_success: None,
                action: Vec::new(),
                step_ms: 0.0,
                start_episode: 0,
            },
        };
        s.set_driver(driver)?;
        s.reset()?;
        Ok(s)
    }

    /// Task names, in order.
    pub fn tasks(&self) -> Vec<String> {
        self.tasks.iter().map(|t| t.name.clone()).collect()
    }

    /// The current task.
    pub fn task(&self) -> &str {
        &self.tasks[self.task].name
    }

    /// Names of the policies of the current task.
    pub fn policies(&self) -> Vec<String> {
        self.tasks[self.task]
            .policies
            .iter()
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Who drives.
    pub fn driver(&self) -> &Driver {
        &self.driver
    }

    /// Action dimensions and box of the world model's actions.
    pub fn action_box(&self) -> (Vec<f32>, Vec<f32>) {
        let m = &self.tasks[self.task].starts[0].meta;
        (m.action_low.clone(), m.action_high.clone())
    }

    /// `action` checked against the world model's action box (the environments' own check: a wrong
    /// length or a non-finite value is an error, out-of-range values are clipped).
    pub fn check_action(&self, action: &[f32]) -> Result<Vec<f32>> {
        let (low, high) = self.action_box();
        let spec = w4rl_envs::ActionSpec {
            dim: low.len(),
            meaning: vec![String::new(); low.len()],
            low,
            high,
        };
        Ok(w4rl_envs::check_action(self.task(), &spec, action)?)
    }

    /// The view after the last reset or step.
    pub fn view(&self) -> &View {
        &self.last
    }

    /// Hands the controls to `driver`; a policy the task does not have is an error.
    pub fn set_driver(&mut self, driver: Driver) -> Result<()> {
        if let Driver::Policy(name) = &driver {
            let t = &self.tasks[self.task];
            ensure!(
                t.policies.iter().any(|(n, _)| n == name),
                "'{}' has no {name} policy (it has: {})",
                t.name,
                if t.policies.is_empty() {
                    "none".to_string()
                } else {
                    self.policies().join(", ")
                }
            );
        }
        self.driver = driver;
        Ok(())
    }

    /// Switches to the task `name` and resets. The driver falls back to the person when the new
    /// task lacks its policy.
    pub fn set_task(&mut self, name: &str) -> Result<&View> {
        let Some(i) = self.tasks.iter().position(|t| t.name == name) else {
            bail!(
                "unknown task '{name}' (this playground has: {})",
                self.tasks().join(", ")
            );
        };
        self.task = i;
        if self.set_driver(self.driver.clone()).is_err() {
            self.driver = Driver::Human;
        }
        self.reset()
    }

    /// Starts a new imagined episode from the next recorded episode of the task.
    pub fn reset(&mut self) -> Result<&View> {
        let t = &mut self.tasks[self.task];
        let st = &mut self.state[self.task];
        let e = st.next_start % t.starts.len();
        st.next_start += 1;
        let ep = &t.starts[e];
        self.ctx = RollingContext::from_episodes(&self.wm, &[(ep, 0)])?;
        let frame = imagined_bytes(&self.ctx.last_frame())?;
        let size = self.wm.image_size();
        let obs = Obs {
            frame: frame.clone(),
            size,
            state: Vec::new(),
        };
        // every policy of the task sees the same history: keep as many frames as the longest stack
        let k = t
            .policies
            .iter()
            .map(|(_, p)| p.config().frame_stack)
            .max()
            .unwrap_or(1);
        self.hist = ObsHistory::new(k, vec![obs]);
        let real = match t.real.as_mut() {
            Some(env) => {
                let o = env.reset(ep.meta.seed);
                Some((o.frame, o.size))
            }
            None => None,
        };
        let prob = self.prob(&self.ctx.last_frame())?;
        self.step = 0;
        self.streak = 0;
        self.success = false;
        self.real_success = false;
        self.real_over = false;
        self.start_episode = e;
        self.recording = vec![(frame.clone(), real.as_ref().map(|r| r.0.clone()))];
        let threshold = self.tasks[self.task].classifier.threshold() as f32;
        self.last = View {
            imagined: frame,
            size,
            real_success: real.as_ref().map(|_| false),
            real,
            step: 0,
            horizon: self.state[self.task].horizon,
            prob,
            threshold,
            success: false,
            action: vec![0.0; self.wm.action_dim()],
            step_ms: 0.0,
            start_episode: e,
        };
        Ok(&self.last)
    }

    fn prob(&self, frame: &Tensor) -> Result<f32> {
        let p = self.tasks[self.task]
            .classifier
            .prob_u8(&model_to_chw(frame));
        Ok(p.to_kind(Kind::Float).flatten(0, -1).double_value(&[0]) as f32)
    }

    /// One step with the person's `action` (ignored while a policy drives; `None` = no movement).
    pub fn step(&mut self, action: Option<&[f32]>) -> Result<&View> {
        let t0 = Instant::now();
        let a = match &self.driver {
            Driver::Policy(name) => {
                let t = &self.tasks[self.task];
                let (_, p) = t
                    .policies
                    .iter()
                    .find(|(n, _)| n == name)
                    .context("the driving policy is gone")?;
                let ob = self.hist.batch(p, None)?;
                p.act_mean(&ob)?.remove(0)
            }
            Driver::Human => action.map_or_else(|| vec![0.0; self.wm.action_dim()], |a| a.to_vec()),
        };
        let a = self.check_action(&a)?;
        let at = Tensor::from_slice(&a)
            .view([1, a.len() as i64])
            .to_device(self.wm.device());
        let next = self.ctx.step(&self.wm, &at)?;
        let frame = imagined_bytes(&next)?;
        let prob = self.prob(&next)?;
        let threshold = self.tasks[self.task].classifier.threshold() as f32;
        self.success |= self.rule.judge(&mut self.streak, prob, threshold);
        let size = self.wm.image_size();
        self.hist.push(
            0,
            Obs {
                frame: frame.clone(),
                size,
                state: Vec::new(),
            },
        );
        let real = match self.tasks[self.task].real.as_mut() {
            // the real episode ends at the task's length; its last frame stays on show
            Some(_) if self.real_over => self.last.real.clone(),
            Some(env) => {
                let s = env
                    .step(&a)
                    .with_context(|| format!("the real '{}' environment", env.task()))?;
                self.real_success |= s.info.success;
                self.real_over = s.terminated || s.truncated;
                Some((s.obs.frame, s.obs.size))
            }
            None => None,
        };
        self.step += 1;
        self.recording
            .push((frame.clone(), real.as_ref().map(|r| r.0.clone())));
        self.last = View {
            imagined: frame,
            size,
            real_success: real.as_ref().map(|_| self.real_success),
            real,
            step: self.step,
            horizon: self.state[self.task].horizon,
            prob,
            threshold,
            success: self.success,
            action: a,
            step_ms: t0.elapsed().as_secs_f64() * 1000.0,
            start_episode: self.start_episode,
        };
        Ok(&self.last)
    }

    /// Writes the current episode as a GIF (the real frames beside the imagined ones when present),
    /// each frame scaled up to about 256 pixels.
    pub fn write_gif(&self, path: &Path) -> Result<usize> {
        let size = self.wm.image_size();
        let real_size = self.last.real.as_ref().map(|r| r.1);
        // both sides at the imagined size, nearest neighbour
        let width = if real_size.is_some() { 2 * size } else { size };
        let mut frames = Vec::with_capacity(self.recording.len() * width * size * 3);
        for (im, real) in &self.recording {
            for y in 0..size {
                frames.extend_from_slice(&im[y * size * 3..(y + 1) * size * 3]);
                if let (Some(r), Some(rs)) = (real, real_size) {
                    for x in 0..size {
                        let (sx, sy) = (x * rs / size, y * rs / size);
                        let p = (sy * rs + sx) * 3;
                        frames.extend_from_slice(&r[p..p + 3]);
                    }
                }
            }
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        // written under a temporary name and renamed, so a page never serves half a GIF
        let tmp = path.with_extension("gif.tmp");
        w4rl_envs::gif::write_gif_rect(&tmp, &frames, width, size, (256 / size).max(1), 10)?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))?;
        Ok(self.recording.len())
    }
}
