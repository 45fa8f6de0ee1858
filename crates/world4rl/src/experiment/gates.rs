//! The gates of a task: what has to hold before a refinement result on it means anything. Each is read
//! from what the stages recorded, printed by `world4rl run` once it is measured and kept in the report;
//! a task that fails one is reported as such, never dropped.
//!
//! * the expert succeeds within the run's horizon on at least 90 % of its demonstrations (else the
//!   horizon is too short for the task, and no policy can be judged by it);
//! * BC\* lands between 10 and 90 % on the validation scenes (room to gain, something to start from);
//! * the success classifier's F1 on held-out frames is at least 0.9 (refinement's reward);
//! * the world model's outcome AUC with the context reset to real frames every 15 steps is at least
//!   0.85 (imagination tells the task's successes from its failures over PPO's horizon).

use anyhow::Result;
use serde::{Deserialize, Serialize};
use w4rl_data::{Dataset, EpisodeKind};

use crate::experiment::config::ExperimentConfig;
use crate::experiment::run::{stage_name, RunDir};
use crate::reward::ClassifierReport;
use crate::stages::bc::BcRecord;
use crate::stages::fidelity::FidelityRecord;

/// The expert's success within the horizon.
pub const EXPERT_SUCCESS_MIN: f64 = 0.9;
/// BC\*'s validation success range.
pub const BC_STAR_RANGE: (f64, f64) = (0.10, 0.90);
/// The classifier's held-out F1.
pub const CLASSIFIER_F1_MIN: f64 = 0.9;
/// The outcome check's AUC at this context reset ...
pub const OUTCOME_RESET: usize = 15;
/// ... at least this.
pub const OUTCOME_AUC_MIN: f64 = 0.85;

/// Which gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Gate {
    /// Expert success within the horizon.
    ExpertSuccess,
    /// BC\* on the validation scenes.
    BcStar,
    /// Classifier F1 on held-out frames.
    ClassifierF1,
    /// Outcome AUC(15).
    OutcomeAuc,
}

impl Gate {
    /// Every gate, in the pipeline's order.
    pub const ALL: [Gate; 4] = [
        Gate::ExpertSuccess,
        Gate::BcStar,
        Gate::ClassifierF1,
        Gate::OutcomeAuc,
    ];

    /// What it measures and the rule, in words.
    pub fn rule(self) -> String {
        match self {
            Gate::ExpertSuccess => format!(
                "expert success within the horizon ≥ {:.0} %",
                100.0 * EXPERT_SUCCESS_MIN
            ),
            Gate::BcStar => format!(
                "BC* on validation scenes in [{:.0}, {:.0}] %",
                100.0 * BC_STAR_RANGE.0,
                100.0 * BC_STAR_RANGE.1
            ),
            Gate::ClassifierF1 => format!("classifier held-out F1 ≥ {CLASSIFIER_F1_MIN}"),
            Gate::OutcomeAuc => format!("outcome AUC({OUTCOME_RESET}) ≥ {OUTCOME_AUC_MIN}"),
        }
    }

    /// Whether `value` passes.
    pub fn holds(self, value: f64) -> bool {
        match self {
            Gate::ExpertSuccess => value >= EXPERT_SUCCESS_MIN,
            Gate::BcStar => (BC_STAR_RANGE.0..=BC_STAR_RANGE.1).contains(&value),
            Gate::ClassifierF1 => value >= CLASSIFIER_F1_MIN,
            Gate::OutcomeAuc => value >= OUTCOME_AUC_MIN,
        }
    }

    fn show(self, value: f64) -> String {
        match self {
            Gate::ExpertSuccess | Gate::BcStar => format!("{:.1} %", 100.0 * value),
            Gate::ClassifierF1 | Gate::OutcomeAuc => format!("{value:.3}"),
        }
    }
}

/// One gate of one task; `value` is `None` until the stage that measures it has run (or when it cannot
/// be measured: an AUC with one real outcome only).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateRow {
    /// Task.
    pub task: String,
    /// Gate.
    pub gate: Gate,
    /// The measured value.
    pub value: Option<f64>,
}

