//! Writes a GIF of each tabletop task's expert for the README:
//! `cargo run -p w4rl-envs --release --example expert_gifs [OUT_DIR]` (default `docs/img`).
//!
//! Frames are 64x64 observations upscaled 3 times, at most 60 per GIF (subsampled, still in real time).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "docs/img".into()));
    for task in w4rl_envs::task_names() {
        let path = dir.join(format!("{task}.gif"));
        let s = w4rl_envs::gif::expert_gif(&task, 1, 64, 3, Some(60), &path)?;
        println!(
            "{}: {} frames (every {}), success at step {:?}",
            path.display(),
            s.frames_written,
            s.stride,
            s.episode.first_success
        );
    }
    Ok(())
}
