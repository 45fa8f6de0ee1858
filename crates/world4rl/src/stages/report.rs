//! `report`: `RUN/report.md` and `RUN/report.html`, assembled from the typed records the other stages
//! left in their `done.json` and from their metrics logs. It runs on every invocation (it shows
//! whatever has finished so far).

use std::path::PathBuf;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::eval::collect::CollectSummary;
use crate::eval::evaluate::EvalReport;
use crate::experiment::config::ExperimentConfig;
use crate::experiment::report::{Chart, FidelityRow, Rate, Report, SuccessRow};
use crate::experiment::run::{stage_name, RunDir};
use crate::experiment::stage::Stage;
use crate::reward::ClassifierReport;
use crate::stages::bc::BcRecord;
use crate::stages::ceiling::CeilingReport;
use crate::stages::collect::TaskCollect;
use crate::stages::eval::{
    gif_name, EvalRow, BC_STAR, CEILING, CEILING_TRUE, FILTERED_BC, REFINED,
};
use crate::stages::fidelity::FidelityRecord;
use crate::stages::refine::{RefineReport, RefineStart};
use crate::util::metrics_log::read_metrics;
use crate::world_model::outcome::{fmt_auc, TaskOutcome};
use crate::world_model::train::TrainSummary;

/// Where the report was written.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReportFiles {
    /// `RUN/report.html`.
    pub html: PathBuf,
    /// `RUN/report.md`.
    pub markdown: PathBuf,
}

/// Writes the report of the run.
pub struct WriteReport<'a> {
    /// The (resolved) experiment.
    pub cfg: &'a ExperimentConfig,
}

impl Stage for WriteReport<'_> {
    type Record = ReportFiles;

    fn name(&self) -> String {
        stage_name::REPORT.into()
    }

    fn run(&self, run: &RunDir) -> Result<ReportFiles> {
        let report = build_report(self.cfg, run)?;
        report.write(run.path())?;
        Ok(ReportFiles {
            html: run.path().join("report.html"),
            markdown: run.path().join("report.md"),
        })
    }

    fn always_runs(&self) -> bool {
        true
    }
}

/// The finished records of a run, read once.
struct Records {
    bc: Vec<(String, f64, BcRecord)>,
    filtered: Vec<(String, f64, BcRecord)>,
    world_model: Option<(f64, TrainSummary)>,
    reward: Vec<(String, f64, ClassifierReport)>,
    refine: Vec<(String, f64, RefineReport)>,
    ceiling: Vec<(String, f64, CeilingReport)>,
    eval: Option<(f64, Vec<EvalRow>)>,
    fidelity: Option<(f64, FidelityRecord)>,
    /// Seconds of the other stages, by name.
    other: Vec<(String, f64)>,
    /// Seconds of the true-reward ceilings, by task.
    ceiling_true: Vec<(String, f64)>,
    /// Each finished stage's peak resident memory (MiB), by stage name, where it was recorded.
    peaks: std::collections::BTreeMap<String, f64>,
}

fn per_task<R: serde::de::DeserializeOwned>(
    run: &RunDir,
    tasks: &[String],
    name: fn(&str) -> String,
) -> Result<Vec<(String, f64, R)>> {
    let mut out = Vec::new();
    for t in tasks {
        if let Some(d) = run.done::<R>(&name(t))? {
            out.push((t.clone(), d.seconds, d.record));
        }
    }
    Ok(out)
}

