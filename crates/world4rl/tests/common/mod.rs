//! Helpers shared by the tests that run the project's `.venv` Python.

use std::path::{Path, PathBuf};

/// The workspace root.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The project's `.venv` Python (installed by `scripts/setup.sh`).
pub fn python() -> PathBuf {
    let p = root().join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh (it installs the Python venv that provides libtorch)",
        p.display()
    );
    p
}
