//! Local mode: the operator on one machine, from a directory of YAML
//! files instead of the Kubernetes API (mirrors `crate::kube`).
//!
//! - `source`: the watched directory, status files, events.
//! - `ledger`: the cluster ledger file.
//! - `auth`: a shared secret every sidecar presents.
//! - `leader`: a lock file for leadership.
//! - `check`: `--check-config`.

mod auth;
mod check;
mod leader;
mod ledger;
mod source;

use std::path::{Path, PathBuf};

pub use self::{
    auth::{SecretError, SharedSecret},
    check::{DirReport, FileError, FileReport, check_dir},
    leader::local_leadership,
    ledger::FileLedger,
    source::LocalSource,
};

/// The YAML files of a directory, sorted by name.
pub fn yaml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
