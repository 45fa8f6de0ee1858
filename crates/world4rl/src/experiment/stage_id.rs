//! The stages of an experiment as one typed list, in `world4rl run`'s order. A stage's name is its
//! folder in the run directory (a per-task stage's parent folder) and the name `world4rl stage` takes;
//! it is written here and nowhere else.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Error};

/// A stage of `world4rl run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StageId {
    /// Expert demonstrations of every task.
    CollectExpert,
    /// BC*: Gaussian BC per task on the demos, checkpoint and action mode chosen on validation scenes.
    Bc,
    /// BC* rollouts and random-action episodes.
    CollectRollouts,
    /// BC* rollouts no learner sees (the outcome check's yardstick).
    CollectHeldout,
    /// The data-matched control: BC on the demos plus the successful rollouts (`bc.filtered_control`).
    BcFiltered,
    /// The diffusion world model, every task and episode kind pooled.
    WorldModel,
    /// The success classifier per task.
    Reward,
    /// PPO inside the frozen world model, per task.
    Refine,
    /// The ceiling controls: the same PPO in the real environment (`refine.real_env_control`,
    /// `refine.true_reward_control`).
    RefineReal,
    /// Every policy in every action mode on the test scenes, paired.
    Eval,
    /// The world model's open-loop fidelity and its outcome check.
    Fidelity,
    /// `report.md` and `report.html`.
    Report,
}

impl StageId {
    /// Every stage, in the order `world4rl run` runs them.
    pub const ALL: [StageId; 12] = [
        Self::CollectExpert,
        Self::Bc,
        Self::CollectRollouts,
        Self::CollectHeldout,
        Self::BcFiltered,
        Self::WorldModel,
        Self::Reward,
        Self::Refine,
        Self::RefineReal,
        Self::Eval,
        Self::Fidelity,
        Self::Report,
    ];

    /// The second folder of [`StageId::RefineReal`]: the ceiling rewarded by the environment's true
    /// success (`refine-true/<task>`).
    pub const REFINE_TRUE: &'static str = "refine-true";

    /// The stage's name: its folder in the run directory.
    pub const fn name(self) -> &'static str {
        match self {
            Self::CollectExpert => "collect-expert",
            Self::Bc => "bc",
            Self::CollectRollouts => "collect-rollouts",
            Self::CollectHeldout => "collect-heldout",
            Self::BcFiltered => "bc-filtered",
            Self::WorldModel => "world_model",
            Self::Reward => "reward",
            Self::Refine => "refine",
            Self::RefineReal => "refine-real",
            Self::Eval => "eval",
            Self::Fidelity => "fidelity",
            Self::Report => "report",
        }
    }

    /// Whether the stage runs once per task (`bc/<task>`), so that `world4rl stage --task` can narrow
    /// it; the others work on every task of the config at once.
    pub const fn per_task(self) -> bool {
        matches!(
            self,
            Self::Bc | Self::BcFiltered | Self::Reward | Self::Refine | Self::RefineReal
        )
    }

    /// The folder of the stage's run for `task` (`bc/push-block`).
    pub fn of_task(self, task: &str) -> String {
        format!("{}/{task}", self.name())
    }

    /// Every name, comma-separated, in order.
    pub fn names() -> String {
        Self::ALL.map(Self::name).join(", ")
    }
}

impl fmt::Display for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for StageId {
    type Err = Error;

    /// A stage by its name; `world-model` also names `world_model`, as in `world4rl train
    /// world-model`.
    fn from_str(name: &str) -> Result<Self, Error> {
        let wanted = if name == "world-model" {
            "world_model"
        } else {
            name
        };
        match Self::ALL.into_iter().find(|s| s.name() == wanted) {
            Some(s) => Ok(s),
            None => bail!("unknown stage '{name}'; the stages are {}", Self::names()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_its_stage_and_unknown_ones_are_refused() {
        for s in StageId::ALL {
            assert_eq!(s.name().parse::<StageId>().unwrap(), s);
            assert_eq!(s.to_string(), s.name());
        }
        assert_eq!(
            "world-model".parse::<StageId>().unwrap(),
            StageId::WorldModel
        );
        let e = "world".parse::<StageId>().unwrap_err().to_string();
        assert!(
            e.contains("unknown stage 'world'") && e.contains("collect-expert, bc,"),
            "{e}"
        );
        let names: std::collections::HashSet<_> = StageId::ALL.map(StageId::name).into();
        assert_eq!(names.len(), StageId::ALL.len());
    }
}
