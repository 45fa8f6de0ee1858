//! `world4rl replicate CFG --seeds 0,1,2 --out DIR`: independent end-to-end replicates of one
//! experiment and the replication report (World4RL's evaluation protocol, `docs/evaluation.md`).
//!
//! Replicate `s` is `world4rl run` of the config with `experiment.seed = s` in `DIR/seed-<s>/`: the
//! master seed changes the data, BC, the world model, the classifier and PPO, and the validation and
//! test scenes. Each replicate resumes like any run, so replicates can be run on different days and
//! machines and the report re-read from what is there; every stage records the machine it ran on.
//!
//! The report (`DIR/replication.md`, `DIR/replication.json`): per replicate and task, refined − BC\*
//! and refined − filtered BC with their paired intervals on the test scenes, the ceiling and the gap
//! recovered; per task across replicates, the pooled gain with a two-level bootstrap interval and
//! rliable's probability of improvement; and the acceptance of "A gain a skeptic accepts" checked.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::eval::paired::{pool_replicates, PairedDifference, PooledGain, ReplicatePair};
use crate::experiment::config::ExperimentConfig;
use crate::experiment::machine::Machine;
use crate::experiment::run::{stage_name, RunDir};
use crate::stages::eval::{EvalRow, BC_STAR, CEILING, CEILING_TRUE, FILTERED_BC, REFINED};

/// Bootstrap draws of the pooled intervals.
pub const RESAMPLES: usize = 10_000;

/// The folder of replicate `seed` in `out`.
pub fn replicate_dir(out: &Path, seed: u64) -> PathBuf {
    out.join(format!("seed-{seed}"))
}

/// Runs (or resumes) replicate `seed` of `cfg` in `out/seed-<seed>/`.
pub fn run_replicate(cfg: &ExperimentConfig, seed: u64, out: &Path, device: Device) -> Result<()> {
    let mut c = cfg.clone();
    c.experiment.seed = seed;
    let run = RunDir::open_locked(replicate_dir(out, seed))?;
    crate::experiment::pipeline::run(&c, &run, device)
        .with_context(|| format!("replicate seed {seed}"))?;
    Ok(())
}

/// One replicate's result on one task.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReplicateTask {
    /// The replicate's master seed.
    pub seed: u64,
    /// Task.
    pub task: String,
    /// BC\*'s test success in its mode.
    pub bc_star: f64,
    /// BC\*'s mode.
    pub bc_mode: String,
    /// The refined policy's test success in its mode.
    pub refined: Option<f64>,
    /// The PPO iterations behind the refined policy, when it was chosen on validation scenes (0: the
    /// start stood).
    #[serde(default)]
    pub refined_iteration: Option<usize>,
    /// Refined − BC\*, paired.
    pub gain: Option<PairedDifference>,
    /// Filtered BC's test success.
    pub filtered: Option<f64>,
    /// Refined − filtered BC, paired.
    pub over_filtered: Option<PairedDifference>,
    /// The ceiling's test success (classifier reward).
    pub ceiling: Option<f64>,
    /// The true-reward ceiling's test success.
    #[serde(default)]
    pub ceiling_true: Option<f64>,
    /// (refined − BC\*) / (ceiling − BC\*).
    pub gap_recovered: Option<f64>,
    /// Test scenes.
    pub episodes: usize,
}

/// One task across replicates.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PooledTask {
    /// Task.
    pub task: String,
    /// Refined − BC\*.
    pub gain: Option<PooledGain>,
    /// Refined − filtered BC.
    pub over_filtered: Option<PooledGain>,
    /// Every replicate's paired lower bound of refined − BC\* above 0.
    pub every_replicate_above_zero: bool,
    /// The lowest paired lower bound of refined − BC\* over the replicates.
    pub worst_lower_bound: Option<f64>,
}

/// The replication report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Replication {
    /// The experiment's name.
    pub name: String,
    /// The replicates read, by seed, with the machines their stages ran on.
    pub replicates: Vec<(u64, Vec<Machine>)>,
    /// Per replicate and task.
    pub rows: Vec<ReplicateTask>,
    /// Per task, pooled.
    pub pooled: Vec<PooledTask>,
    /// Seeds whose evaluation has not finished (left out).
    pub missing: Vec<u64>,
}

