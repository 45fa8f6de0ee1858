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

use anyhow::{bail, ensure, Context, Result};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::eval::paired::{
    paired_difference, pool_replicates, PairedDifference, PooledGain, ReplicatePair,
};
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
    /// Per replicate whose config differs from the first replicate's (their seeds aside), the keys
    /// that differ as `key: first's → this one's` ([`recipe_differences`]). Empty when every
    /// replicate ran the same config.
    #[serde(default)]
    pub recipe_differences: Vec<(u64, Vec<String>)>,
    /// These replicates against a control set run without the setting under test
    /// (`world4rl replicate --control DIR`), when one was given.
    #[serde(default)]
    pub control: Option<ControlComparison>,
}

/// One task of a setting against its control: the same seeds run with and without it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ControlTask {
    /// Task.
    pub task: String,
    /// Refined − BC\* with the setting, pooled over the seeds both sets finished.
    pub gain: Option<PooledGain>,
    /// Refined − BC\* in the control, over the same seeds.
    pub control_gain: Option<PooledGain>,
    /// The refined policy with the setting − the control's, scene by scene on the same test
    /// scenes, pooled over the seeds.
    pub refined_difference: Option<PooledGain>,
    /// Per seed: the refined policy with the setting − the control's, paired on the test scenes.
    pub per_seed: Vec<(u64, PairedDifference)>,
}

impl ControlTask {
    /// Whether the pooled gain with the setting lies inside the control's pooled interval (issue 41's
    /// rule for turning a speed setting on: it must not move the result beyond the control's spread).
    pub fn inside_control(&self) -> Option<bool> {
        let (g, c) = (self.gain.as_ref()?, self.control_gain.as_ref()?);
        Some(c.lo <= g.mean && g.mean <= c.hi)
    }
}

/// A set of replicates against a control set: the same seeds, the same test scenes, one setting
/// changed (`world4rl replicate CFG --seeds ... --out DIR --control CONTROL`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ControlComparison {
    /// The control's folder.
    pub control: String,
    /// The seeds both sets finished (the comparison's replicates).
    pub seeds: Vec<u64>,
    /// Seeds finished here whose control has not finished (left out).
    pub missing: Vec<u64>,
    /// The settings under test: the keys whose values differ between the control's recorded
    /// config and this set's (`key: control's → this one's`), seeds aside.
    pub settings: Vec<String>,
    /// Per task.
    pub tasks: Vec<ControlTask>,
}

/// One seed's test-scene outcomes of one task in a set and in its control.
struct SeedOutcomes {
    seed: u64,
    bc: Vec<u8>,
    refined: Vec<u8>,
    control_bc: Vec<u8>,
    control_refined: Vec<u8>,
}

