//! The open, writable journal: group commit, intents, the spool's
//! unacked records, compaction.

use std::{
    collections::{BTreeMap, VecDeque},
    fs::{File, OpenOptions},
    io::{Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use jiff::Timestamp;
use tokenwarden_core::usage::{Aggregate, IntentLine, UsageRecord};

use crate::{
    COMPACT_BYTES, COMPACT_LOCK, DEFAULT_REPLAY_KEEP_BYTES, JOURNAL, JournalError, KEEP_PERIODS,
    SNAPSHOT, io, legacy,
    line::{self, Mark},
    lock,
    replay::{self, Replayed},
    segments, write_atomic,
};

/// The usage journal: the totals of every record, the intents in flight
/// and, in connected mode, the records the operator has not acked yet.
/// Durable under a state dir ([`Journal::open`]) or in memory only
/// ([`Journal::memory`]).
#[derive(Debug)]
pub struct Journal {
    /// The file; `None` in memory.
    store: Option<Store>,
    aggregate: Aggregate,
    next_seq: u64,
    /// Lines staged for the next flush (the last record is `next_seq - 1`).
    staged: Vec<u8>,
    written_seq: u64,
    /// Intents written and not yet settled, with their lines.
    open: BTreeMap<u64, Vec<u8>>,
    next_intent: u64,
    /// Intents found open when the journal was opened, not yet recorded.
    unsettled: Vec<IntentLine>,
    /// Why the last write failed, until one succeeds.
    broken: Option<String>,
    /// Connected mode: the records the operator has not acked.
    spool: Option<Spool>,
}

/// The journal's files.
#[derive(Debug)]
struct Store {
    dir: PathBuf,
    /// Holds the state dir's exclusive lock while the journal is open (the
    /// kernel releases it when the process ends, `kill -9` included).
    _lock: Option<File>,
    file: File,
    len: u64,
    fsync: bool,
    compact_at: u64,
    /// Lines that go before the next staged ones and stay until a write
    /// of them succeeds (spool marks, an upgrade's old spool).
    pending: Vec<u8>,
    /// An old spool to remove once `pending` is written.
    legacy: bool,
    /// Bytes of rotated segments kept for replays.
    keep_bytes: u64,
}

/// The unacked end of the journal.
#[derive(Debug, Default)]
struct Spool {
    records: VecDeque<UsageRecord>,
    acked: u64,
}

// === impl Journal ===

impl Journal {
    /// A journal in memory only (no state dir); `spool`: keep records until
    /// acked (connected mode).
    pub fn memory(spool: bool) -> Self {
        Journal {
            store: None,
            aggregate: Aggregate::default(),
            next_seq: 1,
            staged: Vec::new(),
            written_seq: 0,
            open: BTreeMap::new(),
            next_intent: 1,
            unsettled: Vec::new(),
            broken: None,
            spool: spool.then(Spool::default),
        }
    }

    /// Open (creating) the journal in `dir`; `fsync` every write (survives
    /// a power loss, not only `kill -9`); `spool`: connected mode, keep
    /// records until the operator acks them. An old spool in `dir` (before
    /// the one journal) is moved in.
    pub fn open(dir: &Path, fsync: bool, spool: bool) -> Result<Self, JournalError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock = lock::writer(dir)?;
        let replayed = replay::replay(dir, spool)?;
        let path = dir.join(JOURNAL);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        file.seek(SeekFrom::End(0)).map_err(io(&path))?;
        let Replayed {
            aggregate,
            good_len,
            open,
            next_intent,
            next_seq,
            spooling,
            acked,
            unacked,
        } = replayed;
        let mut store = Store {
            dir: dir.to_path_buf(),
            _lock: lock,
            file,
            len: good_len,
            fsync,
            compact_at: COMPACT_BYTES,
            pending: Vec::new(),
            legacy: false,
            keep_bytes: DEFAULT_REPLAY_KEEP_BYTES,
        };
        if spooling != spool {
            line::mark(
                &Mark {
                    spool: Some(spool),
                    ..Mark::default()
                },
                &mut store.pending,
            );
        }
        let mut journal = Journal {
            store: Some(store),
            aggregate,
            next_seq,
            staged: Vec::with_capacity(4096),
            written_seq: next_seq - 1,
            open: BTreeMap::new(),
            next_intent,
            unsettled: open.into_values().collect(),
            broken: None,
            spool: spool.then(|| Spool {
                records: unacked.into(),
                acked,
            }),
        };
        if spool && let Some(old) = legacy::read(dir)? {
            journal.take_in(old);
        }
        // Errors are logged and kept in `broken`: the marks stay pending.
        let _ = journal.flush();
        Ok(journal)
    }

    /// Move an old spool's records in: they were counted in the ledger
    /// file already (a record numbered past its totals was not, and is
    /// now), and go to the operator under their old seqs.
    fn take_in(&mut self, old: legacy::Spool) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        let spool = self.spool.get_or_insert_with(Spool::default);
        spool.acked = spool.acked.max(old.acked);
        self.next_seq = self.next_seq.max(old.next_seq).max(spool.acked + 1);
        line::mark(
            &Mark {
                acked: Some(spool.acked),
                next_seq: Some(self.next_seq),
                ..Mark::default()
            },
            &mut store.pending,
        );
        let mut records: Vec<UsageRecord> = spool.records.drain(..).collect();
        for r in old.unacked {
            line::record(&r, &mut store.pending);
            if r.seq > self.aggregate.last_seq {
                self.aggregate.add(&r);
            }
            records.push(r);
        }
        records.sort_by_key(|r| r.seq);
        records.dedup_by_key(|r| r.seq);
        let acked = spool.acked;
        spool.records = records.into_iter().filter(|r| r.seq > acked).collect();
        self.written_seq = self.next_seq - 1;
        store.legacy = true;
    }

    /// Keep at most `bytes` of rotated journal segments for what-if
    /// replays (0: none; see [`crate::records`]). Takes effect at the next
    /// compaction.
    pub fn set_replay_keep_bytes(&mut self, bytes: u64) {
        if let Some(store) = self.store.as_mut() {
            store.keep_bytes = bytes;
        }
    }

    /// Whether the journal is on file (else in memory only).
    pub fn is_durable(&self) -> bool {
        self.store.is_some()
    }

    /// The records of the intents found open when the journal was opened
    /// (the sidecar died with them in flight): each at its worst case,
    /// estimated, settling its intent. The caller stages them before
    /// serving.
    pub fn take_unsettled(&mut self) -> Vec<UsageRecord> {
        std::mem::take(&mut self.unsettled)
            .into_iter()
            .map(|i| UsageRecord {
                seq: 0,
                estimated: true,
                status: 0,
                intent: Some(i.intent),
                ..i.record
            })
            .collect()
    }

    /// Write the intent of an attempt about to be forwarded (its worst
    /// case, `record`) before it leaves; returns its id for the record
    /// that settles it. Lines staged by other requests go in the same
    /// `write(2)`. In memory nothing is written.
    pub fn intend(&mut self, record: UsageRecord) -> Result<u64, JournalError> {
        let id = self.next_intent;
        self.next_intent += 1;
        if self.store.is_none() {
            return Ok(id);
        }
        let line = IntentLine { intent: id, record };
        let at = self.staged.len();
        line.write_json(&mut self.staged);
        self.staged.push(b'\n');
        let bytes = self.staged[at..].to_vec();
        self.flush()?;
        self.open.insert(id, bytes);
        Ok(id)
    }

    /// Why writes to the journal fail, while they do.
    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// While [`broken`](Self::broken): whether the state dir takes writes
    /// again (a 64 KiB file written, synced and removed). Clears the state
    /// when it does.
    pub fn probe(&mut self) -> bool {
        let Some(store) = &self.store else {
            return true;
        };
        if self.broken.is_none() {
            return true;
        }
        let path = store.dir.join("ledger.probe");
        let wrote = File::create(&path)
            .and_then(|mut f| f.write_all(&[0u8; 64 * 1024]).and_then(|()| f.sync_all()));
        let _ = std::fs::remove_file(&path);
        if wrote.is_ok() {
            self.broken = None;
        }
        wrote.is_ok()
    }

    /// The folded totals.
    pub fn aggregate(&self) -> &Aggregate {
        &self.aggregate
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Append durably and fold in: [`stage`](Self::stage) then
    /// [`flush`](Self::flush).
    pub fn append(&mut self, mut record: UsageRecord) -> Result<UsageRecord, JournalError> {
        self.stage(&mut record);
        self.flush()?;
        Ok(record)
    }

    /// Give the record its seq (the next one, or its own when that is
    /// ahead) and, when its replay facts name no request yet, that seq as
    /// its request id; fold it in, spool it in connected mode and queue its line
    /// for the next [`flush`](Self::flush). Lines staged by requests that
    /// settle close together share one `write(2)` (group commit); a caller
    /// must flush before it tells anyone the record exists (before the
    /// response leaves).
    pub fn stage(&mut self, record: &mut UsageRecord) -> u64 {
        if let Some(i) = record.intent {
            self.open.remove(&i);
        }
        record.seq = record.seq.max(self.next_seq);
        self.next_seq = record.seq + 1;
        // The first attempt of an app request names it: its request id is
        // its own seq, unique per journal (the later attempts carry it).
        if let Some(r) = &mut record.replay
            && r.request == 0
        {
            r.request = record.seq;
        }
        self.aggregate.add(record);
        if self.store.is_some() {
            line::record(record, &mut self.staged);
        } else {
            self.written_seq = record.seq;
        }
        if let Some(s) = &mut self.spool {
            s.records.push_back(record.clone());
        }
        record.seq
    }

    /// The highest seq whose line is in the journal (or was given up on by
    /// a failed flush, which logs the lines it could not write).
    pub fn written_seq(&self) -> u64 {
        self.written_seq
    }

    /// Write every staged line with one `write(2)` (and `fsync` when the
    /// journal was opened so). On error the journal is cut back to its
    /// last whole line (a later write must not follow a torn one, which
    /// replay would take for corruption), the lines are logged in full so
    /// no record is lost, and they are dropped from the queue (a spooled
    /// record is still sent from memory).
    pub fn flush(&mut self) -> Result<(), JournalError> {
        let Some(store) = self.store.as_mut() else {
            return Ok(());
        };
        if self.staged.is_empty() && store.pending.is_empty() {
            return Ok(());
        }
        let marks = store.pending.len();
        let written = if marks == 0 {
            store.write(&self.staged)
        } else {
            let mut lines = std::mem::take(&mut store.pending);
            lines.extend_from_slice(&self.staged);
            let w = store.write(&lines);
            lines.truncate(marks);
            store.pending = lines;
            w
        };
        self.written_seq = self.next_seq - 1;
        if let Err(e) = written {
            for line in String::from_utf8_lossy(&self.staged).lines() {
                tracing::error!(error = %e, record = %line, "cannot append to the ledger");
            }
            self.staged.clear();
            let e = io(&store.dir.join(JOURNAL))(e);
            self.broken = Some(e.to_string());
            return Err(e);
        }
        self.broken = None;
        store.len += (marks + self.staged.len()) as u64;
        store.pending.clear();
        if std::mem::take(&mut store.legacy) {
            legacy::remove(&store.dir);
        }
        self.staged.clear();
        if store.len >= store.compact_at {
            // The records are durable already: a failed compaction must not
            // fail the flush, nor be retried on every record.
            if let Err(e) = self.compact() {
                tracing::warn!(error = %e, "ledger compaction failed; retrying after more growth");
                if let Some(store) = self.store.as_mut() {
                    store.compact_at = store.len.saturating_add(COMPACT_BYTES);
                }
            }
        }
        Ok(())
    }

    /// Write the snapshot and truncate the journal; the lines still needed
    /// (the spool's unacked records and its watermark, the intents in
    /// flight) start the new one.
    pub fn compact(&mut self) -> Result<(), JournalError> {
        let Some(store) = self.store.as_mut() else {
            return Ok(());
        };
        // Never wait for a reader on the request path: a compaction that
        // finds one retries after more growth.
        let lock = lock::compaction(&store.dir);
        if let Some(f) = &lock
            && let Err(std::fs::TryLockError::WouldBlock) = f.try_lock()
        {
            return Err(io(&store.dir.join(COMPACT_LOCK))(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                "a reader holds the journal; compacting later",
            )));
        }
        self.aggregate.prune_periods(KEEP_PERIODS);
        let snap = store.dir.join(SNAPSHOT);
        let bytes = serde_json::to_vec(&self.aggregate).map_err(|e| JournalError::Corrupt {
            path: SNAPSHOT.into(),
            line: 0,
            message: e.to_string(),
        })?;
        write_atomic(&snap, &bytes, true).map_err(io(&snap))?;
        // The snapshot now holds everything; records left in the journal
        // would be skipped on replay (seq <= last_seq) if we crash here.
        let carried = self.carried();
        let Some(store) = self.store.as_mut() else {
            return Ok(());
        };
        store.rotate(&carried)?;
        store.compact_at = COMPACT_BYTES.saturating_add(carried.len() as u64);
        if let Err(e) = segments::prune(&store.dir, store.keep_bytes) {
            tracing::warn!(error = %e, "cannot remove old replay segments; retrying at the next compaction");
        }
        Ok(())
    }

    /// What a compaction keeps: the spool (its mark, watermark and unacked
    /// records; skipped by the totals, which the snapshot holds) and the
    /// open intents.
    fn carried(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(s) = &self.spool {
            line::mark(
                &Mark {
                    spool: Some(true),
                    ..Mark::default()
                },
                &mut out,
            );
            line::mark(
                &Mark {
                    acked: Some(s.acked),
                    next_seq: Some(self.next_seq),
                    ..Mark::default()
                },
                &mut out,
            );
            for r in &s.records {
                line::record(r, &mut out);
            }
        }
        out.extend(self.open.values().flatten());
        out
    }
}