impl Records {
    fn read(cfg: &ExperimentConfig, run: &RunDir) -> Result<Self> {
        let tasks = &cfg.experiment.tasks;
        let mut other = Vec::new();
        if let Some(d) = run.done::<CollectSummary>(stage_name::COLLECT_EXPERT)? {
            other.push((d.stage, d.seconds));
        }
        for s in [stage_name::COLLECT_ROLLOUTS, stage_name::COLLECT_HELDOUT] {
            if let Some(d) = run.done::<Vec<TaskCollect>>(s)? {
                other.push((d.stage, d.seconds));
            }
        }
        let ceiling_true = per_task::<CeilingReport>(run, tasks, stage_name::ceiling_true)?
            .into_iter()
            .map(|(t, s, _)| (stage_name::ceiling_true(&t), s))
            .collect();
        let mut names: Vec<String> = [
            stage_name::COLLECT_EXPERT,
            stage_name::COLLECT_ROLLOUTS,
            stage_name::COLLECT_HELDOUT,
            stage_name::WORLD_MODEL,
            stage_name::EVAL,
            stage_name::FIDELITY,
        ]
        .map(String::from)
        .to_vec();
        for t in tasks {
            names.extend(
                [
                    stage_name::bc,
                    stage_name::bc_filtered,
                    stage_name::reward,
                    stage_name::refine,
                    stage_name::ceiling,
                    stage_name::ceiling_true,
                ]
                .map(|f| f(t)),
            );
        }
        let mut peaks = std::collections::BTreeMap::new();
        for name in names {
            if let Some(p) = run
                .done::<serde_json::Value>(&name)?
                .and_then(|d| d.peak_rss_mib)
            {
                peaks.insert(name, p);
            }
        }
        Ok(Self {
            ceiling_true,
            peaks,
            bc: per_task(run, tasks, stage_name::bc)?,
            filtered: per_task(run, tasks, stage_name::bc_filtered)?,
            world_model: run
                .done::<TrainSummary>(stage_name::WORLD_MODEL)?
                .map(|d| (d.seconds, d.record)),
            reward: per_task(run, tasks, stage_name::reward)?,
            refine: per_task(run, tasks, stage_name::refine)?,
            ceiling: per_task(run, tasks, stage_name::ceiling)?,
            eval: run
                .done::<Vec<EvalRow>>(stage_name::EVAL)?
                .map(|d| (d.seconds, d.record)),
            fidelity: run
                .done::<FidelityRecord>(stage_name::FIDELITY)?
                .map(|d| (d.seconds, d.record)),
            other,
        })
    }

    /// (stage, minutes, peak MiB) in the pipeline's order; the last row sums the minutes and
    /// takes the highest peak.
    fn stage_minutes(&self) -> Vec<Vec<String>> {
        let mut rows: Vec<(String, f64)> = Vec::new();
        rows.extend(self.other.iter().take(1).cloned());
        rows.extend(self.bc.iter().map(|(t, s, _)| (stage_name::bc(t), *s)));
        rows.extend(self.other.iter().skip(1).cloned());
        rows.extend(
            self.filtered
                .iter()
                .map(|(t, s, _)| (stage_name::bc_filtered(t), *s)),
        );
        if let Some((s, r)) = &self.world_model {
            // a resumed world model: its record has the training time over every invocation
            rows.push((stage_name::WORLD_MODEL.into(), s.max(r.seconds)));
        }
        rows.extend(
            self.reward
                .iter()
                .map(|(t, s, _)| (stage_name::reward(t), *s)),
        );
        rows.extend(
            self.refine
                .iter()
                .map(|(t, s, _)| (stage_name::refine(t), *s)),
        );
        rows.extend(
            self.ceiling
                .iter()
                .map(|(t, s, _)| (stage_name::ceiling(t), *s)),
        );
        rows.extend(self.ceiling_true.iter().cloned());
        rows.extend(self.eval.iter().map(|(s, _)| (stage_name::EVAL.into(), *s)));
        rows.extend(
            self.fidelity
                .iter()
                .map(|(s, _)| (stage_name::FIDELITY.into(), *s)),
        );
        let total: f64 = rows.iter().map(|r| r.1).sum();
        let peak = |name: &str| {
            self.peaks
                .get(name)
                .map_or("-".to_string(), |p| format!("{p:.0}"))
        };
        let mut table: Vec<Vec<String>> = rows
            .into_iter()
            .map(|(n, s)| {
                let p = peak(&n);
                vec![n, format!("{:.1}", s / 60.0), p]
            })
            .collect();
        let highest = self
            .peaks
            .values()
            .copied()
            .fold(None, |m: Option<f64>, p| Some(m.map_or(p, |m| m.max(p))));
        table.push(vec![
            "all stages".into(),
            format!("{:.1}", total / 60.0),
            highest.map_or("-".into(), |p| format!("{p:.0}")),
        ]);
        table
    }
}

