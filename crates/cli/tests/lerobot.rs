//! LeRobot interop against the real `lerobot` package (0.4.x in the project's `.venv`, installed by
//! `scripts/setup-lerobot.sh`; video decoding needs the `ffmpeg` program):
//! * a dataset written by lerobot's own `LeRobotDataset.create` (an image camera, a video camera, two
//!   tasks, success flags) imports value by value, and the world model and BC train on the import;
//! * a tabletop dataset exported by world4rl loads in lerobot offline with the same frames, actions,
//!   states and flags.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::world4rl;
use serde_json::Value;
use w4rl_data::{Dataset, Episode};

fn ok(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "stdout: {out}\nstderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/lerobot_interop.py")
}

/// Runs `scripts/lerobot_interop.py MODE ROOT DUMP` and returns the dump.
fn lerobot(mode: &str, root: &Path, dump: &Path) -> Value {
    let o = Command::new(common::python())
        .arg(script())
        .args([mode, root.to_str().unwrap(), dump.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "lerobot_interop.py {mode} failed (is lerobot installed? run scripts/setup-lerobot.sh): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&std::fs::read(dump).unwrap()).unwrap()
}

fn f32s(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(a) => a.iter().flat_map(f32s).collect(),
        Value::Bool(b) => vec![*b as u8 as f32],
        v => vec![v.as_f64().unwrap() as f32],
    }
}

fn bytes(v: &Value) -> Vec<u8> {
    f32s(v).into_iter().map(|x| x as u8).collect()
}

fn int(v: &Value) -> usize {
    v.as_u64().unwrap() as usize
}

fn flag(v: &Value) -> bool {
    v.as_bool().unwrap_or_else(|| v.as_f64().unwrap() != 0.0)
}

/// The dump's rows of one LeRobot episode, in frame order.
fn rows_of(dump: &Value, episode: usize) -> Vec<usize> {
    let e = dump["episode_index"].as_array().unwrap();
    let mut rows: Vec<usize> = (0..e.len()).filter(|&i| int(&e[i]) == episode).collect();
    rows.sort_by_key(|&i| int(&dump["frame_index"][i]));
    rows
}

fn load_all(dir: &Path) -> Vec<Episode> {
    let ds = Dataset::open(dir).unwrap();
    (0..ds.entries().len())
        .map(|i| ds.load(i).unwrap())
        .collect()
}

fn import(src: &Path, out: &Path, camera: &str, size: usize) -> Value {
    let o = world4rl(&[
        "data",
        "import-lerobot",
        src.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--camera",
        camera,
        "--size",
        &size.to_string(),
        "--json",
    ]);
    let out = ok(&o);
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

/// Checks every imported episode against lerobot's own rows: actions, states, rewards and flags exactly
/// (see `w4rl_lerobot::import` for the alignment); returns the largest frame difference against
/// lerobot's decoded `camera`.
fn compare(imported: &[Episode], dump: &Value, camera: &str) -> u8 {
    let mut worst = 0u8;
    for ep in imported {
        let rows = rows_of(dump, ep.meta.seed as usize);
        let n = rows.len();
        assert_eq!(ep.meta.steps + 1, n, "one world4rl frame per LeRobot row");
        let task = dump["task"][rows[0]].as_str().unwrap();
        assert_eq!(ep.meta.task, w4rl_lerobot::task_name(task));
        assert_eq!(ep.success[0], 0);
        for (t, &r) in rows.iter().enumerate() {
            let frame = bytes(&dump[camera][r]);
            assert_eq!(frame.len(), ep.frame_len());
            for (a, b) in frame.iter().zip(ep.frame(t)) {
                worst = worst.max(a.abs_diff(*b));
            }
            assert_eq!(ep.state(t), f32s(&dump["observation.state"][r]).as_slice());
            let next_ok = flag(&dump["next.success"][r]);
            if t + 1 < n {
                assert_eq!(ep.action(t), f32s(&dump["action"][r]).as_slice());
                assert_eq!(ep.rewards[t], f32s(&dump["next.reward"][r])[0]);
                // the last frame also carries the flag of the last row's action (its frame is not stored)
                let last_ok = t + 2 == n && flag(&dump["next.success"][rows[n - 1]]);
                assert_eq!(ep.success[t + 1] != 0, next_ok || last_ok, "row {r}");
            }
        }
    }
    worst
}

#[test]
fn a_dataset_written_by_lerobot_imports_value_by_value_and_trains() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("lerobot");
    let dump = lerobot("make", &src, &dir.path().join("dump.json"));
    assert_eq!(dump["num_episodes"], 4);

    // the image camera (PNG in the parquet): frames exact
    let top = dir.path().join("top");
    let rep = import(&src, &top, "observation.images.top", 32);
    assert_eq!(rep["codebase_version"], "v3.0");
    assert_eq!(rep["video"], false);
    assert_eq!(rep["episodes"], 4);
    assert_eq!(rep["steps"], 42 - 4);
    assert_eq!(rep["successful_episodes"], 2);
    let eps = load_all(&top);
    let tasks: std::collections::BTreeSet<&str> =
        eps.iter().map(|e| e.meta.task.as_str()).collect();
    assert_eq!(
        tasks.into_iter().collect::<Vec<_>>(),
        ["pick-the-red-cube", "push-the-blue-ball"]
    );
    assert_eq!(compare(&eps, &dump, "observation.images.top"), 0);

    // the video camera (AV1 mp4, decoded by the ffmpeg program): the frames lerobot decodes itself
    let wrist = dir.path().join("wrist");
    let rep = import(&src, &wrist, "observation.images.wrist", 64);
    assert_eq!(rep["video"], true);
    let worst = compare(&load_all(&wrist), &dump, "observation.images.wrist");
    eprintln!("video frames: largest difference from lerobot's decoding {worst}");
    // both decode the same AV1 stream with FFmpeg and convert it to RGB the same way
    assert_eq!(
        worst, 0,
        "video frames differ from lerobot's by up to {worst}"
    );

    // the README's guide for imported data, at the tiny preset: the three learners, refinement in the
    // world model, and the imagined comparison that stands in for the real-env evaluation
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/tabletop-tiny.toml");
    let run = dir.path().join("run");
    for stage in ["world-model", "reward", "bc"] {
        ok(&world4rl(&[
            "--threads",
            "1",
            "train",
            stage,
            "--config",
            cfg.to_str().unwrap(),
            "--data",
            top.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
        ]));
    }
    assert!(run.join("world_model/done.json").is_file());
    assert!(run.join("world_model/model.safetensors").is_file());
    for task in ["pick-the-red-cube", "push-the-blue-ball"] {
        assert!(run.join(format!("bc/{task}/policy.safetensors")).is_file());
    }
    let task = "pick-the-red-cube";
    ok(&world4rl(&[
        "--threads",
        "1",
        "refine",
        "--config",
        cfg.to_str().unwrap(),
        "--run",
        run.to_str().unwrap(),
        "--data",
        top.to_str().unwrap(),
        "--task",
        task,
    ]));
    let refined = run.join(format!("refine/{task}/policy.safetensors"));
    assert!(refined.is_file());
    let bc = run.join(format!("bc/{task}/policy.safetensors"));
    let out = ok(&world4rl(&[
        "--threads",
        "1",
        "eval",
        "imagined",
        "--config",
        cfg.to_str().unwrap(),
        "--run",
        run.to_str().unwrap(),
        "--data",
        top.to_str().unwrap(),
        "--task",
        task,
        "--candidate",
        refined.to_str().unwrap(),
        "--baseline",
        bc.to_str().unwrap(),
        "--episodes",
        "8",
        "--json",
    ]));
    let v: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert!(v.is_object(), "{out}");
}

#[test]
fn an_exported_tabletop_dataset_loads_in_lerobot_with_the_same_frames_and_actions() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[experiment]\ntasks = [\"push-block\", \"turn-lever\"]\nimage_size = 32\n\n[collect]\nexpert_episodes = 2\npolicy_episodes = 1\nrandom_episodes = 1\nmax_steps = 12\n",
    )
    .unwrap();
    let ds = dir.path().join("ds");
    ok(&world4rl(&[
        "collect",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        ds.to_str().unwrap(),
    ]));
    let lr = dir.path().join("lr");
    ok(&world4rl(&[
        "data",
        "export-lerobot",
        ds.to_str().unwrap(),
        "--out",
        lr.to_str().unwrap(),
    ]));
    let dump = lerobot("load", &lr, &dir.path().join("dump.json"));
    let original = load_all(&ds);
    assert_eq!(int(&dump["num_episodes"]), original.len());
    assert_eq!(
        dump["index"].as_array().unwrap().len(),
        original.iter().map(|e| e.meta.steps + 1).sum::<usize>()
    );
    for (e, ep) in original.iter().enumerate() {
        let rows = rows_of(&dump, e);
        let steps = ep.meta.steps;
        assert_eq!(rows.len(), steps + 1);
        for (t, &r) in rows.iter().enumerate() {
            assert_eq!(dump["task"][r].as_str().unwrap(), ep.meta.task);
            assert_eq!(
                bytes(&dump["observation.image"][r]),
                ep.frame(t),
                "frame {t}"
            );
            assert_eq!(f32s(&dump["observation.state"][r]), ep.state(t));
            assert_eq!(f32s(&dump["action"][r]), ep.action(t.min(steps - 1)));
            let next = (t + 1).min(steps);
            assert_eq!(flag(&dump["next.success"][r]), ep.success[next] != 0);
            assert_eq!(flag(&dump["next.done"][r]), t == steps);
            let reward = if t < steps { ep.rewards[t] } else { 0.0 };
            assert_eq!(f32s(&dump["next.reward"][r])[0], reward);
        }
    }
}
