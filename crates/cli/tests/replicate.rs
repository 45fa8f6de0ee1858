//! `world4rl replicate` on the tiny config end to end: two independent replicates, the replication
//! report pooled over them, and the three seed sets kept apart (no validation or test scene reaches a
//! learner; every reported number is on test scenes).

mod common;

use std::path::{Path, PathBuf};

use common::world4rl;
use world4rl::util::seeds::Split;

/// The tiny config with the demo's start: refinement and its ceilings start from filtered BC.
fn config(dir: &Path) -> PathBuf {
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/tabletop-tiny.toml");
    let text = std::fs::read_to_string(tiny).unwrap();
    let from_bc = "\nstart = \"bc\"\n";
    assert_eq!(text.matches(from_bc).count(), 1);
    let path = dir.join("tiny-from-filtered.toml");
    std::fs::write(
        &path,
        text.replacen(from_bc, "\nstart = \"bc-filtered\"\n", 1),
    )
    .unwrap();
    path
}

/// The reset seeds of every episode of a dataset folder.
fn episode_seeds(dir: &Path) -> Vec<u64> {
    let ds = w4rl_data::Dataset::open(dir).unwrap();
    ds.load_where(|_| true)
        .unwrap()
        .iter()
        .map(|e| e.meta.seed)
        .collect()
}