fn rate(r: &EvalReport) -> Rate {
    Rate {
        successes: r.successes,
        episodes: r.episodes,
        lo: r.ci_low,
        hi: r.ci_high,
    }
}

fn pct_ci(r: &EvalReport) -> String {
    format!(
        "{:.0} % [{:.0}, {:.0}]",
        100.0 * r.success_rate,
        100.0 * r.ci_low,
        100.0 * r.ci_high
    )
}

fn curve(path: &std::path::Path, x: &str, y: &str) -> Vec<(f64, f64)> {
    read_metrics(path)
        .unwrap_or_default()
        .iter()
        .filter_map(|v| Some((v.get(x)?.as_f64()?, v.get(y)?.as_f64()?)))
        .collect()
}

/// Assembles the report from what the stages left in the run directory.
pub fn build_report(cfg: &ExperimentConfig, run: &RunDir) -> Result<Report> {
    let rec = Records::read(cfg, run)?;
    let mut r = Report {
        title: format!("World4RL: {}", cfg.experiment.name),
        ..Default::default()
    };
    let e = &cfg.experiment;
    r.facts = vec![
        ("suite".into(), e.suite.clone()),
        ("tasks".into(), e.tasks.join(", ")),
        ("frames".into(), format!("{0}x{0}", e.image_size)),
        ("seed".into(), e.seed.to_string()),
    ];
    let machines = run.machines().unwrap_or_default();
    if !machines.is_empty() {
        r.facts.push((
            "machine(s) the stages ran on".into(),
            machines
                .iter()
                .map(|m| m.summary())
                .collect::<Vec<_>>()
                .join("; "),
        ));
    }
    if let Some((_, wm)) = &rec.world_model {
        r.facts.push((
            "world model".into(),
            format!(
                "{} steps in {:.1} min{}, held-out loss {}",
                wm.steps,
                wm.seconds / 60.0,
                wm.precision.map_or(String::new(), |p| format!(" ({p})")),
                wm.final_val_loss.map_or("-".into(), |v| format!("{v:.5}"))
            ),
        ));
    }
    r.switches = crate::experiment::config::ablation_switches(cfg);
    protocol_tables(&rec, cfg.refine.start, &mut r);
    gates_table(cfg, run, &mut r)?;
    bc_choice_charts(&rec, &mut r);
    success_tables(&rec, &mut r);
    fidelity_tables(&rec, cfg.eval.sample, &mut r);
    reward_table(&rec, &mut r);
    imagination_table(cfg.refine.imagination.horizon, run, &rec, &mut r);
    r.tables.push((
        "Stage wall-clock (minutes) and peak resident memory (MiB)".into(),
        vec!["stage".into(), "minutes".into(), "peak memory (MiB)".into()],
        rec.stage_minutes(),
    ));
    charts(cfg, run, &mut r);
    for task in &cfg.experiment.tasks {
        let g = run.path().join(stage_name::EVAL).join(gif_name(task));
        if g.exists() {
            r.gifs
                .push((format!("refined policy acting in the real env: {task}"), g));
        }
    }
    Ok(r)
}

/// The gates of every task (`crate::experiment::gates`), once one is measured.
fn gates_table(cfg: &ExperimentConfig, run: &RunDir, r: &mut Report) -> Result<()> {
    let rows = crate::experiment::gates::read(cfg, run)?;
    if rows.iter().all(|g| g.value.is_none()) {
        return Ok(());
    }
    r.tables.push((
        "Gates: what has to hold before a result on a task means anything (a task that fails one is reported, not dropped)".into(),
        vec!["task".into(), "gate".into(), "measured".into(), "verdict".into()],
        rows.iter()
            .map(|g| vec![g.task.clone(), g.gate.rule(), g.shown(), g.verdict().into()])
            .collect(),
    ));
    Ok(())
}

