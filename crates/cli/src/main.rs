//! The `world4rl` command-line tool. Run `world4rl --help`.

mod cmd_collect;
mod cmd_data;
mod cmd_env;
mod cmd_eval;
mod cmd_export;
mod cmd_play;
mod cmd_refine;
mod cmd_run;
mod cmd_train;
mod cmd_world_model;
mod output;
mod play_engine;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// World4RL in Rust: pre-train a diffusion world model on multi-task robot data, then refine an
/// imitation policy with PPO entirely inside it.
#[derive(Debug, Parser)]
#[command(name = "world4rl", version, about, propagate_version = true)]
struct Cli {
    /// Device for tensors: cpu, cuda, cuda:N or auto.
    #[arg(long, global = true, default_value = "cpu")]
    device: String,
    /// libtorch threads (default: the machine's cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Seed overriding the config's experiment seed.
    #[arg(long, global = true)]
    seed: Option<u64>,
    /// Let learners train on a dataset whose index lists episodes that are gone (by default such a
    /// dataset is refused; `world4rl data verify` lists what is missing).
    #[arg(long, global = true)]
    allow_missing: bool,
    /// Log more (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the paper's data recipe (expert, policy-rollout and random episodes per task).
    Collect(cmd_collect::CollectArgs),
    /// Inspect and verify episode datasets.
    #[command(subcommand)]
    Data(cmd_data::DataCmd),
    /// Environments: list tasks, run scripted experts, benchmark, render GIFs.
    #[command(subcommand)]
    Env(cmd_env::EnvCmd),
    /// Experiment configs.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Train a stage-1 learner.
    #[command(subcommand)]
    Train(TrainCmd),
    /// Write a GIF of a real held-out episode beside the world model's replay of its actions.
    Dream(cmd_world_model::DreamArgs),
    /// Evaluate the world model or a policy.
    #[command(subcommand)]
    Eval(EvalCmd),
    /// Refine BC policies with PPO inside the frozen world model (per task).
    Refine(cmd_refine::RefineArgs),
    /// The whole experiment: collect, BC, rollouts, world model, classifier, PPO, evaluation, report.
    Run(cmd_run::RunArgs),
    /// Independent end-to-end replicates of one experiment (every seed different) and the
    /// replication report: refined against BC* and the controls, pooled over replicates.
    Replicate(cmd_run::ReplicateArgs),
    /// One stage of `world4rl run` in a run directory, exactly as the run would.
    Stage(cmd_run::StageArgs),
    /// Export a policy for use outside world4rl.
    #[command(subcommand)]
    Export(cmd_export::ExportCmd),
    /// Play inside the run's world model from a browser page (keys or a policy drive; the classifier
    /// judges every frame; the real environment beside it with --real).
    Play(cmd_play::PlayArgs),
}

#[derive(Debug, Subcommand)]
enum TrainCmd {
    /// The diffusion world model (EDM, all tasks pooled).
    WorldModel(cmd_world_model::TrainArgs),
    /// The per-task success classifier (expert + policy-rollout frames).
    Reward(cmd_train::TrainArgs),
    /// The per-task Gaussian BC policy (expert episodes only).
    Bc(cmd_train::TrainArgs),
}

