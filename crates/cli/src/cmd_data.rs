//! `world4rl data info|verify DATASET`, `data import-lerobot SRC`, `data export-lerobot DATASET`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use w4rl_data::EpisodeKind;
use w4rl_lerobot::{ExportOptions, ImportOptions, SuccessSource};

use crate::output::print_json;

/// Dataset inspection.
#[derive(Debug, Subcommand)]
pub enum DataCmd {
    /// Episodes, steps, per-task and per-kind counts, success rate, image size, from the episode
    /// headers (the arrays are not read). Exits 1 when episode files are unreadable or missing,
    /// naming each.
    Info {
        /// Dataset folder.
        dataset: PathBuf,
        /// Print one JSON object as the last line.
        #[arg(long)]
        json: bool,
    },
    /// Read every episode completely and check dtypes, shapes and checksums, and the files against
    /// the dataset's index (missing, extra, changed); exits 1 on any such episode, listing each.
    Verify {
        /// Dataset folder.
        dataset: PathBuf,
        /// Print one JSON object as the last line.
        #[arg(long)]
        json: bool,
        /// Write a new index listing the episode files that read back intact (for a dataset made
        /// before the index, or to accept the files as they are now).
        #[arg(long)]
        reindex: bool,
    },
    /// Convert a LeRobot dataset (a local folder, format v3.0 or v2.1) into world4rl episodes. Re-run
    /// with the same options to complete an interrupted import.
    ImportLerobot(Box<ImportArgs>),
    /// Write a world4rl dataset as a LeRobot v3.0 dataset (frames as PNG images in the parquet) that
    /// `LeRobotDataset(repo_id, root=DIR)` loads offline.
    ExportLerobot(ExportArgs),
}

/// `world4rl data import-lerobot`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// LeRobot dataset folder (holding meta/info.json).
    pub src: PathBuf,
    /// world4rl dataset folder to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Camera feature to import as the frames (default: the dataset's only camera).
    #[arg(long)]
    pub camera: Option<String>,
    /// Side of the square frames written (frames are centre-cropped to a square, then resized).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Low-dim state feature (default: observation.state when present).
    #[arg(long, conflicts_with = "no_state")]
    pub state: Option<String>,
    /// Import no state.
    #[arg(long)]
    pub no_state: bool,
    /// Action feature.
    #[arg(long, default_value = "action")]
    pub action: String,
    /// Where success comes from: a flag column (next.success), 'reward>X' (next.reward above X),
    /// 'last' (the last frame of every episode), or 'auto' (next.success when present).
    #[arg(long, default_value = "auto")]
    pub success: String,
    /// Only this task (a LeRobot task string or its world4rl name; repeatable; default all).
    #[arg(long)]
    pub task: Vec<String>,
    /// Episode kind to record: expert (demonstrations, the default), policy or random.
    #[arg(long, default_value = "expert")]
    pub kind: String,
    /// Suite name written into the dataset.
    #[arg(long, default_value = "lerobot")]
    pub suite: String,
    /// Only LeRobot episodes START:END (half-open).
    #[arg(long)]
    pub episodes: Option<String>,
    /// Lower action bounds, comma-separated (default: the imported actions' minimum per dimension).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub action_low: Option<Vec<f32>>,
    /// Upper action bounds, comma-separated (default: the imported actions' maximum).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub action_high: Option<Vec<f32>>,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

/// `world4rl data export-lerobot`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// world4rl dataset folder.
    pub dataset: PathBuf,
    /// LeRobot folder to create (must not exist, or be empty).
    #[arg(long)]
    pub out: PathBuf,
    /// Frames per second recorded in info.json.
    #[arg(long, default_value_t = 10)]
    pub fps: u32,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

fn parse_range(s: &str) -> Result<(usize, usize)> {
    let (a, b) = s
        .split_once(':')
        .with_context(|| format!("--episodes '{s}': expected START:END, e.g. 0:10"))?;
    let a: usize = a
        .trim()
        .parse()
        .with_context(|| format!("--episodes '{s}': START is not a number"))?;
    let b: usize = b
        .trim()
        .parse()
        .with_context(|| format!("--episodes '{s}': END is not a number"))?;
    anyhow::ensure!(a < b, "--episodes '{s}': START must be below END");
    Ok((a, b))
}

fn import_lerobot(a: ImportArgs) -> Result<bool> {
    let kind: EpisodeKind = a.kind.parse()?;
    let opts = ImportOptions {
        camera: a.camera,
        size: a.size,
        state: a.state,
        no_state: a.no_state,
        action: a.action,
        success: a.success.parse::<SuccessSource>()?,
        tasks: a.task,
        kind,
        suite: a.suite,
        episodes: a.episodes.as_deref().map(parse_range).transpose()?,
        action_low: a.action_low,
        action_high: a.action_high,
    };
    let pb = world4rl::util::progress::bar(0, "import");
    let report = w4rl_lerobot::import(&a.src, &a.out, &opts, |i, n| {
        pb.set_length(n as u64);
        pb.set_position(i as u64);
    })?;
    pb.finish_and_clear();
    eprintln!(
        "imported {} episode(s), {} steps ({} successful) from {} ({}, camera '{}'{}, success from {}) into {}{}",
        report.episodes,
        report.steps,
        report.successful_episodes,
        a.src.display(),
        report.codebase_version,
        report.camera,
        if report.video { ", video" } else { "" },
        report.success,
        a.out.display(),
        if report.skipped > 0 {
            format!(" ({} were already there)", report.skipped)
        } else {
            String::new()
        }
    );
    for (t, n) in &report.tasks {
        eprintln!("  task '{t}' -> {n}");
    }
    if a.json {
        print_json(&report)?;
    }
    Ok(true)
}