#[test]
fn replicates_run_end_to_end_and_pool_on_test_scenes_only() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rep");
    let (cfg, out_s) = (config(dir.path()), out.to_str().unwrap().to_string());
    let cfg_s = cfg.to_str().unwrap();

    // a seed named twice is refused before anything runs
    let o = world4rl(&["replicate", cfg_s, "--seeds", "1,1", "--out", &out_s]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("seed 1 twice"));
    assert!(!out.exists());

    let o = world4rl(&[
        "--threads",
        "1",
        "replicate",
        cfg_s,
        "--seeds",
        "1,2",
        "--out",
        &out_s,
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let rep: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();

    // both replicates, both tasks, each with its paired comparison and the machine it ran on
    assert_eq!(rep["replicates"].as_array().unwrap().len(), 2);
    assert!(rep["missing"].as_array().unwrap().is_empty());
    let rows = rep["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "{rows:?}");
    for r in rows {
        assert_eq!(r["episodes"], 6);
        let g = &r["gain"];
        assert!(g["lo"].as_f64().unwrap() <= g["diff"].as_f64().unwrap());
        assert!(g["diff"].as_f64().unwrap() <= g["hi"].as_f64().unwrap());
        assert!(r["over_filtered"].is_object() && r["ceiling_true"].is_number());
    }
    for (_, machines) in rep["replicates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x[0].clone(), x[1].clone()))
    {
        assert!(machines[0]["threads"].as_u64().unwrap() >= 1);
    }
    let pooled = rep["pooled"].as_array().unwrap();
    assert_eq!(pooled.len(), 2);
    for p in pooled {
        assert_eq!(p["gain"]["replicates"], 2);
        let poi = p["gain"]["probability_of_improvement"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&poi));
    }
    let md = std::fs::read_to_string(out.join("replication.md")).unwrap();
    for needle in [
        "## Pooled over replicates",
        "| push-block |",
        "| slide-handle |",
        "## Every replicate",
        "## Machines",
    ] {
        assert!(
            md.contains(needle),
            "replication.md lacks '{needle}':\n{md}"
        );
    }
    // the figure beside it: both replicates in both panels
    let svg = std::fs::read_to_string(out.join("replication.svg")).unwrap();
    for needle in [
        "seed 1, paired 95 %",
        "seed 2, paired 95 %",
        "refined − filtered BC",
    ] {
        assert!(svg.contains(needle), "replication.svg lacks '{needle}'");
    }

    // the seed sets: every episode any learner trains on (and the held-out rollouts) has a training
    // seed; the replicates saw different scenes
    let mut per_rep = Vec::new();
    for seed in [1, 2] {
        let run = out.join(format!("seed-{seed}"));
        let mut seeds = episode_seeds(&run.join("dataset"));
        seeds.extend(episode_seeds(&run.join("heldout")));
        assert!(!seeds.is_empty());
        for s in &seeds {
            assert_eq!(
                Split::of_seed(*s),
                None,
                "seed {s:#x} is not a training seed"
            );
        }
        // every reported number is on test scenes; BC's choice was made on validation scenes
        let eval: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("eval/done.json")).unwrap())
                .unwrap();
        for row in eval["record"].as_array().unwrap() {
            for p in row["policies"].as_array().unwrap() {
                for t in p["test"].as_array().unwrap() {
                    assert_eq!(t["split"], "test", "{t}");
                    assert_eq!(t["outcomes"].as_array().unwrap().len(), 6);
                }
            }
        }
        let bc: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(run.join("bc/push-block/done.json")).unwrap(),
        )
        .unwrap();
        let cands = bc["record"]["choice"]["candidates"].as_array().unwrap();
        // two checkpoints (steps 30 and 60) in three modes (mean, sampled, sampled σ ≤ cap)
        assert_eq!(cands.len(), 6, "{cands:?}");
        assert!(cands.iter().all(|c| c["episodes"] == 4));
        // refinement and both ceilings started from the replicate's filtered BC
        for stage in ["refine", "refine-real", "refine-true"] {
            let last = run.join(stage).join("push-block/last.safetensors");
            let (_, meta) =
                world4rl::policy::gaussian::GaussianPolicy::load(&last, tch::Device::Cpu).unwrap();
            let start = meta["initial_policy"].as_str().unwrap_or_default();
            assert!(
                start.ends_with("bc-filtered/push-block/policy.safetensors"),
                "{stage}: {meta}"
            );
        }
        seeds.sort();
        per_rep.push(seeds);
    }
    assert_ne!(per_rep[0], per_rep[1], "the replicates share their scenes");

    // the report re-reads from what is there, running nothing
    let before = std::fs::read_to_string(out.join("replication.json")).unwrap();
    let o = world4rl(&[
        "replicate",
        cfg_s,
        "--seeds",
        "1,2,3",
        "--out",
        &out_s,
        "--report-only",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!out.join("seed-3").exists());
    let after: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("replication.json")).unwrap())
            .unwrap();
    assert_eq!(after["missing"], serde_json::json!([3]));
    let before: serde_json::Value = serde_json::from_str(&before).unwrap();
    assert_eq!(after["pooled"], before["pooled"]);

    // a replicate's record kept apart from its models (scripts/archive_run.sh) pools exactly as the
    // run does: the same rows, the same pooled intervals, the same machines
    let archive = dir.path().join("archive");
    let archive_run = |run: &Path, dest: &Path| {
        std::process::Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/archive_run.sh"))
            .arg(run)
            .arg(dest)
            .output()
            .unwrap()
    };
    for seed in [1, 2] {
        let o = archive_run(
            &out.join(format!("seed-{seed}")),
            &archive.join(format!("seed-{seed}")),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let mut kept = Vec::new();
    let mut stack = vec![archive.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                kept.push(e.path());
            }
        }
    }
    assert!(
        kept.iter()
            .all(|p| ["json", "toml", "md", "svg"]
                .contains(&p.extension().unwrap().to_str().unwrap())),
        "the archive holds more than records: {kept:?}"
    );
    let o = world4rl(&[
        "replicate",
        cfg_s,
        "--seeds",
        "1,2",
        "--out",
        archive.to_str().unwrap(),
        "--report-only",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let from_archive: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    for key in ["rows", "pooled", "replicates", "missing"] {
        assert_eq!(from_archive[key], before[key], "{key}");
    }

    // a control: the same seeds elsewhere. Against its own archive nothing differs: every refined
    // policy equals its control scene by scene
    // the report of seeds 1 and 2 against a control folder, with the JSON line
    let against = |control: &Path| {
        world4rl(&[
            "replicate",
            cfg_s,
            "--seeds",
            "1,2",
            "--out",
            &out_s,
            "--report-only",
            "--control",
            control.to_str().unwrap(),
            "--json",
        ])
    };
    let o = against(&archive);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let with: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let control = &with["control"];
    assert_eq!(control["seeds"], serde_json::json!([1, 2]));
    assert_eq!(control["settings"], serde_json::json!([]));
    for t in control["tasks"].as_array().unwrap() {
        assert_eq!(t["gain"], t["control_gain"], "{t}");
        let d = &t["refined_difference"];
        assert_eq!(
            (d["mean"].as_f64(), d["lo"].as_f64(), d["hi"].as_f64()),
            (Some(0.0), Some(0.0), Some(0.0)),
            "{t}"
        );
        assert_eq!(t["per_seed"].as_array().unwrap().len(), 2);
    }
    assert!(stdout.contains("## Against the control"));
    // a control whose refined policy failed every test scene of seed 1: the difference there is this
    // set's refined success rate, and the setting (another value of a key) is named
    let doctored = dir.path().join("control");
    for seed in [1, 2] {
        let o = archive_run(
            &out.join(format!("seed-{seed}")),
            &doctored.join(format!("seed-{seed}")),
        );
        assert!(o.status.success());
    }
    let eval_path = doctored.join("seed-1/eval/done.json");
    let mut eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&eval_path).unwrap()).unwrap();
    let mut refined_here = Vec::new();
    for row in eval["record"].as_array_mut().unwrap() {
        let task = row["task"].as_str().unwrap().to_string();
        for p in row["policies"].as_array_mut().unwrap() {
            if p["name"] == "refined" {
                let mode = p["mode"].clone();
                for t in p["test"].as_array_mut().unwrap() {
                    let n = t["outcomes"].as_array().unwrap().len();
                    if t["mode"] == mode {
                        let wins = t["outcomes"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .filter(|v| v.as_u64() == Some(1))
                            .count();
                        refined_here.push((task.clone(), wins as f64 / n as f64));
                    }
                    t["outcomes"] = serde_json::json!(vec![0; n]);
                }
            }
        }
    }
    std::fs::write(&eval_path, serde_json::to_string(&eval).unwrap()).unwrap();
    let cfg_path = doctored.join("seed-1/config.toml");
    let mut v: toml::Value = toml::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    v["refine"]
        .as_table_mut()
        .unwrap()
        .insert("made_up_setting".into(), toml::Value::Integer(1));
    std::fs::write(&cfg_path, toml::to_string(&v).unwrap()).unwrap();
    let o = against(&doctored);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let with: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(
        with["control"]["settings"],
        serde_json::json!(["refine.made_up_setting: 1 → -"])
    );
    assert_eq!(refined_here.len(), 2);
    for (task, rate) in &refined_here {
        let t = with["control"]["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["task"] == task.as_str())
            .unwrap();
        let (seed, d) = (&t["per_seed"][0][0], &t["per_seed"][0][1]);
        assert_eq!(seed, 1);
        assert!(
            (d["diff"].as_f64().unwrap() - rate).abs() < 1e-12,
            "{task}: {d} against {rate}"
        );
    }
    // test scenes that differ are refused, and a missing control is refused before anything runs
    let mut v: toml::Value = toml::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    v["eval"]["episodes"] = toml::Value::Integer(999);
    std::fs::write(&cfg_path, toml::to_string(&v).unwrap()).unwrap();
    let o = against(&doctored);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("same test scenes"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = world4rl(&[
        "replicate",
        cfg_s,
        "--seeds",
        "3",
        "--out",
        &out_s,
        "--control",
        dir.path().join("none").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no such folder"));
    assert!(!out.join("seed-3").exists());
    // a run without a finished evaluation is not archived
    let o = archive_run(&dir.path().join("nowhere"), &archive.join("seed-9"));
    assert!(!o.status.success());
    assert!(!archive.join("seed-9").exists());
}