/// The tables the report leads with when the evaluation followed the protocol (`docs/evaluation.md`):
/// refined against BC\* and the controls, paired on the test scenes; every policy in every mode.
fn protocol_tables(rec: &Records, start: RefineStart, r: &mut Report) {
    let Some((_, rows)) = &rec.eval else {
        return;
    };
    let mut lead = Vec::new();
    let mut modes = Vec::new();
    let mut episodes = 0;
    for row in rows.iter().filter(|row| !row.policies.is_empty()) {
        episodes = row.bc.episodes;
        let standing = |name: &str| {
            row.policy(name).map_or("-".to_string(), |p| {
                format!("{:.1} % ({})", 100.0 * p.standing().success_rate, p.mode)
            })
        };
        let bc_step = rec
            .bc
            .iter()
            .find(|(t, _, _)| *t == row.task)
            .and_then(|(_, _, b)| b.choice.as_ref()?.best().step)
            .map_or(String::new(), |s| format!(", step {s}"));
        let bc = row.policy(BC_STAR).map_or("-".to_string(), |p| {
            format!(
                "{:.1} % ({}{bc_step})",
                100.0 * p.standing().success_rate,
                p.mode
            )
        });
        let refined = row.policy(REFINED).map_or("-".to_string(), |p| {
            let at = match p.choice.as_ref().and_then(|c| c.best().step) {
                Some(0) => ", the start".to_string(),
                Some(i) => format!(", iteration {i}"),
                None => String::new(),
            };
            format!(
                "{:.1} % ({}{at})",
                100.0 * p.standing().success_rate,
                p.mode
            )
        });
        let cmp = |base: &str, other: &str| {
            row.comparison(base, other)
                .map_or("-".to_string(), |d| d.cell())
        };
        let gap = row
            .gap_recovered()
            .map_or("-".into(), |g| format!("{g:.2}"));
        lead.push(vec![
            row.task.clone(),
            bc,
            refined,
            cmp(BC_STAR, REFINED),
            standing(FILTERED_BC),
            cmp(FILTERED_BC, REFINED),
            standing(CEILING),
            standing(CEILING_TRUE),
            gap,
        ]);
        for p in &row.policies {
            // BC's choice is its own stage's: the chosen checkpoint's candidates
            let bc_choice = match p.name.as_str() {
                BC_STAR => rec.bc.iter().find(|(t, _, _)| *t == row.task),
                FILTERED_BC => rec.filtered.iter().find(|(t, _, _)| *t == row.task),
                _ => None,
            }
            .and_then(|(_, _, b)| b.choice.as_ref());
            let choice = p.choice.as_ref().or(bc_choice);
            for t in &p.test {
                let mark = if t.mode == Some(p.mode) { " ◀" } else { "" };
                let validation = choice
                    .and_then(|c| {
                        let step = c.best().step;
                        c.candidates
                            .iter()
                            .find(|x| Some(x.mode) == t.mode && x.step == step)
                    })
                    .map_or("-".into(), |x| format!("{:.1} %", 100.0 * x.rate()));
                modes.push(vec![
                    row.task.clone(),
                    p.name.clone(),
                    format!(
                        "{}{mark}",
                        t.mode.map_or("-".to_string(), |m| m.to_string())
                    ),
                    rate(t).cell(),
                    validation,
                ]);
            }
        }
    }
    if lead.is_empty() {
        return;
    }
    r.lead.push((
        format!(
            "Refined against BC* and the controls on {episodes} test scenes (refinement and its ceilings start from {}; each policy in the action mode that won on validation scenes; Δ with its paired 95 % interval)",
            match start {
                RefineStart::Bc => BC_STAR,
                RefineStart::BcFiltered => FILTERED_BC,
            }
        ),
        [
            "task",
            "BC* (mode, checkpoint)",
            "refined (mode, iteration)",
            "refined − BC*, points",
            "filtered BC",
            "refined − filtered BC",
            "ceiling (real-env PPO, classifier reward)",
            "ceiling (true reward)",
            "gap recovered",
        ]
        .map(String::from)
        .to_vec(),
        lead,
    ));
    r.lead.push((
        "Every policy in every action mode on the test scenes (◀ the mode that stands for it)"
            .into(),
        [
            "task",
            "policy",
            "action mode",
            "test success [95 % CI]",
            "validation",
        ]
        .map(String::from)
        .to_vec(),
        modes,
    ));
}