// === impl Journal (spool) ===

impl Journal {
    /// The operator holds every record up to `up_to`: drop them from the
    /// spool and write the watermark.
    pub fn ack(&mut self, up_to: u64) -> Result<(), JournalError> {
        let Some(s) = self.spool.as_mut() else {
            return Ok(());
        };
        if up_to <= s.acked {
            return Ok(());
        }
        s.acked = up_to.min(self.next_seq.saturating_sub(1));
        while s.records.front().is_some_and(|r| r.seq <= s.acked) {
            s.records.pop_front();
        }
        let acked = s.acked;
        if self.store.is_none() {
            return Ok(());
        }
        line::mark(
            &Mark {
                acked: Some(acked),
                ..Mark::default()
            },
            &mut self.staged,
        );
        self.flush()
    }

    /// Up to `limit` unacked records with seq > `after`, in seq order;
    /// only records already written (the operator never learns of a
    /// record a crash could still take back).
    pub fn after(&self, after: u64, limit: usize) -> Vec<UsageRecord> {
        let Some(s) = &self.spool else {
            return Vec::new();
        };
        let start = s.records.partition_point(|r| r.seq <= after);
        s.records
            .range(start..)
            .take_while(|r| r.seq <= self.written_seq)
            .take(limit)
            .cloned()
            .collect()
    }

