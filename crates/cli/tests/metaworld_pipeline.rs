//! `world4rl run` on Meta-World (`configs/metaworld-tiny.toml`): every stage of the pipeline on one task
//! of the paper's suite, with a render quality other than the default, which has to reach the dataset
//! and every policy trained on it. Needs the `mujoco` feature (`scripts/test.sh` runs it).
#![cfg(feature = "mujoco")]

mod common;

use std::path::Path;

use common::world4rl;

const TASK: &str = "metaworld/button-press";

fn config() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs/metaworld-tiny.toml")
        .display()
        .to_string()
}

#[test]
fn metaworld_tiny_pipeline_runs_end_to_end_and_keeps_its_render_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let out_s = out.display().to_string();
    let o = world4rl(&[
        "--threads",
        "1",
        "run",
        &config(),
        "--out",
        &out_s,
        "--json",
    ]);
    assert!(
        o.status.success(),
        "run failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    for stage in [
        "collect-expert",
        "collect-rollouts",
        "collect-heldout",
        "world_model",
        "eval",
        "fidelity",
        "report",
    ] {
        assert!(
            out.join(stage).join("done.json").exists(),
            "stage {stage} has no done.json"
        );
    }
    for stage in [
        "bc",
        "bc-filtered",
        "reward",
        "refine",
        "refine-real",
        "refine-true",
    ] {
        assert!(
            out.join(stage).join(TASK).join("done.json").exists(),
            "stage {stage}/{TASK} has no done.json"
        );
    }
    // the render quality of the config is the dataset's record and every policy's
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("dataset/dataset.json")).unwrap()).unwrap();
    assert_eq!(spec["render"]["quality"], "fast", "{spec}");
    for stage in ["bc", "bc-filtered", "refine"] {
        let path = out.join(stage).join(TASK).join("policy.safetensors");
        let (policy, _) = world4rl::policy::GaussianPolicy::load(&path, tch::Device::Cpu).unwrap();
        assert_eq!(policy.spec().render.quality, "fast", "{}", path.display());
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains(TASK), "the report has no row of {TASK}");
    assert!(
        report.contains("Gates") && report.contains("expert success within the horizon"),
        "the report has no gates"
    );
    // a second run finds everything done and changes nothing
    let before = std::fs::metadata(out.join("eval/done.json"))
        .unwrap()
        .modified()
        .unwrap();
    let o = world4rl(&[
        "--threads",
        "1",
        "run",
        &config(),
        "--out",
        &out_s,
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let after = std::fs::metadata(out.join("eval/done.json"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after, "a finished run was evaluated again");
}
