//! On-disk layout of a dataset, the atomic writer and the checking reader.
//!
//! ```text
//! DATASET/
//!   dataset.json                                   DatasetSpec + format name + schema version
//!   index.json                                     every committed episode: task, kind, index, steps,
//!                                                  file size and CRC-32 of the file
//!   episodes/<task>/<kind>-<index:05>.safetensors  one episode per file ('/' in task names becomes '__')
//!   .world4rl.lock                                 the writer's lock (see [`crate::lock`])
//! ```
//! Each episode file is a plain safetensors file with the arrays `frames` (U8 `[T+1,H,W,3]`), `actions`
//! (F32 `[T,A]`), `rewards` (F32 `[T]`), `success` (U8 `[T+1]`) and, when the state is recorded, `states`
//! (F32 `[T+1,S]`). Its `__metadata__` holds `world4rl` (the [`EpisodeMeta`] as JSON) and `crc32` (a JSON
//! object with the CRC-32 of each array's bytes), so a flipped bit is caught as well as a truncation.
//!
//! An episode is committed when its file has been renamed into place *and* the index lists it (the
//! index is rewritten atomically after each episode). The index is what lets a dataset notice an
//! episode file that was deleted: [`Dataset::open`] refuses a dataset whose index lists episodes that
//! are gone, unless [`set_allow_missing`] was called (`--allow-missing`). A file the index does not
//! list (a collection killed between the two writes, or a file copied in by hand) is left out of the
//! dataset and reported by `data verify`. Datasets written before the index open as before.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::codec::corrupt;
pub use crate::codec::{decode_episode, encode_episode, read_episode, read_episode_meta};
use crate::episode::{DatasetSpec, Episode, EpisodeKind, EpisodeMeta, SCHEMA_VERSION};
use crate::index::{index_intact_files, read_index, write_index, IndexEntry};
use crate::lock::DirLock;
use crate::DataError;

/// Name of the dataset description file.
pub const DATASET_FILE: &str = "dataset.json";
/// Folder holding the episode files.
pub const EPISODES_DIR: &str = "episodes";
const FORMAT_NAME: &str = "world4rl-dataset";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DatasetFile {
    format: String,
    schema_version: u32,
    #[serde(flatten)]
    spec: DatasetSpec,
}

/// Folder name of a task inside `episodes/`.
pub fn task_dir_name(task: &str) -> String {
    task.replace('/', "__")
}

/// File name of an episode inside its task folder.
pub fn episode_file_name(kind: EpisodeKind, index: usize) -> String {
    format!("{}-{index:05}.safetensors", kind.as_str())
}

/// Path of an episode's file relative to the dataset folder.
pub fn relative_episode_path(task: &str, kind: EpisodeKind, index: usize) -> PathBuf {
    Path::new(EPISODES_DIR)
        .join(task_dir_name(task))
        .join(episode_file_name(kind, index))
}

static ALLOW_MISSING: AtomicBool = AtomicBool::new(false);

/// Lets [`Dataset::open`] open datasets whose index lists episodes that are gone (the CLI's
/// `--allow-missing`): learners then train on the episodes that are there.
pub fn set_allow_missing(allow: bool) {
    ALLOW_MISSING.store(allow, Ordering::Relaxed);
}

/// Writes `bytes` to `path` atomically: a hidden temporary file in the same folder, fsync, rename.
/// A write that fails midway (disk full, I/O error) removes the temporary file and leaves the
/// previous content of `path`, if any, untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    write_atomic_with(path, bytes, |f, b| f.write_all(b))
}

/// [`write_atomic`] with the step that writes the bytes into the temporary file supplied by the
/// caller: the seam tests use to make a write fail midway.
pub fn write_atomic_with(
    path: &Path,
    bytes: &[u8],
    write: impl FnOnce(&mut File, &[u8]) -> std::io::Result<()>,
) -> Result<(), DataError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        write(&mut f, bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(DataError::io(path, e));
    }
    Ok(())
}

