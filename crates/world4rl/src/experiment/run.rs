//! Run directories and where everything lives in them. Only the stage layer ([`crate::experiment::stage`],
//! [`crate::stages`]) and the commands use this module; the learners never do.
//!
//! ```text
//! RUN/config.toml                       the experiment as written (resolved values are re-derived)
//! RUN/dataset/, RUN/heldout/            episode datasets (training data; held-out BC rollouts)
//! RUN/<stage>/done.json                 the stage's typed record ([`Done`]), written once, at its end
//! RUN/<stage>/metrics.jsonl             one JSON object per logged step
//! RUN/bc/<task>/policy.safetensors      BC policy             RUN/reward/<task>/classifier.safetensors
//! RUN/world_model/model.safetensors     world model (EMA)     RUN/refine/<task>/policy.safetensors
//! ```

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use w4rl_data::DirLock;

use crate::util::metrics_log::MetricsLog;

/// The format of the `done.json` files this version writes. Files without a `format` field were
/// written before the stage layer, as untyped summaries; they are refused with what to do.
pub const DONE_FORMAT: u32 = 2;

/// Stage folders in the run directory, by [`StageId`] (the one list of the stages' names).
pub mod stage_name {
    use crate::experiment::stage_id::StageId;

    /// Expert demonstrations of every task.
    pub const COLLECT_EXPERT: &str = StageId::CollectExpert.name();
    /// BC-policy rollouts and random-action episodes.
    pub const COLLECT_ROLLOUTS: &str = StageId::CollectRollouts.name();
    /// Held-out BC rollouts (the outcome check's yardstick).
    pub const COLLECT_HELDOUT: &str = StageId::CollectHeldout.name();
    /// The world model.
    pub const WORLD_MODEL: &str = StageId::WorldModel.name();
    /// Real-environment evaluation of every policy.
    pub const EVAL: &str = StageId::Eval.name();
    /// World-model fidelity and the outcome check.
    pub const FIDELITY: &str = StageId::Fidelity.name();
    /// The report.
    pub const REPORT: &str = StageId::Report.name();

    /// The BC policy of `task`.
    pub fn bc(task: &str) -> String {
        StageId::Bc.of_task(task)
    }
    /// The data-matched control of `task`: BC on the demos plus the successful BC rollouts.
    pub fn bc_filtered(task: &str) -> String {
        StageId::BcFiltered.of_task(task)
    }
    /// The reward classifier of `task`.
    pub fn reward(task: &str) -> String {
        StageId::Reward.of_task(task)
    }
    /// PPO inside the world model for `task`.
    pub fn refine(task: &str) -> String {
        StageId::Refine.of_task(task)
    }
    /// The ceiling control of `task` (PPO in the real environment, classifier reward).
    pub fn ceiling(task: &str) -> String {
        StageId::RefineReal.of_task(task)
    }
    /// The true-reward ceiling control of `task` (PPO in the real environment, its own success):
    /// the second folder of the `refine-real` stage.
    pub fn ceiling_true(task: &str) -> String {
        format!("{}/{task}", StageId::REFINE_TRUE)
    }
}

/// What a finished stage leaves in `RUN/<stage>/done.json`: its typed record and its wall-clock.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Done<R> {
    /// [`DONE_FORMAT`].
    pub format: u32,
    /// The stage's name (its folder).
    pub stage: String,
    /// Wall-clock seconds of the invocation that finished the stage (a resumed world model also
    /// records its total training time in its record).
    pub seconds: f64,
    /// What the stage produced.
    pub record: R,
    /// Where it ran (absent in runs of before 2026-12-06).
    #[serde(default)]
    pub machine: Option<crate::experiment::machine::Machine>,
    /// The process's peak resident memory while the stage ran, MiB (Linux; absent before
    /// 2026-12-07 and where the kernel does not report it).
    #[serde(default)]
    pub peak_rss_mib: Option<f64>,
}

