//! The spool files of sidecars before the one journal (`spool.jsonl`,
//! `spool.meta.json`): read once at start-up, moved into the journal,
//! removed.

use std::{
    fs::File,
    io::{BufRead, BufReader},
    path::Path,
};

use serde::Deserialize;
use tokenwarden_core::usage::UsageRecord;

use crate::{JournalError, io};

/// The old spool's records, one JSON line each.
pub(crate) const FILE: &str = "spool.jsonl";
/// The old spool's `{next_seq, acked}`.
pub(crate) const META: &str = "spool.meta.json";

#[derive(Debug, Default, Deserialize)]
struct Meta {
    #[serde(default)]
    next_seq: u64,
    #[serde(default)]
    acked: u64,
}

/// What an old spool held.
#[derive(Debug)]
pub(crate) struct Spool {
    /// Its ack watermark.
    pub acked: u64,
    /// The seq it would have given next.
    pub next_seq: u64,
    /// Its unacked records, by seq.
    pub unacked: Vec<UsageRecord>,
}

/// The old spool in `dir`; `None` when there is none.
pub(crate) fn read(dir: &Path) -> Result<Option<Spool>, JournalError> {
    let meta_path = dir.join(META);
    let meta: Option<Meta> = match std::fs::read(&meta_path) {
        // An unreadable meta file was ignored by the old spool too.
        Ok(b) => Some(serde_json::from_slice(&b).unwrap_or_default()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(&meta_path)(e)),
    };
    let path = dir.join(FILE);
    let file = match File::open(&path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(&path)(e)),
    };
    if meta.is_none() && file.is_none() {
        return Ok(None);
    }
    let meta = meta.unwrap_or_default();
    let mut unacked = Vec::new();
    let mut max_seq = 0;
    if let Some(f) = file {
        let mut reader = BufReader::new(f);
        let mut buf = Vec::new();
        let mut line = 0;
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf).map_err(io(&path))?;
            if n == 0 || buf.last() != Some(&b'\n') {
                break; // end, or a torn tail
            }
            line += 1;
            match serde_json::from_slice::<UsageRecord>(&buf) {
                Ok(r) => {
                    max_seq = max_seq.max(r.seq);
                    if r.seq > meta.acked {
                        unacked.push(r);
                    }
                }
                Err(e) => {
                    let mut rest = Vec::new();
                    if reader.read_until(b'\n', &mut rest).map_err(io(&path))? == 0 {
                        break; // a torn last line that ended in '\n'
                    }
                    return Err(JournalError::Corrupt {
                        path: path.display().to_string(),
                        line,
                        message: e.to_string(),
                    });
                }
            }
        }
    }
    unacked.sort_by_key(|r| r.seq);
    unacked.dedup_by_key(|r| r.seq);
    Ok(Some(Spool {
        acked: meta.acked,
        next_seq: meta.next_seq.max(max_seq.saturating_add(1)),
        unacked,
    }))
}

/// Remove the old spool once the journal holds what it held.
pub(crate) fn remove(dir: &Path) {
    for name in [FILE, META] {
        let path = dir.join(name);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove the old spool file; it is read again (and skipped) next start");
        }
    }
}
