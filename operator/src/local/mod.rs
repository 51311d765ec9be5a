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

use std::{
    fs::File,
    io::Write as _,
    path::{Path, PathBuf},
};

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

/// Write `bytes` to `path` atomically and durably: a temporary file,
/// fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("status")
    ));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()?;
    Ok(())
}
