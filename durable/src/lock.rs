//! The state dir's locks: one writer per journal, and no read overlapping
//! a compaction.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::Path,
};

use crate::{COMPACT_LOCK, JournalError, LOCK, io};

/// Take the state dir's exclusive lock: two sidecars appending to one
/// journal would write the same sequence numbers and each compact away the
/// other's records. The holder's pid is written into the lock file for the
/// error the next one gets. A file system without locks (some network
/// mounts) is warned about, not refused.
pub(crate) fn writer(dir: &Path) -> Result<Option<File>, JournalError> {
    let path = dir.join(LOCK);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io(&path))?;
    match file.try_lock() {
        Ok(()) => {
            // Best effort: the pid only makes the error clearer.
            let _ = file.set_len(0);
            let _ = writeln!(file, "{}", std::process::id());
            Ok(Some(file))
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            let pid = pid.trim();
            Err(JournalError::InUse {
                dir: dir.display().to_string(),
                holder: if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {pid})")
                },
            })
        }
        Err(std::fs::TryLockError::Error(e)) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot lock the state dir; make sure no other sidecar uses it");
            Ok(None)
        }
    }
}

/// The file readers hold shared and a compaction exclusive, so a read never
/// overlaps a compaction. `None` where it cannot be opened (a read-only
/// state dir, say): the read then relies on its retries.
pub(crate) fn compaction(dir: &Path) -> Option<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(COMPACT_LOCK))
        .ok()
}