/// The keys whose values differ between two configs, as `key: old → new` (a key one side lacks shows
/// as `-`), the first eight of them in key order.
pub(crate) fn config_differences(old: &toml::Value, new: &toml::Value) -> Vec<String> {
    fn flatten(
        prefix: &str,
        v: &toml::Value,
        out: &mut std::collections::BTreeMap<String, String>,
    ) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&key, v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let (mut a, mut b) = (Default::default(), Default::default());
    flatten("", old, &mut a);
    flatten("", new, &mut b);
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut out: Vec<String> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let show = |m: &std::collections::BTreeMap<String, String>| {
                m.get(k).cloned().unwrap_or_else(|| "-".into())
            };
            format!("{k}: {} → {}", show(&a), show(&b))
        })
        .collect();
    if out.len() > 8 {
        let more = out.len() - 8;
        out.truncate(8);
        out.push(format!("{more} more"));
    }
    out
}

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

    /// `RUN/dataset/`: the training episodes.
    pub fn dataset(&self) -> PathBuf {
        self.root.join("dataset")
    }

    /// `RUN/heldout/`: BC rollouts no learner trains on.
    pub fn heldout(&self) -> PathBuf {
        self.root.join("heldout")
    }

    /// `RUN/world_model/`: the world model's folder (its trainer owns the file names inside).
    pub fn world_model_dir(&self) -> PathBuf {
        self.root.join(stage_name::WORLD_MODEL)
    }

    /// `RUN/world_model/model.safetensors`.
    pub fn world_model(&self) -> PathBuf {
        crate::world_model::train::WorldModelFiles::in_dir(&self.world_model_dir()).model
    }

    /// `RUN/bc/<task>/policy.safetensors`.
    pub fn bc_policy(&self, task: &str) -> PathBuf {
        self.root
            .join(stage_name::bc(task))
            .join("policy.safetensors")
    }

    /// `RUN/bc-filtered/<task>/policy.safetensors`: the data-matched control.
    pub fn bc_filtered_policy(&self, task: &str) -> PathBuf {
        self.root
            .join(stage_name::bc_filtered(task))
            .join("policy.safetensors")
    }

    /// `RUN/reward/<task>/classifier.safetensors`.
    pub fn classifier(&self, task: &str) -> PathBuf {
        self.root
            .join(stage_name::reward(task))
            .join("classifier.safetensors")
    }

    /// `RUN/refine/<task>/`.
    pub fn refine_dir(&self, task: &str) -> PathBuf {
        self.root.join(stage_name::refine(task))
    }

    /// `RUN/refine/<task>/policy.safetensors`: the policy that stands as the refined one.
    pub fn refined_policy(&self, task: &str) -> PathBuf {
        self.refine_dir(task).join("policy.safetensors")
    }

    /// `RUN/<stage>/metrics.jsonl`.
    pub fn metrics_path(&self, stage: &str) -> PathBuf {
        self.root.join(stage).join("metrics.jsonl")
    }

    /// Writes the config to `RUN/config.toml`. When the file exists with a different content,
    /// this is an error: resuming a run under another config would mix two experiments. A config that
    /// only lacks keys added to world4rl since the run began, and resolves to the same values once
    /// their defaults are filled in, is the same experiment: it is rewritten in full and the run goes on.
    pub fn write_config<C: Serialize + DeserializeOwned>(&self, cfg: &C) -> Result<()> {
        let text = toml::to_string_pretty(cfg).context("serialising the config")?;
        let path = self.root.join("config.toml");
        if let Ok(existing) = fs::read_to_string(&path) {
            if existing == text {
                return Ok(());
            }
            let resolved = toml::from_str::<C>(&existing)
                .ok()
                .and_then(|old| toml::to_string_pretty(&old).ok());
            // the keys that differ between two config texts (none when either does not parse)
            let differences = |old: &str| {
                toml::from_str::<toml::Value>(old)
                    .ok()
                    .zip(toml::from_str::<toml::Value>(&text).ok())
                    .map(|(old, new)| config_differences(&old, &new))
                    .unwrap_or_default()
            };
            if resolved.as_deref() == Some(text.as_str()) {
                // the keys world4rl gained since: the run's finished stages ran without them
                let added = differences(&existing);
                if !added.is_empty() {
                    tracing::warn!(
                        "{} was begun by an older world4rl; keys added since (the run's → their defaults now): {}. Its finished stages ran without them, its remaining stages use the defaults",
                        self.root.display(),
                        added.join(", ")
                    );
                }
                w4rl_data::write_atomic(&path, text.as_bytes())?;
                return Ok(());
            }
            // compared with its defaults filled in, so that only keys set to other values show
            let differ = differences(resolved.as_deref().unwrap_or(&existing));
            bail!(
                "{} holds a run made with a different config{}; pass another --out folder, or delete it to start over",
                self.root.display(),
                if differ.is_empty() {
                    String::new()
                } else {
                    format!(" (the run's → this one's: {})", differ.join(", "))
                }
            );
        }
        w4rl_data::write_atomic(&path, text.as_bytes())?;
        Ok(())
    }

    /// The metrics log of a stage, opened for appending.
    pub fn metrics(&self, stage: &str) -> Result<MetricsLog> {
        self.stage_dir(stage)?;
        MetricsLog::open(self.metrics_path(stage))
    }

    /// True when the stage wrote its `done.json`.
    pub fn is_done(&self, stage: &str) -> bool {
        self.done_path(stage).exists()
    }

    /// When the stage finished (its `done.json`'s modification time); `None` when it has not.
    pub fn finished_at(&self, stage: &str) -> Result<Option<std::time::SystemTime>> {
        match fs::metadata(self.done_path(stage)) {
            Ok(m) => Ok(Some(m.modified().with_context(|| {
                format!("reading the time of {}", self.done_path(stage).display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => {
                Err(e).with_context(|| format!("reading {}", self.done_path(stage).display()))
            }
        }
    }

    fn done_path(&self, stage: &str) -> PathBuf {
        self.root.join(stage).join("done.json")
    }

    /// The distinct machines the stages of the run ran on (from their `done.json`).
    pub fn machines(&self) -> Result<Vec<crate::experiment::machine::Machine>> {
        let mut out: Vec<crate::experiment::machine::Machine> = Vec::new();
        let stages = std::fs::read_dir(self.path())
            .with_context(|| format!("reading {}", self.path().display()))?;
        let mut names = Vec::new();
        for e in stages.flatten() {
            let p = e.path();
            if p.join("done.json").exists() {
                names.push(e.file_name().to_string_lossy().to_string());
            } else if p.is_dir() {
                for t in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                    if t.path().join("done.json").exists() {
                        names.push(format!(
                            "{}/{}",
                            e.file_name().to_string_lossy(),
                            t.file_name().to_string_lossy()
                        ));
                    }
                }
            }
        }
        names.sort();
        for n in names {
            if let Some(d) = self.done::<serde_json::Value>(&n)? {
                if let Some(m) = d.machine {
                    if !out.contains(&m) {
                        out.push(m);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The record of a finished stage; `None` when the stage has not finished. A `done.json` written
    /// before the stage layer, or one that does not hold this stage's record, is an error that says
    /// what to do.
    pub fn done<R: DeserializeOwned>(&self, stage: &str) -> Result<Option<Done<R>>> {
        let path = self.done_path(stage);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        match value.get("format").and_then(|f| f.as_u64()) {
            Some(f) if f == DONE_FORMAT as u64 => {}
            Some(f) => bail!(
                "{} has format {f}, this world4rl reads format {DONE_FORMAT}; use the world4rl that wrote the run, or start a new run with another --out",
                path.display()
            ),
            None => bail!(
                "{} was written by an earlier world4rl (before typed stage records), which this version does not resume. \
                 Start a new run with another --out, or delete the run's done.json files \
                 (`find {} -name done.json -delete`) to redo every stage from the files it left: \
                 collection keeps its episodes, the world model resumes from its last checkpoint, the other learners train again",
                path.display(),
                self.root.display()
            ),
        }
        let done = serde_json::from_value(value).with_context(|| {
            format!(
                "{} does not hold a record of stage {stage}; delete it to redo the stage",
                path.display()
            )
        })?;
        Ok(Some(done))
    }

    /// Writes a stage's `done.json` (atomic).
    pub fn write_done<R: Serialize>(&self, done: &Done<R>) -> Result<()> {
        let path = self.stage_dir(&done.stage)?.join("done.json");
        w4rl_data::write_atomic(&path, serde_json::to_string_pretty(done)?.as_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_guard_and_typed_done_records() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::open(dir.path().join("run")).unwrap();

        #[derive(Serialize, Deserialize)]
        struct C {
            a: u32,
            #[serde(default)]
            b: u32,
        }
        run.write_config(&C { a: 1, b: 0 }).unwrap();
        run.write_config(&C { a: 1, b: 0 }).unwrap();
        // the refusal names the keys that differ, the run's value first
        let err = run.write_config(&C { a: 2, b: 0 }).unwrap_err().to_string();
        assert!(err.contains("(the run's → this one's: a: 1 → 2)"), "{err}");
        // a run written before key `b` existed resumes under its default, and only then
        let cfg_path = run.path().join("config.toml");
        fs::write(&cfg_path, "a = 1\n").unwrap();
        assert!(run.write_config(&C { a: 1, b: 3 }).is_err());
        run.write_config(&C { a: 1, b: 0 }).unwrap();
        assert!(fs::read_to_string(&cfg_path).unwrap().contains("b = 0"));

        // a stage's record round-trips through its done.json
        assert!(!run.is_done("wm"));
        assert!(run.done::<Vec<u32>>("wm").unwrap().is_none());
        let done = Done {
            format: DONE_FORMAT,
            stage: "wm".into(),
            seconds: 1.5,
            record: vec![3u32, 4],
            machine: None,
            peak_rss_mib: Some(812.5),
        };
        run.write_done(&done).unwrap();
        assert!(run.is_done("wm"));
        let back = run.done::<Vec<u32>>("wm").unwrap().unwrap();
        assert_eq!((back.record, back.seconds), (vec![3, 4], 1.5));
        assert_eq!(back.peak_rss_mib, Some(812.5));
        // the wrong record type names the file and what to do
        let err = format!("{:#}", run.done::<String>("wm").unwrap_err());
        assert!(err.contains("does not hold a record of stage wm"), "{err}");

        // a done.json of an earlier world4rl is refused with what to do
        fs::write(
            run.path().join("wm/done.json"),
            r#"{"steps": 60, "minutes": 0.1}"#,
        )
        .unwrap();
        let err = format!("{:#}", run.done::<Vec<u32>>("wm").unwrap_err());
        assert!(err.contains("earlier world4rl"), "{err}");
        assert!(err.contains("-name done.json -delete"), "{err}");
        // a torn file is an error, not a finished stage
        fs::write(run.path().join("wm/done.json"), "{\"format\": 2, \"sta").unwrap();
        assert!(run.done::<Vec<u32>>("wm").is_err());
    }
}
