//! The journal's rotated segments, kept for what-if replays: a compaction
//! folds the journal into the snapshot, then keeps its lines as the newest
//! `requests-N.jsonl` instead of dropping them, and removes the oldest
//! segments while all of them together exceed the keep bound
//! (`--replay-keep-bytes`). [`records`] reads every settled record still
//! held: segments, then the journal.

use std::{
    fs::File,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
};

use tokenwarden_core::usage::UsageRecord;

use crate::{
    JOURNAL, JournalError, io,
    line::{self, Line},
    lock,
    replay::{READ_ATTEMPTS, read_snapshot},
};

const PREFIX: &str = "requests-";
const SUFFIX: &str = ".jsonl";

/// The segments of `dir`, oldest first, with their numbers.
pub(crate) fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|n| n.strip_suffix(SUFFIX))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((n, entry.path()));
    }
    out.sort();
    Ok(out)
}

/// The path the next segment takes: one past the highest number held.
pub(crate) fn next(dir: &Path) -> Result<PathBuf, JournalError> {
    let n = list(dir)?.last().map_or(1, |(n, _)| n.saturating_add(1));
    Ok(dir.join(format!("{PREFIX}{n}{SUFFIX}")))
}

/// Remove the oldest segments while all of them hold more than `keep`
/// bytes.
pub(crate) fn prune(dir: &Path, keep: u64) -> Result<(), JournalError> {
    let segs = list(dir)?;
    let mut sizes = Vec::with_capacity(segs.len());
    for (_, p) in &segs {
        sizes.push(std::fs::metadata(p).map_err(io(p))?.len());
    }
    let mut total: u64 = sizes.iter().sum();
    for ((_, p), size) in segs.iter().zip(sizes) {
        if total <= keep {
            break;
        }
        std::fs::remove_file(p).map_err(io(p))?;
        total -= size;
    }
    Ok(())
}

/// Every settled usage record still held under `dir` (the segments kept
/// for replay, then the journal), in seq order, each once (a compaction
/// carries unacked records into the new journal, so a record may be in
/// two files). Intents and marks are not records. Like [`crate::read`], it
/// holds `ledger.compact.lock` shared (no compaction rotates or prunes
/// meanwhile), and where the file system has no locks it starts over when
/// the snapshot changed under it.
pub fn records(dir: &Path) -> Result<Vec<UsageRecord>, JournalError> {
    let _reading = lock::compaction(dir).and_then(|f| f.lock_shared().ok().map(|()| f));
    let mut snapshot = read_snapshot(dir)?;
    for _ in 0..READ_ATTEMPTS {
        let mut out = Vec::new();
        for (_, p) in list(dir)? {
            read_records(&p, &mut out)?;
        }
        read_records(&dir.join(JOURNAL), &mut out)?;
        let after = read_snapshot(dir)?;
        if after == snapshot {
            out.sort_by_key(|r| r.seq);
            out.dedup_by_key(|r| r.seq);
            return Ok(out);
        }
        snapshot = after;
    }
    Err(io(&dir.join(JOURNAL))(std::io::Error::other(format!(
        "compacted {READ_ATTEMPTS} times while being read; try again"
    ))))
}

/// The record lines of one file (missing: none). A torn last line (no
/// `\n`, or unparsable at the end) is the write a crash cut short and is
/// skipped; an unparsable line elsewhere is corruption.
fn read_records(path: &Path, out: &mut Vec<UsageRecord>) -> Result<(), JournalError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(path)(e)),
    };
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let mut line_no = 0;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(io(path))? == 0 {
            return Ok(());
        }
        line_no += 1;
        if buf.last() != Some(&b'\n') {
            return Ok(());
        }
        match line::parse(&buf) {
            Ok(Line::Record(r)) => out.push(r),
            Ok(_) => {}
            Err(e) => {
                let mut rest = Vec::new();
                if reader.read_until(b'\n', &mut rest).map_err(io(path))? == 0 {
                    return Ok(());
                }
                return Err(JournalError::Corrupt {
                    path: path.display().to_string(),
                    line: line_no,
                    message: e.to_string(),
                });
            }
        }
    }
}

#[cfg(test)]
#[path = "segments_tests.rs"]
mod tests;
