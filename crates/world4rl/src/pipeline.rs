//! `world4rl run CFG`: the whole experiment, in the paper's order, resumable stage by stage.
//!
//! ```text
//!  1 collect-expert    expert demonstrations of every task               RUN/dataset/
//!  2 bc                Gaussian BC policy per task (expert data only)    RUN/bc/<task>/
//!  3 collect-rollouts  BC-policy rollouts + random-action episodes       RUN/dataset/
//!    collect-heldout   BC-policy rollouts no learner sees (outcome check) RUN/heldout/
//!  4 world-model       diffusion world model, all tasks and kinds pooled RUN/world_model/
//!  5 reward            success classifier per task (expert + rollouts)   RUN/reward/<task>/
//!  6 refine/<task>     PPO inside the frozen world model, per task       RUN/refine/<task>/
//!  7 eval              BC and refined policies in the real environment   RUN/eval/
//!  8 fidelity          open-loop PSNR/SSIM of the world model            RUN/fidelity/
//!  9 report            RUN/report.md and RUN/report.html                 RUN/
//! ```
//! A stage whose `done.json` exists is skipped; a partial one resumes (collection skips written
//! episodes, the world model resumes from its last checkpoint, the others restart their stage). Every
//! file is written atomically, so killing the run at any moment and re-running it loses nothing.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;
use tch::Device;
use w4rl_data::{Dataset, EpisodeKind};

use crate::collect::collect_recipe;
use crate::config::ExperimentConfig;
use crate::evaluate::{evaluate_policy, EvalReport, PolicyActor};
use crate::policy::gaussian::GaussianPolicy;
use crate::report::{Chart, FidelityRow, Rate, Report, SuccessRow};
use crate::run::{read_metrics, RunDir};
use crate::world_model::imagine::{imagine, side_by_side_gif, RollingContext};
use crate::world_model::train::StagePaths;
use crate::world_model::WorldModel;
use tch::Tensor;
use w4rl_envs::{make, EnvConfig};

/// Names of the stages, in order (refinement has one stage per task: `refine/<task>`).
pub const STAGES: [&str; 9] = [
    "collect-expert",
    "bc",
    "collect-rollouts",
    "world-model",
    "reward",
    "refine",
    "eval",
    "fidelity",
    "report",
];

/// The dataset folder of a run.
pub fn dataset_dir(run: &RunDir) -> PathBuf {
    run.path().join("dataset")
}

/// The last checkpoint of the ceiling control of `task` ([`crate::ceiling`]).
fn output_in_ceiling(run: &RunDir, task: &str) -> PathBuf {
    crate::ppo::output_in(&run.path().join(crate::ceiling::stage(task))).last
}

/// The held-out rollouts of a run (`collect.heldout_episodes` BC rollouts per task, never trained on).
pub fn heldout_dir(run: &std::path::Path) -> PathBuf {
    run.join("heldout")
}

/// Runs the recipe `recipe` (episode `kinds` only) for every task into `out`, the policy episodes from
/// the task's stochastic BC policy, under the collection seed stream of `base_seed`.
fn collect_with_bc(
    cfg: &ExperimentConfig,
    run: &RunDir,
    out: &std::path::Path,
    recipe: &crate::collect::CollectConfig,
    base_seed: u64,
    kinds: &[EpisodeKind],
    device: Device,
) -> Result<Vec<serde_json::Value>> {
    let pb = crate::progress::bar(0, "rollouts");
    let mut summaries = Vec::new();
    for task in &cfg.experiment.tasks {
        let path = crate::policy::bc::checkpoint_path(run, task);
        let (policy, _) = GaussianPolicy::load(&path, device)
            .with_context(|| format!("loading the BC policy of '{task}'"))?;
        let mut actor = PolicyActor {
            policy: &policy,
            stochastic: true,
        };
        let s = collect_recipe(
            out,
            &cfg.experiment.suite,
            std::slice::from_ref(task),
            cfg.experiment.image_size,
            base_seed,
            recipe,
            Some(&mut actor),
            kinds,
            |d, n| {
                pb.set_length(n as u64);
                pb.set_position(d as u64);
            },
        )?;
        summaries.push(json!({"task": task, "summary": s}));
    }
    pb.finish_and_clear();
    Ok(summaries)
}