fn read_spec(dir: &Path) -> Result<DatasetSpec, DataError> {
    let path = dir.join(DATASET_FILE);
    let text = fs::read_to_string(&path).map_err(|e| DataError::io(&path, e))?;
    let file: DatasetFile = serde_json::from_str(&text).map_err(|e| DataError::Corrupt {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if file.format != FORMAT_NAME {
        return Err(DataError::Corrupt {
            path,
            reason: format!("format is '{}', expected '{FORMAT_NAME}'", file.format),
        });
    }
    if file.schema_version != SCHEMA_VERSION {
        return Err(DataError::Corrupt {
            path,
            reason: format!(
                "schema version {} is not supported (this build reads {SCHEMA_VERSION})",
                file.schema_version
            ),
        });
    }
    file.spec.validate()?;
    Ok(file.spec)
}

/// Writes episodes into a dataset folder, one atomic file each, and keeps its index. Holds the
/// dataset's lock while it lives: a second writer is refused.
#[derive(Debug)]
pub struct DatasetWriter {
    dir: PathBuf,
    spec: DatasetSpec,
    index: Mutex<BTreeMap<PathBuf, IndexEntry>>,
    _lock: DirLock,
}

impl DatasetWriter {
    /// Creates the dataset, or re-opens it when `dataset.json` already holds the same spec
    /// (so an interrupted collection can be completed). Stale temporary files are removed. A
    /// dataset written before the index gets one, listing its episode files that read back intact.
    pub fn create(dir: impl AsRef<Path>, spec: DatasetSpec) -> Result<Self, DataError> {
        let dir = dir.as_ref().to_path_buf();
        spec.validate()?;
        let lock = DirLock::acquire(&dir, "dataset")?;
        let spec_path = dir.join(DATASET_FILE);
        if spec_path.exists() {
            let existing = read_spec(&dir)?;
            if existing != spec {
                return Err(DataError::Invalid(format!(
                    "{} already holds a dataset with a different spec ({:?}); use another --out folder",
                    dir.display(),
                    existing
                )));
            }
        } else {
            let file = DatasetFile {
                format: FORMAT_NAME.into(),
                schema_version: SCHEMA_VERSION,
                spec: spec.clone(),
            };
            let text = serde_json::to_string_pretty(&file).expect("spec serialises");
            write_atomic(&spec_path, text.as_bytes())?;
        }
        let episodes = dir.join(EPISODES_DIR);
        fs::create_dir_all(&episodes).map_err(|e| DataError::io(&episodes, e))?;
        remove_stale_tmp(&episodes);
        let entries = match read_index(&dir)? {
            Some(entries) => entries,
            None => {
                let entries = index_intact_files(&dir)?;
                write_index(&dir, &entries)?;
                entries
            }
        };
        let index = entries
            .into_iter()
            .map(|e| (e.relative_path(), e))
            .collect();
        Ok(Self {
            dir,
            spec,
            index: Mutex::new(index),
            _lock: lock,
        })
    }

    /// The dataset's spec.
    pub fn spec(&self) -> &DatasetSpec {
        &self.spec
    }

    /// The dataset folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path an episode of (task, kind, index) is written to.
    pub fn episode_path(&self, task: &str, kind: EpisodeKind, index: usize) -> PathBuf {
        self.dir.join(relative_episode_path(task, kind, index))
    }

    /// True when the episode is committed: the index lists it, and its file exists with the
    /// recorded size and a readable header (writes are atomic, so a file only fails this when it was
    /// damaged afterwards; a re-run then writes it again).
    pub fn contains(&self, task: &str, kind: EpisodeKind, index: usize) -> bool {
        let rel = relative_episode_path(task, kind, index);
        let path = self.dir.join(&rel);
        let recorded = self
            .index
            .lock()
            .expect("index lock")
            .get(&rel)
            .map(|e| e.bytes);
        recorded.is_some_and(|bytes| {
            fs::metadata(&path).is_ok_and(|m| m.len() == bytes) && read_episode_meta(&path).is_ok()
        })
    }

    /// Validates the episode against the spec and commits it atomically. Returns its path.
    pub fn write(&self, episode: &Episode) -> Result<PathBuf, DataError> {
        let m = &episode.meta;
        let s = &self.spec;
        if m.suite != s.suite
            || m.image_size != s.image_size
            || m.action_dim != s.action_dim
            || m.state_dim != s.state_dim
            || m.action_low != s.action_low
            || m.action_high != s.action_high
        {
            return Err(DataError::Invalid(format!(
                "episode {} {} #{} does not match the dataset spec (suite, image size, action or state dims, bounds)",
                m.task, m.kind, m.index
            )));
        }
        if m.schema_version != SCHEMA_VERSION {
            return Err(DataError::Invalid(format!(
                "episode schema version {} != {SCHEMA_VERSION}",
                m.schema_version
            )));
        }
        episode.validate()?;
        let bytes = encode_episode(episode)?;
        let path = self.episode_path(&m.task, m.kind, m.index);
        let entry = IndexEntry::of(m, &bytes);
        // one episode at a time: the file, then the index that commits it
        let mut index = self.index.lock().expect("index lock");
        write_atomic(&path, &bytes)?;
        index.insert(entry.relative_path(), entry);
        let entries: Vec<IndexEntry> = index.values().cloned().collect();
        write_index(&self.dir, &entries)?;
        Ok(path)
    }
}

fn remove_stale_tmp(episodes: &Path) {
    let Ok(tasks) = fs::read_dir(episodes) else {
        return;
    };
    for task in tasks.flatten() {
        if let Ok(files) = fs::read_dir(task.path()) {
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name.ends_with(".tmp") {
                    let _ = fs::remove_file(f.path());
                }
            }
        }
    }
}

/// One episode file of a dataset, known by its metadata.
#[derive(Clone, Debug)]
pub struct EpisodeEntry {
    /// The episode file.
    pub path: PathBuf,
    /// Its metadata (read from the header).
    pub meta: EpisodeMeta,
}

/// A dataset opened for reading. Opening reads `dataset.json`, the index and every episode header.
#[derive(Debug)]
pub struct Dataset {
    dir: PathBuf,
    spec: DatasetSpec,
    entries: Vec<EpisodeEntry>,
    bad: Vec<(PathBuf, String)>,
    index: Option<Vec<IndexEntry>>,
    missing: Vec<PathBuf>,
    extra: Vec<PathBuf>,
}

/// Every `*.safetensors` file under `episodes/`, sorted; hidden temporary files are skipped.
pub fn episode_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let root = dir.join(EPISODES_DIR);
    let mut out = Vec::new();
    let tasks = match fs::read_dir(&root) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(DataError::io(&root, e)),
    };
    for task in tasks {
        let task = task.map_err(|e| DataError::io(&root, e))?;
        if !task.path().is_dir() {
            continue;
        }
        for f in fs::read_dir(task.path()).map_err(|e| DataError::io(task.path(), e))? {
            let f = f.map_err(|e| DataError::io(task.path(), e))?;
            let name = f.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && name.ends_with(".safetensors") {
                out.push(f.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

impl Dataset {
    /// Opens a dataset. An unreadable episode header makes this fail with an error naming the file,
    /// and so do episodes the index lists that are gone (unless [`set_allow_missing`]); use
    /// [`Dataset::open_lenient`] to set such files aside (as `data verify` does to list them all).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, DataError> {
        let ds = Self::open_lenient(dir)?;
        if let Some((path, reason)) = ds.bad.first() {
            return Err(DataError::Corrupt {
                path: path.clone(),
                reason: reason.clone(),
            });
        }
        if let Some(first) = ds.missing.first() {
            if !ALLOW_MISSING.load(Ordering::Relaxed) {
                return Err(DataError::Invalid(format!(
                    "the dataset {} is missing {} of the {} episodes its index lists (first: {}); `world4rl data verify {}` lists them. Re-run the collection to write them again, or pass --allow-missing to go on with the episodes that are there",
                    ds.dir.display(),
                    ds.missing.len(),
                    ds.index.as_ref().map_or(0, |i| i.len()),
                    first.display(),
                    ds.dir.display()
                )));
            }
            tracing::warn!(
                "dataset {}: {} indexed episodes are missing; going on without them (--allow-missing)",
                ds.dir.display(),
                ds.missing.len()
            );
        }
        if !ds.extra.is_empty() {
            tracing::warn!(
                "dataset {}: {} episode files are not in its index and are left out (`world4rl data verify` lists them)",
                ds.dir.display(),
                ds.extra.len()
            );
        }
        Ok(ds)
    }

    /// Opens a dataset, setting aside the episode files whose header cannot be read.
    pub fn open_lenient(dir: impl AsRef<Path>) -> Result<Self, DataError> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.join(DATASET_FILE).exists() {
            return Err(DataError::Invalid(format!(
                "{} is not a world4rl dataset (no {DATASET_FILE}); create one with `world4rl collect`",
                dir.display()
            )));
        }
        let spec = read_spec(&dir)?;
        let index = read_index(&dir)?;
        let indexed: Option<std::collections::BTreeSet<PathBuf>> = index
            .as_ref()
            .map(|i| i.iter().map(|e| dir.join(e.relative_path())).collect());
        let files = episode_files(&dir)?;
        let mut entries = Vec::new();
        let mut bad = Vec::new();
        let mut extra = Vec::new();
        for path in &files {
            if indexed.as_ref().is_some_and(|set| !set.contains(path)) {
                extra.push(path.clone());
                continue;
            }
            let path = path.clone();
            match read_episode_meta(&path)
                .and_then(|m| check_meta_against_spec(&path, &m, &spec).map(|_| m))
            {
                Ok(meta) => entries.push(EpisodeEntry { path, meta }),
                Err(e) => bad.push((path, e.to_string())),
            }
        }
        let on_disk: std::collections::BTreeSet<&PathBuf> = files.iter().collect();
        let missing = indexed
            .iter()
            .flatten()
            .filter(|p| !on_disk.contains(p))
            .cloned()
            .collect();
        Ok(Self {
            dir,
            spec,
            entries,
            bad,
            index,
            missing,
            extra,
        })
    }

    /// The dataset folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The spec every episode shares.
    pub fn spec(&self) -> &DatasetSpec {
        &self.spec
    }

    /// Episodes whose header was read, sorted by path.
    pub fn entries(&self) -> &[EpisodeEntry] {
        &self.entries
    }

    /// Files set aside by [`Dataset::open_lenient`], with the reason.
    pub fn unreadable(&self) -> &[(PathBuf, String)] {
        &self.bad
    }

    /// The committed episodes as the index records them (`None`: a dataset without an index).
    pub fn index(&self) -> Option<&[IndexEntry]> {
        self.index.as_deref()
    }

    /// Episode files the index lists that are gone.
    pub fn missing(&self) -> &[PathBuf] {
        &self.missing
    }

    /// Episode files the index does not list (left out of [`Dataset::entries`]).
    pub fn extra(&self) -> &[PathBuf] {
        &self.extra
    }

    /// Loads and checks episode `i` of [`Dataset::entries`].
    pub fn load(&self, i: usize) -> Result<Episode, DataError> {
        let entry = self
            .entries
            .get(i)
            .ok_or_else(|| DataError::Invalid(format!("episode {i} out of range")))?;
        read_episode(&entry.path)
    }

    /// Loads every episode whose metadata passes `keep`, in entry order.
    pub fn load_where(
        &self,
        mut keep: impl FnMut(&EpisodeMeta) -> bool,
    ) -> Result<Vec<Episode>, DataError> {
        self.entries
            .iter()
            .filter(|e| keep(&e.meta))
            .map(|e| read_episode(&e.path))
            .collect()
    }

    /// Sorted task names present in the dataset.
    pub fn tasks(&self) -> Vec<String> {
        let mut t: Vec<String> = self.entries.iter().map(|e| e.meta.task.clone()).collect();
        t.sort();
        t.dedup();
        t
    }
}

fn check_meta_against_spec(path: &Path, m: &EpisodeMeta, s: &DatasetSpec) -> Result<(), DataError> {
    if m.suite != s.suite
        || m.image_size != s.image_size
        || m.action_dim != s.action_dim
        || m.state_dim != s.state_dim
    {
        return Err(corrupt(
            path,
            format!(
                "metadata (suite {}, image {}, action dim {}, state dim {}) disagrees with dataset.json",
                m.suite, m.image_size, m.action_dim, m.state_dim
            ),
        ));
    }
    let expected = episode_file_name(m.kind, m.index);
    if path
        .file_name()
        .map(|n| n.to_string_lossy() != expected)
        .unwrap_or(true)
    {
        return Err(corrupt(
            path,
            format!("file name does not match its metadata (expected {expected})"),
        ));
    }
    Ok(())
}
