//! The standalone ledger: a durable journal of usage records under
//! `--state-dir`.
//!
//! Layout:
//! - `ledger.jsonl`: one JSON line per settled attempt ([`UsageRecord`]) or
//!   per attempt about to be forwarded ([`IntentLine`], written before the
//!   request leaves). Records are staged and written in groups: the
//!   requests that settle in one turn of the runtime share a `write(2)`,
//!   made before any of their responses leave. A line is in the page cache
//!   once `flush` returns, so it survives `kill -9` of the sidecar; `fsync`
//!   (off by default, `--ledger-fsync`) also makes it survive a power loss.
//!
//! Intents: an attempt's [`IntentLine`] holds its worst case (what its
//! reservation held); its record carries the same intent id. An intent
//! left without a record when the sidecar died (the request was in flight,
//! the provider may have billed it) is recorded at its worst case, marked
//! estimated, when the ledger is next opened ([`Ledger::take_unsettled`]):
//! the ledger may count more than the provider billed, never less. A
//! compaction carries the open intents over into the new journal. A
//! ledger whose writes fail is [`Ledger::broken`] until one succeeds.
//! - `ledger.snapshot.json`: the folded [`Aggregate`] up to some sequence
//!   number, written atomically (temp file, fsync, rename) when the journal
//!   grows past [`COMPACT_BYTES`]; the journal is then truncated.
//! - `ledger.lock`: held (`flock`) by the sidecar that has the ledger open,
//!   with its pid inside; a second sidecar on the same dir is refused.
//!
//! Opening replays snapshot + journal. A torn last line (the process died
//! mid-write) is cut off; a corrupt line elsewhere is an error that names
//! the line, rather than a silently wrong ledger.

use std::{
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use std::collections::BTreeMap;

use tokenwarden_core::ledger::{Aggregate, IntentLine, UsageRecord};

/// Journal size that triggers compaction into the snapshot.
pub const COMPACT_BYTES: u64 = 16 * 1024 * 1024;
/// Budget periods kept per budget in the snapshot.
const KEEP_PERIODS: usize = 24;

const JOURNAL: &str = "ledger.jsonl";
const SNAPSHOT: &str = "ledger.snapshot.json";
/// The lock a writing sidecar holds (`report` does not take it).
const LOCK: &str = "ledger.lock";
/// Held shared by readers, exclusive by a compaction.
const COMPACT_LOCK: &str = "ledger.compact.lock";

/// Ledger I/O errors.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Another process holds the ledger of this state dir.
    #[error(
        "{dir} is in use by another tokenwarden-sidecar{holder} (it holds {dir}/{LOCK}); give each sidecar its own --state-dir"
    )]
    InUse {
        /// The state dir.
        dir: String,
        /// ` (pid N)` when the holder wrote its pid, else empty.
        holder: String,
    },
    /// A line or the snapshot cannot be parsed.
    #[error("{path}:{line}: corrupt ledger entry: {message}")]
    Corrupt {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// Parser message.
        message: String,
    },
}

/// An open, writable ledger.
#[derive(Debug)]
pub struct Ledger {
    dir: PathBuf,
    /// Holds the state dir's exclusive lock while the ledger is open (the
    /// kernel releases it when the process ends, `kill -9` included).
    _lock: Option<File>,
    journal: File,
    journal_len: u64,
    fsync: bool,
    aggregate: Aggregate,
    next_seq: u64,
    compact_at: u64,
    /// Lines staged for the next flush (the last is `next_seq - 1`).
    staged: Vec<u8>,
    written_seq: u64,
    /// Intents written and not yet settled, with their lines.
    open: BTreeMap<u64, Vec<u8>>,
    next_intent: u64,
    /// Intents found open when the ledger was opened, not yet recorded.
    unsettled: Vec<IntentLine>,
    /// Why the last write failed, until one succeeds.
    broken: Option<String>,
}