/// Records `cfg.collect.heldout_episodes` stochastic BC rollouts per task into `out`, from the
/// held-out seed stream.
pub fn collect_heldout(
    cfg: &ExperimentConfig,
    run: &RunDir,
    out: &std::path::Path,
    device: Device,
) -> Result<Vec<serde_json::Value>> {
    collect_with_bc(
        cfg,
        run,
        out,
        &cfg.collect.heldout(),
        crate::seeds::heldout_base(cfg.experiment.seed),
        &[EpisodeKind::Policy],
        device,
    )
}

fn world_model_stage_done(run: &RunDir) -> bool {
    run.is_done(crate::world_model::train::STAGE)
}

/// Runs (or resumes) the whole pipeline. Returns the path of the HTML report.
pub fn run(cfg: &ExperimentConfig, run: &RunDir, device: Device) -> Result<PathBuf> {
    // the run keeps the file as written; every stage trains from its resolved values, as the stage
    // commands do
    run.write_config(cfg)?;
    let cfg = &cfg.resolve();
    let tasks = cfg.experiment.tasks.clone();
    let refine_tasks: Vec<String> = if cfg.refine.tasks.is_empty() {
        tasks.clone()
    } else {
        cfg.refine.tasks.clone()
    };
    let total = 8 + refine_tasks.len() as u64;
    let overall = crate::progress::bar(total, "pipeline");
    let started = Instant::now();
    let data_dir = dataset_dir(run);
    let seed = cfg.experiment.seed;
    let step = |name: &str| {
        overall.set_prefix(name.to_string());
        tracing::info!("stage {name}");
    };

    // 1. expert demonstrations
    step("collect-expert");
    if !run.is_done("collect-expert") {
        crate::interrupt::check_at("the run", "between two stages")?;
        let t0 = Instant::now();
        let pb = crate::progress::bar(0, "expert demos");
        let s = collect_recipe(
            &data_dir,
            &cfg.experiment.suite,
            &tasks,
            cfg.experiment.image_size,
            seed,
            &cfg.collect,
            None,
            &[EpisodeKind::Expert],
            |d, n| {
                pb.set_length(n as u64);
                pb.set_position(d as u64);
            },
        )?;
        pb.finish_and_clear();
        run.mark_done(
            "collect-expert",
            &json!({"summary": s, "seconds": t0.elapsed().as_secs_f64()}),
        )?;
    }
    overall.inc(1);

    // 2. BC policies
    step("bc");
    if !run.is_done("bc") {
        crate::interrupt::check_at("the run", "between two stages")?;
        let t0 = Instant::now();
        let dataset = Dataset::open(&data_dir)?;
        let reports = crate::policy::bc::train_all(&cfg.bc, &dataset, run, device)?;
        run.mark_done(
            "bc",
            &json!({"reports": reports, "seconds": t0.elapsed().as_secs_f64()}),
        )?;
    }
    overall.inc(1);

    // 3. BC-policy rollouts (stochastic, as D_rollout) and random-action episodes
    step("collect-rollouts");
    if !run.is_done("collect-rollouts") {
        crate::interrupt::check_at("the run", "between two stages")?;
        let t0 = Instant::now();
        let summaries = collect_with_bc(
            cfg,
            run,
            &data_dir,
            &cfg.collect,
            seed,
            &[EpisodeKind::Policy, EpisodeKind::Random],
            device,
        )?;
        run.mark_done(
            "collect-rollouts",
            &json!({"tasks": summaries, "seconds": t0.elapsed().as_secs_f64()}),
        )?;
    }
    overall.inc(1);
    if cfg.collect.heldout_episodes > 0 && !run.is_done("collect-heldout") {
        step("collect-heldout");
        let t0 = Instant::now();
        let summaries = collect_heldout(cfg, run, &heldout_dir(run.path()), device)?;
        run.mark_done(
            "collect-heldout",
            &json!({"tasks": summaries, "seconds": t0.elapsed().as_secs_f64()}),
        )?;
    }
    let dataset = Dataset::open(&data_dir)?;

    // 4. world model (all tasks, all kinds)
    step("world-model");
    if !world_model_stage_done(run) {
        crate::world_model::train::train(
            &cfg.world_model,
            &dataset,
            run,
            device,
            &crate::world_model::train::TrainOptions { progress: true },
        )?;
    }
    overall.inc(1);

    // 5. reward classifiers
    step("reward");
    if !run.is_done("reward") {
        crate::interrupt::check_at("the run", "between two stages")?;
        let t0 = Instant::now();
        let reports = crate::reward::train_all(&cfg.reward, &dataset, run, device)?;
        run.mark_done(
            "reward",
            &json!({"reports": reports, "seconds": t0.elapsed().as_secs_f64()}),
        )?;
    }
    overall.inc(1);

    // 6. PPO in imagination, per task (the acceptance check starts from the held-out rollouts)
    let heldout = {
        let dir = heldout_dir(run.path());
        if cfg.refine.accept != crate::acceptance::AcceptRule::Always && dir.exists() {
            Some(
                Dataset::open(&dir)
                    .with_context(|| format!("opening the held-out rollouts {}", dir.display()))?,
            )
        } else {
            None
        }
    };
    for task in &refine_tasks {
        let stage = crate::ppo::refine_stage(task);
        step(&stage);
        if !run.is_done(&stage) {
            crate::interrupt::check_at("the run", "between two stages")?;
            let t0 = Instant::now();
            let report = crate::ppo::refine_task(
                &cfg.refine,
                run,
                &dataset,
                heldout.as_ref(),
                task,
                device,
                seed,
            )?;
            run.mark_done(
                &stage,
                &json!({"report": report, "seconds": t0.elapsed().as_secs_f64()}),
            )?;
        }
        overall.inc(1);
    }

    // 6b. the ceiling control: the same PPO in the real environment, rewarded by the classifier
    if cfg.refine.real_env_control {
        for task in &refine_tasks {
            let stage = crate::ceiling::stage(task);
            if !run.is_done(&stage) {
                step(&stage);
                crate::ceiling::refine_real_task(
                    &cfg.refine,
                    run,
                    task,
                    cfg.experiment.image_size,
                    device,
                )?;
            }
        }
    }

    // 7. real-environment evaluation of BC and refined policies
    step("eval");
    if !run.is_done("eval") {
        crate::interrupt::check_at("the run", "between two stages")?;
        let t0 = Instant::now();
        let mut rows = Vec::new();
        let eval_cfg = crate::evaluate::EvalConfig {
            seed,
            ..cfg.eval.clone()
        };
        for task in &tasks {
            let bc_path = crate::policy::bc::checkpoint_path(run, task);
            let (bc, _) = GaussianPolicy::load(&bc_path, device)?;
            let bc_report = evaluate_policy(&bc, task, &eval_cfg)?;
            let refine_dir = run.path().join(crate::ppo::refine_stage(task));
            let outputs = crate::ppo::output_in(&refine_dir);
            let standing = crate::ppo::standing_policy_in(&refine_dir);
            let refined_path = if standing.exists() {
                standing
            } else {
                match cfg.refine.evaluate {
                    crate::ppo::RefinedCheckpoint::Last => outputs.last,
                    crate::ppo::RefinedCheckpoint::Best => outputs.best,
                }
            };
            let refined_report = if refined_path.exists() {
                let (p, _) = GaussianPolicy::load(&refined_path, device)?;
                let gif = run
                    .stage_dir("eval")?
                    .join(format!("{}-refined.gif", task.replace('/', "__")));
                policy_gif(&p, task, crate::seeds::eval_seed(seed, task, 0), &gif)?;
                Some(evaluate_policy(&p, task, &eval_cfg)?)
            } else {
                None
            };
            tracing::info!(
                "{task}: BC {:.1} %, refined {}",
                100.0 * bc_report.success_rate,
                refined_report
                    .as_ref()
                    .map(|r| format!("{:.1} %", 100.0 * r.success_rate))
                    .unwrap_or_else(|| "-".into())
            );
            let ceiling_path = output_in_ceiling(run, task);
            let ceiling = if ceiling_path.exists() {
                let (p, _) = GaussianPolicy::load(&ceiling_path, device)?;
                Some(evaluate_policy(&p, task, &eval_cfg)?)
            } else {
                None
            };
            rows.push(json!({"task": task, "bc": bc_report, "refined": refined_report, "ceiling": ceiling}));
        }
        run.mark_done(
            "eval",
            &json!({"rows": rows, "seconds": t0.elapsed().as_secs_f64()}),
        )?;
    }
    overall.inc(1);

    // 8. world-model fidelity
    step("fidelity");
    if !run.is_done("fidelity") {
        crate::interrupt::check_at("the run", "between two stages")?;
        let t0 = Instant::now();
        let (wm, _) = WorldModel::load(&StagePaths::new(run.path()).model, device)?;
        let held = crate::world_model::train::load_holdout(run.path(), &dataset)?;
        let fid = crate::world_model::fidelity::evaluate(&wm, &held, &cfg.fidelity)?;
        let rows: Vec<FidelityRow> = (0..fid.horizon)
            .map(|h| FidelityRow {
                horizon: h + 1,
                psnr: fid.psnr[h],
                ssim: fid.ssim[h],
                psnr_copy: fid.copy_last_psnr[h],
                ssim_copy: fid.copy_last_ssim[h],
            })
            .collect();
        let dir = run.stage_dir("fidelity")?;
        // a real held-out episode of each task beside the world model's open-loop replay of its actions
        let mut gifs = Vec::new();
        for task in &tasks {
            if let Some(ep) = held
                .iter()
                .find(|e| &e.meta.task == task && e.meta.kind == EpisodeKind::Expert)
            {
                let path = dir.join(format!("dream-{}.gif", task.replace('/', "__")));
                dream_gif(&wm, ep, &path)?;
                gifs.push(path);
            }
        }
        // whole-episode replays of recorded rollouts: does imagined success follow real success?
        let outcomes = if cfg.fidelity.outcome_episodes > 0 {
            let held_dir = heldout_dir(run.path());
            let heldout = held_dir
                .exists()
                .then(|| Dataset::open(&held_dir))
                .transpose()?;
            crate::outcome::task_outcomes(
                |t| crate::reward::checkpoint_path(run, t),
                &wm,
                &crate::outcome::Rollouts {
                    heldout: heldout.as_ref(),
                    training: &dataset,
                },
                &tasks,
                cfg.fidelity.outcome_episodes,
                &cfg.fidelity
                    .outcome_options(cfg.refine.imagination.success_rule()),
            )?
        } else {
            Vec::new()
        };
        // does the next frame depend on the action? (held-out windows, true vs permuted actions)
        let action_use = if cfg.fidelity.action_use_windows > 0 {
            Some(crate::world_model::fidelity::action_use(
                &wm,
                &held,
                cfg.fidelity.action_use_windows,
                cfg.fidelity.batch,
                cfg.fidelity.seed,
            )?)
        } else {
            None
        };
        run.mark_done(
            "fidelity",
            &json!({"result": fid, "rows": rows, "gifs": gifs, "outcomes": outcomes, "action_use": action_use, "seconds": t0.elapsed().as_secs_f64()}),
        )?;
    }
    overall.inc(1);

    // 9. report
    step("report");
    let report = build_report(cfg, run, started.elapsed().as_secs_f64())?;
    report.write(run.path())?;
    run.mark_done("report", &json!({"html": run.path().join("report.html")}))?;
    overall.inc(1);
    overall.finish_and_clear();
    Ok(run.path().join("report.html"))
}