/// Compares the finished replicates `seeds` of `out` with the replicates of the same seeds in
/// `control`. Both must have evaluated on the same test scenes: the same tasks, the same `[eval]`
/// settings and the same number of test episodes (the scenes follow from the seed).
pub fn compare_with_control(
    seeds: &[u64],
    out: &Path,
    control: &Path,
) -> Result<ControlComparison> {
    let (here, _) = read_finished(seeds, out)?;
    let (there, _) = read_finished(seeds, control)
        .with_context(|| format!("reading the control {}", control.display()))?;
    let mut cmp = ControlComparison {
        control: control.display().to_string(),
        seeds: Vec::new(),
        missing: Vec::new(),
        settings: Vec::new(),
        tasks: Vec::new(),
    };
    // (seed, this set's rows, the control's rows)
    let mut pairs: Vec<(u64, &Vec<EvalRow>, &Vec<EvalRow>)> = Vec::new();
    for (seed, _, rows) in &here {
        match there.iter().find(|(s, _, _)| s == seed) {
            Some((_, _, c)) => pairs.push((*seed, rows, c)),
            None => cmp.missing.push(*seed),
        }
    }
    ensure!(
        !pairs.is_empty(),
        "{} has no finished replicate of the seeds {} finished ({}): nothing to compare",
        control.display(),
        out.display(),
        here.iter()
            .map(|(s, _, _)| s.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    cmp.seeds = pairs.iter().map(|(s, _, _)| *s).collect();
    for (i, &seed) in cmp.seeds.iter().enumerate() {
        let differ = crate::experiment::run::config_differences(
            &recipe_of(&replicate_dir(control, seed))?,
            &recipe_of(&replicate_dir(out, seed))?,
        );
        let scene_keys: Vec<&str> = differ
            .iter()
            .filter(|k| k.starts_with("eval.") || k.starts_with("experiment.tasks"))
            .map(|k| k.as_str())
            .collect();
        ensure!(
            scene_keys.is_empty(),
            "seed {seed}: {} and {} did not evaluate on the same test scenes (control's → this one's: {}); a paired comparison needs the same scenes",
            control.display(),
            out.display(),
            scene_keys.join("; ")
        );
        if i == 0 {
            cmp.settings = differ;
        }
    }
    let mut tasks: Vec<String> = Vec::new();
    for (_, rows, _) in &pairs {
        for r in rows.iter() {
            if !tasks.contains(&r.task) {
                tasks.push(r.task.clone());
            }
        }
    }
    let outcomes = |r: &EvalRow, name: &str| -> Option<Vec<u8>> {
        Some(r.policy(name)?.standing().outcomes.clone())
    };
    for task in tasks {
        let mut found: Vec<SeedOutcomes> = Vec::new();
        for (seed, rows, c) in &pairs {
            let (Some(a), Some(b)) = (
                rows.iter().find(|r| r.task == task),
                c.iter().find(|r| r.task == task),
            ) else {
                continue;
            };
            if let (Some(bc), Some(refined), Some(cbc), Some(crefined)) = (
                outcomes(a, BC_STAR),
                outcomes(a, REFINED),
                outcomes(b, BC_STAR),
                outcomes(b, REFINED),
            ) {
                ensure!(
                    refined.len() == crefined.len(),
                    "seed {seed}, {task}: {} test scenes here and {} in the control",
                    refined.len(),
                    crefined.len()
                );
                found.push(SeedOutcomes {
                    seed: *seed,
                    bc,
                    refined,
                    control_bc: cbc,
                    control_refined: crefined,
                });
            }
        }
        if found.is_empty() {
            cmp.tasks.push(ControlTask {
                task,
                gain: None,
                control_gain: None,
                refined_difference: None,
                per_seed: Vec::new(),
            });
            continue;
        }
        let pool = |pick: fn(&SeedOutcomes) -> (&[u8], &[u8])| {
            let reps: Vec<ReplicatePair> = found
                .iter()
                .map(|f| {
                    let (base, other) = pick(f);
                    ReplicatePair { base, other }
                })
                .collect();
            pool_replicates(&reps, RESAMPLES, crate::util::seeds::mix(0x005E_ED0F_B007))
        };
        let per_seed = found
            .iter()
            .map(|f| Ok((f.seed, paired_difference(&f.control_refined, &f.refined)?)))
            .collect::<Result<Vec<_>>>()?;
        cmp.tasks.push(ControlTask {
            gain: Some(pool(|f| (&f.bc, &f.refined))?),
            control_gain: Some(pool(|f| (&f.control_bc, &f.control_refined))?),
            refined_difference: Some(pool(|f| (&f.control_refined, &f.refined))?),
            per_seed,
            task,
        });
    }
    Ok(cmp)
}

impl ControlComparison {
    /// The comparison as a Markdown section.
    pub fn markdown(&self) -> String {
        let mut md = String::from(
            "## Against the control

",
        );
        let _ = writeln!(
            md,
            "The control `{}`: the same seeds ({}) run without the setting under test, evaluated on the same test scenes{}. The settings that differ (control's → these replicates'): {}.\n",
            self.control,
            self.seeds
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            if self.missing.is_empty() {
                String::new()
            } else {
                format!(
                    " (seeds without a finished control, left out: {})",
                    self.missing
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            if self.settings.is_empty() {
                "none, the two sets ran the same config".to_string()
            } else {
                self.settings
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join("; ")
            }
        );
        md.push_str("| task | refined − BC\\*, these [95 %] | refined − BC\\*, control [95 %] | inside the control's interval | refined here − refined in the control [95 %] | per seed, paired [95 %] |\n|---|---|---|---|---|---|\n");
        for t in &self.tasks {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                t.task,
                t.gain.as_ref().map_or("-".into(), |g| g.cell()),
                t.control_gain.as_ref().map_or("-".into(), |g| g.cell()),
                match t.inside_control() {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "-",
                },
                t.refined_difference
                    .as_ref()
                    .map_or("-".into(), |g| g.cell()),
                t.per_seed
                    .iter()
                    .map(|(s, d)| format!("seed {s}: {}", d.cell()))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        md
    }
}

/// The experiment a run directory recorded (`RUN/config.toml` as the run wrote it, every key
/// world4rl had when it was written), without its master seed.
fn recipe_of(dir: &Path) -> Result<toml::Value> {
    let path = dir.join("config.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut v: toml::Value = toml::from_str(&text)
        .with_context(|| format!("{} is not a TOML config", path.display()))?;
    if let Some(e) = v.get_mut("experiment").and_then(|e| e.as_table_mut()) {
        e.remove("seed");
    }
    Ok(v)
}

/// How the replicates' recipes differ: per replicate (after the first) whose recorded config is not
/// the first one's once the seeds are set aside, the keys that differ. A key one run lacks (shown as
/// `-`) was added to world4rl after that run wrote its config: its stages ran without it, so pooling
/// it with the others mixes two recipes.
pub fn recipe_differences(dirs: &[(u64, PathBuf)]) -> Result<Vec<(u64, Vec<String>)>> {
    let mut out = Vec::new();
    let Some(((_, first), rest)) = dirs.split_first() else {
        return Ok(out);
    };
    let base = recipe_of(first)?;
    for (seed, dir) in rest {
        let differ = crate::experiment::run::config_differences(&base, &recipe_of(dir)?);
        if !differ.is_empty() {
            out.push((*seed, differ));
        }
    }
    Ok(out)
}

fn rate_of(row: &EvalRow, name: &str) -> Option<f64> {
    row.policy(name).map(|p| p.standing().success_rate)
}

/// The replicates of `seeds` in `out` whose evaluation finished, as (seed, the machines its stages ran
/// on, its evaluation rows), and the seeds that have not finished.
type Finished = (Vec<(u64, Vec<Machine>, Vec<EvalRow>)>, Vec<u64>);

fn read_finished(seeds: &[u64], out: &Path) -> Result<Finished> {
    let (mut done, mut missing) = (Vec::new(), Vec::new());
    for &seed in seeds {
        let dir = replicate_dir(out, seed);
        if !dir.exists() {
            missing.push(seed);
            continue;
        }
        let run = RunDir::open(&dir)?;
        match run.done::<Vec<EvalRow>>(stage_name::EVAL)? {
            Some(d) if d.record.iter().all(|r| !r.policies.is_empty()) => {
                done.push((seed, run.machines()?, d.record));
            }
            Some(_) => bail!(
                "{}: its evaluation predates the protocol (no test-scene outcomes); run `world4rl stage eval` on it again",
                dir.display()
            ),
            None => missing.push(seed),
        }
    }
    Ok((done, missing))
}

/// Reads the finished replicates `seeds` of `out` and pools them.
pub fn read_replication(name: &str, seeds: &[u64], out: &Path) -> Result<Replication> {
    let (finished, missing) = read_finished(seeds, out)?;
    let mut rep = Replication {
        name: name.into(),
        replicates: Vec::new(),
        rows: Vec::new(),
        pooled: Vec::new(),
        missing,
        recipe_differences: Vec::new(),
        control: None,
    };
    let mut evals: Vec<(u64, Vec<EvalRow>)> = Vec::new();
    for (seed, machines, rows) in finished {
        rep.replicates.push((seed, machines));
        evals.push((seed, rows));
    }
    let dirs: Vec<(u64, PathBuf)> = evals
        .iter()
        .map(|(seed, _)| (*seed, replicate_dir(out, *seed)))
        .collect();
    rep.recipe_differences = recipe_differences(&dirs)?;
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
        if let Some((first, _)) = self.replicates.first() {
            if self.recipe_differences.is_empty() {
                let _ = writeln!(
                    md,
                    "Every replicate ran the same config, its seed aside (each run's `config.toml`).\n"
                );
            } else {
                let _ = writeln!(
                    md,
                    "**The replicates did not all run the same config**: the pooled numbers mix recipes. Against seed {first}'s config (`-`: the key is absent from that run's `config.toml`, which was written before world4rl had it):\n"
                );
                for (seed, differ) in &self.recipe_differences {
                    let _ = writeln!(md, "- seed {seed}: {}", differ.join("; "));
                }
                md.push('\n');
            }
        }
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
        md.push_str("\n![each replicate's paired interval beside the pooled mean with its bootstrap interval](replication.svg)\n");
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
        if let Some(c) = &self.control {
            md.push('\n');
            md.push_str(&c.markdown());
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
        w4rl_data::write_atomic(
            &out.join("replication.svg"),
            replication_svg(self)?.as_bytes(),
        )?;
        w4rl_data::write_atomic(&out.join("replication.md"), self.markdown().as_bytes())?;
        w4rl_data::write_atomic(
            &out.join("replication.json"),
            serde_json::to_string_pretty(self)?.as_bytes(),
        )?;
        Ok(())
    }
}

/// The replication figure (`replication.svg`): refined − BC\* (left) and refined − filtered BC
/// (right) per task in points, each replicate's paired 95 % interval beside the pooled mean with its
/// bootstrap interval, and the acceptance's line (a pooled gain of +10 points over BC\*; a pooled lower
/// bound above −2 points against filtered BC).
pub fn replication_svg(rep: &Replication) -> Result<String> {
    use crate::experiment::report::{task_ticks, COLORS};
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("{e}");
    let tasks: Vec<String> = rep.pooled.iter().map(|p| p.task.clone()).collect();
    let n = tasks.len().max(1);
    let seeds: Vec<u64> = rep.replicates.iter().map(|(s, _)| *s).collect();
    // replicates spread left of each task's tick, the pooled estimate right of it
    let offset = |i: usize| {
        if seeds.len() < 2 {
            -0.12
        } else {
            -0.32 + 0.4 * i as f64 / (seeds.len() - 1) as f64
        }
    };
    let mut svg = String::new();
    {
        let width = 2 * (170 * n).max(340) as u32;
        let root = SVGBackend::with_string(&mut svg, (width, 380)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        for (k, area) in root.split_evenly((1, 2)).iter().enumerate() {
            let against_bc = k == 0;
            let diff = |r: &ReplicateTask| {
                if against_bc {
                    r.gain.clone()
                } else {
                    r.over_filtered.clone()
                }
            };
            let pool = |p: &PooledTask| {
                if against_bc {
                    p.gain.clone()
                } else {
                    p.over_filtered.clone()
                }
            };
            let (title, line, line_label) = if against_bc {
                ("refined − BC*", 10.0_f64, "pooled gain asked: +10")
            } else {
                (
                    "refined − filtered BC",
                    -2.0,
                    "pooled lower bound asked: > −2",
                )
            };
            let (mut lo, mut hi) = (line.min(0.0), line.max(0.0));
            for (l, h) in rep
                .rows
                .iter()
                .filter_map(|r| diff(r).map(|d| (d.lo, d.hi)))
                .chain(
                    rep.pooled
                        .iter()
                        .filter_map(|p| pool(p).map(|g| (g.lo, g.hi))),
                )
            {
                (lo, hi) = (lo.min(100.0 * l), hi.max(100.0 * h));
            }
            let pad = ((hi - lo) * 0.08).max(1.0);
            // the legend's room above the highest bar, so it never hides one
            let legend_room = (hi - lo) * 0.5 + 4.0;
            let (x0, x1) = (-0.5, n as f64 - 0.5);
            let mut c = ChartBuilder::on(area)
                .caption(format!("{title}, points"), ("sans-serif", 17))
                .margin(12)
                .x_label_area_size(34)
                .y_label_area_size(44)
                .build_cartesian_2d(x0..x1, (lo - pad)..(hi + pad + legend_room))
                .map_err(|e| err(&e))?;
            let x_fmt = task_ticks(tasks.clone());
            c.configure_mesh()
                .x_labels(2 * n + 1)
                .x_label_formatter(&x_fmt)
                .y_label_formatter(&|y: &f64| format!("{y:+.0}"))
                .light_line_style(WHITE.mix(0.0))
                .draw()
                .map_err(|e| err(&e))?;
            c.draw_series(LineSeries::new([(x0, 0.0), (x1, 0.0)], BLACK.mix(0.5)))
                .map_err(|e| err(&e))?;
            c.draw_series(DashedLineSeries::new(
                [(x0, line), (x1, line)],
                6,
                4,
                RED.mix(0.8).stroke_width(1),
            ))
            .map_err(|e| err(&e))?
            .label(line_label)
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED.mix(0.8)));
            for (i, seed) in seeds.iter().enumerate() {
                let color = COLORS[i % COLORS.len()];
                let bars: Vec<_> = rep
                    .rows
                    .iter()
                    .filter(|r| r.seed == *seed)
                    .filter_map(|r| {
                        let t = tasks.iter().position(|t| *t == r.task)?;
                        let d = diff(r)?;
                        Some(ErrorBar::new_vertical(
                            t as f64 + offset(i),
                            100.0 * d.lo,
                            100.0 * d.diff,
                            100.0 * d.hi,
                            color.filled().stroke_width(2),
                            8,
                        ))
                    })
                    .collect();
                c.draw_series(bars)
                    .map_err(|e| err(&e))?
                    .label(format!("seed {seed}, paired 95 %"))
                    .legend(move |(x, y)| Circle::new((x + 8, y), 4, color.filled()));
            }
            let pooled: Vec<_> = rep
                .pooled
                .iter()
                .enumerate()
                .filter_map(|(t, p)| {
                    let g = pool(p)?;
                    Some(ErrorBar::new_vertical(
                        t as f64 + 0.28,
                        100.0 * g.lo,
                        100.0 * g.mean,
                        100.0 * g.hi,
                        BLACK.filled().stroke_width(3),
                        12,
                    ))
                })
                .collect();
            c.draw_series(pooled)
                .map_err(|e| err(&e))?
                .label("pooled mean, 95 % bootstrap")
                .legend(|(x, y)| Circle::new((x + 8, y), 5, BLACK.filled()));
            c.configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .draw()
                .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff(d: f64) -> PairedDifference {
        PairedDifference {
            n: 1000,
            both: 500,
            only_base: 100,
            only_other: 100 + (1000.0 * d) as usize,
            base: 0.6,
            other: 0.6 + d,
            diff: d,
            lo: d - 0.03,
            hi: d + 0.03,
        }
    }

    fn row(seed: u64, task: &str, d: f64, filtered: Option<f64>) -> ReplicateTask {
        ReplicateTask {
            seed,
            task: task.into(),
            bc_star: 0.5,
            bc_mode: "sampled".into(),
            refined: Some(0.5 + d),
            refined_iteration: Some(30),
            gain: Some(diff(d)),
            filtered: filtered.map(|f| 0.5 + d - f),
            over_filtered: filtered.map(diff),
            ceiling: None,
            ceiling_true: None,
            gap_recovered: None,
            episodes: 1000,
        }
    }

    fn pooled(task: &str, mean: f64) -> PooledTask {
        let g = PooledGain {
            replicates: 2,
            mean,
            lo: mean - 0.05,
            hi: mean + 0.05,
            probability_of_improvement: 0.9,
        };
        PooledTask {
            task: task.into(),
            gain: Some(g.clone()),
            over_filtered: Some(g),
            every_replicate_above_zero: true,
            worst_lower_bound: Some(mean - 0.08),
        }
    }

    #[test]
    fn the_figure_draws_every_replicate_and_the_pooled_estimate_per_task() {
        let rep = Replication {
            name: "t".into(),
            replicates: vec![(3, vec![]), (4, vec![])],
            rows: vec![
                row(3, "push-block", 0.2, Some(0.08)),
                row(4, "push-block", 0.15, None),
                row(3, "turn-lever", 0.3, Some(0.1)),
                row(4, "turn-lever", -0.04, Some(-0.2)),
            ],
            pooled: vec![pooled("push-block", 0.17), pooled("turn-lever", 0.13)],
            missing: vec![],
            recipe_differences: vec![],
            control: None,
        };
        let svg = replication_svg(&rep).unwrap();
        for text in [
            "refined − BC*, points",
            "refined − filtered BC, points",
            "seed 3, paired 95 %",
            "seed 4, paired 95 %",
            "pooled mean, 95 % bootstrap",
            "push-block",
            "turn-lever",
        ] {
            // twice for the legends and titles drawn in both panels, at least once for the tasks
            assert!(svg.contains(text), "{text} missing from the figure");
        }
        // the report links it
        assert!(rep.markdown().contains("](replication.svg)"));
        // nothing finished yet: an empty figure, not an error
        let empty = Replication {
            replicates: vec![],
            rows: vec![],
            pooled: vec![],
            ..rep
        };
        assert!(replication_svg(&empty).unwrap().starts_with("<svg"));
    }

    #[test]
    fn replicates_run_under_another_config_are_named_with_the_keys_that_differ() {
        let tmp = tempfile::tempdir().unwrap();
        let write = |seed: u64, text: &str| {
            let dir = tmp.path().join(format!("seed-{seed}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("config.toml"), text).unwrap();
            (seed, dir)
        };
        let old = "[experiment]\nname = \"t\"\nseed = 0\n\n[bc]\nsteps = 100\n";
        let dirs = vec![
            write(0, old),
            // another seed only: the same recipe
            write(4, &old.replace("seed = 0", "seed = 4")),
            // a key the first run lacks, and another value
            write(
                6,
                "[experiment]\nname = \"t\"\nseed = 6\n\n[bc]\nsteps = 200\nmax_grad_norm = 10.0\n",
            ),
        ];
        let differ = recipe_differences(&dirs).unwrap();
        assert_eq!(differ.len(), 1, "{differ:?}");
        assert_eq!(differ[0].0, 6);
        assert_eq!(
            differ[0].1,
            vec!["bc.max_grad_norm: - → 10.0", "bc.steps: 100 → 200"]
        );
        let rep = Replication {
            name: "t".into(),
            replicates: vec![(0, vec![]), (4, vec![]), (6, vec![])],
            rows: vec![],
            pooled: vec![],
            missing: vec![],
            recipe_differences: differ,
            control: None,
        };
        let md = rep.markdown();
        assert!(md.contains("did not all run the same config"), "{md}");
        assert!(md.contains("- seed 6: bc.max_grad_norm: - → 10.0; bc.steps: 100 → 200"));
        let same = Replication {
            recipe_differences: vec![],
            ..rep
        };
        assert!(same
            .markdown()
            .contains("Every replicate ran the same config"));
        // a replicate without its config is an error that names the file
        std::fs::remove_file(tmp.path().join("seed-4/config.toml")).unwrap();
        let err = recipe_differences(&dirs).unwrap_err();
        assert!(format!("{err:#}").contains("seed-4/config.toml"), "{err:#}");
    }
}