    /// Whether a written record with seq > `after` waits.
    pub fn has_after(&self, after: u64) -> bool {
        let Some(s) = &self.spool else {
            return false;
        };
        let start = s.records.partition_point(|r| r.seq <= after);
        s.records
            .get(start)
            .is_some_and(|r| r.seq <= self.written_seq)
    }

    /// All unacked records (for rebuilding lease state after a restart).
    pub fn unacked(&self) -> impl Iterator<Item = &UsageRecord> {
        self.spool.iter().flat_map(|s| s.records.iter())
    }

    /// Unacked records.
    pub fn depth(&self) -> usize {
        self.spool.as_ref().map_or(0, |s| s.records.len())
    }

    /// When the oldest unacked record was settled.
    pub fn oldest(&self) -> Option<Timestamp> {
        self.spool.as_ref()?.records.front().map(|r| r.ts)
    }

    /// The ack watermark.
    pub fn acked(&self) -> u64 {
        self.spool.as_ref().map_or(0, |s| s.acked)
    }
}

// === impl Store ===

impl Store {
    /// Start a new journal holding `carried`, keeping the old one as the
    /// newest replay segment (unless none are kept): the new file is
    /// written (and synced with `fsync`) aside, the old one hard-linked as
    /// the segment, then the new one renamed over it. Until the rename the
    /// old journal is in place; a failure leaves it there.
    fn rotate(&mut self, carried: &[u8]) -> Result<(), JournalError> {
        let path = self.dir.join(JOURNAL);
        let next = self.dir.join(".ledger.jsonl.next");
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&next)
            .map_err(io(&next))?;
        file.write_all(carried).map_err(io(&next))?;
        if self.fsync {
            file.sync_all().map_err(io(&next))?;
        }
        // Appends go to the end wherever the handle was opened from.
        let file = OpenOptions::new()
            .append(true)
            .open(&next)
            .map_err(io(&next))?;
        if self.keep_bytes > 0 {
            let segment = segments::next(&self.dir)?;
            std::fs::hard_link(&path, &segment).map_err(io(&segment))?;
        }
        std::fs::rename(&next, &path).map_err(io(&path))?;
        if self.fsync {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io(&self.dir))?;
        }
        self.file = file;
        self.len = carried.len() as u64;
        Ok(())
    }

    /// One `write(2)` (and `fsync` when asked); on error the file is cut
    /// back to its last whole line.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let written = self.file.write_all(bytes).and_then(|()| {
            if self.fsync {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        if written.is_err() {
            let _ = self.file.set_len(self.len);
        }
        written
    }
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