/// Rows of the imagination-against-reality table: per refined task, the imagined success rate of PPO's
/// first iteration (the BC policy) and of its last one, beside the real success rates of the eval.
fn imagination_gap(
    cfg: &ExperimentConfig,
    run: &RunDir,
    success: &[SuccessRow],
) -> Vec<Vec<String>> {
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.0} %", 100.0 * v));
    let real = |r: &Option<Rate>| {
        r.as_ref()
            .map(|r| r.successes as f64 / r.episodes.max(1) as f64)
    };
    let mut rows = Vec::new();
    for task in &cfg.experiment.tasks {
        let m = run
            .path()
            .join(crate::ppo::refine_stage(task))
            .join("metrics.jsonl");
        let imagined: Vec<f64> = read_metrics(&m)
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.get("success_rate")?.as_f64())
            .collect();
        if imagined.is_empty() {
            continue;
        }
        let row = success.iter().find(|r| &r.task == task);
        rows.push(vec![
            task.clone(),
            pct(imagined.first().copied()),
            pct(row.and_then(|r| real(&r.bc))),
            pct(imagined.last().copied()),
            pct(row.and_then(|r| real(&r.refined))),
        ]);
    }
    rows
}

fn rate(r: &EvalReport) -> Rate {
    Rate {
        successes: r.successes,
        episodes: r.episodes,
        lo: r.ci_low,
        hi: r.ci_high,
    }
}