/// BC\*'s choice: validation success of every checkpoint in every action mode, per task.
fn bc_choice_charts(rec: &Records, r: &mut Report) {
    for (what, records) in [("BC*", &rec.bc), ("filtered BC", &rec.filtered)] {
        for (task, _, b) in records.iter() {
            let Some(choice) = &b.choice else { continue };
            let mut modes: Vec<crate::eval::evaluate::ActionMode> = Vec::new();
            for c in &choice.candidates {
                if !modes.contains(&c.mode) {
                    modes.push(c.mode);
                }
            }
            let series = modes
                .iter()
                .map(|m| (m.to_string(), choice.curve(*m)))
                .filter(|(_, s)| !s.is_empty())
                .collect::<Vec<_>>();
            if series.iter().all(|(_, s)| s.len() < 2) {
                continue;
            }
            r.charts.push(Chart {
                title: format!(
                    "{what} {task}: validation success by checkpoint (step {} read {} stands)",
                    choice.best().step.unwrap_or(0),
                    choice.best().mode
                ),
                x_label: "BC step".into(),
                series,
                log_y: false,
            });
        }
    }
}

/// The success table (BC against refined) and the ceiling control's table.
fn success_tables(rec: &Records, r: &mut Report) {
    let Some((_, rows)) = &rec.eval else {
        return;
    };
    let mut ceiling_rows = Vec::new();
    let mut sampled_rows = Vec::new();
    let pct1 = |r: &EvalReport| rate(r).cell();
    for row in rows {
        if let Some(bs) = &row.bc_sampled {
            let rs = row.refined_sampled.as_ref();
            sampled_rows.push(vec![
                row.task.clone(),
                pct1(&row.bc),
                pct1(bs),
                row.refined.as_ref().map_or("-".into(), pct1),
                rs.map_or("-".into(), pct1),
                rs.map_or("-".into(), |x| rate(bs).delta_cell(&rate(x))),
            ]);
        }
        if let Some(c) = &row.ceiling {
            ceiling_rows.push(vec![
                row.task.clone(),
                pct_ci(&row.bc),
                row.refined.as_ref().map_or("-".into(), pct_ci),
                pct_ci(c),
            ]);
        }
        r.success.push(SuccessRow {
            task: row.task.clone(),
            bc: Some(rate(&row.bc)),
            refined: row.refined.as_ref().map(rate),
        });
    }
    if !ceiling_rows.is_empty() {
        r.tables.push((
            "Ceiling control: the same PPO in the real environment, rewarded by the classifier (what refinement could reach with a perfect world model)".into(),
            vec![
                "task".into(),
                "BC".into(),
                "refined in the world model".into(),
                "PPO in the real env, classifier reward".into(),
            ],
            ceiling_rows,
        ));
    }
    if !sampled_rows.is_empty() {
        r.tables.push((
            "Success with sampled actions: each policy acting with draws of its Gaussian (BC's own σ, the refined policy's capped σ) on the same seeds; a Gaussian BC policy's mean action can be far weaker than its samples".into(),
            vec![
                "task".into(),
                "BC, as in the table above".into(),
                "BC, sampled".into(),
                "refined, as in the table above".into(),
                "refined, sampled".into(),
                "Δ points, sampled [95 % CI]".into(),
            ],
            sampled_rows,
        ));
    }
}

