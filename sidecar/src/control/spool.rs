//! The usage spool: every settled record until the operator acks it.
//!
//! Layout under `--state-dir`:
//! - `spool.jsonl`: one JSON `UsageRecord` per line, appended with one
//!   `write(2)` per record before the record counts as settled. Once the
//!   append returns the record is in the page cache and survives `kill -9`
//!   of the sidecar; with `--ledger-fsync` each append is also fsynced
//!   (survives a power loss).
//! - `spool.meta.json`: `{next_seq, acked}`, rewritten (temp file + rename)
//!   when the operator acks and when the spool is compacted, so sequence
//!   numbers stay monotonic even when every record was acked and dropped.
//!
//! Compaction rewrites `spool.jsonl` with only the unacked records once the
//! acked ones dominate it. Opening replays the file (a torn last line is
//! cut off) and keeps the records above the ack watermark.

use std::{
    collections::VecDeque,
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokenwarden_core::ledger::UsageRecord;

use super::snapshot::write_atomic;

const FILE: &str = "spool.jsonl";
const META: &str = "spool.meta.json";
/// Compact when the file holds at least this many acked records and they
/// outnumber the unacked ones.
const COMPACT_MIN_ACKED: usize = 1000;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Meta {
    next_seq: u64,
    acked: u64,
}

/// Unacked usage records, in seq order.
#[derive(Debug)]
pub struct Spool {
    dir: Option<PathBuf>,
    file: Option<File>,
    fsync: bool,
    records: VecDeque<UsageRecord>,
    next_seq: u64,
    acked: u64,
    /// Lines in the file (acked and unacked).
    file_records: usize,
}

// === impl Spool ===

impl Spool {
    /// A spool in memory only (no state dir).
    pub fn memory(first_seq: u64) -> Self {
        Spool {
            dir: None,
            file: None,
            fsync: false,
            records: VecDeque::new(),
            next_seq: first_seq.max(1),
            acked: 0,
            file_records: 0,
        }
    }

    /// Open (creating) the spool in `dir`; sequence numbers continue from
    /// the file, the meta file and `min_next_seq` (the local ledger's),
    /// whichever is highest.
    pub fn open(dir: &Path, fsync: bool, min_next_seq: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let meta: Meta = match std::fs::read(dir.join(META)) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Meta::default(),
            Err(e) => return Err(e),
        };
        let path = dir.join(FILE);
        let mut records = VecDeque::new();
        let mut max_seq = 0;
        let mut good_len: u64 = 0;
        let mut file_records = 0;
        if let Ok(f) = File::open(&path) {
            let mut reader = BufReader::new(f);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                let n = reader.read_until(b'\n', &mut buf)?;
                if n == 0 || buf.last() != Some(&b'\n') {
                    break; // end, or a torn tail
                }
                match serde_json::from_slice::<UsageRecord>(&buf) {
                    Ok(r) => {
                        good_len += n as u64;
                        file_records += 1;
                        max_seq = max_seq.max(r.seq);
                        if r.seq > meta.acked {
                            records.push_back(r);
                        }
                    }
                    Err(e) => {
                        let mut rest = Vec::new();
                        if reader.read_until(b'\n', &mut rest)? == 0 {
                            break; // a torn last line that ended in '\n'
                        }
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!(
                                "{}: corrupt record after byte {good_len}: {e}",
                                path.display()
                            ),
                        ));
                    }
                }
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if file.metadata()?.len() != good_len {
            file.set_len(good_len)?;
        }
        let mut sorted: Vec<_> = records.into_iter().collect();
        sorted.sort_by_key(|r| r.seq);
        Ok(Spool {
            dir: Some(dir.to_path_buf()),
            file: Some(file),
            fsync,
            records: sorted.into(),
            next_seq: meta
                .next_seq
                .max(max_seq.saturating_add(1))
                .max(min_next_seq)
                .max(1),
            acked: meta.acked,
            file_records,
        })
    }

    /// Assign the next seq and append. The record is kept in memory even
    /// when the file write fails (the error is returned for the caller to
    /// log): it will still be sent.
    pub fn append(&mut self, mut record: UsageRecord) -> (UsageRecord, std::io::Result<()>) {
        record.seq = self.next_seq;
        self.next_seq += 1;
        let result = self.write(&record);
        self.records.push_back(record.clone());
        (record, result)
    }

    fn write(&mut self, record: &UsageRecord) -> std::io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let mut line = Vec::with_capacity(512);
        record.write_json(&mut line);
        line.push(b'\n');
        file.write_all(&line)?;
        if self.fsync {
            file.sync_data()?;
        }
        self.file_records += 1;
        Ok(())
    }

    /// The operator made every record up to `up_to` durable.
    pub fn ack(&mut self, up_to: u64) -> std::io::Result<()> {
        if up_to <= self.acked {
            return Ok(());
        }
        self.acked = up_to.min(self.next_seq.saturating_sub(1));
        while self.records.front().is_some_and(|r| r.seq <= self.acked) {
            self.records.pop_front();
        }
        let acked_in_file = self.file_records.saturating_sub(self.records.len());
        if acked_in_file >= COMPACT_MIN_ACKED && acked_in_file > self.records.len() {
            self.compact()
        } else {
            self.write_meta()
        }
    }

    fn write_meta(&self) -> std::io::Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let meta = Meta {
            next_seq: self.next_seq,
            acked: self.acked,
        };
        write_atomic(&dir.join(META), &serde_json::to_vec(&meta)?, self.fsync)
    }

    /// Rewrite the file with the unacked records only.
    pub fn compact(&mut self) -> std::io::Result<()> {
        let Some(dir) = self.dir.clone() else {
            return Ok(());
        };
        // Meta first: if we die before the rename, the old file is
        // replayed and the watermark filters it.
        let meta = Meta {
            next_seq: self.next_seq,
            acked: self.acked,
        };
        write_atomic(&dir.join(META), &serde_json::to_vec(&meta)?, true)?;
        let mut bytes = Vec::new();
        for r in &self.records {
            r.write_json(&mut bytes);
            bytes.push(b'\n');
        }
        let path = dir.join(FILE);
        write_atomic(&path, &bytes, true)?;
        self.file = Some(OpenOptions::new().append(true).open(&path)?);
        self.file_records = self.records.len();
        Ok(())
    }

    /// Up to `limit` unacked records with seq > `after`, in seq order.
    pub fn after(&self, after: u64, limit: usize) -> Vec<UsageRecord> {
        let start = self.records.partition_point(|r| r.seq <= after);
        self.records.range(start..).take(limit).cloned().collect()
    }

    /// Whether a record with seq > `after` waits.
    pub fn has_after(&self, after: u64) -> bool {
        self.records.back().is_some_and(|r| r.seq > after)
    }

    /// All unacked records (for rebuilding lease state after a restart).
    pub fn unacked(&self) -> impl Iterator<Item = &UsageRecord> {
        self.records.iter()
    }

    /// Unacked records.
    pub fn depth(&self) -> usize {
        self.records.len()
    }

    /// When the oldest unacked record was settled.
    pub fn oldest(&self) -> Option<Timestamp> {
        self.records.front().map(|r| r.ts)
    }

    /// The ack watermark.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The seq the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenwarden_core::{catalog::Usage, config::Endpoint};

    fn rec(out: u64) -> UsageRecord {
        UsageRecord {
            seq: 0,
            ts: "2026-11-22T10:00:00Z".parse().unwrap(),
            endpoint: Endpoint::ChatCompletions,
            requested_model: "gpt-5".into(),
            served_model: "gpt-5-mini".into(),
            provider: "openai".into(),
            route: None,
            score: None,
            reason: None,
            attempt: 1,
            status: 200,
            usage: Usage {
                output_tokens: out,
                ..Default::default()
            },
            cost: Some("0.001".parse().unwrap()),
            estimated: false,
            budgets: vec![],
            intent: None,
        }
    }

    #[test]
    fn records_survive_reopen_acks_and_compaction_with_monotonic_seqs() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(dir.path(), false, 1).unwrap();
            for i in 0..5 {
                let (r, res) = s.append(rec(i));
                res.unwrap();
                assert_eq!(r.seq, i + 1);
            }
            s.ack(2).unwrap();
            assert_eq!(s.depth(), 3);
        }
        // A torn tail from a kill mid-write.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap();
        f.write_all(br#"{"seq":6,"ts":"#).unwrap();
        drop(f);
        let mut s = Spool::open(dir.path(), false, 1).unwrap();
        let seqs: Vec<u64> = s.after(0, 100).iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![3, 4, 5], "acked dropped, torn line cut");
        assert_eq!(s.after(3, 1)[0].seq, 4);
        assert_eq!(s.append(rec(9)).0.seq, 6);
        // Ack everything and compact: the file empties, the seq continues.
        s.ack(6).unwrap();
        s.compact().unwrap();
        assert_eq!(std::fs::read(dir.path().join(FILE)).unwrap().len(), 0);
        drop(s);
        let mut s = Spool::open(dir.path(), false, 1).unwrap();
        assert_eq!(s.depth(), 0);
        assert_eq!(s.append(rec(1)).0.seq, 7);
        // The ledger's next seq is a floor.
        drop(s);
        let s = Spool::open(dir.path(), false, 100).unwrap();
        assert_eq!(s.next_seq(), 100);
    }

    #[test]
    fn compaction_triggers_when_acked_records_dominate() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), false, 1).unwrap();
        for i in 0..1500 {
            s.append(rec(i)).1.unwrap();
        }
        s.ack(1200).unwrap();
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert_eq!(text.lines().count(), 300);
        drop(s);
        let s = Spool::open(dir.path(), false, 1).unwrap();
        assert_eq!(s.after(0, 1)[0].seq, 1201);
        assert_eq!(s.next_seq(), 1501);
    }
}
