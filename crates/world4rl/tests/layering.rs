//! The learners (the world-model trainer, the classifier, BC and PPO, and the models and environment
//! they use) take loaded episodes and models and return models and statistics: none of their files
//! may name the run directory, the stage layer, or make a real environment. Only the stages
//! (`src/stages/`) and the commands do that.

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
    for f in [
        "imagined_env.rs",
        "acceptance.rs",
        "outcome.rs",
        "closed_loop.rs",
        "optim.rs",
        "frames.rs",
        "paired.rs",
    ] {
        files.push(src.join(f));
    }
    assert!(files.len() > 25, "{files:?}");
    let forbidden = [
        "crate::run",
        "RunDir",
        "crate::stage",
        "crate::pipeline",
        "done.json",
        "evaluate_policy",
        "w4rl_envs::make",
        "SyncVecEnv::make",
    ];
    let mut found = Vec::new();
    for f in &files {
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
    assert!(
        found.is_empty(),
        "learner files reach outside:\n{}",
        found.join("\n")
    );
}
