//! `world4rl env ...`: list the tasks, measure the scripted experts and the simulator speed, show an episode.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use w4rl_envs::{gif, list_tasks, measure, EnvConfig, RenderOptions, RenderQuality};

/// How the frames are rendered (Meta-World; the tabletop has one renderer and one camera).
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Render quality: cheap, fast or full.
    #[arg(long, default_value = "cheap", value_parser = parse_quality)]
    render: RenderQuality,
    /// Camera (Meta-World: corner, corner2, corner3, topview, ...; empty = the suite's default).
    #[arg(long, default_value = "")]
    camera: String,
}

fn parse_quality(s: &str) -> Result<RenderQuality, String> {
    s.parse().map_err(|e: w4rl_envs::EnvError| e.to_string())
}

impl RenderArgs {
    /// The environment config of these options at a frame size and horizon (0 = the task's own).
    fn env_config(&self, image_size: usize, max_steps: usize) -> EnvConfig {
        EnvConfig {
            image_size,
            max_steps: (max_steps > 0).then_some(max_steps),
            render: RenderOptions {
                quality: self.render,
                camera: self.camera.trim().to_string(),
            },
            ..EnvConfig::default()
        }
    }
}

/// Environment commands.
#[derive(Debug, Subcommand)]
pub enum EnvCmd {
    /// List every task of every suite.
    List {
        /// Print one JSON object `{"tasks": [...]}` as the last line.
        #[arg(long)]
        json: bool,
    },
    /// Success rate of a task's scripted expert over seeded episodes.
    Expert {
        /// Task name (see `env list`).
        task: String,
        /// Number of episodes (seeds SEED, SEED+1, ...).
        #[arg(long, default_value_t = 100)]
        episodes: usize,
        /// First seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print one JSON object as the last line.
        #[arg(long)]
        json: bool,
        /// Standard deviation of Gaussian noise added to the expert's actions (action units, 0 = none).
        #[arg(long, default_value_t = 0.0)]
        noise: f32,
        /// Episode length (0 = the task's own: 50 on the tabletop, 500 on Meta-World).
        #[arg(long, default_value_t = 0)]
        max_steps: usize,
        #[command(flatten)]
        render: RenderArgs,
    },
    /// Environment steps per second with frames, one environment on one thread.
    Bench {
        /// Task name (see `env list`).
        task: String,
        /// Frame side in pixels.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Number of steps to time.
        #[arg(long, default_value_t = 20_000)]
        steps: usize,
        /// Print one JSON object as the last line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        render: RenderArgs,
    },
    /// Write an animated GIF of an expert episode (goal drawn).
    Show {
        /// Task name (see `env list`).
        task: String,
        /// Output GIF file.
        #[arg(long)]
        out: PathBuf,
        /// Episode seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Frame side in pixels (the observation size).
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Upscaling factor of the GIF (default: enough for about 256 pixels).
        #[arg(long)]
        scale: Option<usize>,
    },
}

/// Runs an `env` subcommand.
pub fn run(cmd: EnvCmd) -> Result<()> {
    match cmd {
        EnvCmd::List { json } => {
            let tasks = list_tasks();
            if json {
                println!("{}", json!({ "tasks": tasks }));
            } else {
                println!(
                    "{:<14} {:<9} {:>6} {:>9}  description",
                    "task", "suite", "action", "max_steps"
                );
                for t in &tasks {
                    println!(
                        "{:<14} {:<9} {:>6} {:>9}  {}",
                        t.name, t.suite, t.action_dim, t.max_steps, t.description
                    );
                }
            }
        }
        EnvCmd::Expert {
            task,
            episodes,
            seed,
            json,
            noise,
            max_steps,
            render,
        } => {
            if episodes == 0 {
                bail!("--episodes is 0; pass at least 1 episode");
            }
            if !noise.is_finite() || noise < 0.0 {
                bail!("--noise is {noise}; pass a finite standard deviation >= 0");
            }
            let r = measure::expert_success(
                &task,
                episodes,
                seed,
                noise,
                &render.env_config(64, max_steps),
            )
            .with_context(|| format!("running the expert of `{task}`"))?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{}: success {:.1} % over {} episodes (seeds {}..{}), mean length {:.1} of {} steps, {:.1} s",
                    r.task,
                    100.0 * r.success_rate,
                    r.episodes,
                    r.seed,
                    r.seed + r.episodes as u64 - 1,
                    r.mean_length,
                    r.max_steps,
                    r.seconds
                );
                let [p50, p90, p95, max] = r.steps_to_success_quantiles;
                println!(
                    "steps to the first success: median {p50}, 90 % {p90}, 95 % {p95}, max {max}"
                );
                if !r.failed_seeds.is_empty() {
                    println!("failed seeds: {:?}", r.failed_seeds);
                }
            }
        }
        EnvCmd::Bench {
            task,
            size,
            steps,
            json,
            render,
        } => {
            if steps == 0 {
                bail!("--steps is 0; pass at least 1 step");
            }
            let r = measure::bench(&task, &render.env_config(size, 0), steps)
                .with_context(|| format!("benchmarking `{task}`"))?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{}: {:.0} env steps/s with {}x{} frames ({} steps, {} episodes, {:.2} s, one thread)",
                    r.task, r.steps_per_sec, r.size, r.size, r.steps, r.resets, r.seconds
                );
            }
        }
        EnvCmd::Show {
            task,
            out,
            seed,
            size,
            scale,
        } => {
            let scale = scale.unwrap_or_else(|| 256usize.div_ceil(size.max(1)).max(1));
            let s = gif::expert_gif(&task, seed, size, scale, None, &out)
                .with_context(|| format!("showing `{task}`"))?;
            let outcome = match s.episode.first_success {
                Some(t) => format!("success at step {t}"),
                None => "no success".to_string(),
            };
            println!(
                "wrote {} ({} frames, {}x{} px, {outcome})",
                out.display(),
                s.frames_written,
                size * scale,
                size * scale
            );
        }
    }
    Ok(())
}
