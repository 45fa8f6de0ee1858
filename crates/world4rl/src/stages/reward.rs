//! `reward/<task>`: the success classifier of one task (with its ensemble members), trained on real
//! frames and, when the run holds a world model, on its imagined frames too.

use anyhow::{Context, Result};
use tch::Device;
use w4rl_data::Dataset;

use crate::experiment::run::{stage_name, RunDir};
use crate::experiment::stage::Stage;
use crate::reward::{train_task, ClassifierReport, RewardConfig};
use crate::world_model::WorldModel;

/// Trains the classifier of `task` into `RUN/reward/<task>/{classifier.safetensors, metrics.jsonl}`.
pub struct TrainReward<'a> {
    /// `[reward]` (resolved).
    pub cfg: &'a RewardConfig,
    /// The training episodes.
    pub data: &'a Dataset,
    /// The task.
    pub task: String,
    /// The run's world model, for the imagined training frames (see [`imagination_model`]).
    pub world_model: Option<&'a WorldModel>,
    /// Where it trains.
    pub device: Device,
}

/// The run's world model when `cfg` asks for imagined frames, the run has one and a classifier of
/// `tasks` is still to train (in `reward.world_model_precision`), else `None`.
pub fn imagination_model(
    cfg: &RewardConfig,
    run: &RunDir,
    tasks: &[String],
    device: Device,
) -> Result<Option<WorldModel>> {
    if tasks.iter().all(|t| run.is_done(&stage_name::reward(t))) {
        return Ok(None);
    }
    let imagined = std::iter::once((cfg.world_model_frames, cfg.world_model_open_loop_frames))
        .chain(
            cfg.members
                .iter()
                .map(|m| (m.world_model_frames, m.world_model_open_loop_frames)),
        )
        .any(|(near, open)| near + open > 0);
    let path = run.world_model();
    if !imagined || !path.exists() {
        return Ok(None);
    }
    let (mut wm, _) = WorldModel::load(&path, device)
        .with_context(|| format!("loading the run's world model {}", path.display()))?;
    wm.set_imagination(
        cfg.world_model_sampler.as_ref(),
        cfg.world_model_precision,
        cfg.world_model_channels_last,
    )?;
    Ok(Some(wm))
}

impl Stage for TrainReward<'_> {
    type Record = ClassifierReport;

    fn name(&self) -> String {
        stage_name::reward(&self.task)
    }

    fn run(&self, run: &RunDir) -> Result<ClassifierReport> {
        let (cfg, task) = (self.cfg, self.task.as_str());
        let mut metrics = run.metrics(&self.name())?;
        metrics.truncate_after(0)?;
        let (clf, mut report) =
            train_task(cfg, self.data, task, self.world_model, self.device, |v| {
                metrics.log(&v)
            })?;
        let mut members = Vec::new();
        for k in 0..cfg.members.len() {
            tracing::info!("reward '{task}': ensemble member {}", k + 1);
            let (m, r) = train_task(
                &cfg.member(k),
                self.data,
                task,
                self.world_model,
                self.device,
                |mut v| {
                    if let Some(o) = v.as_object_mut() {
                        o.insert("member".into(), (k + 1).into());
                    }
                    metrics.log(&v)
                },
            )?;
            members.push(m);
            report.members.push(r);
        }
        let clf = clf.with_members(members)?;
        clf.save(
            &run.classifier(task),
            serde_json::json!({"stage": crate::experiment::stage_id::StageId::Reward.name(), "report": report, "dataset": self.data.dir()}),
        )?;
        log_report(&report);
        Ok(report)
    }
}

fn log_report(r: &ClassifierReport) {
    tracing::info!(
        "reward '{}': held-out F1 {:.3} (precision {:.3}, recall {:.3}, {} frames), threshold {:.2}",
        r.task,
        r.heldout.f1,
        r.heldout.precision,
        r.heldout.recall,
        r.heldout.n,
        r.threshold
    );
    for (k, m) in r.members.iter().enumerate() {
        tracing::info!(
            "reward '{}': ensemble member {}: held-out F1 {:.3} (precision {:.3}, recall {:.3}), threshold {:.2}",
            r.task,
            k + 1,
            m.heldout.f1,
            m.heldout.precision,
            m.heldout.recall,
            m.threshold
        );
    }
}
