//! `world4rl data info|verify DATASET`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use crate::output::print_json;

/// Dataset inspection.
#[derive(Debug, Subcommand)]
pub enum DataCmd {
    /// Episodes, steps, per-task and per-kind counts, success rate, image size.
    Info {
        /// Dataset folder.
        dataset: PathBuf,
        /// Print one JSON object as the last line.
        #[arg(long)]
        json: bool,
    },
    /// Read every episode completely and check dtypes, shapes and checksums; exits 1 on any bad
    /// episode, listing each.
    Verify {
        /// Dataset folder.
        dataset: PathBuf,
        /// Print one JSON object as the last line.
        #[arg(long)]
        json: bool,
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
                if info.unreadable > 0 {
                    println!(
                        "unreadable  {} episode file(s): run `world4rl data verify`",
                        info.unreadable
                    );
                }
            }
            Ok(true)
        }
        DataCmd::Verify { dataset, json } => {
            let pb = world4rl::progress::bar(0, "verify");
            let report = w4rl_data::verify(&dataset, |i, n| {
                pb.set_length(n as u64);
                pb.set_position(i as u64);
            })?;
            pb.finish_and_clear();
            for bad in &report.bad {
                eprintln!("bad episode: {}: {}", bad.path.display(), bad.reason);
            }
            for gap in &report.gaps {
                eprintln!("note: {gap}");
            }
            if json {
                print_json(&serde_json::json!({
                    "path": report.path,
                    "checked": report.checked,
                    "ok": report.ok,
                    "bad": report.bad,
                    "gaps": report.gaps,
                    "passed": report.passed(),
                }))?;
            } else if report.passed() {
                println!("{}: {} episodes OK", report.path.display(), report.ok);
            } else {
                println!(
                    "{}: {} of {} episodes bad",
                    report.path.display(),
                    report.bad.len(),
                    report.checked
                );
            }
            Ok(report.passed())
        }
    }
}