fn rate_of(row: &EvalRow, name: &str) -> Option<f64> {
    row.policy(name).map(|p| p.standing().success_rate)
}

/// Reads the finished replicates `seeds` of `out` and pools them.
pub fn read_replication(name: &str, seeds: &[u64], out: &Path) -> Result<Replication> {
    let mut rep = Replication {
        name: name.into(),
        replicates: Vec::new(),
        rows: Vec::new(),
        pooled: Vec::new(),
        missing: Vec::new(),
    };
    // (task, seed, row) of every replicate that evaluated with the protocol
    let mut evals: Vec<(u64, Vec<EvalRow>)> = Vec::new();
    for &seed in seeds {
        let dir = replicate_dir(out, seed);
        if !dir.exists() {
            rep.missing.push(seed);
            continue;
        }
        let run = RunDir::open(&dir)?;
        match run.done::<Vec<EvalRow>>(stage_name::EVAL)? {
            Some(d) if d.record.iter().all(|r| !r.policies.is_empty()) => {
                rep.replicates.push((seed, run.machines()?));
                evals.push((seed, d.record));
            }
            Some(_) => bail!(
                "{}: its evaluation predates the protocol (no test-scene outcomes); run `world4rl stage eval` on it again",
                dir.display()
            ),
            None => rep.missing.push(seed),
        }
    }
    let mut tasks: Vec<String> = Vec::new();
    for (_, rows) in &evals {
        for r in rows {
            if !tasks.contains(&r.task) {
                tasks.push(r.task.clone());
            }
        }
    }
    for (seed, rows) in &evals {
        for r in rows {
            let gain = r.comparison(BC_STAR, REFINED).cloned();
            rep.rows.push(ReplicateTask {
                seed: *seed,
                task: r.task.clone(),
                bc_star: r.bc.success_rate,
                bc_mode: r
                    .policy(BC_STAR)
                    .map_or("mean".into(), |p| p.mode.to_string()),
                refined: rate_of(r, REFINED),
                refined_iteration: r
                    .policy(REFINED)
                    .and_then(|p| p.choice.as_ref()?.best().step),
                over_filtered: r.comparison(FILTERED_BC, REFINED).cloned(),
                filtered: rate_of(r, FILTERED_BC),
                ceiling: rate_of(r, CEILING),
                ceiling_true: rate_of(r, CEILING_TRUE),
                gap_recovered: r.gap_recovered(),
                gain,
                episodes: r.bc.episodes,
            });
        }
    }
    for task in tasks {
        let rows: Vec<&EvalRow> = evals
            .iter()
            .filter_map(|(_, rows)| rows.iter().find(|r| r.task == task))
            .collect();
        let pool = |base: &str, other: &str| -> Result<Option<PooledGain>> {
            let pairs: Vec<ReplicatePair> = rows
                .iter()
                .filter_map(|r| {
                    Some(ReplicatePair {
                        base: &r.policy(base)?.standing().outcomes,
                        other: &r.policy(other)?.standing().outcomes,
                    })
                })
                .collect();
            if pairs.is_empty() {
                return Ok(None);
            }
            Ok(Some(pool_replicates(
                &pairs,
                RESAMPLES,
                crate::util::seeds::mix(0x005E_ED0F_B007),
            )?))
        };
        let lows: Vec<f64> = rep
            .rows
            .iter()
            .filter(|r| r.task == task)
            .filter_map(|r| r.gain.as_ref().map(|g| g.lo))
            .collect();
        rep.pooled.push(PooledTask {
            gain: pool(BC_STAR, REFINED)?,
            over_filtered: pool(FILTERED_BC, REFINED)?,
            every_replicate_above_zero: !lows.is_empty() && lows.iter().all(|&l| l > 0.0),
            worst_lower_bound: lows.iter().copied().reduce(f64::min),
            task,
        });
    }
    Ok(rep)
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:.1}", 100.0 * v))
}

