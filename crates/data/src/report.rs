//! `data info` and `data verify`: summaries and full integrity checks of a dataset.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::episode::EpisodeKind;
use crate::store::{read_episode, Dataset};
use crate::DataError;

/// Counts of one group of episodes.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Counts {
    /// Number of episodes.
    pub episodes: usize,
    /// Number of steps (transitions).
    pub steps: usize,
    /// Episodes with at least one successful frame.
    pub successes: usize,
    /// `successes / episodes`.
    pub success_rate: f64,
}

impl Counts {
    fn add(&mut self, steps: usize, success: bool) {
        self.episodes += 1;
        self.steps += steps;
        self.successes += success as usize;
        self.success_rate = self.successes as f64 / self.episodes as f64;
    }
}

/// What `world4rl data info` prints.
#[derive(Clone, Debug, Serialize)]
pub struct DatasetInfo {
    /// Dataset folder.
    pub path: PathBuf,
    /// Suite name.
    pub suite: String,
    /// Frame side length.
    pub image_size: usize,
    /// Action dimensions.
    pub action_dim: usize,
    /// Low-dim state length (0 when absent).
    pub state_dim: usize,
    /// All episodes.
    pub total: Counts,
    /// Per task.
    pub per_task: BTreeMap<String, Counts>,
    /// Per kind (expert, policy, random).
    pub per_kind: BTreeMap<String, Counts>,
    /// Per task and kind.
    pub per_task_kind: BTreeMap<String, BTreeMap<String, Counts>>,
    /// Episode files whose header could not be read.
    pub unreadable: usize,
}

/// Summarises a dataset from the episode headers (fast: frames are not read).
pub fn info(dir: impl AsRef<Path>) -> Result<DatasetInfo, DataError> {
    let ds = Dataset::open_lenient(dir)?;
    let spec = ds.spec();
    let mut out = DatasetInfo {
        path: ds.dir().to_path_buf(),
        suite: spec.suite.clone(),
        image_size: spec.image_size,
        action_dim: spec.action_dim,
        state_dim: spec.state_dim,
        total: Counts::default(),
        per_task: BTreeMap::new(),
        per_kind: BTreeMap::new(),
        per_task_kind: BTreeMap::new(),
        unreadable: ds.unreadable().len(),
    };
    for e in ds.entries() {
        let m = &e.meta;
        out.total.add(m.steps, m.success);
        out.per_task
            .entry(m.task.clone())
            .or_default()
            .add(m.steps, m.success);
        out.per_kind
            .entry(m.kind.as_str().to_string())
            .or_default()
            .add(m.steps, m.success);
        out.per_task_kind
            .entry(m.task.clone())
            .or_default()
            .entry(m.kind.as_str().to_string())
            .or_default()
            .add(m.steps, m.success);
    }
    Ok(out)
}

/// One episode file that failed verification.
#[derive(Clone, Debug, Serialize)]
pub struct BadEpisode {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

/// What `world4rl data verify` prints.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    /// Dataset folder.
    pub path: PathBuf,
    /// Episode files checked.
    pub checked: usize,
    /// Files that passed every check.
    pub ok: usize,
    /// Files that failed, with the reason.
    pub bad: Vec<BadEpisode>,
    /// (task, kind, index) present more than once cannot happen with one file per episode; listed
    /// here are kinds with gaps in their indices, which a completed collection does not have.
    pub gaps: Vec<String>,
}

impl VerifyReport {
    /// True when no episode failed.
    pub fn passed(&self) -> bool {
        self.bad.is_empty()
    }
}

/// Reads every episode completely and checks dtypes, shapes, checksums and values.
pub fn verify(
    dir: impl AsRef<Path>,
    mut progress: impl FnMut(usize, usize),
) -> Result<VerifyReport, DataError> {
    let ds = Dataset::open_lenient(dir)?;
    let mut bad: Vec<BadEpisode> = ds
        .unreadable()
        .iter()
        .map(|(path, reason)| BadEpisode {
            path: path.clone(),
            reason: reason.clone(),
        })
        .collect();
    let n = ds.entries().len();
    let mut ok = 0;
    let mut indices: BTreeMap<(String, EpisodeKind), Vec<usize>> = BTreeMap::new();
    for (i, e) in ds.entries().iter().enumerate() {
        match read_episode(&e.path) {
            Ok(_) => {
                ok += 1;
                indices
                    .entry((e.meta.task.clone(), e.meta.kind))
                    .or_default()
                    .push(e.meta.index);
            }
            Err(err) => bad.push(BadEpisode {
                path: e.path.clone(),
                reason: err.to_string(),
            }),
        }
        progress(i + 1, n);
    }
    let mut gaps = Vec::new();
    for ((task, kind), mut idx) in indices {
        idx.sort_unstable();
        let max = *idx.last().unwrap_or(&0);
        if idx.len() != max + 1 {
            gaps.push(format!(
                "{task}/{kind}: {} episodes but indices up to {max}",
                idx.len()
            ));
        }
    }
    bad.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(VerifyReport {
        path: ds.dir().to_path_buf(),
        checked: n + ds.unreadable().len(),
        ok,
        bad,
        gaps,
    })
}
