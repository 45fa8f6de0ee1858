//! Helpers shared by the CLI's integration tests (not every test binary uses each of them).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the `world4rl` binary with `args` (no progress bars, warnings and errors only in the log).
#[allow(dead_code)]
pub fn world4rl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_world4rl"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .env("WORLD4RL_NO_PROGRESS", "1")
        .env("RUST_LOG", "warn")
        .output()
        .expect("runs the binary")
}

/// Every tensor of a safetensors file, by name (the metadata, which holds timings, is left out).
#[allow(dead_code)]
pub fn tensors(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.data().to_vec()))
        .collect();
    v.sort();
    v
}

/// The project's `.venv` Python (installed by `scripts/setup.sh`).
#[allow(dead_code)]
pub fn python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh",
        p.display()
    );
    p
}
