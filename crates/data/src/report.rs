//! `data info` and `data verify`: summaries and full integrity checks of a dataset.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::episode::EpisodeKind;
use crate::index::{write_index, IndexEntry};
use crate::store::{decode_episode, Dataset};
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
    /// Episode files whose header could not be read (or does not match the file's size), with the
    /// reason.
    pub unreadable: Vec<BadEpisode>,
    /// Episode files the index lists that are gone.
    pub missing: Vec<PathBuf>,
    /// Episode files the index does not list (not counted above).
    pub extra: Vec<PathBuf>,
    /// Whether the dataset has an index of its committed episodes.
    pub indexed: bool,
}

impl DatasetInfo {
    /// True when every episode file is readable and none the index lists is missing.
    pub fn intact(&self) -> bool {
        self.unreadable.is_empty() && self.missing.is_empty()
    }
}

/// Summarises a dataset from the episode headers (fast: frames are not read; a header that does not
/// account for the file's size, as after a truncation, makes the file unreadable).
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
        unreadable: BadEpisode::unreadable_in(&ds),
        missing: ds.missing().to_vec(),
        extra: ds.extra().to_vec(),
        indexed: ds.index().is_some(),
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

impl BadEpisode {
    /// The files whose header [`Dataset::open_lenient`] could not read.
    fn unreadable_in(ds: &Dataset) -> Vec<Self> {
        ds.unreadable()
            .iter()
            .map(|(path, reason)| Self {
                path: path.clone(),
                reason: reason.clone(),
            })
            .collect()
    }
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
    /// Whether the dataset has an index (written by every collection since it was introduced).
    pub indexed: bool,
    /// Episodes the index lists whose file is gone.
    pub missing: Vec<PathBuf>,
    /// Episode files the index does not list.
    pub extra: Vec<PathBuf>,
    /// Episode files whose bytes differ from what the index recorded when they were committed.
    pub changed: Vec<PathBuf>,
    /// True when `--reindex` wrote a new index (from the files that passed).
    pub reindexed: bool,
}

impl VerifyReport {
    /// True when every episode file reads back intact and the files are the ones the index lists.
    pub fn passed(&self) -> bool {
        self.bad.is_empty()
            && self.missing.is_empty()
            && self.extra.is_empty()
            && self.changed.is_empty()
    }
}

/// Reads every episode completely and checks dtypes, shapes, checksums and values, and the files
/// against the dataset's index (missing, extra, changed). With `reindex`, a new index listing the
/// files that read back intact replaces the old one (or is written for a dataset that had none); the
/// report then describes the dataset as it was before.
pub fn verify(
    dir: impl AsRef<Path>,
    reindex: bool,
    mut progress: impl FnMut(usize, usize),
) -> Result<VerifyReport, DataError> {
    let dir = dir.as_ref();
    // rewriting the index is a write: one writer at a time
    let _lock = if reindex {
        Some(crate::lock::DirLock::acquire(dir, "dataset")?)
    } else {
        None
    };
    let ds = Dataset::open_lenient(dir)?;
    let recorded: BTreeMap<PathBuf, &IndexEntry> = ds
        .index()
        .unwrap_or(&[])
        .iter()
        .map(|e| (ds.dir().join(e.relative_path()), e))
        .collect();
    let mut bad = BadEpisode::unreadable_in(&ds);
    // the files the index does not list are checked too, so that --reindex can take them in
    let files: Vec<PathBuf> = ds
        .entries()
        .iter()
        .map(|e| e.path.clone())
        .chain(ds.extra().iter().cloned())
        .collect();
    let n = files.len();
    let mut ok = 0;
    let mut indices: BTreeMap<(String, EpisodeKind), Vec<usize>> = BTreeMap::new();
    let mut changed = Vec::new();
    let mut intact = Vec::new();
    for (i, path) in files.iter().enumerate() {
        let checked = std::fs::read(path)
            .map_err(|e| DataError::io(path, e))
            .and_then(|bytes| decode_episode(path, &bytes).map(|ep| (bytes, ep)));
        match checked {
            Ok((bytes, ep)) => {
                ok += 1;
                let entry = IndexEntry::of(&ep.meta, &bytes);
                if recorded
                    .get(path)
                    .is_some_and(|r| (r.bytes, r.crc32) != (entry.bytes, entry.crc32))
                {
                    changed.push(path.clone());
                }
                indices
                    .entry((ep.meta.task.clone(), ep.meta.kind))
                    .or_default()
                    .push(ep.meta.index);
                intact.push(entry);
            }
            Err(err) => bad.push(BadEpisode {
                path: path.clone(),
                reason: err.to_string(),
            }),
        }
        progress(i + 1, n);
    }
    if reindex {
        write_index(ds.dir(), &intact)?;
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
        indexed: ds.index().is_some(),
        missing: ds.missing().to_vec(),
        extra: ds.extra().to_vec(),
        changed,
        reindexed: reindex,
    })
}
