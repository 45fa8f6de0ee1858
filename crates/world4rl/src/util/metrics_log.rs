//! Append-only JSON-lines logs (`metrics.jsonl`): one JSON object per logged step, kept free of
//! duplicates when a learner resumes from a checkpoint.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

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
    fn a_resumed_log_has_no_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = MetricsLog::open(dir.path().join("metrics.jsonl")).unwrap();
        for s in 1..=5u64 {
            m.log(&serde_json::json!({"step": s, "loss": 1.0 / s as f64}))
                .unwrap();
        }
        m.truncate_after(3).unwrap();
        m.log(&serde_json::json!({"step": 4, "loss": 0.2})).unwrap();
        let lines = read_metrics(m.path()).unwrap();
        let steps: Vec<u64> = lines.iter().map(|v| v["step"].as_u64().unwrap()).collect();
        assert_eq!(steps, vec![1, 2, 3, 4]);
    }
}
