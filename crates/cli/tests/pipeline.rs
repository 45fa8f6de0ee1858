//! The tiny pipeline end to end: every stage's artifacts exist and are valid, and a run killed at a
//! random moment completes on re-run without redoing finished stages and without corrupt files.

mod common;

use common::tensors;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const STAGES: [&str; 14] = [
    "collect-expert",
    "bc/push-block",
    "bc/slide-handle",
    "collect-rollouts",
    "collect-heldout",
    "bc-filtered/push-block",
    "bc-filtered/slide-handle",
    "world_model",
    "reward/push-block",
    "reward/slide-handle",
    "refine/push-block",
    "refine/slide-handle",
    "eval",
    "fidelity",
];

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_world4rl"));
    c.env("WORLD4RL_NO_PROGRESS", "1").env("RUST_LOG", "warn");
    c
}

fn config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/tabletop-tiny.toml")
}

fn run_to_end(out: &Path) {
    let o = bin()
        .args(["--threads", "1", "run"])
        .arg(config())
        .arg("--out")
        .arg(out)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "run failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn done_times(out: &Path) -> Vec<(String, SystemTime)> {
    let mut v = Vec::new();
    for s in STAGES {
        if let Ok(m) = std::fs::metadata(out.join(s).join("done.json")) {
            v.push((s.to_string(), m.modified().unwrap()));
        }
    }
    v
}

/// The JSON object a successful `--json` command printed as its last line.
fn last_json(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let last = stdout.lines().last().expect("no output");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"))
}