/// What a replay of snapshot and journal found.
struct Replayed {
    aggregate: Aggregate,
    /// The journal's good length.
    good_len: u64,
    /// Intents without a record, by id.
    open: BTreeMap<u64, IntentLine>,
    /// One past the highest intent id seen.
    next_intent: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LedgerError + '_ {
    move |source| LedgerError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Take the state dir's exclusive lock: two sidecars appending to one
/// journal would write the same sequence numbers and each compact away the
/// other's records. The holder's pid is written into the lock file for the
/// error the next one gets. A file system without locks (some network
/// mounts) is warned about, not refused.
fn lock(dir: &Path) -> Result<Option<File>, LedgerError> {
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
            Err(LedgerError::InUse {
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

/// How often [`read`] starts over when compactions keep overtaking it.
const READ_ATTEMPTS: usize = 20;

/// Read snapshot and journal without opening for writing (for `report`,
/// also next to a running sidecar). A compaction between reading the
/// snapshot and reading the journal would pair the old snapshot with the
/// truncated journal and miss every record it folded in: the read holds
/// `ledger.compact.lock` shared, and a compaction that finds it held waits
/// for more growth. Where the file system has no locks, the snapshot is
/// read again afterwards and the whole read starts over if it changed.
pub fn read(dir: &Path) -> Result<Aggregate, LedgerError> {
    let _reading = compaction_lock(dir).and_then(|f| f.lock_shared().ok().map(|()| f));
    let mut snapshot = read_snapshot(dir)?;
    for _ in 0..READ_ATTEMPTS {
        let replayed = replay_from(dir, snapshot.as_deref(), false)?;
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

/// The file readers hold shared and a compaction exclusive, so a read never
/// overlaps a compaction. `None` where it cannot be opened (a read-only
/// state dir, say): the read then relies on its retries.
fn compaction_lock(dir: &Path) -> Option<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(COMPACT_LOCK))
        .ok()
}

/// The snapshot's bytes; `None` before the first compaction.
fn read_snapshot(dir: &Path) -> Result<Option<Vec<u8>>, LedgerError> {
    let path = dir.join(SNAPSHOT);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

/// Fold snapshot + journal; with `repair`, truncate a torn last line.
fn replay(dir: &Path, repair: bool) -> Result<Replayed, LedgerError> {
    replay_from(dir, read_snapshot(dir)?.as_deref(), repair)
}

/// One journal line: a record or an intent.
fn parse_line(buf: &[u8]) -> Result<Result<UsageRecord, IntentLine>, serde_json::Error> {
    if buf.starts_with(b"{\"intent\":") {
        serde_json::from_slice::<IntentLine>(buf).map(Err)
    } else {
        serde_json::from_slice::<UsageRecord>(buf).map(Ok)
    }
}

/// [`replay`] from snapshot bytes already read (`None`: no snapshot).
fn replay_from(dir: &Path, snapshot: Option<&[u8]>, repair: bool) -> Result<Replayed, LedgerError> {
    let mut agg: Aggregate = match snapshot {
        Some(bytes) => serde_json::from_slice(bytes).map_err(|e| LedgerError::Corrupt {
            path: dir.join(SNAPSHOT).display().to_string(),
            line: e.line(),
            message: e.to_string(),
        })?,
        None => Aggregate::default(),
    };
    let path = dir.join(JOURNAL);
    let mut open = BTreeMap::new();
    let mut next_intent = 1;
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Replayed {
                aggregate: agg,
                good_len: 0,
                open,
                next_intent,
            });
        }
        Err(e) => return Err(io(&path)(e)),
    };
    let mut reader = BufReader::new(file);
    let mut good_len: u64 = 0;
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
        match parse_line(&buf) {
            // Records already in the snapshot (a crash between snapshot and
            // truncation) are skipped: nothing is counted twice.
            Ok(Ok(r)) => {
                if let Some(i) = r.intent {
                    open.remove(&i);
                    next_intent = next_intent.max(i.saturating_add(1));
                }
                if r.seq > agg.last_seq {
                    agg.add(&r);
                }
                good_len += n as u64;
            }
            Ok(Err(intent)) => {
                next_intent = next_intent.max(intent.intent.saturating_add(1));
                open.insert(intent.intent, intent);
                good_len += n as u64;
            }
            Err(e) => {
                // A complete but unparsable line. If it is the last line it
                // may be a torn write that happened to end in '\n'; anywhere
                // else the file is damaged.
                let mut rest = Vec::new();
                let more = reader.read_until(b'\n', &mut rest).map_err(io(&path))?;
                if more == 0 {
                    break;
                }
                return Err(LedgerError::Corrupt {
                    path: path.display().to_string(),
                    line: line_no,
                    message: e.to_string(),
                });
            }
        }
    }
    if repair {
        let f = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        if f.metadata().map_err(io(&path))?.len() != good_len {
            f.set_len(good_len).map_err(io(&path))?;
        }
    }
    Ok(Replayed {
        aggregate: agg,
        good_len,
        open,
        next_intent,
    })
}

// === impl Ledger ===

impl Ledger {
    /// Open (creating) the ledger in `dir`.
    pub fn open(dir: &Path, fsync: bool) -> Result<Self, LedgerError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock = lock(dir)?;
        let Replayed {
            aggregate,
            good_len: journal_len,
            open,
            next_intent,
        } = replay(dir, true)?;
        let next_seq = aggregate.last_seq + 1;
        let path = dir.join(JOURNAL);
        let mut journal = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        journal.seek(SeekFrom::End(0)).map_err(io(&path))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            _lock: lock,
            journal,
            journal_len,
            fsync,
            aggregate,
            next_seq,
            compact_at: COMPACT_BYTES,
            staged: Vec::with_capacity(4096),
            written_seq: next_seq - 1,
            open: BTreeMap::new(),
            next_intent,
            unsettled: open.into_values().collect(),
            broken: None,
        })
    }

    /// The records of the intents found open when the ledger was opened
    /// (the sidecar died with them in flight): each at its worst case,
    /// estimated, settling its intent. The caller stages them (through
    /// the spool first, in connected mode) before serving.
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
    /// `write(2)`.
    pub fn intend(&mut self, record: UsageRecord) -> Result<u64, LedgerError> {
        let id = self.next_intent;
        self.next_intent += 1;
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
        if self.broken.is_none() {
            return true;
        }
        let path = self.dir.join("ledger.probe");
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
    /// [`flush`](Self::flush). The record keeps its seq when it is ahead of
    /// the ledger's (connected mode: the spool assigned it); otherwise it
    /// gets the next one.
    pub fn append(&mut self, mut record: UsageRecord) -> Result<UsageRecord, LedgerError> {
        self.stage(&mut record);
        self.flush()?;
        Ok(record)
    }

    /// Give the record its seq, fold it in and queue its line for the next
    /// [`flush`](Self::flush). Lines staged by requests that settle close
    /// together share one `write(2)` (group commit); a caller must flush
    /// before it tells anyone the record exists (before the response
    /// leaves).
    pub fn stage(&mut self, record: &mut UsageRecord) -> u64 {
        if let Some(i) = record.intent {
            self.open.remove(&i);
        }
        record.seq = record.seq.max(self.next_seq);
        record.write_json(&mut self.staged);
        self.staged.push(b'\n');
        self.next_seq = record.seq + 1;
        self.aggregate.add(record);
        record.seq
    }

    /// The highest seq whose line is in the journal (or was given up on by
    /// a failed flush, which logs the lines it could not write).
    pub fn written_seq(&self) -> u64 {
        self.written_seq
    }

    /// Write every staged line with one `write(2)` (and `fsync` with
    /// `--ledger-fsync`). On error the journal is cut back to its last
    /// whole line (a later write must not follow a torn one, which replay
    /// would take for corruption), the lines are logged in full so no
    /// record is lost, and they are dropped from the queue.
    pub fn flush(&mut self) -> Result<(), LedgerError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let written = self.journal.write_all(&self.staged).and_then(|()| {
            if self.fsync {
                self.journal.sync_data()
            } else {
                Ok(())
            }
        });
        self.written_seq = self.next_seq - 1;
        if let Err(e) = written {
            let _ = self.journal.set_len(self.journal_len);
            for line in String::from_utf8_lossy(&self.staged).lines() {
                tracing::error!(error = %e, record = %line, "cannot append to the ledger");
            }
            self.staged.clear();
            let e = io(&self.dir.join(JOURNAL))(e);
            self.broken = Some(e.to_string());
            return Err(e);
        }
        self.broken = None;
        self.journal_len += self.staged.len() as u64;
        self.staged.clear();
        if self.journal_len >= self.compact_at {
            // The records are durable already: a failed compaction must not
            // fail the flush, nor be retried on every record.
            if let Err(e) = self.compact() {
                tracing::warn!(error = %e, "ledger compaction failed; retrying after more growth");
                self.compact_at = self.journal_len.saturating_add(COMPACT_BYTES);
            }
        }
        Ok(())
    }

    /// Write the snapshot and truncate the journal.
    pub fn compact(&mut self) -> Result<(), LedgerError> {
        // Never wait for a reader on the request path: a compaction that
        // finds one retries after more growth.
        let lock = compaction_lock(&self.dir);
        if let Some(f) = &lock
            && let Err(std::fs::TryLockError::WouldBlock) = f.try_lock()
        {
            return Err(io(&self.dir.join(COMPACT_LOCK))(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                "a reader holds the journal; compacting later",
            )));
        }
        self.aggregate.prune_periods(KEEP_PERIODS);
        let snap = self.dir.join(SNAPSHOT);
        let tmp = self.dir.join(format!("{SNAPSHOT}.tmp"));
        let bytes = serde_json::to_vec(&self.aggregate).map_err(|e| LedgerError::Corrupt {
            path: SNAPSHOT.into(),
            line: 0,
            message: e.to_string(),
        })?;
        {
            let mut f = File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(&bytes).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, &snap).map_err(io(&snap))?;
        // The snapshot now holds everything; records left in the journal
        // would be skipped on replay (seq <= last_seq) if we crash here.
        let path = self.dir.join(JOURNAL);
        self.journal.set_len(0).map_err(io(&path))?;
        self.journal.seek(SeekFrom::Start(0)).map_err(io(&path))?;
        self.journal_len = 0;
        self.compact_at = COMPACT_BYTES;
        // The attempts in flight keep their intents in the new journal.
        let carried: Vec<u8> = self.open.values().flatten().copied().collect();
        if !carried.is_empty() {
            if let Err(e) = self.journal.write_all(&carried) {
                let _ = self.journal.set_len(0);
                let e = io(&path)(e);
                self.broken = Some(e.to_string());
                return Err(e);
            }
            self.journal_len = carried.len() as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenwarden_core::{catalog::Usage, config::Endpoint};

    fn rec(model: &str, out: u64) -> UsageRecord {
        UsageRecord {
            seq: 0,
            ts: "2026-11-22T10:00:00Z".parse().unwrap(),
            endpoint: Endpoint::ChatCompletions,
            requested_model: "gpt-5".into(),
            served_model: model.into(),
            provider: "openai".into(),
            route: None,
            score: None,
            reason: None,
            attempt: 1,
            status: 200,
            usage: Usage {
                input_tokens: 100,
                output_tokens: out,
                ..Default::default()
            },
            cost: Some("0.001".parse().unwrap()),
            estimated: false,
            budgets: vec![tokenwarden_core::ledger::BudgetPeriodRef {
                budget: tokenwarden_core::config::ObjectRef::new("ns", "team"),
                period_start: "2026-11-22T00:00:00Z".parse().unwrap(),
            }],
            intent: None,
        }
    }

    #[test]
    fn survives_reopen_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut l = Ledger::open(dir.path(), false).unwrap();
            assert_eq!(l.append(rec("gpt-5-mini", 1)).unwrap().seq, 1);
            assert_eq!(l.append(rec("gpt-5-mini", 2)).unwrap().seq, 2);
        }
        // Simulate kill -9 in the middle of a write.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(JOURNAL))
            .unwrap();
        f.write_all(br#"{"seq":3,"ts":"2026-11-"#).unwrap();
        drop(f);
        let mut l = Ledger::open(dir.path(), false).unwrap();
        let m = &l.aggregate().models["gpt-5-mini"];
        assert_eq!((m.requests, m.usage.output_tokens), (2, 3));
        assert_eq!(l.next_seq(), 3);
        l.append(rec("gpt-5", 4)).unwrap();
        drop(l);
        let text = std::fs::read_to_string(dir.path().join(JOURNAL)).unwrap();
        assert_eq!(text.lines().count(), 3, "torn line replaced: {text}");
        assert!(read(dir.path()).unwrap().models.contains_key("gpt-5"));
    }

    #[test]
    fn a_read_during_compactions_never_misses_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let mut l = Ledger::open(&path, false).unwrap();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let done = done.clone();
            std::thread::spawn(move || {
                // Every record is durable before the next; compact often.
                for i in 0..3000 {
                    l.append(rec("gpt-5-mini", 1)).unwrap();
                    if i % 10 == 9
                        && let Err(e) = l.compact()
                    {
                        // Only a read in progress may put it off.
                        assert!(e.to_string().contains("compacting later"), "{e}");
                    }
                }
                done.store(true, std::sync::atomic::Ordering::SeqCst);
            })
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let (mut seen, mut reads) = (0, 0);
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(std::time::Instant::now() < deadline, "writer too slow");
            let agg = read(&path).unwrap();
            let n = agg.models.get("gpt-5-mini").map_or(0, |m| m.requests);
            // Each read sees at least what the one before saw: a read that
            // paired an old snapshot with a truncated journal would not.
            assert!(n >= seen, "read {n} requests after {seen}");
            assert_eq!(n, agg.last_seq, "every record up to the last, once");
            (seen, reads) = (n, reads + 1);
        }
        writer.join().unwrap();
        assert_eq!(read(&path).unwrap().models["gpt-5-mini"].requests, 3000);
        assert!(reads > 10, "only {reads} reads overlapped the writer");
    }

    #[test]
    fn one_sidecar_at_a_time_holds_a_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = Ledger::open(dir.path(), false).unwrap();
        first.append(rec("gpt-5-mini", 1)).unwrap();
        let err = Ledger::open(dir.path(), false).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "in use by another tokenwarden-sidecar (pid {})",
                std::process::id()
            )),
            "{err}"
        );
        assert!(
            err.contains("give each sidecar its own --state-dir"),
            "{err}"
        );
        // Reading (report) does not need the lock.
        assert_eq!(read(dir.path()).unwrap().models["gpt-5-mini"].requests, 1);
        drop(first);
        let mut second = Ledger::open(dir.path(), false).unwrap();
        assert_eq!(second.append(rec("gpt-5-mini", 1)).unwrap().seq, 2);
    }

    #[test]
    fn compaction_keeps_totals_and_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::open(dir.path(), true).unwrap();
        for i in 0..10 {
            l.append(rec("gpt-5-mini", i)).unwrap();
        }
        l.compact().unwrap();
        l.append(rec("gpt-5-mini", 100)).unwrap();
        let before = l.aggregate().clone();
        drop(l);
        let l = Ledger::open(dir.path(), false).unwrap();
        assert_eq!(l.aggregate(), &before);
        assert_eq!(l.next_seq(), 12);
        assert_eq!(l.aggregate().models["gpt-5-mini"].requests, 11);
    }

    #[test]
    fn staged_lines_share_one_write_and_reach_the_journal_on_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL);
        let mut l = Ledger::open(dir.path(), false).unwrap();
        let mut a = rec("gpt-5-mini", 1);
        let mut b = rec("gpt-5-mini", 2);
        assert_eq!(l.stage(&mut a), 1);
        assert_eq!(l.stage(&mut b), 2);
        assert_eq!((a.seq, b.seq), (1, 2));
        assert_eq!(l.written_seq(), 0);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            0,
            "nothing written yet"
        );
        // Folded at once: /ledger and the budgets agree with the responses.
        assert_eq!(l.aggregate().models["gpt-5-mini"].requests, 2);
        l.flush().unwrap();
        assert_eq!(l.written_seq(), 2);
        let text = std::fs::read_to_string(&path).unwrap();
        let seqs: Vec<u64> = text
            .lines()
            .map(|line| serde_json::from_str::<UsageRecord>(line).unwrap().seq)
            .collect();
        assert_eq!(seqs, [1, 2]);
        l.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            text,
            "flushing nothing writes nothing"
        );
        drop(l);
        let l = Ledger::open(dir.path(), false).unwrap();
        assert_eq!(l.aggregate().models["gpt-5-mini"].usage.output_tokens, 3);
        assert_eq!(l.next_seq(), 3);
    }

    #[test]
    fn a_failed_flush_reports_and_the_next_lines_still_land() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL);
        let mut l = Ledger::open(dir.path(), false).unwrap();
        l.append(rec("a", 1)).unwrap();
        let good = std::fs::read_to_string(&path).unwrap();
        // A full disk: every write fails with ENOSPC.
        let real = std::mem::replace(
            &mut l.journal,
            OpenOptions::new().write(true).open("/dev/full").unwrap(),
        );
        l.stage(&mut rec("a", 2));
        let err = l.flush().unwrap_err().to_string();
        assert!(err.contains("ledger.jsonl"), "{err}");
        assert_eq!(
            l.written_seq(),
            2,
            "the failed lines were logged, not retried"
        );
        l.journal = real;
        l.append(rec("a", 3)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(&good));
        assert_eq!(text.lines().count(), 2, "{text}");
        drop(l);
        // The journal replays cleanly: no torn line in the middle.
        let l = Ledger::open(dir.path(), false).unwrap();
        assert_eq!(l.aggregate().models["a"].usage.output_tokens, 4);
        assert_eq!(l.next_seq(), 4);
    }

    #[test]
    fn corruption_in_the_middle_is_reported_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut l = Ledger::open(dir.path(), false).unwrap();
            l.append(rec("a", 1)).unwrap();
        }
        let path = dir.path().join(JOURNAL);
        let good = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{good}garbage\n{good}")).unwrap();
        let err = Ledger::open(dir.path(), false).unwrap_err().to_string();
        assert!(
            err.contains("ledger.jsonl:2: corrupt ledger entry"),
            "{err}"
        );
    }

    #[test]
    fn intents_without_a_record_are_recorded_once_at_their_worst_case() {
        let dir = tempfile::tempdir().unwrap();
        let worst = |out| UsageRecord {
            estimated: true,
            status: 0,
            ..rec("gpt-5-mini", out)
        };
        {
            let mut l = Ledger::open(dir.path(), false).unwrap();
            // Settled: its record carries the intent's id.
            let a = l.intend(worst(1000)).unwrap();
            let mut settled = UsageRecord {
                intent: Some(a),
                ..rec("gpt-5-mini", 7)
            };
            l.stage(&mut settled);
            l.flush().unwrap();
            // In flight through a compaction, then the process dies.
            let b = l.intend(worst(2000)).unwrap();
            assert_ne!(a, b);
            l.compact().unwrap();
            let c = l.intend(worst(3000)).unwrap();
            assert!(c > b);
            assert_eq!(l.aggregate().models["gpt-5-mini"].requests, 1);
        }
        let mut l = Ledger::open(dir.path(), false).unwrap();
        let mut unsettled = l.take_unsettled();
        assert_eq!(
            unsettled
                .iter()
                .map(|r| (r.usage.output_tokens, r.estimated, r.status))
                .collect::<Vec<_>>(),
            [(2000, true, 0), (3000, true, 0)]
        );
        for r in &mut unsettled {
            l.stage(r);
        }
        l.flush().unwrap();
        let totals = l.aggregate().models["gpt-5-mini"].clone();
        assert_eq!((totals.requests, totals.estimated_requests), (3, 2));
        assert_eq!(totals.usage.output_tokens, 5007);
        // A new intent's id is past every id in the journal.
        assert!(l.intend(worst(1)).unwrap() > unsettled[1].intent.unwrap());
        drop(l);
        // Recorded once: reopening finds the one just written, nothing more.
        let mut l = Ledger::open(dir.path(), false).unwrap();
        assert_eq!(l.take_unsettled().len(), 1);
        assert_eq!(l.aggregate().models["gpt-5-mini"].requests, 3);
        // `read` (report) sees the same totals.
        assert_eq!(read(dir.path()).unwrap().models["gpt-5-mini"], totals);
    }
}