fn export_lerobot(a: ExportArgs) -> Result<bool> {
    let opts = ExportOptions {
        fps: a.fps,
        ..ExportOptions::default()
    };
    let pb = world4rl::util::progress::bar(0, "export");
    let report = w4rl_lerobot::export(&a.dataset, &a.out, &opts, |i, n| {
        pb.set_length(n as u64);
        pb.set_position(i as u64);
    })?;
    pb.finish_and_clear();
    eprintln!(
        "wrote a LeRobot v3.0 dataset of {} episode(s), {} frames, {} task(s) to {}",
        report.episodes,
        report.frames,
        report.tasks.len(),
        report.out.display()
    );
    if a.json {
        print_json(&report)?;
    }
    Ok(true)
}

pub fn run(cmd: DataCmd) -> Result<bool> {
    match cmd {
        DataCmd::ImportLerobot(a) => import_lerobot(*a),
        DataCmd::ExportLerobot(a) => export_lerobot(a),
        DataCmd::Info { dataset, json } => info(&dataset, json),
        DataCmd::Verify {
            dataset,
            json,
            reindex,
        } => verify(&dataset, json, reindex),
    }
}

/// `world4rl data info`: counts per task and kind; false when episode files are unreadable or gone.
fn info(dataset: &std::path::Path, json: bool) -> Result<bool> {
    let info = w4rl_data::info(dataset)?;
    if json {
        print_json(&info)?;
    } else {
        println!("dataset     {}", info.path.display());
        println!(
            "suite       {}   frames {}x{}   action dim {}   state dim {}",
            info.suite, info.image_size, info.image_size, info.action_dim, info.state_dim
        );
        println!(
            "episodes    {}   steps {}   success rate {:.3}",
            info.total.episodes, info.total.steps, info.total.success_rate
        );
        println!(
            "{:<28} {:>8} {:>8} {:>8} {:>8} {:>9}",
            "task", "expert", "policy", "random", "steps", "success"
        );
        for (task, c) in &info.per_task {
            let k = &info.per_task_kind[task];
            let n = |kind: &str| k.get(kind).map(|c| c.episodes).unwrap_or(0);
            println!(
                "{:<28} {:>8} {:>8} {:>8} {:>8} {:>9.3}",
                task,
                n("expert"),
                n("policy"),
                n("random"),
                c.steps,
                c.success_rate
            );
        }
        if !info.indexed {
            println!("index       none (written before datasets had one; `world4rl data verify --reindex` writes it)");
        }
        if !info.extra.is_empty() {
            println!(
                "not indexed {} episode file(s), left out (`world4rl data verify` lists them)",
                info.extra.len()
            );
        }
    }
    for bad in &info.unreadable {
        eprintln!("unreadable episode: {}: {}", bad.path.display(), bad.reason);
    }
    for path in &info.missing {
        eprintln!("missing episode: {} (listed in the index)", path.display());
    }
    if !info.intact() {
        eprintln!(
            "{}: {} unreadable and {} missing episode file(s); `world4rl data verify` checks every array",
            info.path.display(),
            info.unreadable.len(),
            info.missing.len()
        );
    }
    Ok(info.intact())
}

/// `world4rl data verify`: every array of every episode; false when one is bad.
fn verify(dataset: &std::path::Path, json: bool, reindex: bool) -> Result<bool> {
    let pb = world4rl::util::progress::bar(0, "verify");
    let report = w4rl_data::verify(dataset, reindex, |i, n| {
        pb.set_length(n as u64);
        pb.set_position(i as u64);
    })?;
    pb.finish_and_clear();
    for bad in &report.bad {
        eprintln!("bad episode: {}: {}", bad.path.display(), bad.reason);
    }
    for path in &report.missing {
        eprintln!("missing episode: {} (listed in the index)", path.display());
    }
    for path in &report.extra {
        eprintln!("episode not in the index: {}", path.display());
    }
    for path in &report.changed {
        eprintln!(
            "changed episode: {} (its bytes differ from the committed ones)",
            path.display()
        );
    }
    for gap in &report.gaps {
        eprintln!("note: {gap}");
    }
    if !report.indexed && !reindex {
        eprintln!(
            "note: no index (a dataset written before datasets had one); `--reindex` writes it"
        );
    }
    if reindex {
        eprintln!(
            "wrote a new index of the {} episode(s) that read back intact",
            report.ok
        );
    }
    if json {
        print_json(&serde_json::json!({
            "path": report.path,
            "checked": report.checked,
            "ok": report.ok,
            "bad": report.bad,
            "gaps": report.gaps,
            "indexed": report.indexed,
            "missing": report.missing,
            "extra": report.extra,
            "changed": report.changed,
            "passed": report.passed(),
        }))?;
    } else if report.passed() {
        println!("{}: {} episodes OK", report.path.display(), report.ok);
    } else {
        println!(
            "{}: {} of {} episode files bad; {} missing, {} not in the index, {} changed",
            report.path.display(),
            report.bad.len(),
            report.checked,
            report.missing.len(),
            report.extra.len(),
            report.changed.len()
        );
    }
    // after --reindex the dataset is what the new index says
    Ok(report.passed() || (reindex && report.bad.is_empty()))
}
