//! The task registry: [`list_tasks`], [`make`], [`make_expert`].

use serde::{Deserialize, Serialize};

use crate::tabletop::{self, push_block, push_t, slide_handle, turn_lever, TabletopEnv, Task};
use crate::{Controller, Env, EnvConfig, EnvError, NoisyExpert, RandomPolicy};

/// What [`list_tasks`] reports about a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskInfo {
    /// Registry name, e.g. `push-t`.
    pub name: String,
    /// Suite, e.g. `tabletop`.
    pub suite: String,
    /// Action dimension.
    pub action_dim: usize,
    /// Default episode length.
    pub max_steps: usize,
    /// One-line description.
    pub description: String,
}

struct Entry {
    def: tabletop::TaskDef,
    make: fn(&EnvConfig) -> Result<Box<dyn Env>, EnvError>,
    expert: fn() -> Box<dyn Controller>,
}

fn boxed<T: Task>(cfg: &EnvConfig) -> Result<Box<dyn Env>, EnvError> {
    Ok(Box::new(TabletopEnv::<T>::new(cfg)?))
}

fn entries() -> [Entry; 4] {
    [
        Entry {
            def: push_t::PushT::DEF,
            make: boxed::<push_t::PushT>,
            expert: || Box::<push_t::PushTExpert>::default(),
        },
        Entry {
            def: push_block::PushBlock::DEF,
            make: boxed::<push_block::PushBlock>,
            expert: || Box::<push_block::PushBlockExpert>::default(),
        },
        Entry {
            def: turn_lever::TurnLever::DEF,
            make: boxed::<turn_lever::TurnLever>,
            expert: || Box::<turn_lever::TurnLeverExpert>::default(),
        },
        Entry {
            def: slide_handle::SlideHandle::DEF,
            make: boxed::<slide_handle::SlideHandle>,
            expert: || Box::<slide_handle::SlideHandleExpert>::default(),
        },
    ]
}

fn find(task: &str) -> Result<Entry, EnvError> {
    #[cfg(not(feature = "mujoco"))]
    if task.starts_with("metaworld/") {
        return Err(EnvError::Config(format!(
            "`{task}` is a Meta-World task, which this build does not include; run scripts/setup-mujoco.sh and \
             build with `--features mujoco`"
        )));
    }
    entries()
        .into_iter()
        .find(|e| e.def.name == task)
        .ok_or_else(|| EnvError::UnknownTask {
            task: task.to_string(),
            known: task_names(),
        })
}

/// Every registered task of every suite.
pub fn list_tasks() -> Vec<TaskInfo> {
    #[allow(unused_mut)]
    let mut tasks: Vec<TaskInfo> = entries()
        .iter()
        .map(|e| TaskInfo {
            name: e.def.name.to_string(),
            suite: tabletop::SUITE.to_string(),
            action_dim: tabletop::action_spec().dim,
            max_steps: e.def.max_steps,
            description: e.def.description.to_string(),
        })
        .collect();
    #[cfg(feature = "mujoco")]
    tasks.extend(crate::metaworld::list_tasks());
    tasks
}

/// Names of every registered task.
pub fn task_names() -> Vec<String> {
    list_tasks().into_iter().map(|t| t.name).collect()
}

/// The action space of `task`.
fn action_spec_of(task: &str) -> Result<crate::ActionSpec, EnvError> {
    #[cfg(feature = "mujoco")]
    if crate::metaworld::make_expert(task).is_some() {
        return Ok(crate::metaworld::action_spec());
    }
    find(task)?;
    Ok(tabletop::action_spec())
}

/// Makes the environment of `task`, already reset with seed 0. Unknown names are refused with the list of
/// known tasks.
pub fn make(task: &str, cfg: &EnvConfig) -> Result<Box<dyn Env>, EnvError> {
    #[cfg(feature = "mujoco")]
    if let Some(env) = crate::metaworld::make(task, cfg) {
        return env;
    }
    (find(task)?.make)(cfg)
}

/// The scripted expert of `task` (reads the privileged state).
pub fn make_expert(task: &str) -> Result<Box<dyn Controller>, EnvError> {
    #[cfg(feature = "mujoco")]
    if let Some(expert) = crate::metaworld::make_expert(task) {
        return Ok(expert);
    }
    Ok((find(task)?.expert)())
}

/// The expert of `task` with Gaussian action noise of standard deviation `std` (0 = noiseless).
pub fn make_noisy_expert(task: &str, std: f32) -> Result<Box<dyn Controller>, EnvError> {
    let e = make_expert(task)?;
    Ok(Box::new(NoisyExpert::new(e, std, &action_spec_of(task)?)))
}

/// A uniform-random-action policy for `task`'s action space.
pub fn make_random_policy(task: &str) -> Result<Box<dyn Controller>, EnvError> {
    Ok(Box::new(RandomPolicy::new(&action_spec_of(task)?)))
}
