//! `world_model`: the diffusion world model, all tasks and episode kinds pooled. The only stage that
//! resumes midway: its trainer checkpoints into `RUN/world_model/` and picks up from there.

use anyhow::Result;
use tch::Device;
use w4rl_data::Dataset;

use crate::experiment::run::{stage_name, RunDir};
use crate::experiment::stage::Stage;
use crate::world_model::train::{train, TrainOptions, TrainSummary, WorldModelTrainConfig};

/// Trains (or resumes) the world model into `RUN/world_model/`.
pub struct TrainWorldModel<'a> {
    /// `[world_model]`.
    pub cfg: &'a WorldModelTrainConfig,
    /// The training episodes.
    pub data: &'a Dataset,
    /// Where it trains.
    pub device: Device,
    /// Draw a progress bar.
    pub progress: bool,
}

impl Stage for TrainWorldModel<'_> {
    type Record = TrainSummary;

    fn name(&self) -> String {
        stage_name::WORLD_MODEL.into()
    }

    fn run(&self, run: &RunDir) -> Result<TrainSummary> {
        train(
            self.cfg,
            self.data,
            &run.world_model_dir(),
            self.device,
            &TrainOptions {
                progress: self.progress,
            },
        )
    }
}
