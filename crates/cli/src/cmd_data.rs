//! `world4rl data info|verify DATASET`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

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
}

pub fn run(cmd: DataCmd) -> Result<bool> {
    match cmd {
        DataCmd::Info { dataset, json } => {
            let info = w4rl_data::info(&dataset)?;
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
        DataCmd::Verify {
            dataset,
            json,
            reindex,
        } => {
            let pb = world4rl::progress::bar(0, "verify");
            let report = w4rl_data::verify(&dataset, reindex, |i, n| {
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
                eprintln!("note: no index (a dataset written before datasets had one); `--reindex` writes it");
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
    }
}
