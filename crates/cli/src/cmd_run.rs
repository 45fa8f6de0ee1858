//! `world4rl run CFG --out RUN`: the whole pipeline, resumable stage by stage; and
//! `world4rl stage NAME CFG --out RUN`: one of its stages.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use tch::Device;
use world4rl::experiment::config::ExperimentConfig;
use world4rl::experiment::run::RunDir;
use world4rl::experiment::stage_id::StageId;

use crate::output::print_json;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Experiment config (TOML), e.g. configs/tabletop-cpu.toml.
    pub config: PathBuf,
    /// Run directory (default: runs/<config name>). Re-running on it resumes.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print one JSON object (the report's paths and the success table) as the last line.
    #[arg(long)]
    pub json: bool,
}

/// `world4rl replicate`.
#[derive(Debug, Args)]
pub struct ReplicateArgs {
    /// Experiment config (TOML), e.g. configs/tabletop-cpu.toml.
    pub config: PathBuf,
    /// Master seeds of the replicates, comma-separated (each one `world4rl run` with
    /// `experiment.seed` = the seed, in OUT/seed-<seed>/).
    #[arg(long, value_delimiter = ',', required = true)]
    pub seeds: Vec<u64>,
    /// Folder of the replicates and of the replication report.
    #[arg(long)]
    pub out: PathBuf,
    /// Only read the replicates that have finished and write the report; run nothing (for
    /// replicates run on other machines or days).
    #[arg(long)]
    pub report_only: bool,
    /// A control: the folder of replicates of the same seeds run without the setting under test
    /// (e.g. the f32 replicates beside bf16 ones). The report adds both sets' pooled gains, whether
    /// this set's lies inside the control's interval, and this refined policy − the control's on the
    /// same test scenes.
    #[arg(long)]
    pub control: Option<PathBuf>,
    /// Print the replication report as one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

/// `world4rl replicate CFG --seeds 0,1,2 --out DIR`.
pub fn replicate(args: ReplicateArgs, device: Device) -> Result<()> {
    let cfg = load(&args.config, None)?;
    let mut seen = std::collections::HashSet::new();
    for s in &args.seeds {
        anyhow::ensure!(seen.insert(*s), "--seeds names seed {s} twice");
    }
    if let Some(c) = &args.control {
        // before hours of replicates, not after
        anyhow::ensure!(c.is_dir(), "--control {}: no such folder", c.display());
    }
    if !args.report_only {
        for &seed in &args.seeds {
            eprintln!("[replicate] seed {seed}");
            world4rl::experiment::replicate::run_replicate(&cfg, seed, &args.out, device)?;
        }
    }
    let mut rep = world4rl::experiment::replicate::read_replication(
        &cfg.experiment.name,
        &args.seeds,
        &args.out,
    )?;
    if let Some(control) = &args.control {
        rep.control = Some(world4rl::experiment::replicate::compare_with_control(
            &args.seeds,
            &args.out,
            control,
        )?);
    }
    rep.write(&args.out)?;
    print!("{}", rep.markdown());
    eprintln!(
        "replication report: {}",
        args.out.join("replication.md").display()
    );
    if args.json {
        print_json(&rep)?;
    }
    Ok(())
}

/// `world4rl stage`.
#[derive(Debug, Args)]
pub struct StageArgs {
    /// The stage (the pipeline's, in order).
    #[arg(value_parser = stage_parser())]
    pub name: StageId,
    /// Experiment config (TOML): the run's.
    pub config: PathBuf,
    /// Run directory (default: runs/<config name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Only these tasks, for a per-task stage (repeatable; default: the stage's tasks).
    #[arg(long)]
    pub task: Vec<String>,
}

/// Parses a stage name; clap lists [`StageId::ALL`] as the possible values (`world-model` is an
/// alias of `world_model`, as in `world4rl train world-model`).
fn stage_parser() -> impl clap::builder::TypedValueParser<Value = StageId> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(StageId::ALL.map(|s| match s {
        StageId::WorldModel => PossibleValue::new(s.name()).alias("world-model"),
        _ => PossibleValue::new(s.name()),
    }))
    .map(|name| {
        name.parse::<StageId>()
            .expect("a possible value names a stage")
    })
}

/// The config file as written, with `--seed` applied: what a run directory records.
pub(crate) fn load(config: &Path, seed: Option<u64>) -> Result<ExperimentConfig> {
    let mut cfg = ExperimentConfig::load(config)?;
    if let Some(s) = seed {
        cfg.experiment.seed = s;
    }
    Ok(cfg)
}

fn out_dir(out: &Option<PathBuf>, config: &Path) -> PathBuf {
    out.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(
            config
                .file_stem()
                .map(|s| s.to_os_string())
                .unwrap_or_else(|| "run".into()),
        )
    })
}

/// `world4rl stage NAME CFG`: resolve the config, then run that stage of the pipeline.
pub fn stage(args: StageArgs, device: Device, seed: Option<u64>) -> Result<()> {
    let cfg = load(&args.config, seed)?;
    let run = RunDir::open_locked(out_dir(&args.out, &args.config))?;
    run.write_config(&cfg)?;
    let resolved = cfg.resolve();
    let ctx = world4rl::experiment::pipeline::StageContext {
        cfg: &resolved,
        run: &run,
        device,
        tasks: &args.task,
    };
    world4rl::experiment::pipeline::run_stage_id(&ctx, args.name)
}

pub fn run(args: RunArgs, device: Device, seed: Option<u64>) -> Result<()> {
    let cfg = load(&args.config, seed)?;
    let out = out_dir(&args.out, &args.config);
    let run = RunDir::open_locked(&out)?;
    let html = world4rl::experiment::pipeline::run(&cfg, &run, device)?;
    eprintln!(
        "report: {} (and {})",
        html.display(),
        run.path().join("report.md").display()
    );
    if args.json {
        print_json(&serde_json::json!({
            "run": run.path(),
            "report_html": html,
            "report_md": run.path().join("report.md"),
            "eval": run.done::<Vec<world4rl::stages::eval::EvalRow>>(StageId::Eval.name())?.map(|d| d.record),
        }))?;
    }
    Ok(())
}