fn curve(path: &std::path::Path, x: &str, y: &str) -> Vec<(f64, f64)> {
    read_metrics(path)
        .unwrap_or_default()
        .iter()
        .filter_map(|v| Some((v.get(x)?.as_f64()?, v.get(y)?.as_f64()?)))
        .collect()
}

/// Assembles the report from what the stages left in the run directory.
pub fn build_report(cfg: &ExperimentConfig, run: &RunDir, seconds: f64) -> Result<Report> {
    let mut r = Report {
        title: format!("World4RL: {}", cfg.experiment.name),
        ..Default::default()
    };
    r.facts.push(("suite".into(), cfg.experiment.suite.clone()));
    r.facts
        .push(("tasks".into(), cfg.experiment.tasks.join(", ")));
    r.facts.push((
        "frames".into(),
        format!("{0}x{0}", cfg.experiment.image_size),
    ));
    r.facts
        .push(("seed".into(), cfg.experiment.seed.to_string()));
    r.facts
        .push(("threads".into(), tch::get_num_threads().to_string()));
    r.facts.push((
        "wall-clock of this invocation".into(),
        format!("{:.1} min", seconds / 60.0),
    ));
    let mut stage_times = Vec::new();
    for stage in [
        "collect-expert",
        "bc",
        "collect-rollouts",
        "world_model",
        "reward",
        "eval",
        "fidelity",
    ] {
        let done = run.done_summary(stage);
        let secs = done.as_ref().and_then(|v| {
            v.get("seconds")
                .and_then(|s| s.as_f64())
                .or_else(|| v.get("minutes").and_then(|m| m.as_f64()).map(|m| m * 60.0))
        });
        if let Some(s) = secs {
            stage_times.push(vec![stage.to_string(), format!("{:.1}", s / 60.0)]);
        }
    }
    for task in &cfg.experiment.tasks {
        let stage = crate::ppo::refine_stage(task);
        if let Some(s) = run
            .done_summary(&stage)
            .and_then(|v| v.get("seconds").and_then(|s| s.as_f64()))
        {
            stage_times.push(vec![stage, format!("{:.1}", s / 60.0)]);
        }
    }
    r.switches = crate::config::ablation_switches(cfg);

    let mut ceiling_rows = Vec::new();
    if let Some(eval) = run.done_summary("eval") {
        for row in eval["rows"].as_array().cloned().unwrap_or_default() {
            let bc: Option<EvalReport> = serde_json::from_value(row["bc"].clone()).ok();
            let refined: Option<EvalReport> = serde_json::from_value(row["refined"].clone()).ok();
            let task = row["task"].as_str().unwrap_or("?").to_string();
            if let Ok(c) = serde_json::from_value::<EvalReport>(row["ceiling"].clone()) {
                let pct = |r: &EvalReport| {
                    format!(
                        "{:.0} % [{:.0}, {:.0}]",
                        100.0 * r.success_rate,
                        100.0 * r.ci_low,
                        100.0 * r.ci_high
                    )
                };
                ceiling_rows.push(vec![
                    task.clone(),
                    bc.as_ref().map_or("-".into(), pct),
                    refined.as_ref().map_or("-".into(), pct),
                    pct(&c),
                ]);
            }
            r.success.push(SuccessRow {
                task,
                bc: bc.as_ref().map(rate),
                refined: refined.as_ref().map(rate),
            });
        }
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
    if let Some(f) = run.done_summary("fidelity") {
        if let Ok(rows) = serde_json::from_value::<Vec<FidelityRow>>(f["rows"].clone()) {
            r.fidelity = rows;
        }
        for g in f["gifs"].as_array().cloned().unwrap_or_default() {
            if let Some(p) = g.as_str() {
                let name = std::path::Path::new(p)
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                r.gifs.push((format!("{name}: real (left) vs imagined open-loop replay of the same actions (right)"), PathBuf::from(p)));
            }
        }
    }
    if let Some(f) = run.done_summary("fidelity") {
        let pct = |v: f64| format!("{:.0} %", 100.0 * v);
        let mut rows = Vec::new();
        for o in f["outcomes"].as_array().cloned().unwrap_or_default() {
            let Ok(crate::outcome::TaskOutcome { task, agreement: a }) = serde_json::from_value(o)
            else {
                continue;
            };
            let auc = |v: Option<f64>, ci: Option<[f64; 2]>| match (v, ci) {
                (Some(v), Some([lo, hi])) => format!("{v:.2} [{lo:.2}, {hi:.2}]"),
                (Some(v), None) => format!("{v:.2}"),
                _ => "-".into(),
            };
            let resets = a
                .auc_by_reset
                .iter()
                .map(|r| format!("k={}: {}", r.every, auc(r.estimate.auc, r.estimate.ci)))
                .collect::<Vec<_>>()
                .join("; ");
            rows.push(vec![
                task,
                format!(
                    "{} {}",
                    a.episodes,
                    if a.heldout { "held-out" } else { "training" }
                ),
                pct(a.real_success_rate),
                pct(a.imagined_success_rate),
                pct(a.agreement),
                auc(a.auc, a.auc_ci),
                if resets.is_empty() {
                    "-".into()
                } else {
                    resets
                },
            ]);
        }
        if let Ok(a) = serde_json::from_value::<crate::world_model::fidelity::ActionUse>(
            f["action_use"].clone(),
        ) {
            r.facts.push((
                "world-model action use".into(),
                format!(
                    "one-step MSE {:.5} with the recorded actions, {:.5} with actions permuted across the batch (ratio {:.2}; 1 = actions ignored), {} held-out windows",
                    a.mse_true, a.mse_permuted, a.ratio, a.windows
                ),
            ));
        }
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
                ],
                rows,
            ));
        }
    }
    if let Some(rew) = run.done_summary("reward") {
        let mut rows = Vec::new();
        // each task's classifier, then the further members of its ensemble (`reward.members`)
        let reports = rew["reports"].as_array().cloned().unwrap_or_default();
        let with_members = reports.iter().flat_map(|rep| {
            let members = rep["members"].as_array().cloned().unwrap_or_default();
            std::iter::once((rep.clone(), 0)).chain(members.into_iter().zip(1..))
        });
        for (rep, member) in with_members {
            let h = &rep["heldout"];
            let f = |k: &str| {
                h.get(k)
                    .and_then(|v| v.as_f64())
                    .map(|v| format!("{v:.3}"))
                    .unwrap_or("-".into())
            };
            let f1_imagined = rep["heldout_world_model"]
                .get("f1")
                .and_then(|v| v.as_f64())
                .map(|v| format!("{v:.3}"))
                .unwrap_or("-".into());
            let task = rep["task"].as_str().unwrap_or("?");
            rows.push(vec![
                if member == 0 {
                    task.to_string()
                } else {
                    format!("{task} (ensemble member {member})")
                },
                f("accuracy"),
                f("precision"),
                f("recall"),
                f("f1"),
                f1_imagined,
            ]);
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
    let gap = imagination_gap(cfg, run, &r.success);
    if !gap.is_empty() {
        r.tables.push((
            // refinement can only help where imagination agrees with reality
            "Imagination against reality (success inside the world model at PPO's first and last iteration, and in the real env)".into(),
            vec![
                "task".into(),
                "BC imagined".into(),
                "BC real".into(),
                "refined imagined".into(),
                "refined real".into(),
            ],
            gap,
        ));
    }
    if !stage_times.is_empty() {
        r.tables.push((
            "Stage wall-clock (minutes)".into(),
            vec!["stage".into(), "minutes".into()],
            stage_times,
        ));
    }

    // curves
    let wm = run
        .path()
        .join(crate::world_model::train::STAGE)
        .join("metrics.jsonl");
    let train = curve(&wm, "step", "loss");
    let val = curve(&wm, "step", "val_loss");
    if !train.is_empty() {
        r.charts.push(Chart {
            title: "world model: denoising loss (Eq. 7)".into(),
            x_label: "step".into(),
            series: vec![("train".into(), train), ("held-out".into(), val)],
        });
    }
    for task in &cfg.experiment.tasks {
        let m = run
            .path()
            .join(crate::ppo::refine_stage(task))
            .join("metrics.jsonl");
        let succ = curve(&m, "step", "success_rate");
        let ret = curve(&m, "step", "mean_return");
        if !succ.is_empty() || !ret.is_empty() {
            let mut series = vec![
                ("imagined success rate".into(), succ),
                ("mean return".into(), ret),
            ];
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
            });
        }
    }
    for task in &cfg.experiment.tasks {
        let g = run
            .path()
            .join("eval")
            .join(format!("{}-refined.gif", task.replace('/', "__")));
        if g.exists() {
            r.gifs
                .push((format!("refined policy acting in the real env: {task}"), g));
        }
    }
    Ok(r)
}