#[derive(Debug, Subcommand)]
enum EvalCmd {
    /// Open-loop PSNR/SSIM per horizon on held-out episodes, next to copy-last-frame.
    WorldModel(cmd_world_model::EvalArgs),
    /// Success rate of a policy in the real environment, with a 95 % Wilson interval.
    Policy(cmd_eval::EvalPolicyArgs),
    /// Two policies on the same imagined episodes (the refinement's acceptance check).
    Imagined(cmd_eval::EvalImaginedArgs),
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Parse a config (unknown keys and wrong types are errors) and print it with every default filled
    /// in, followed by the values every stage derives from it (seeds, image sizes, precision).
    Check {
        /// The TOML file.
        config: std::path::PathBuf,
    },
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// SIGINT / SIGTERM: the first asks the running stage to stop at its next safe point (see
/// `world4rl::util::interrupt`), the second exits at once (exit code 130).
fn install_interrupt_handler() {
    let result = ctrlc::set_handler(|| {
        if world4rl::util::interrupt::stop_requested() {
            eprintln!("\nsecond interrupt: exiting now (every write is atomic; run the same command again to resume)");
            std::process::exit(130);
        }
        world4rl::util::interrupt::request_stop();
        eprintln!("\ninterrupt: stopping at the next safe point (interrupt again to exit at once)");
    });
    if let Err(e) = result {
        tracing::warn!("no clean stop on Ctrl-C: {e}");
    }
}

fn main() -> ExitCode {
    // before the first tensor: freed tensors' memory is reused, not unmapped (docs/speed.md)
    if let Err(e) = world4rl::util::alloc::keep_freed_memory() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    init_logging(cli.verbose);
    install_interrupt_handler();
    let threads = cli
        .threads
        .unwrap_or_else(world4rl::util::device::default_threads);
    world4rl::util::device::set_threads(threads);
    w4rl_data::set_allow_missing(cli.allow_missing);
    let result = (|| -> anyhow::Result<bool> {
        let device = world4rl::util::device::resolve(&cli.device)?;
        match cli.cmd {
            Cmd::Collect(a) => cmd_collect::run(a, device, cli.seed).map(|_| true),
            Cmd::Data(c) => cmd_data::run(c),
            Cmd::Env(c) => cmd_env::run(c).map(|_| true),
            Cmd::Train(TrainCmd::WorldModel(a)) => {
                cmd_world_model::train(a, device, cli.seed).map(|_| true)
            }
            Cmd::Train(TrainCmd::Reward(a)) => {
                cmd_train::train_reward(a, device, cli.seed).map(|_| true)
            }
            Cmd::Train(TrainCmd::Bc(a)) => cmd_train::train_bc(a, device, cli.seed).map(|_| true),
            Cmd::Refine(a) => cmd_refine::refine(a, device, cli.seed).map(|_| true),
            Cmd::Eval(EvalCmd::Policy(a)) => {
                cmd_eval::eval_policy(a, device, cli.seed).map(|_| true)
            }
            Cmd::Eval(EvalCmd::Imagined(a)) => {
                cmd_eval::eval_imagined(a, device, cli.seed).map(|_| true)
            }
            Cmd::Dream(a) => cmd_world_model::dream(a, device, cli.seed).map(|_| true),
            Cmd::Eval(EvalCmd::WorldModel(a)) => {
                cmd_world_model::eval(a, device, cli.seed).map(|_| true)
            }
            Cmd::Run(a) => cmd_run::run(a, device, cli.seed).map(|_| true),
            Cmd::Stage(a) => cmd_run::stage(a, device, cli.seed).map(|_| true),
            Cmd::Replicate(a) => cmd_run::replicate(a, device).map(|_| true),
            Cmd::Export(c) => cmd_export::run(c).map(|_| true),
            Cmd::Play(a) => cmd_play::play(a, device).map(|_| true),
            Cmd::Config(ConfigCmd::Check { config }) => {
                let cfg = world4rl::experiment::config::ExperimentConfig::load(&config)?;
                print!("{}", toml::to_string_pretty(&cfg)?);
                // what the stages train with (as comments, so the output stays a loadable config)
                let r = cfg.resolve();
                println!("\n# resolved (what every stage trains with; world4rl run and the stage commands alike):");
                println!("#   reward.seed = {}  bc.seed = {}  refine.ppo.seed = {}  world_model.seed = {}  (each XOR experiment.seed)", r.reward.seed, r.bc.seed, r.refine.ppo.seed, r.world_model.seed);
                println!("#   reward.image_size = {}  bc.image_size = {}  (0 = the world model's frame size)", r.reward.image_size, r.bc.image_size);
                let sampler = r.reward.world_model_sampler.as_ref().map_or_else(
                    || "the world model's".to_string(),
                    |s| format!("{:?}, {} steps", s.kind, s.steps),
                );
                println!(
                    "#   reward.world_model_precision = {}  reward.world_model_channels_last = {}  reward.world_model_sampler = {}  (from [refine])",
                    r.reward.world_model_precision, r.reward.world_model_channels_last, sampler
                );
                Ok(true)
            }
        }
    })();
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) if world4rl::util::interrupt::is_interrupted(&e) => {
            eprintln!("{e:#}");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
