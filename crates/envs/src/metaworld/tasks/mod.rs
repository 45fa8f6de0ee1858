//! The Meta-World v3 tasks ported to Rust: per task, the scene, the bounds of the hand and of the random
//! initial configuration, the reset, the observed objects, the dense ("v2") reward and the success test,
//! following the task definitions of metaworld 3.1.1 (`metaworld/envs/sawyer_*_v3.py`).

use super::sim::{Sim, Vec3};
use super::MetaWorldError;

mod button_press;
mod coffee_pull;
mod door_lock;
mod drawer_open;
mod hammer;
mod handle_pull;
mod lever_pull;
mod soccer;

/// Default hand bounds of the tasks here (`hand_low`, `hand_high`); the mocap is clipped to them.
const HAND_LOW: Vec3 = [-0.5, 0.40, 0.05];
const HAND_HIGH: Vec3 = [0.5, 1.0, 0.5];
/// The lower hand bound of the door and lever tasks, whose targets are low.
const HAND_LOW_DEEP: Vec3 = [-0.5, 0.40, -0.15];

/// Hand start positions declared as float32 in Meta-World, widened to f64 exactly as numpy does.
const fn f32x3(v: [f32; 3]) -> Vec3 {
    [v[0] as f64, v[1] as f64, v[2] as f64]
}

/// Static description of a task.
#[derive(Debug)]
pub struct TaskSpec {
    /// Meta-World's name without the `-v3` suffix, e.g. `coffee-pull`.
    pub name: &'static str,
    /// Scene file under the asset directory.
    pub xml: &'static str,
    /// Mocap bounds.
    pub hand_low: Vec3,
    pub hand_high: Vec3,
    /// Where the hand reset holds the mocap.
    pub hand_init: Vec3,
    /// The box from which the task vector (`rand_vec`) is drawn uniformly.
    pub reset_low: &'static [f64],
    pub reset_high: &'static [f64],
    /// Bounds of the goal in the observation (`goal_space`); step observations are clipped to it.
    pub goal_low: Vec3,
    pub goal_high: Vec3,
    /// Tasks whose vector holds an object and a goal position reject vectors whose x-y distance is below this.
    pub min_obj_goal_xy: Option<f64>,
    /// One sentence for `env list`.
    pub description: &'static str,
}

impl TaskSpec {
    /// Checks a task vector: its length, finiteness, range, and the object-goal distance where one applies.
    pub fn check_vector(&self, rv: &[f64]) -> Result<(), MetaWorldError> {
        let bad = |reason: String| MetaWorldError::BadTaskVector {
            task: self.name.to_string(),
            reason,
        };
        if rv.len() != self.reset_low.len() {
            return Err(bad(format!(
                "expected {} values, got {}",
                self.reset_low.len(),
                rv.len()
            )));
        }
        for (i, v) in rv.iter().enumerate() {
            let (lo, hi) = (self.reset_low[i], self.reset_high[i]);
            if !v.is_finite() || *v < lo - 1e-9 || *v > hi + 1e-9 {
                return Err(bad(format!("value {i} = {v} is outside [{lo}, {hi}]")));
            }
        }
        if let Some(min) = self.min_obj_goal_xy {
            let d = ((rv[0] - rv[3]).powi(2) + (rv[1] - rv[4]).powi(2)).sqrt();
            if d < min {
                return Err(bad(format!(
                    "object and goal are {d:.4} apart in x-y; Meta-World requires at least {min}"
                )));
            }
        }
        Ok(())
    }
}

/// What a task does on top of the Sawyer base environment.
pub(crate) trait TaskImpl: Send {
    /// Model edits that depend only on the task vector (body and site positions). Meta-World makes them inside
    /// `reset_model`, which its `reset` calls twice; applying them before `mj_resetData` reproduces the second
    /// call's state exactly with one hand reset.
    fn prepare_model(&mut self, sim: &mut Sim, rv: &[f64]);
    /// The rest of `reset_model` after the hand reset; returns the goal (`_target_pos`).
    fn reset(&mut self, sim: &mut Sim, rv: &[f64], init_tcp: Vec3) -> Vec3;
    /// The 14 padded object values of the observation: (position, quaternion) per object.
    fn objects(&self, sim: &Sim) -> [f64; 14];
    /// Dense reward in [0, 10] and success, from the (clipped) observation and the action.
    fn evaluate(&self, sim: &Sim, obs: &[f64; 39], action: [f32; 4]) -> (f64, bool);
}

/// The tasks of this suite, in listing order: the six of the World4RL paper, then two more.
pub static TASKS: [&TaskSpec; 8] = [
    &coffee_pull::SPEC,
    &soccer::SPEC,
    &hammer::SPEC,
    &door_lock::SPEC,
    &lever_pull::SPEC,
    &handle_pull::SPEC,
    &button_press::SPEC,
    &drawer_open::SPEC,
];

/// Finds a task by name (with or without the `-v3` suffix).
pub fn spec(name: &str) -> Option<&'static TaskSpec> {
    let name = name.strip_suffix("-v3").unwrap_or(name);
    TASKS.iter().copied().find(|s| s.name == name)
}

/// Builds the task part of an environment, resolving its names in the loaded scene.
pub(crate) fn build(spec: &TaskSpec, sim: &Sim) -> Result<Box<dyn TaskImpl>, MetaWorldError> {
    Ok(match spec.name {
        "button-press" => Box::new(button_press::ButtonPress::new(sim)?),
        "drawer-open" => Box::new(drawer_open::DrawerOpen::new(sim)?),
        "coffee-pull" => Box::new(coffee_pull::CoffeePull::new(sim)?),
        "soccer" => Box::new(soccer::Soccer::new(sim)?),
        "hammer" => Box::new(hammer::Hammer::new(sim)?),
        "door-lock" => Box::new(door_lock::DoorLock::new(sim)?),
        "lever-pull" => Box::new(lever_pull::LeverPull::new(sim)?),
        "handle-pull" => Box::new(handle_pull::HandlePull::new(sim)?),
        other => return Err(MetaWorldError::UnknownTask(other.to_string())),
    })
}

/// `[pos, quat]` into the first 7 of the 14 object slots.
fn one_object(pos: Vec3, quat: [f64; 4]) -> [f64; 14] {
    let mut o = [0.0; 14];
    o[..3].copy_from_slice(&pos);
    o[3..7].copy_from_slice(&quat);
    o
}
