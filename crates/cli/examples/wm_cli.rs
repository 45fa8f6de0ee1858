//! Scratch driver for the world-model commands until main.rs wires them (to be removed).
#[path = "../src/cmd_world_model.rs"]
mod cmd_world_model;
#[path = "../src/output.rs"]
mod output;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
struct Cli {
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[arg(long)]
    seed: Option<u64>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    Train(cmd_world_model::TrainArgs),
    Dream(cmd_world_model::DreamArgs),
    Eval(cmd_world_model::EvalArgs),
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .init();
    world4rl::device::set_threads(cli.threads);
    let dev = world4rl::device::resolve(&cli.device).unwrap();
    let r = match cli.cmd {
        Cmd::Train(a) => cmd_world_model::train(a, dev, cli.seed),
        Cmd::Dream(a) => cmd_world_model::dream(a, dev, cli.seed),
        Cmd::Eval(a) => cmd_world_model::eval(a, dev, cli.seed),
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
