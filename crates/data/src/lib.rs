//! world4rl episode datasets (no torch).
//!
//! A dataset is a folder of episodes, one safetensors file each, plus `dataset.json`; see [`store`] for
//! the layout and [`episode`] for the alignment of frames, actions and success flags. Writes are atomic
//! (temporary file, then rename), so a killed collector never leaves a half episode visible, and the
//! reader checks every array's dtype, shape and CRC-32 against the metadata.

mod codec;
pub mod episode;
pub mod index;
pub mod lock;
pub mod report;
pub mod sampler;
pub mod store;

use std::path::{Path, PathBuf};

pub use codec::canonical_safetensors_header;
pub use episode::{DatasetSpec, Episode, EpisodeKind, EpisodeMeta, FrameRender, SCHEMA_VERSION};
pub use index::{read_index, write_index, IndexEntry};
pub use lock::{DirLock, LockHolder};
pub use report::{info, verify, DatasetInfo, VerifyReport};
pub use sampler::{holdout_split, WindowBatch, WindowConfig, WindowSampler};
pub use store::{
    encode_episode, read_episode, set_allow_missing, write_atomic, write_atomic_with, Dataset,
    DatasetWriter, EpisodeEntry,
};

/// Errors of the dataset crate. Each names the file concerned where there is one.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file exists but its content is wrong (truncated, bad header, wrong dtype or shape, checksum).
    #[error("{path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Bad input from the caller (wrong sizes, NaN actions, mismatched spec).
    #[error("{0}")]
    Invalid(String),
    /// Another process is writing into the folder.
    #[error("the {what} {dir} is in use by {holder}; wait for it to finish, or stop that process, then run the command again")]
    Locked {
        /// What the folder is ("run directory", "dataset").
        what: String,
        /// The folder.
        dir: PathBuf,
        /// Who holds the lock.
        holder: String,
    },
}

impl DataError {
    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
}
