//! Run directories: `RUN/config.toml` (the resolved config), one folder per stage holding its
//! `metrics.jsonl` (one JSON object per logged step) and checkpoints, and a `done.json` marker written
//! when the stage completed, so a re-run skips finished stages and resumes partial ones.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use w4rl_data::DirLock;

/// A run directory.
#[derive(Clone, Debug)]
pub struct RunDir {
    root: PathBuf,
    /// The writer's lock, shared by the clones of a locked run directory.
    lock: Option<Arc<DirLock>>,
}

impl RunDir {
    /// Opens (creating when needed) the run directory, without a lock: for readers, and for code
    /// that runs under a caller's lock.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let root = path.as_ref().to_path_buf();
        fs::create_dir_all(&root)
            .with_context(|| format!("creating run directory {}", root.display()))?;
        Ok(Self { root, lock: None })
    }

    /// Opens the run directory for writing: takes its lock (`RUN/.world4rl.lock`) for as long as
    /// this value or a clone of it lives. A second writer is refused with the process that holds
    /// the lock; a lock left by a process that died is taken over with a warning.
    pub fn open_locked(path: impl AsRef<Path>) -> Result<Self> {
        let mut run = Self::open(path)?;
        run.lock = Some(Arc::new(DirLock::acquire(&run.root, "run directory")?));
        Ok(run)
    }

    /// The run directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `RUN/<stage>/`, created when needed.
    pub fn stage_dir(&self, stage: &str) -> Result<PathBuf> {
        let d = self.root.join(stage);
        fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        Ok(d)
    }

    /// Path of a checkpoint of a stage: `RUN/<stage>/<name>.safetensors`.
    pub fn checkpoint(&self, stage: &str, name: &str) -> PathBuf {
        self.root.join(stage).join(format!("{name}.safetensors"))
    }

    /// Writes the resolved config to `RUN/config.toml`. When the file exists with a different content,
    /// this is an error: resuming a run under another config would mix two experiments. A config that
    /// only lacks keys added to world4rl since the run began, and resolves to the same values once
    /// their defaults are filled in, is the same experiment: it is rewritten in full and the run goes on.
    pub fn write_config<C: Serialize + DeserializeOwned>(&self, cfg: &C) -> Result<()> {
        let text = toml::to_string_pretty(cfg).context("serialising the resolved config")?;
        let path = self.root.join("config.toml");
        if let Ok(existing) = fs::read_to_string(&path) {
            if existing == text {
                return Ok(());
            }
            let resolved = toml::from_str::<C>(&existing)
                .ok()
                .and_then(|old| toml::to_string_pretty(&old).ok());
            if resolved.as_deref() == Some(text.as_str()) {
                w4rl_data::write_atomic(&path, text.as_bytes())?;
                return Ok(());
            }
            bail!(
                "{} holds a run made with a different config; pass another --out folder, or delete it to start over",
                self.root.display()
            );
        }
        w4rl_data::write_atomic(&path, text.as_bytes())?;
        Ok(())
    }

    /// The metrics log of a stage, opened for appending.
    pub fn metrics(&self, stage: &str) -> Result<MetricsLog> {
        MetricsLog::open(self.stage_dir(stage)?.join("metrics.jsonl"))
    }

    /// True when the stage wrote its `done.json`.
    pub fn is_done(&self, stage: &str) -> bool {
        self.root.join(stage).join("done.json").exists()
    }

    /// The summary a finished stage left in `done.json`.
    pub fn done_summary(&self, stage: &str) -> Option<serde_json::Value> {
        let text = fs::read_to_string(self.root.join(stage).join("done.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Marks a stage finished, with a summary (atomic).
    pub fn mark_done(&self, stage: &str, summary: &serde_json::Value) -> Result<()> {
        let path = self.stage_dir(stage)?.join("done.json");
        w4rl_data::write_atomic(&path, serde_json::to_string_pretty(summary)?.as_bytes())?;
        Ok(())
    }
}

/// Append-only JSON-lines log.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Opens `path` for appending, creating it when needed.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self { path, file })
    }

    /// For a resumed stage: drops logged lines whose `step` is beyond the checkpoint that is resumed
    /// (and any torn last line), so the log has no duplicates after the restart.
    pub fn truncate_after(&mut self, step: u64) -> Result<()> {
        let kept: Vec<String> = match File::open(&self.path) {
            Ok(f) => BufReader::new(f)
                .lines()
                .map_while(|l| l.ok())
                .filter(|l| match serde_json::from_str::<serde_json::Value>(l) {
                    Ok(v) => v
                        .get("step")
                        .and_then(|s| s.as_u64())
                        .is_none_or(|s| s <= step),
                    Err(_) => false,
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        let mut text = kept.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        w4rl_data::write_atomic(&self.path, text.as_bytes())?;
        *self = Self::open(&self.path)?;
        Ok(())
    }

    /// Appends one JSON object as a line and flushes it.
    pub fn log(&mut self, value: &serde_json::Value) -> Result<()> {
        let mut line = serde_json::to_string(value)?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .with_context(|| format!("writing {}", self.path.display()))?;
        self.file.flush()?;
        Ok(())
    }

    /// Where the log lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads every JSON line of a metrics file (for plots and reports); torn lines are skipped.
pub fn read_metrics(path: impl AsRef<Path>) -> Result<Vec<serde_json::Value>> {
    let f = File::open(path.as_ref())
        .with_context(|| format!("opening {}", path.as_ref().display()))?;
    Ok(BufReader::new(f)
        .lines()
        .map_while(|l| l.ok())
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_resume_and_config_guard() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::open(dir.path().join("run")).unwrap();
        let mut m = run.metrics("wm").unwrap();
        for s in 1..=5u64 {
            m.log(&serde_json::json!({"step": s, "loss": 1.0 / s as f64}))
                .unwrap();
        }
        m.truncate_after(3).unwrap();
        m.log(&serde_json::json!({"step": 4, "loss": 0.2})).unwrap();
        let lines = read_metrics(m.path()).unwrap();
        let steps: Vec<u64> = lines.iter().map(|v| v["step"].as_u64().unwrap()).collect();
        assert_eq!(steps, vec![1, 2, 3, 4]);

        #[derive(Serialize, serde::Deserialize)]
        struct C {
            a: u32,
            #[serde(default)]
            b: u32,
        }
        run.write_config(&C { a: 1, b: 0 }).unwrap();
        run.write_config(&C { a: 1, b: 0 }).unwrap();
        assert!(run.write_config(&C { a: 2, b: 0 }).is_err());
        // a run written before key `b` existed resumes under its default, and only then
        let cfg_path = run.path().join("config.toml");
        fs::write(&cfg_path, "a = 1\n").unwrap();
        assert!(run.write_config(&C { a: 1, b: 3 }).is_err());
        run.write_config(&C { a: 1, b: 0 }).unwrap();
        assert!(fs::read_to_string(&cfg_path).unwrap().contains("b = 0"));
        assert!(!run.is_done("wm"));
        run.mark_done("wm", &serde_json::json!({"ok": true}))
            .unwrap();
        assert!(run.is_done("wm"));
    }
}