impl Replication {
    /// The acceptance of "A gain a skeptic accepts", checked on these replicates: the tasks where
    /// every replicate's paired interval of refined − BC\* lies above 0 and the pooled gain is
    /// ≥ +10 points (with refined ≥ filtered BC: pooled lower bound above −2 points), and the tasks
    /// with a replicate's lower bound below −5 points.
    pub fn acceptance(&self) -> (Vec<String>, Vec<String>) {
        let gaining = self
            .pooled
            .iter()
            .filter(|p| {
                p.every_replicate_above_zero
                    && p.gain.as_ref().is_some_and(|g| g.mean >= 0.10)
                    && p.over_filtered.as_ref().is_none_or(|f| f.lo > -0.02)
            })
            .map(|p| p.task.clone())
            .collect();
        let harmed = self
            .pooled
            .iter()
            .filter(|p| p.worst_lower_bound.is_some_and(|l| l < -0.05))
            .map(|p| p.task.clone())
            .collect();
        (gaining, harmed)
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut md = format!("# Replication: {}\n\n", self.name);
        let _ = writeln!(
            md,
            "{} replicate(s){}. Each replicate is `world4rl run` with `experiment.seed` = its seed: data, BC, world model, classifier, PPO and the validation and test scenes all change. Every policy stands in the action mode that won on validation scenes; every number below is on test scenes no choice was made on; Δ in points with its paired 95 % interval (Newcombe's method 10 for paired data).\n",
            self.replicates.len(),
            if self.missing.is_empty() {
                String::new()
            } else {
                format!(
                    " (not finished, left out: seeds {})",
                    self.missing
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        md.push_str("## Pooled over replicates\n\n");
        md.push_str("| task | refined − BC\\*, mean [95 % bootstrap] | P(refined > BC\\*) | every replicate above 0 | refined − filtered BC [95 %] |\n|---|---|---|---|---|\n");
        for p in &self.pooled {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                p.task,
                p.gain.as_ref().map_or("-".into(), |g| g.cell()),
                p.gain.as_ref().map_or("-".into(), |g| format!(
                    "{:.2}",
                    g.probability_of_improvement
                )),
                if p.every_replicate_above_zero {
                    "yes"
                } else {
                    "no"
                },
                p.over_filtered.as_ref().map_or("-".into(), |g| g.cell()),
            );
        }
        let (gaining, harmed) = self.acceptance();
        let _ = writeln!(
            md,
            "\nTasks with a gain in every replicate and a pooled gain of at least +10 points (and not below filtered BC): {}. Tasks with a replicate's lower bound below −5 points: {}.\n",
            if gaining.is_empty() {
                "none".into()
            } else {
                gaining.join(", ")
            },
            if harmed.is_empty() {
                "none".into()
            } else {
                harmed.join(", ")
            }
        );
        md.push_str("## Every replicate\n\n| seed | task | BC\\* % (mode) | refined % (iteration) | refined − BC\\* | filtered BC % | refined − filtered | ceiling % | ceiling, true reward % | gap recovered | test scenes |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
        for r in &self.rows {
            let _ = writeln!(
                md,
                "| {} | {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.seed,
                r.task,
                pct(Some(r.bc_star)),
                r.bc_mode,
                match r.refined_iteration {
                    Some(i) => format!("{} ({i})", pct(r.refined)),
                    None => pct(r.refined),
                },
                r.gain.as_ref().map_or("-".into(), |g| g.cell()),
                pct(r.filtered),
                r.over_filtered.as_ref().map_or("-".into(), |g| g.cell()),
                pct(r.ceiling),
                pct(r.ceiling_true),
                r.gap_recovered.map_or("-".into(), |g| format!("{g:.2}")),
                r.episodes
            );
        }
        md.push_str("\n## Machines\n\n");
        for (seed, ms) in &self.replicates {
            let _ = writeln!(
                md,
                "- seed {seed}: {}",
                if ms.is_empty() {
                    "not recorded".to_string()
                } else {
                    ms.iter()
                        .map(|m| m.summary())
                        .collect::<Vec<_>>()
                        .join("; ")
                }
            );
        }
        md
    }

    /// Writes `out/replication.md` and `out/replication.json`, atomically.
    pub fn write(&self, out: &Path) -> Result<()> {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        w4rl_data::write_atomic(&out.join("replication.md"), self.markdown().as_bytes())?;
        w4rl_data::write_atomic(
            &out.join("replication.json"),
            serde_json::to_string_pretty(self)?.as_bytes(),
        )?;
        Ok(())
    }
}
