//! The index of a dataset: `DATASET/index.json` lists every committed episode (task, kind, index,
//! steps, file size and CRC-32 of the file), so that a deleted, added or changed episode file shows.
//! The writer rewrites it atomically after each episode ([`crate::DatasetWriter::write`]); readers
//! compare the files against it ([`crate::Dataset::open`], `data verify`).

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::episode::{EpisodeKind, EpisodeMeta};
use crate::store::{decode_episode, episode_files, relative_episode_path, write_atomic};
use crate::DataError;

/// Name of the index of committed episodes.
pub const INDEX_FILE: &str = "index.json";
const INDEX_FORMAT: &str = "world4rl-dataset-index";

/// One committed episode as the index records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexEntry {
    /// Task.
    pub task: String,
    /// Episode kind.
    pub kind: EpisodeKind,
    /// Index within (task, kind).
    pub index: usize,
    /// Steps (transitions).
    pub steps: usize,
    /// Size of the file in bytes.
    pub bytes: u64,
    /// CRC-32 of the whole file.
    pub crc32: u32,
}

impl IndexEntry {
    /// The entry of an episode encoded to `bytes`.
    pub fn of(meta: &EpisodeMeta, bytes: &[u8]) -> Self {
        Self {
            task: meta.task.clone(),
            kind: meta.kind,
            index: meta.index,
            steps: meta.steps,
            bytes: bytes.len() as u64,
            crc32: crc32fast::hash(bytes),
        }
    }

    /// The episode file's path relative to the dataset folder.
    pub fn relative_path(&self) -> PathBuf {
        relative_episode_path(&self.task, self.kind, self.index)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexFile {
    format: String,
    episodes: Vec<IndexEntry>,
}

/// Reads `DIR/index.json`: `Ok(None)` for a dataset written before the index.
pub fn read_index(dir: &Path) -> Result<Option<Vec<IndexEntry>>, DataError> {
    let path = dir.join(INDEX_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(DataError::io(&path, e)),
    };
    let file: IndexFile = serde_json::from_str(&text).map_err(|e| DataError::Corrupt {
        path: path.clone(),
        reason: format!("{e}; `world4rl data verify --reindex` rebuilds it from the episode files"),
    })?;
    if file.format != INDEX_FORMAT {
        return Err(DataError::Corrupt {
            path,
            reason: format!("format is '{}', expected '{INDEX_FORMAT}'", file.format),
        });
    }
    Ok(Some(file.episodes))
}

/// Writes `DIR/index.json` atomically, entries sorted by path.
pub fn write_index(dir: &Path, entries: &[IndexEntry]) -> Result<(), DataError> {
    let mut episodes = entries.to_vec();
    episodes.sort_by_key(|e| e.relative_path());
    let file = IndexFile {
        format: INDEX_FORMAT.into(),
        episodes,
    };
    let text = serde_json::to_string_pretty(&file).expect("index serialises");
    write_atomic(&dir.join(INDEX_FILE), text.as_bytes())
}

/// Index entries of the episode files of `dir` that read back intact (a full read of each).
pub fn index_intact_files(dir: &Path) -> Result<Vec<IndexEntry>, DataError> {
    let mut entries = Vec::new();
    for path in episode_files(dir)? {
        let bytes = fs::read(&path).map_err(|e| DataError::io(&path, e))?;
        if let Ok(ep) = decode_episode(&path, &bytes) {
            entries.push(IndexEntry::of(&ep.meta, &bytes));
        }
    }
    Ok(entries)
}