/// Writes a GIF with the real episode (left) beside the world model's open-loop replay of its actions
/// (right), both starting from the episode's first frame.
pub fn dream_gif(wm: &WorldModel, ep: &w4rl_data::Episode, path: &std::path::Path) -> Result<()> {
    let steps = ep.meta.steps;
    let a = wm.action_dim();
    let mut ctx = RollingContext::from_episodes(wm, &[(ep, 0)])?;
    let first = ctx.last_frame();
    let acts: Vec<f32> = (0..steps).flat_map(|t| ep.action(t).to_vec()).collect();
    let actions = Tensor::from_slice(&acts).view([1, steps as i64, a as i64]);
    let fake = imagine(wm, &mut ctx, &actions)?.squeeze_dim(0);
    let bytes: Vec<u8> = (1..=steps).flat_map(|t| ep.frame(t).to_vec()).collect();
    let real = crate::world_model::frames_to_model(
        &bytes,
        steps,
        ep.meta.image_size,
        wm.image_size(),
        wm.device(),
    )?;
    let real = Tensor::cat(&[&first, &real], 0);
    let fake = Tensor::cat(&[&first, &fake], 0);
    side_by_side_gif(path, &[&real, &fake], (128 / wm.image_size()).max(1), 10)?;
    Ok(())
}

/// Writes a GIF of one real-environment episode of `policy` (mean actions, ends on success).
pub fn policy_gif(
    policy: &GaussianPolicy,
    task: &str,
    seed: u64,
    path: &std::path::Path,
) -> Result<()> {
    let size = policy.spec().render_size();
    let cfg = EnvConfig {
        image_size: size,
        terminate_on_success: true,
        ..EnvConfig::default()
    };
    let mut env = make(task, &cfg)?;
    let mut obs = env.reset(seed);
    let mut frames = obs.frame.clone();
    loop {
        let a = policy.act_mean(&policy.obs_batch(&[&obs])?)?;
        let st = env.step(&a[0])?;
        frames.extend_from_slice(&st.obs.frame);
        obs = st.obs;
        if st.terminated || st.truncated {
            break;
        }
    }
    // hold the last frame a little
    let last = frames[frames.len() - size * size * 3..].to_vec();
    for _ in 0..5 {
        frames.extend_from_slice(&last);
    }
    w4rl_envs::gif::write_gif(path, &frames, size, (256 / size).max(1), 10)?;
    Ok(())
}
