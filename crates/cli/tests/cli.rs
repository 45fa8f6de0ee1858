//! End-to-end checks of the `world4rl` binary: help, errors, collect -> verify.

mod common;

use common::tensors;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn world4rl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_world4rl"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .env("WORLD4RL_NO_PROGRESS", "1")
        .output()
        .expect("runs the binary")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn help_lists_subcommands_and_each_has_help() {
    let o = world4rl(&["--help"]);
    assert!(o.status.success());
    let (out, _) = text(&o);
    let subs: Vec<String> = out
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .filter(|s| s != "help")
        .collect();
    for must in ["collect", "data", "env", "config"] {
        assert!(
            subs.iter().any(|s| s == must),
            "{must} missing from {subs:?}"
        );
    }
    for s in &subs {
        let o = world4rl(&[s, "--help"]);
        assert!(o.status.success(), "{s} --help failed");
        assert!(text(&o).0.contains("Usage"), "{s} --help has no usage");
    }
    let o = world4rl(&["--version"]);
    assert!(o.status.success() && text(&o).0.starts_with("world4rl "));
}

#[test]
fn unknown_allocator_setting_is_refused_before_any_work() {
    let o = Command::new(env!("CARGO_BIN_EXE_world4rl"))
        .args(["env", "list"])
        .env("WORLD4RL_MALLOC", "jemalloc")
        .output()
        .expect("runs the binary");
    assert!(!o.status.success());
    let (out, err) = text(&o);
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("WORLD4RL_MALLOC") && err.contains("jemalloc"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    for ok in ["system", "kept"] {
        let o = Command::new(env!("CARGO_BIN_EXE_world4rl"))
            .args(["env", "list"])
            .env("WORLD4RL_MALLOC", ok)
            .output()
            .expect("runs the binary");
        assert!(o.status.success(), "{ok}: {}", text(&o).1);
    }
}

#[test]
fn misspelled_config_key_names_key_and_line_without_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[experiment]\ntasks = [\"push-block\"]\n\n[collect]\nexpert_episods = 2\n",
    )
    .unwrap();
    let o = world4rl(&[
        "collect",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        dir.path().join("ds").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let (_, err) = text(&o);
    assert!(
        err.contains("expert_episods") && err.contains("line 5") && err.contains("bad.toml"),
        "{err}"
    );
    assert!(
        !err.contains("backtrace") && !err.contains("panicked"),
        "{err}"
    );
    assert!(
        !dir.path().join("ds").exists(),
        "a bad config must not create the dataset"
    );
}

#[test]
fn cuda_without_gpu_is_a_clear_error() {
    if tch::Cuda::is_available() {
        return;
    }
    let o = world4rl(&["--device", "cuda", "env", "list"]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("no CUDA device"), "{}", text(&o).1);
}

fn collect(dir: &Path) -> std::path::PathBuf {
    let cfg = dir.join("c.toml");
    std::fs::write(
        &cfg,
        "[experiment]\ntasks = [\"push-block\", \"slide-handle\"]\nimage_size = 16\n\n[collect]\nexpert_episodes = 2\npolicy_episodes = 1\nrandom_episodes = 1\nmax_steps = 10\n",
    )
    .unwrap();
    let ds = dir.join("ds");
    let o = world4rl(&[
        "collect",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        ds.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let last = text(&o).0.lines().last().unwrap().to_string();
    let v: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(v["written"], 8);
    ds
}

/// `world4rl --threads 1 train bc --config CFG --data DS --out RUN`.
fn train_bc(cfg: &Path, ds: &Path, run: &Path) -> Output {
    world4rl(&[
        "--threads",
        "1",
        "train",
        "bc",
        "--config",
        cfg.to_str().unwrap(),
        "--data",
        ds.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ])
}

#[test]
fn collect_verify_and_truncation_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let ds = collect(dir.path());
    let o = world4rl(&["data", "verify", ds.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = world4rl(&["data", "info", ds.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(text(&o).0.lines().last().unwrap()).unwrap();
    assert_eq!(v["total"]["episodes"], 8);
    assert_eq!(v["total"]["steps"], 80);
    assert_eq!(v["per_kind"]["expert"]["episodes"], 4);

    // re-running completes nothing new
    let cfg = dir.path().join("c.toml");
    let o = world4rl(&[
        "collect",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        ds.to_str().unwrap(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(text(&o).0.lines().last().unwrap()).unwrap();
    assert_eq!(
        (v["written"].as_u64(), v["existing"].as_u64()),
        (Some(0), Some(8))
    );

    let victim = ds.join("episodes/slide-handle/expert-00001.safetensors");
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let o = world4rl(&["data", "verify", ds.to_str().unwrap()]);
    assert!(!o.status.success());
    let (_, err) = text(&o);
    assert!(
        err.contains("slide-handle/expert-00001.safetensors"),
        "{err}"
    );
    assert_eq!(err.matches("bad episode").count(), 1, "{err}");

    // two more kinds of damage: an emptied file and a forged header length
    let emptied = ds.join("episodes/push-block/random-00000.safetensors");
    std::fs::write(&emptied, b"").unwrap();
    let forged = ds.join("episodes/push-block/policy-00000.safetensors");
    let mut fb = std::fs::read(&forged).unwrap();
    let n = u64::from_le_bytes(fb[..8].try_into().unwrap()) + 8;
    fb[..8].copy_from_slice(&n.to_le_bytes());
    std::fs::write(&forged, &fb).unwrap();
    // `data info` reads headers only, names each damaged file and fails
    let o = world4rl(&["data", "info", ds.to_str().unwrap()]);
    assert!(!o.status.success(), "{:?}", text(&o));
    let (_, err) = text(&o);
    for name in [
        "slide-handle/expert-00001.safetensors",
        "push-block/random-00000.safetensors",
        "push-block/policy-00000.safetensors",
    ] {
        assert!(err.contains(name), "{name} not named: {err}");
    }
    assert_eq!(err.matches("unreadable episode:").count(), 3, "{err}");
    // re-running collect writes the damaged episodes again, bit-identical to the originals
    let o = world4rl(&[
        "collect",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        ds.to_str().unwrap(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(text(&o).0.lines().last().unwrap()).unwrap();
    assert_eq!(v["written"], 3);
    assert_eq!(std::fs::read(&victim).unwrap(), bytes);
    assert!(world4rl(&["data", "verify", ds.to_str().unwrap()])
        .status
        .success());
}

#[test]
fn a_deleted_episode_is_reported_and_learners_refuse_the_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let ds = collect(dir.path());
    let gone = ds.join("episodes/push-block/expert-00001.safetensors");
    std::fs::remove_file(&gone).unwrap();
    let o = world4rl(&["data", "verify", ds.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        text(&o).1.contains("missing episode") && text(&o).1.contains("expert-00001"),
        "{:?}",
        text(&o)
    );
    let o = world4rl(&["data", "info", ds.to_str().unwrap()]);
    assert!(!o.status.success());
    // a learner stops before training, and says how to go on
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/tabletop-tiny.toml");
    let run = dir.path().join("run");
    let o = train_bc(&cfg, &ds, &run);
    assert!(!o.status.success());
    let (_, err) = text(&o);
    assert!(
        err.contains("missing 1 of the 8") && err.contains("--allow-missing"),
        "{err}"
    );
    assert!(!run.join("bc").exists(), "nothing was trained");
}

/// The tiny preset with a longer world-model run: 400 steps, a checkpoint every 100.
fn long_tiny_config(dir: &Path) -> std::path::PathBuf {
    let tiny = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/tabletop-tiny.toml"),
    )
    .unwrap();
    let text = tiny
        .replace("max_steps = 60\n", "max_steps = 400\n")
        .replace("checkpoint_every = 20\n", "checkpoint_every = 100\n");
    assert!(text.contains("max_steps = 400") && text.contains("checkpoint_every = 100"));
    let path = dir.join("long-tiny.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn train_world_model(cfg: &Path, ds: &Path, out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_world4rl"));
    c.env("WORLD4RL_NO_PROGRESS", "1")
        .env("RUST_LOG", "warn")
        .args(["--threads", "1", "train", "world-model", "--config"])
        .arg(cfg)
        .arg("--data")
        .arg(ds)
        .arg("--out")
        .arg(out);
    c
}

#[test]
fn sigterm_stops_world_model_training_at_a_checkpoint_and_the_resume_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = long_tiny_config(dir.path());
    let ds = dir.path().join("ds");
    let o = world4rl(&[
        "collect",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        ds.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));

    // the reference: one uninterrupted run
    let straight = dir.path().join("straight");
    let o = train_world_model(&cfg, &ds, &straight).output().unwrap();
    assert!(o.status.success(), "{:?}", text(&o));

    // the same run, sent SIGTERM once it has logged step 50
    let out = dir.path().join("interrupted");
    let child = train_world_model(&cfg, &ds, &out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let metrics = out.join("world_model/metrics.jsonl");
    let t = Instant::now();
    loop {
        let logged = std::fs::read_to_string(&metrics).unwrap_or_default();
        if logged.contains("\"step\":50") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "training never reached step 50"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // the shell's own `kill` (procps may not be installed)
    let killed = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", child.id())])
        .status()
        .unwrap();
    assert!(killed.success());
    let o = child.wait_with_output().unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(
        err.contains("stopped at its checkpoint of step 100") && err.contains("resume"),
        "{err}"
    );
    assert!(!out.join("world_model/done.json").exists());

    // the resume finishes the run and ends where the uninterrupted one ended
    let o = train_world_model(&cfg, &ds, &out).output().unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    let a = tensors(&straight.join("world_model/model.safetensors"));
    let b = tensors(&out.join("world_model/model.safetensors"));
    assert_eq!(a.len(), b.len());
    for ((na, da), (nb, db)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(da == db, "tensor {na} differs after the resume");
    }
}

#[test]
fn a_second_writer_on_a_run_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // a process that holds the lock: a run directory locked by this test's own process is the
    // same to the binary as one locked by another `world4rl`
    let held = world4rl::experiment::run::RunDir::open_locked(&run).unwrap();
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/tabletop-tiny.toml");
    let o = world4rl(&["run", cfg.to_str().unwrap(), "--out", run.to_str().unwrap()]);
    assert!(!o.status.success());
    let (_, err) = text(&o);
    assert!(
        err.contains(&format!("in use by process {}", std::process::id())),
        "{err}"
    );
    assert!(
        !run.join("config.toml").exists(),
        "the refused run wrote nothing"
    );
    drop(held);
}

/// `train bc|reward` and `refine` record the config in the run directory as `world4rl run` does: a
/// run made with another config is refused, naming both files, instead of silently skipping the tasks
/// it trained.
#[test]
fn a_learner_refuses_a_run_directory_made_with_another_config() {
    let dir = tempfile::tempdir().unwrap();
    let ds = collect(dir.path());
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let demo = std::fs::read_to_string(configs.join("tabletop-cpu.toml")).unwrap();
    std::fs::write(run.join("config.toml"), &demo).unwrap();
    let tiny = configs.join("tabletop-tiny.toml");
    let o = train_bc(&tiny, &ds, &run);
    assert!(!o.status.success());
    let (_, err) = text(&o);
    assert!(
        err.contains("made with a different config")
            && err.contains(&run.join("config.toml").display().to_string())
            && err.contains("tabletop-tiny.toml")
            // the keys that differ, with both values, the first eight of them
            && err.contains("(the run's → this one's: bc.batch_size: 64 → 32, ")
            && err.contains(" more); pass another --out folder"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(run.join("config.toml")).unwrap(),
        demo,
        "the run's config is kept"
    );
    assert!(!run.join("bc").exists(), "nothing was trained");
}

#[test]
fn config_check_prints_the_values_every_stage_derives_and_stays_loadable() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[experiment]\ntasks = [\"push-block\"]\nseed = 5\n\n[world_model.model]\nimage_size = 24\n\n[bc]\nseed = 1\nimage_size = 0\n",
    )
    .unwrap();
    let o = world4rl(&["config", "check", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
    let (out, _) = text(&o);
    assert!(out.contains("bc.seed = 4 "), "1 XOR 5: {out}");
    assert!(out.contains("bc.image_size = 24 "), "{out}");
    // the printed config loads again and resolves to the same values (the resolution is not applied twice)
    let again = dir.path().join("again.toml");
    std::fs::write(&again, &out).unwrap();
    let o2 = world4rl(&["config", "check", again.to_str().unwrap()]);
    assert!(o2.status.success(), "{:?}", text(&o2));
    assert_eq!(text(&o2).0, out);
}
