//! `bc/<task>`: the Gaussian BC policy of one task, trained on the dataset's expert episodes.

use anyhow::Result;
use tch::Device;
use w4rl_data::Dataset;

use crate::policy::bc::{train_task, BcConfig, BcReport};
use crate::run::{stage_name, RunDir};
use crate::stage::Stage;

/// Trains the BC policy of `task` into `RUN/bc/<task>/{policy.safetensors, metrics.jsonl}`.
pub struct TrainBc<'a> {
    /// `[bc]` (resolved).
    pub cfg: &'a BcConfig,
    /// The training episodes.
    pub data: &'a Dataset,
    /// The task.
    pub task: String,
    /// Where it trains.
    pub device: Device,
}

impl Stage for TrainBc<'_> {
    type Record = BcReport;

    fn name(&self) -> String {
        stage_name::bc(&self.task)
    }

    fn run(&self, run: &RunDir) -> Result<BcReport> {
        let mut metrics = run.metrics(&self.name())?;
        metrics.truncate_after(0)?;
        let (policy, report) = train_task(self.cfg, self.data, &self.task, self.device, |v| {
            metrics.log(&v)
        })?;
        policy.save(
            &run.bc_policy(&self.task),
            serde_json::json!({"stage": "bc", "report": report, "dataset": self.data.dir()}),
        )?;
        tracing::info!(
            "bc '{}': {} demos, held-out MSE {}",
            report.task,
            report.demos,
            report
                .val_mse
                .map_or("-".to_string(), |m| format!("{m:.4}"))
        );
        Ok(report)
    }
}