/// The fidelity table, the GIFs, the action-use fact and the outcome check.
fn fidelity_tables(rec: &Records, eval_sampled: bool, r: &mut Report) {
    let Some((_, f)) = &rec.fidelity else {
        return;
    };
    let s = &f.scores;
    r.fidelity = (0..s.horizon)
        .map(|h| FidelityRow {
            horizon: h + 1,
            psnr: s.psnr[h],
            ssim: s.ssim[h],
            psnr_copy: s.copy_last_psnr[h],
            ssim_copy: s.copy_last_ssim[h],
        })
        .collect();
    for p in &f.gifs {
        let name = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        r.gifs.push((
            format!("{name}: real (left) vs imagined open-loop replay of the same actions (right)"),
            p.clone(),
        ));
    }
    if let Some(a) = &f.action_use {
        r.facts.push((
            "world-model action use".into(),
            format!(
                "one-step MSE {:.5} with the recorded actions, {:.5} with actions permuted across the batch (ratio {:.2}; 1 = actions ignored), {} held-out windows",
                a.mse_true, a.mse_permuted, a.ratio, a.windows
            ),
        ));
    }
    let pct = |v: f64| format!("{:.0} %", 100.0 * v);
    let rows: Vec<Vec<String>> = f
        .outcomes
        .iter()
        .map(|TaskOutcome { task, agreement: a }| {
            let resets = a
                .auc_by_reset
                .iter()
                .map(|x| format!("k={}: {}", x.every, fmt_auc(x.estimate.auc, x.estimate.ci)))
                .collect::<Vec<_>>()
                .join("; ");
            vec![
                task.clone(),
                format!(
                    "{} {}",
                    a.episodes,
                    if a.heldout { "held-out" } else { "training" }
                ),
                pct(a.real_success_rate),
                pct(a.imagined_success_rate),
                pct(a.agreement),
                fmt_auc(a.auc, a.auc_ci),
                if resets.is_empty() {
                    "-".into()
                } else {
                    resets
                },
                a.real_frames
                    .map(|x| fmt_auc(x.auc, x.ci))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    if !rows.is_empty() {
        r.tables.push((
            // refinement can only raise real success where imagined success follows it
            "Whole-episode outcomes: recorded BC rollouts (held out from every learner) replayed open-loop in the world model, judged by the classifier (AUC 0.5 = imagined outcome unrelated to the real one)".into(),
            vec![
                "task".into(),
                "rollouts".into(),
                "real success".into(),
                "imagined success".into(),
                "same outcome".into(),
                "AUC [95 % CI]".into(),
                "AUC(k), context reset to real frames every k steps".into(),
                "AUC of the classifier on the real frames (the ceiling)".into(),
            ],
            rows,
        ));
    }
    policy_outcome_table(f, eval_sampled, r);
}

/// The outcome check on the refined policies' own rollouts beside the held-out BC rollouts of the same
/// scenes: PPO can only raise real success where imagined success follows the policy's change. Where
/// the world model was exploited, the refined policy's imagined success stays up while its real
/// success falls. The held-out BC rollouts act with samples; the refined policy acts as the evaluation
/// does (`eval_sampled`).
fn policy_outcome_table(f: &FidelityRecord, eval_sampled: bool, r: &mut Report) {
    let pct = |v: f64| format!("{:.0} %", 100.0 * v);
    let mut rows = Vec::new();
    let refined_as = if eval_sampled {
        "refined, sampled"
    } else {
        "refined, mean action"
    };
    for TaskOutcome { task, agreement: a } in &f.outcomes {
        let Some(refined) = f.refined_outcomes.iter().find(|o| &o.task == task) else {
            continue;
        };
        for (who, o) in [
            ("BC, sampled (held-out)", a),
            (refined_as, &refined.agreement),
        ] {
            let resets = o
                .auc_by_reset
                .iter()
                .map(|x| format!("k={}: {}", x.every, pct(x.estimate.imagined_success_rate)))
                .collect::<Vec<_>>()
                .join("; ");
            rows.push(vec![
                task.clone(),
                who.into(),
                o.episodes.to_string(),
                pct(o.real_success_rate),
                pct(o.imagined_success_rate),
                if resets.is_empty() {
                    "-".into()
                } else {
                    resets
                },
                fmt_auc(o.auc, o.auc_ci),
            ]);
        }
    }
    if !rows.is_empty() {
        r.tables.push((
            "Imagined against real success per policy: the refined policy's own rollouts from the held-out rollouts' scenes, replayed in the world model like the BC rollouts (imagination that follows reality moves with it; an exploited world model keeps calling the refined policy successful)".into(),
            vec![
                "task".into(),
                "policy".into(),
                "rollouts".into(),
                "real success".into(),
                "imagined success, open loop".into(),
                "imagined success, context reset every k steps".into(),
                "open-loop AUC [95 % CI]".into(),
            ],
            rows,
        ));
    }
}

/// The classifiers' held-out scores (each task's classifier, then its further ensemble members).
fn reward_table(rec: &Records, r: &mut Report) {
    let f = |v: f64| format!("{v:.3}");
    let mut rows = Vec::new();
    for (task, _, rep) in &rec.reward {
        for (member, c) in std::iter::once(rep).chain(rep.members.iter()).enumerate() {
            rows.push(vec![
                if member == 0 {
                    task.clone()
                } else {
                    format!("{task} (ensemble member {member})")
                },
                f(c.heldout.accuracy),
                f(c.heldout.precision),
                f(c.heldout.recall),
                f(c.heldout.f1),
                c.heldout_world_model
                    .as_ref()
                    .map_or("-".into(), |m| f(m.f1)),
            ]);
        }
    }
    if !rows.is_empty() {
        r.tables.push((
            "Reward classifier, held-out episodes (real frames; F1 also on world-model frames of the same episodes)".into(),
            vec![
                "task".into(),
                "accuracy".into(),
                "precision".into(),
                "recall".into(),
                "F1".into(),
                "F1 imagined".into(),
            ],
            rows,
        ));
    }
}

/// Per refined task: the imagined success at PPO's first and last iteration beside the real success
/// rates, and the outcome check's AUC (refinement can only help where imagination agrees with
/// reality). With imagined episodes of `horizon` steps (0 = whole episodes) the AUC shown is the
/// check's AUC(k = horizon) when the fidelity stage measured it (the context reset to real frames every
/// `horizon` steps, as PPO's branches start from real contexts), else the open-loop one.
fn imagination_table(horizon: usize, run: &RunDir, rec: &Records, r: &mut Report) {
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.0} %", 100.0 * v));
    let mut rows = Vec::new();
    for (task, _, _) in &rec.refine {
        let imagined: Vec<f64> = read_metrics(run.metrics_path(&stage_name::refine(task)))
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.get("success_rate")?.as_f64())
            .collect();
        let row = rec
            .eval
            .as_ref()
            .and_then(|(_, rows)| rows.iter().find(|r| &r.task == task));
        let auc = rec.fidelity.as_ref().and_then(|(_, f)| {
            let a = &f.outcomes.iter().find(|o| &o.task == task)?.agreement;
            Some(auc_at_horizon(a, horizon))
        });
        rows.push(vec![
            task.clone(),
            pct(imagined.first().copied()),
            pct(row.map(|r| r.bc.success_rate)),
            pct(imagined.last().copied()),
            pct(row.and_then(|r| r.refined.as_ref().map(|x| x.success_rate))),
            auc.unwrap_or_else(|| "-".into()),
        ]);
    }
    if !rows.is_empty() {
        r.tables.push((
            "Imagination against reality: success inside the world model at PPO's first and last iteration, in the real environment, and the outcome check's AUC at PPO's imagined horizon".into(),
            vec![
                "task".into(),
                "BC imagined".into(),
                "BC real".into(),
                "refined imagined".into(),
                "refined real".into(),
                "outcome AUC [95 % CI]".into(),
            ],
            rows,
        ));
    }
}

/// The outcome check's AUC that matches imagined episodes of `horizon` steps (0 = whole episodes):
/// AUC(k = horizon) when it was measured, else the open-loop AUC; labelled with which it is.
fn auc_at_horizon(a: &crate::world_model::outcome::OutcomeAgreement, horizon: usize) -> String {
    match a
        .auc_by_reset
        .iter()
        .find(|x| horizon > 0 && x.every == horizon)
    {
        Some(x) => format!("k={horizon}: {}", fmt_auc(x.estimate.auc, x.estimate.ci)),
        None => format!("open loop: {}", fmt_auc(a.auc, a.auc_ci)),
    }
}

/// The world model's loss curves and each task's PPO curves.
fn charts(cfg: &ExperimentConfig, run: &RunDir, r: &mut Report) {
    let wm = run.metrics_path(stage_name::WORLD_MODEL);
    let train = curve(&wm, "step", "loss");
    let val = curve(&wm, "step", "val_loss");
    if !train.is_empty() {
        r.charts.push(Chart {
            title: "world model: denoising loss (Eq. 7)".into(),
            x_label: "step".into(),
            series: vec![("train".into(), train), ("held-out".into(), val)],
            log_y: true,
        });
    }
    for task in &cfg.experiment.tasks {
        let m = run.metrics_path(&stage_name::refine(task));
        let succ = curve(&m, "step", "success_rate");
        let ret = curve(&m, "step", "mean_return");
        if succ.is_empty() && ret.is_empty() {
            continue;
        }
        // with the binary reward the return is the success rate: plotted once
        let same = succ.len() == ret.len()
            && succ
                .iter()
                .zip(&ret)
                .all(|(a, b)| a.0 == b.0 && (a.1 - b.1).abs() < 1e-9);
        let mut series = vec![("imagined success rate".into(), succ)];
        if !same {
            series.push(("mean return".into(), ret));
        }
        let real: Vec<(f64, f64)> = read_metrics(&m)
            .unwrap_or_default()
            .iter()
            .filter_map(|v| {
                Some((
                    v.get("step")?.as_f64()?,
                    v.get("monitor")?.get("success_rate")?.as_f64()?,
                ))
            })
            .collect();
        if !real.is_empty() {
            series.push(("real success rate (monitor)".into(), real));
        }
        r.charts.push(Chart {
            title: format!("PPO in imagination: {task}"),
            x_label: "PPO iteration".into(),
            series,
            log_y: false,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::auc_at_horizon;
    use crate::world_model::outcome::{AucEstimate, OutcomeAgreement, ResetAuc};

    #[test]
    fn imagination_table_shows_the_auc_of_ppos_horizon_when_measured() {
        let est = |auc: f64| AucEstimate {
            auc: Some(auc),
            ci: Some([auc - 0.1, auc + 0.05]),
            imagined_success_rate: 0.5,
        };
        let a = OutcomeAgreement {
            episodes: 100,
            heldout: true,
            success_frames: 3,
            real_success_rate: 0.5,
            imagined_success_rate: 0.6,
            agreement: 0.7,
            auc: Some(0.72),
            auc_ci: Some([0.6, 0.8]),
            auc_by_reset: vec![
                ResetAuc {
                    every: 10,
                    estimate: est(0.9),
                },
                ResetAuc {
                    every: 15,
                    estimate: est(0.95),
                },
            ],
            real_frames: None,
        };
        assert_eq!(auc_at_horizon(&a, 15), "k=15: 0.95 [0.85, 1.00]");
        assert_eq!(auc_at_horizon(&a, 10), "k=10: 0.90 [0.80, 0.95]");
        // whole episodes, or a horizon the check did not measure: the open-loop AUC, said so
        assert_eq!(auc_at_horizon(&a, 0), "open loop: 0.72 [0.60, 0.80]");
        assert_eq!(auc_at_horizon(&a, 20), "open loop: 0.72 [0.60, 0.80]");
    }
}
