//! End-to-end checks of the `world4rl` binary: help, errors, collect -> verify.

use std::path::Path;
use std::process::{Command, Output};

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

    let o = world4rl(&["data", "info", ds.to_str().unwrap()]);
    assert!(text(&o).0.contains("unreadable"), "{:?}", text(&o));
    // re-running collect writes the damaged episode again, bit-identical to the original
    let o = world4rl(&[
        "collect",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        ds.to_str().unwrap(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(text(&o).0.lines().last().unwrap()).unwrap();
    assert_eq!(v["written"], 1);
    assert_eq!(std::fs::read(&victim).unwrap(), bytes);
    assert!(world4rl(&["data", "verify", ds.to_str().unwrap()])
        .status
        .success());
}
