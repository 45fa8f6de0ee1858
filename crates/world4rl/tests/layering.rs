//! The learners (the world-model trainer, the classifier, BC and PPO, and the models and environment
//! they use) take loaded episodes and models and return models and statistics: none of their files
//! may name the run directory, the stage layer, or make a real environment. Only the stages
//! (`src/stages/`, `src/experiment/`) and the commands do that; the real-environment helpers
//! (`src/eval/`) and the utilities (`src/util/`) make environments but never name the run directory.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `file:line: word` for every forbidden word in the code (not the comments) of `files`.
fn reaching_outside(files: &[PathBuf], forbidden: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in forbidden {
                if code.contains(word) {
                    found.push(format!("{}:{}: {word}", f.display(), n + 1));
                }
            }
        }
    }
    found
}

/// What only the stage layer may name: the run directory and the stages.
const STAGE_LAYER: [&str; 6] = [
    "crate::experiment::run",
    "RunDir",
    "crate::stage",
    "crate::experiment::stage",
    "crate::experiment::pipeline",
    "done.json",
];

#[test]
fn learners_do_not_know_the_run_directory_or_the_real_environment() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for dir in [
        "world_model",
        "reward",
        "policy",
        "ppo",
        "diffusion",
        "models",
    ] {
        rust_files(&src.join(dir), &mut files);
    }
    for f in ["eval/paired.rs", "util/optim.rs", "util/frames.rs"] {
        files.push(src.join(f));
    }
    assert!(files.len() > 25, "{files:?}");
    let mut forbidden = STAGE_LAYER.to_vec();
    forbidden.extend(["evaluate_policy", "w4rl_envs::make", "SyncVecEnv::make"]);
    let found = reaching_outside(&files, &forbidden);
    assert!(
        found.is_empty(),
        "learner files reach outside:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_real_environment_helpers_and_utilities_do_not_know_the_stage_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for dir in ["eval", "util"] {
        rust_files(&src.join(dir), &mut files);
    }
    assert!(files.len() > 10, "{files:?}");
    let found = reaching_outside(&files, &STAGE_LAYER);
    assert!(
        found.is_empty(),
        "real-environment or utility files reach into the stage layer:\n{}",
        found.join("\n")
    );
}
