//! Reading a journal back: the snapshot, then every whole line, folding
//! records into the totals, tracking open intents and the spool.

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::{BufRead, BufReader},
    path::Path,
};

use tokenwarden_core::usage::{Aggregate, IntentLine, UsageRecord};

use crate::{
    JOURNAL, JournalError, SNAPSHOT, io,
    line::{self, Line},
    lock,
};

/// How often [`read`] starts over when compactions keep overtaking it.
pub(crate) const READ_ATTEMPTS: usize = 20;

/// What a replay of snapshot and journal found.
#[derive(Default)]
pub(crate) struct Replayed {
    pub aggregate: Aggregate,
    /// The journal's good length.
    pub good_len: u64,
    /// Intents without a record, by id.
    pub open: BTreeMap<u64, IntentLine>,
    /// One past the highest intent id seen.
    pub next_intent: u64,
    /// The seq the next record gets at least.
    pub next_seq: u64,
    /// Whether the journal ends in a spooled stretch.
    pub spooling: bool,
    /// The ack watermark.
    pub acked: u64,
    /// The records of spooled stretches above the watermark, by seq, once
    /// each (only when asked for).
    pub unacked: Vec<UsageRecord>,
}

/// Read snapshot and journal without opening for writing (for `report`,
/// also next to a running sidecar). A compaction between reading the
/// snapshot and reading the journal would pair the old snapshot with the
/// truncated journal and miss every record it folded in: the read holds
/// `ledger.compact.lock` shared, and a compaction that finds it held waits
/// for more growth. Where the file system has no locks, the snapshot is
/// read again afterwards and the whole read starts over if it changed.
pub fn read(dir: &Path) -> Result<Aggregate, JournalError> {
    let _reading = lock::compaction(dir).and_then(|f| f.lock_shared().ok().map(|()| f));
    let mut snapshot = read_snapshot(dir)?;
    for _ in 0..READ_ATTEMPTS {
        let replayed = replay_from(dir, snapshot.as_deref(), false, false)?;
        let after = read_snapshot(dir)?;
        if after == snapshot {
            return Ok(replayed.aggregate);
        }
        snapshot = after;
    }
    Err(io(&dir.join(SNAPSHOT))(std::io::Error::other(format!(
        "compacted {READ_ATTEMPTS} times while being read; try again"
    ))))
}

/// The snapshot's bytes; `None` before the first compaction.
pub(crate) fn read_snapshot(dir: &Path) -> Result<Option<Vec<u8>>, JournalError> {
    let path = dir.join(SNAPSHOT);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

/// Fold snapshot + journal, truncating a torn last line, keeping the
/// unacked records with `spool`.
pub(crate) fn replay(dir: &Path, spool: bool) -> Result<Replayed, JournalError> {
    replay_from(dir, read_snapshot(dir)?.as_deref(), true, spool)
}

/// [`replay`] from snapshot bytes already read (`None`: no snapshot);
/// `repair` cuts a torn tail off the file.
fn replay_from(
    dir: &Path,
    snapshot: Option<&[u8]>,
    repair: bool,
    spool: bool,
) -> Result<Replayed, JournalError> {
    let aggregate: Aggregate = match snapshot {
        Some(bytes) => serde_json::from_slice(bytes).map_err(|e| JournalError::Corrupt {
            path: dir.join(SNAPSHOT).display().to_string(),
            line: e.line(),
            message: e.to_string(),
        })?,
        None => Aggregate::default(),
    };
    let mut out = Replayed {
        aggregate,
        next_intent: 1,
        ..Replayed::default()
    };
    let path = dir.join(JOURNAL);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out.finish()),
        Err(e) => return Err(io(&path)(e)),
    };
    let mut reader = BufReader::new(file);
    let mut line_no = 0;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(io(&path))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if buf.last() != Some(&b'\n') {
            break; // torn tail: the write never finished
        }
        match line::parse(&buf) {
            Ok(l) => out.fold(l, spool),
            Err(e) => {
                // A complete but unparsable line. If it is the last line it
                // may be a torn write that happened to end in '\n'; anywhere
                // else the file is damaged.
                let mut rest = Vec::new();
                if reader.read_until(b'\n', &mut rest).map_err(io(&path))? == 0 {
                    break;
                }
                return Err(JournalError::Corrupt {
                    path: path.display().to_string(),
                    line: line_no,
                    message: e.to_string(),
                });
            }
        }
        out.good_len += n as u64;
    }
    if repair {
        let f = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        if f.metadata().map_err(io(&path))?.len() != out.good_len {
            f.set_len(out.good_len).map_err(io(&path))?;
        }
    }
    Ok(out.finish())
}

// === impl Replayed ===

impl Replayed {
    /// Take in one whole line.
    fn fold(&mut self, line: Line, spool: bool) {
        match line {
            Line::Record(r) => {
                if let Some(i) = r.intent {
                    self.open.remove(&i);
                    self.next_intent = self.next_intent.max(i.saturating_add(1));
                }
                self.next_seq = self.next_seq.max(r.seq.saturating_add(1));
                // Records already counted (in the snapshot, or carried over
                // by a compaction for the spool) are skipped: nothing is
                // counted twice.
                if r.seq > self.aggregate.last_seq {
                    self.aggregate.add(&r);
                }
                // Once each, in seq order: a record may appear twice (an
                // upgrade interrupted and made again).
                if spool && self.spooling && self.unacked.last().is_none_or(|last| last.seq < r.seq)
                {
                    self.unacked.push(r);
                }
            }
            Line::Intent(intent) => {
                self.next_intent = self.next_intent.max(intent.intent.saturating_add(1));
                self.open.insert(intent.intent, intent);
            }
            Line::Mark(m) => {
                if let Some(s) = m.spool {
                    self.spooling = s;
                }
                if let Some(a) = m.acked {
                    self.acked = self.acked.max(a);
                }
                if let Some(n) = m.next_seq {
                    self.next_seq = self.next_seq.max(n);
                }
            }
        }
    }

    /// Settle the derived numbers once every line is in.
    fn finish(mut self) -> Self {
        let acked = self.acked;
        self.unacked.retain(|r| r.seq > acked);
        self.next_seq = self
            .next_seq
            .max(self.aggregate.last_seq.saturating_add(1))
            .max(acked.saturating_add(1));
        self
    }
}