impl GateRow {
    /// `Some(pass)` once measured.
    pub fn pass(&self) -> Option<bool> {
        self.value.map(|v| self.gate.holds(v))
    }

    /// The value as the report shows it (`-` when not measured).
    pub fn shown(&self) -> String {
        self.value.map_or("-".into(), |v| self.gate.show(v))
    }

    /// `pass`, `FAIL` or `not measured`.
    pub fn verdict(&self) -> &'static str {
        match self.pass() {
            Some(true) => "pass",
            Some(false) => "FAIL",
            None => "not measured",
        }
    }
}

/// Every gate of every task of the experiment, from what the run holds so far.
pub fn read(cfg: &ExperimentConfig, run: &RunDir) -> Result<Vec<GateRow>> {
    let dataset = Dataset::open(run.dataset()).ok();
    let fidelity = run
        .done::<FidelityRecord>(stage_name::FIDELITY)?
        .map(|d| d.record);
    let mut rows = Vec::new();
    for task in &cfg.experiment.tasks {
        let expert = dataset.as_ref().and_then(|d| expert_success(d, task));
        let bc = run
            .done::<BcRecord>(&stage_name::bc(task))?
            .and_then(|d| d.record.choice.map(|c| c.best().rate()));
        let f1 = run
            .done::<ClassifierReport>(&stage_name::reward(task))?
            .map(|d| d.record.heldout.f1);
        let auc = fidelity.as_ref().and_then(|f| {
            let o = f.outcomes.iter().find(|o| &o.task == task)?;
            let r = o
                .agreement
                .auc_by_reset
                .iter()
                .find(|r| r.every == OUTCOME_RESET)?;
            r.estimate.auc
        });
        for (gate, value) in Gate::ALL.into_iter().zip([expert, bc, f1, auc]) {
            rows.push(GateRow {
                task: task.clone(),
                gate,
                value,
            });
        }
    }
    Ok(rows)
}

/// The share of `task`'s expert demonstrations with a successful step (`None` without any).
fn expert_success(data: &Dataset, task: &str) -> Option<f64> {
    let (mut n, mut ok) = (0usize, 0usize);
    for e in data.entries() {
        if e.meta.task == task && e.meta.kind == EpisodeKind::Expert {
            n += 1;
            ok += usize::from(e.meta.success);
        }
    }
    (n > 0).then(|| ok as f64 / n as f64)
}

/// Prints the measured gates (a failed one as a warning).
pub fn log(rows: &[GateRow]) {
    for r in rows.iter().filter(|r| r.value.is_some()) {
        let line = format!(
            "gate {} / {}: {} ({})",
            r.task,
            r.gate.rule(),
            r.shown(),
            r.verdict()
        );
        if r.pass() == Some(false) {
            tracing::warn!(
                "{line}: results on this task are reported, read them with this in mind"
            );
        } else {
            tracing::info!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gates_hold_at_their_bounds_and_fail_outside() {
        assert!(Gate::ExpertSuccess.holds(0.9) && !Gate::ExpertSuccess.holds(0.89));
        assert!(Gate::BcStar.holds(0.1) && Gate::BcStar.holds(0.9));
        assert!(!Gate::BcStar.holds(0.95) && !Gate::BcStar.holds(0.05));
        assert!(Gate::ClassifierF1.holds(0.9) && !Gate::ClassifierF1.holds(0.89));
        assert!(Gate::OutcomeAuc.holds(0.85) && !Gate::OutcomeAuc.holds(0.84));
        let row = GateRow {
            task: "t".into(),
            gate: Gate::BcStar,
            value: Some(0.95),
        };
        assert_eq!((row.shown().as_str(), row.verdict()), ("95.0 %", "FAIL"));
        let unmeasured = GateRow { value: None, ..row };
        assert_eq!(
            (unmeasured.pass(), unmeasured.verdict()),
            (None, "not measured")
        );
    }
}