fn check_artifacts(out: &Path) {
    // every stage finished
    for s in STAGES.iter().chain(
        [
            "refine/push-block",
            "refine/slide-handle",
            "refine-real/push-block",
            "refine-real/slide-handle",
            "refine-true/push-block",
            "refine-true/slide-handle",
            "report",
        ]
        .iter(),
    ) {
        assert!(
            out.join(s).join("done.json").exists(),
            "stage {s} has no done.json"
        );
    }
    // the dataset verifies
    let o = bin()
        .args(["data", "verify"])
        .arg(out.join("dataset"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // checkpoints load: evaluate the refined policy, world-model fidelity from the CLI
    let o = bin()
        .args(["eval", "policy", "--policy"])
        .arg(out.join("refine/push-block/best.safetensors"))
        .args(["--task", "push-block", "--episodes", "2", "--json"])
        .output()
        .unwrap();
    let v = last_json(&o);
    assert_eq!(v["episodes"], 2);
    // the refined policy exports to a Python policy folder; a folder of other files is refused
    let tmp = tempfile::tempdir().unwrap();
    let export = tmp.path().join("push-block");
    let o = bin()
        .args(["export", "policy"])
        .arg(out.join("refine/push-block/best.safetensors"))
        .arg("--out")
        .arg(&export)
        .arg("--json")
        .output()
        .unwrap();
    assert!(last_json(&o)["tensors"].as_u64().unwrap() > 0);
    for f in ["config.json", "model.safetensors", "world4rl_policy.py"] {
        assert!(export.join(f).exists(), "{f} missing");
    }
    let o = bin()
        .args(["export", "policy"])
        .arg(out.join("refine/push-block/best.safetensors"))
        .arg("--out")
        .arg(out.join("dataset"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("already holds other files"));
    let o = bin()
        .args(["eval", "world-model", "--run"])
        .arg(out)
        .arg("--data")
        .arg(out.join("dataset"))
        .args(["--horizon", "2", "--outcomes", "2", "--resets", "1,5"])
        .args(["--action-use", "16", "--success-frames", "2", "--json"])
        // all 3 held-out scenes, so that the policy acts on batches of the same size as in
        // `collect --heldout-seeds` below: a matrix product's rounding can depend on the batch size
        .args(["--closed-loop", "3", "--closed-loop-out"])
        .arg(out.join("closed-loop"))
        .output()
        .unwrap();
    let v = last_json(&o);
    // closed loop: the BC policies' own rollouts, scored with the policy acting in imagination
    let closed = v["closed_loop"]
        .as_array()
        .expect("closed_loop in the JSON");
    assert_eq!(
        closed.len(),
        2,
        "one per task of the tiny config: {closed:?}"
    );
    for o in closed {
        let g = &o["agreement"];
        assert_eq!(
            (&g["episodes"], &g["heldout"]),
            (&3.into(), &true.into()),
            "{o}"
        );
        assert!(g["auc_by_reset"].as_array().unwrap().is_empty(), "{o}");
        let r = g["imagined_success_rate"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&r), "{o}");
    }
    let outcomes = v["outcomes"].as_array().expect("outcomes in the JSON");
    assert!(!outcomes.is_empty());
    for o in outcomes {
        // 2 of the 3 held-out rollouts per task (RUN/heldout), replayed whole and with resets
        let g = &o["agreement"];
        assert_eq!(g["episodes"], 2, "{o}");
        assert_eq!(g["heldout"], true, "{o}");
        assert_eq!(g["success_frames"], 2, "{o}");
        assert_eq!(g["auc_by_reset"].as_array().unwrap().len(), 2, "{o}");
        let a = g["agreement"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&a), "{o}");
    }
    let ratio = v["action_use"]["ratio"]
        .as_f64()
        .expect("action use in the JSON");
    assert!(ratio.is_finite() && ratio > 0.0);
    // the held-out rollouts are a dataset of their own, disjoint from the training one
    let held = std::fs::read_dir(out.join("heldout/episodes/push-block"))
        .unwrap()
        .count();
    assert_eq!(held, 3);
    // `collect --policy BC --heldout-seeds` records exactly the held-out rollouts again (same scenes,
    // same draws); with --mean the same scenes and other actions
    let rec = out.join("recorded");
    for (dir, mean) in [("sampled", false), ("mean", true)] {
        let mut c = bin();
        c.args(["--threads", "1", "collect", "--config"])
            .arg(config())
            .arg("--out")
            .arg(rec.join(dir))
            .arg("--policy")
            .arg(out.join("bc/push-block/policy.safetensors"))
            .arg("--heldout-seeds");
        if mean {
            c.arg("--mean");
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    for i in 0..3 {
        let name = format!("episodes/push-block/policy-{i:05}.safetensors");
        let (orig, again, mean) = (
            std::fs::read(out.join("heldout").join(&name)).unwrap(),
            std::fs::read(rec.join("sampled").join(&name)).unwrap(),
            std::fs::read(rec.join("mean").join(&name)).unwrap(),
        );
        assert!(orig == again, "{name}: the recorded rollout differs");
        assert!(
            orig != mean,
            "{name}: mean actions recorded the sampled rollout"
        );
    }
    let meta = |p: PathBuf| w4rl_data::read_episode(&p).unwrap().meta;
    let (a, b) = (
        meta(out.join("heldout/episodes/push-block/policy-00000.safetensors")),
        meta(rec.join("mean/episodes/push-block/policy-00000.safetensors")),
    );
    assert_eq!(a.seed, b.seed, "not the held-out scene");
    // the closed-loop check recorded the BC policy's mean-action rollouts of the held-out scenes:
    // exactly what `collect --heldout-seeds --mean` records
    for i in 0..3 {
        let name = format!("episodes/push-block/policy-{i:05}.safetensors");
        assert!(
            std::fs::read(out.join("closed-loop").join(&name)).unwrap()
                == std::fs::read(rec.join("mean").join(&name)).unwrap(),
            "{name}: the closed-loop check recorded another rollout"
        );
    }
    std::fs::remove_dir_all(&rec).unwrap();
    // an existing folder for the closed-loop rollouts is refused before any work
    let o = bin()
        .args(["eval", "world-model", "--run"])
        .arg(out)
        .arg("--data")
        .arg(out.join("dataset"))
        .args(["--closed-loop", "2", "--closed-loop-out"])
        .arg(out.join("closed-loop"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::remove_dir_all(out.join("closed-loop")).unwrap();
    // the report has its tables
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for needle in [
        "| machine(s) the stages ran on |",
        "## Refined against BC* and the controls on 6 test scenes",
        "| refined − BC*, points |",
        "| refined − filtered BC |",
        "| ceiling (true reward) |",
        "## Every policy in every action mode on the test scenes",
        "| filtered BC |",
        "## Success rate in the real environment",
        "| Δ points [95 % CI] |",
        "| push-block |",
        "| slide-handle |",
        "## World-model fidelity",
        "| 1 |",
        "## Reward classifier, held-out episodes",
        "| F1 imagined |",
        "## Imagination against reality",
        "## Whole-episode outcomes",
        "| AUC [95 % CI] |",
        "held-out",
        "world-model action use",
        "## Imagined against real success per policy",
        "| BC, sampled (held-out) | 3 |",
        "| refined, mean action | 3 |",
        "## Ceiling control",
        "## Success with sampled actions",
        "| BC, sampled |",
        "## Training curves",
    ] {
        assert!(md.contains(needle), "report.md lacks '{needle}':\n{md}");
    }
    // the refined policy and the ceilings were chosen on validation scenes among the start (iteration
    // 0), the snapshots every `refine.checkpoint_every` iterations and the last checkpoint, each in
    // every action mode; the standing file is the chosen candidate
    for (stage, field) in [
        ("refine/push-block", "policy"),
        ("refine-real/push-block", ""),
        ("refine-true/slide-handle", ""),
    ] {
        let done: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join(stage).join("done.json")).unwrap())
                .unwrap();
        let choice = &done["record"]["choice"];
        let cands = choice["candidates"].as_array().expect("a choice was made");
        let mut steps: Vec<u64> = cands.iter().map(|c| c["step"].as_u64().unwrap()).collect();
        steps.dedup();
        assert_eq!(steps, vec![0, 2, 3], "{stage}: {choice}");
        assert!(out.join(stage).join("iter-0002.safetensors").exists());
        let chosen = &cands[choice["chosen"].as_u64().unwrap() as usize];
        let best = cands.iter().map(|c| c["successes"].as_u64().unwrap()).max();
        assert_eq!(chosen["successes"].as_u64(), best, "{stage}: {choice}");
        if !field.is_empty() {
            let standing = done["record"][field].as_str().unwrap();
            assert!(
                std::fs::read(standing).unwrap()
                    == std::fs::read(chosen["path"].as_str().unwrap()).unwrap(),
                "{stage}: the standing policy is not the chosen candidate"
            );
        }
    }
    assert!(md.contains("| refined (mode, iteration) |"), "{md}");
    // the BC-against-refined chart, and the report's own record of its files
    assert!(out.join("plots/success.svg").exists());
    assert!(md.contains("## Stage wall-clock (minutes) and peak resident memory (MiB)"));
    // every stage records its peak memory (Linux): the world model's row has a number of MiB
    let wm_row = md
        .lines()
        .find(|l| l.starts_with("| world_model |"))
        .unwrap_or_else(|| panic!("no world_model row in the stage table:\n{md}"));
    let cells: Vec<&str> = wm_row.split('|').map(str::trim).collect();
    if cfg!(target_os = "linux") {
        let mib: f64 = cells[3]
            .parse()
            .unwrap_or_else(|_| panic!("peak cell: {wm_row}"));
        assert!(mib > 10.0, "{wm_row}");
    }
    assert!(md.contains("| all stages |"));
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("<table>")
            && html.contains("<svg")
            && html.contains("data:image/gif;base64,")
    );
}

#[test]
fn tiny_pipeline_runs_and_resumes_after_a_kill() {
    let dir = tempfile::tempdir().unwrap();

    // 1. a clean run, timed, for the artifact checks
    let clean = dir.path().join("clean");
    let t0 = Instant::now();
    run_to_end(&clean);
    let full = t0.elapsed();
    check_artifacts(&clean);

    // 2. a run killed at a pseudo-random moment within the clean run's duration, then re-run
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let frac = 0.15 + 0.7 * ((seed % 1000) as f64 / 1000.0);
    let kill_after = full.mul_f64(frac);
    let out = dir.path().join("killed");
    let mut child = bin()
        .args(["--threads", "1", "run"])
        .arg(config())
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    // a second `run` on the same folder while the first holds it is refused, naming the first
    let lock = out.join(".world4rl.lock");
    while std::fs::read_to_string(&lock)
        .unwrap_or_default()
        .is_empty()
    {
        assert!(child.try_wait().unwrap().is_none(), "the run ended at once");
        std::thread::sleep(Duration::from_millis(5));
    }
    let second = bin()
        .args(["--threads", "1", "run"])
        .arg(config())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{err}");
    assert!(
        err.contains(&format!("in use by process {}", child.id())),
        "{err}"
    );
    while t.elapsed() < kill_after {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill(); // SIGKILL: no clean-up code runs
    let _ = child.wait();
    eprintln!(
        "killed after {:.1}s of {:.1}s",
        kill_after.as_secs_f64(),
        full.as_secs_f64()
    );
    let before = done_times(&out);
    run_to_end(&out);
    let after = done_times(&out);
    for (stage, time) in &before {
        let again = after.iter().find(|(s, _)| s == stage).map(|(_, t)| *t);
        assert_eq!(
            again,
            Some(*time),
            "finished stage {stage} was redone after the restart"
        );
    }
    check_artifacts(&out);
    // the run that survived the refused one, killed and resumed, trained what the lone run trained
    for model in [
        "world_model/model.safetensors",
        "bc/push-block/policy.safetensors",
    ] {
        assert_eq!(
            tensors(&clean.join(model)),
            tensors(&out.join(model)),
            "{model} differs from the lone run's"
        );
    }

    // a refinement trained again makes the evaluation and the outcome check of its rollouts stale:
    // the next `run` redoes those two and the report, and nothing else
    std::fs::remove_file(out.join("refine/push-block/done.json")).unwrap();
    let o = bin()
        .args(["--threads", "1", "stage", "refine"])
        .arg(config())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let refined = done_times(&out);
    let report_before = std::fs::metadata(out.join("report/done.json"))
        .unwrap()
        .modified()
        .unwrap();
    run_to_end(&out);
    let after = done_times(&out);
    let at = |v: &[(String, SystemTime)], stage: &str| {
        v.iter()
            .find(|(s, _)| s == stage)
            .map(|(_, t)| *t)
            .unwrap_or_else(|| panic!("{stage} did not finish"))
    };
    let refine = at(&refined, "refine/push-block");
    assert!(
        at(&refined, "eval") < refine,
        "the refinement did not run again"
    );
    for stage in ["eval", "fidelity"] {
        assert!(at(&after, stage) > refine, "{stage} was not redone");
    }
    for (stage, time) in &refined {
        if !["eval", "fidelity"].contains(&stage.as_str()) {
            assert_eq!(at(&after, stage), *time, "{stage} was redone");
        }
    }
    let report_after = std::fs::metadata(out.join("report/done.json"))
        .unwrap()
        .modified()
        .unwrap();
    assert!(report_after > report_before, "the report was not refreshed");
}

/// Every file under `dir` (relative path, sorted) with the given extension.
fn files_with(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == ext) {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// Issue #15: the stage commands and `world4rl run` resolve the config once, the same way, so with a
/// non-zero experiment seed and the learners' image sizes left at 0 they train the same models: every
/// checkpoint's tensors, and every recorded episode's, are byte-identical (the metadata holds
/// timings and paths).
#[test]
fn stage_commands_train_what_world4rl_run_trains() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = std::fs::read_to_string(config()).unwrap();
    assert!(tiny.contains("seed = 0\n") && !tiny.contains("[bc]\nimage_size"));
    let cfg = dir.path().join("seed7.toml");
    std::fs::write(&cfg, tiny.replacen("seed = 0\n", "seed = 7\n", 1)).unwrap();
    let cfg_s = cfg.to_str().unwrap();
    let (whole, staged) = (dir.path().join("whole"), dir.path().join("staged"));
    let o = bin()
        .args(["--threads", "1", "run", cfg_s, "--out"])
        .arg(&whole)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // the same experiment through the stage commands, in the pipeline's order
    let s = staged.to_str().unwrap();
    let data = staged.join("dataset");
    let d = data.to_str().unwrap();
    let steps: Vec<Vec<&str>> = vec![
        vec!["stage", "collect-expert", cfg_s, "--out", s],
        vec!["train", "bc", "--config", cfg_s, "--data", d, "--out", s],
        vec!["stage", "collect-rollouts", cfg_s, "--out", s],
        vec!["stage", "collect-heldout", cfg_s, "--out", s],
        vec!["stage", "bc-filtered", cfg_s, "--out", s],
        vec![
            "train",
            "world-model",
            "--config",
            cfg_s,
            "--data",
            d,
            "--out",
            s,
        ],
        vec![
            "train", "reward", "--config", cfg_s, "--data", d, "--out", s,
        ],
        vec!["refine", "--config", cfg_s, "--run", s],
        vec!["refine", "--config", cfg_s, "--run", s, "--real-env"],
        vec!["stage", "refine-real", cfg_s, "--out", s],
        vec!["stage", "eval", cfg_s, "--out", s],
        vec!["stage", "fidelity", cfg_s, "--out", s],
        vec!["stage", "report", cfg_s, "--out", s],
    ];
    // `--task` on a stage that works on every task at once is refused before any episode is written
    let o = bin()
        .args([
            "--threads",
            "1",
            "stage",
            "collect-expert",
            cfg_s,
            "--out",
            s,
        ])
        .args(["--task", "push-block"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("`--task` narrows a per-task stage"),
        "{err}"
    );
    assert!(!data.exists());
    for args in &steps {
        let o = bin().args(["--threads", "1"]).args(args).output().unwrap();
        assert!(
            o.status.success(),
            "world4rl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let checkpoints = files_with(&whole, "safetensors");
    assert!(checkpoints.len() >= 12, "{checkpoints:?}");
    assert_eq!(checkpoints, files_with(&staged, "safetensors"));
    for c in &checkpoints {
        assert_eq!(
            tensors(&whole.join(c)),
            tensors(&staged.join(c)),
            "{} differs between world4rl run and the stage commands",
            c.display()
        );
    }
    // the episodes are safetensors files too: the datasets are the same, episode by episode
    assert!(checkpoints.iter().any(|c| c.starts_with("heldout")));
    assert!(checkpoints.iter().any(|c| c.starts_with("dataset")));
    let (_, meta) = {
        let bytes = std::fs::read(whole.join("bc/push-block/policy.safetensors")).unwrap();
        safetensors::SafeTensors::read_metadata(&bytes).unwrap()
    };
    let meta: serde_json::Value =
        serde_json::from_str(&meta.metadata().as_ref().unwrap()["world4rl"]).unwrap();
    assert_eq!(
        meta["spec"]["image_size"], 16,
        "image size 0 resolved to the world model's"
    );
    // every stage wrote one done.json, in one typed format
    for stage in STAGES {
        let v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(staged.join(stage).join("done.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            (v["format"].as_u64(), v["stage"].as_str()),
            (Some(2), Some(stage))
        );
    }
    // the fidelity stage imagines as refinement does: `[refine.sampler]` reaches its scores
    let fidelity_steps = |run: &Path| {
        let done = std::fs::read_to_string(run.join("fidelity/done.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&done).unwrap();
        v["record"]["scores"]["sampler_steps"].as_u64()
    };
    let trained = fidelity_steps(&whole);
    assert!(
        trained.is_some_and(|n| n > 1),
        "the world model's own sampler: {trained:?}"
    );
    let one_step = dir.path().join("one-step.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&one_step, format!("{text}\n[refine.sampler]\nsteps = 1\n")).unwrap();
    let fresh = dir.path().join("one-step");
    let o = bin()
        .args(["--threads", "1", "run"])
        .arg(&one_step)
        .arg("--out")
        .arg(&fresh)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(fidelity_steps(&fresh), Some(1));
}
