//! One writer per folder: the lock a command takes on a run directory or a dataset before it writes
//! into it.
//!
//! The lock is an advisory file lock (`flock` on Unix, `LockFileEx` on Windows) on `DIR/.world4rl.lock`,
//! so the operating system releases it when its process ends, however it ends. The file also records
//! who holds the lock (process id, command line, start time): a second writer is refused with a
//! sentence naming that process, and a writer that finds the record of a process that died without
//! clearing it takes the lock over with a warning. The file itself is never deleted (deleting it
//! would let two processes lock two different files of the same name); a holder that ends normally
//! empties it.
//!
//! Readers (`eval`, `dream`, `data info`, `config check`) take no lock.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::DataError;

/// Name of the lock file inside a locked folder.
pub const LOCK_FILE: &str = ".world4rl.lock";

/// Who holds (or held) a lock, as recorded in the lock file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// Process id.
    pub pid: u32,
    /// The command line of that process.
    pub command: String,
    /// When it took the lock (seconds since the Unix epoch).
    pub started: u64,
}

impl LockHolder {
    fn this_process() -> Self {
        Self {
            pid: std::process::id(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            started: now_secs(),
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A held lock on a folder; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DirLock {
    file: File,
    path: PathBuf,
    taken_over: Option<LockHolder>,
}

impl DirLock {
    /// Locks `dir` (created when needed) for writing; `what` names the folder in messages ("run
    /// directory", "dataset"). Fails, without waiting, when another process holds the lock.
    pub fn acquire(dir: &Path, what: &str) -> Result<Self, DataError> {
        fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| DataError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = read_holder(&mut file);
                return Err(DataError::Locked {
                    what: what.to_string(),
                    dir: dir.to_path_buf(),
                    holder: describe(holder.as_ref()),
                });
            }
            Err(TryLockError::Error(e)) => return Err(DataError::io(&path, e)),
        }
        // a record left in the file belongs to a process that ended without emptying it
        let taken_over = read_holder(&mut file).filter(|h| h.pid != std::process::id());
        if let Some(h) = &taken_over {
            tracing::warn!(
                "{what} {}: taking over the lock left by process {} (`{}`), which is no longer running",
                dir.display(),
                h.pid,
                h.command
            );
        }
        let record = serde_json::to_string(&LockHolder::this_process()).expect("holder serialises");
        let write = |f: &mut File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.seek(SeekFrom::Start(0))?;
            f.write_all(record.as_bytes())?;
            f.sync_all()
        };
        write(&mut file).map_err(|e| DataError::io(&path, e))?;
        Ok(Self {
            file,
            path,
            taken_over,
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The holder whose stale record this lock replaced, if any.
    pub fn taken_over(&self) -> Option<&LockHolder> {
        self.taken_over.as_ref()
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // empty the record, then the lock goes with the file handle
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

fn read_holder(file: &mut File) -> Option<LockHolder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.trim()).ok()
}

fn describe(holder: Option<&LockHolder>) -> String {
    match holder {
        Some(h) => format!(
            "process {} (`{}`, started {} s ago)",
            h.pid,
            h.command,
            now_secs().saturating_sub(h.started)
        ),
        None => "another process".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_and_the_lock_is_free_again_after_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path(), "run directory").unwrap();
        assert!(first.taken_over().is_none());
        // a second open file description conflicts like another process would
        let err = DirLock::acquire(dir.path(), "run directory").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("process {}", std::process::id())) && msg.contains("in use"),
            "{msg}"
        );
        drop(first);
        // a normal release empties the record: the next writer takes no stale lock over
        let again = DirLock::acquire(dir.path(), "run directory").unwrap();
        assert!(again.taken_over().is_none());
    }

    #[test]
    fn a_stale_record_of_a_dead_process_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let dead = LockHolder {
            pid: u32::MAX - 7,
            command: "world4rl run configs/tabletop-tiny.toml".into(),
            started: 1,
        };
        // what a SIGKILLed holder leaves: its record, and no lock (the OS released it)
        fs::write(
            dir.path().join(LOCK_FILE),
            serde_json::to_string(&dead).unwrap(),
        )
        .unwrap();
        let lock = DirLock::acquire(dir.path(), "dataset").unwrap();
        assert_eq!(lock.taken_over(), Some(&dead));
        let now: LockHolder =
            serde_json::from_str(&fs::read_to_string(lock.path()).unwrap()).unwrap();
        assert_eq!(now.pid, std::process::id());
    }
}
