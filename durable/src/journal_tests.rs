//! The journal's tests: the ledger's guarantees, the spool's, and the
//! upgrade from the two files of older sidecars.

use std::{fs::OpenOptions, io::Write};

use tokenwarden_core::{tokens::TokenCounts, usage::UsageRecord, workload::Endpoint};

use super::Journal;
use crate::{JOURNAL, read};

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
        usage: TokenCounts {
            input_tokens: 100,
            output_tokens: out,
            ..Default::default()
        },
        cost: Some("0.001".parse().unwrap()),
        estimated: false,
        budgets: vec![tokenwarden_core::usage::BudgetPeriodRef {
            budget: tokenwarden_core::workload::ObjectRef::new("ns", "team"),
            period_start: "2026-11-22T00:00:00Z".parse().unwrap(),
            key: None,
        }],
        intent: None,
        replay: None,
        cache: Default::default(),
    }
}

#[test]
fn survives_reopen_and_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut l = Journal::open(dir.path(), false, false).unwrap();
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
    let mut l = Journal::open(dir.path(), false, false).unwrap();
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
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering::SeqCst},
    };
    // The reader reads while the writer appends and compacts, until it has
    // read READS times with the writer still going: how often the two
    // interleave is up to the scheduler, so the writer waits for the reader
    // (bounded in time, not in records: on a loaded machine the writer can
    // append 200 000 records before a starved reader gets its 50 reads in)
    // rather than the test hoping for overlap.
    const READS: u32 = 50;
    let writer_deadline = std::time::Instant::now() + std::time::Duration::from_secs(45);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let mut l = Journal::open(&path, false, false).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let enough = Arc::new(AtomicBool::new(false));
    let writer = {
        let (done, enough) = (done.clone(), enough.clone());
        std::thread::spawn(move || {
            // Every record is durable before the next; compact often.
            let mut written = 0u64;
            while written < 300
                || (!enough.load(SeqCst) && std::time::Instant::now() < writer_deadline)
            {
                l.append(rec("gpt-5-mini", 1)).unwrap();
                written += 1;
                if written.is_multiple_of(10) {
                    if let Err(e) = l.compact() {
                        // Only a read in progress may put it off.
                        assert!(e.to_string().contains("compacting later"), "{e}");
                    }
                    // Let the reader in: flock is not fair, and a writer
                    // that compacts back to back can starve it.
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
            }
            done.store(true, SeqCst);
            written
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let (mut seen, mut reads) = (0, 0);
    while !done.load(SeqCst) {
        assert!(std::time::Instant::now() < deadline, "writer too slow");
        let agg = read(&path).unwrap();
        let n = agg.models.get("gpt-5-mini").map_or(0, |m| m.requests);
        // Each read sees at least what the one before saw: a read that
        // paired an old snapshot with a truncated journal would not.
        assert!(n >= seen, "read {n} requests after {seen}");
        assert_eq!(n, agg.last_seq, "every record up to the last, once");
        (seen, reads) = (n, reads + 1);
        if reads >= READS {
            enough.store(true, SeqCst);
        }
    }
    let written = writer.join().unwrap();
    assert_eq!(read(&path).unwrap().models["gpt-5-mini"].requests, written);
    assert!(
        reads >= READS,
        "only {reads} reads overlapped the writer in {written} records"
    );
}

#[test]
fn one_sidecar_at_a_time_holds_a_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Journal::open(dir.path(), false, false).unwrap();
    first.append(rec("gpt-5-mini", 1)).unwrap();
    let err = Journal::open(dir.path(), false, false)
        .unwrap_err()
        .to_string();
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
    let mut second = Journal::open(dir.path(), false, false).unwrap();
    assert_eq!(second.append(rec("gpt-5-mini", 1)).unwrap().seq, 2);
}

#[test]
fn compaction_keeps_totals_and_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = Journal::open(dir.path(), true, false).unwrap();
    for i in 0..10 {
        l.append(rec("gpt-5-mini", i)).unwrap();
    }
    l.compact().unwrap();
    l.append(rec("gpt-5-mini", 100)).unwrap();
    let before = l.aggregate().clone();
    drop(l);
    let l = Journal::open(dir.path(), false, false).unwrap();
    assert_eq!(l.aggregate(), &before);
    assert_eq!(l.next_seq(), 12);
    assert_eq!(l.aggregate().models["gpt-5-mini"].requests, 11);
}

#[test]
fn staged_lines_share_one_write_and_reach_the_journal_on_flush() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(JOURNAL);
    let mut l = Journal::open(dir.path(), false, false).unwrap();
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
    let l = Journal::open(dir.path(), false, false).unwrap();
    assert_eq!(l.aggregate().models["gpt-5-mini"].usage.output_tokens, 3);
    assert_eq!(l.next_seq(), 3);
}

#[test]
fn a_failed_flush_reports_and_the_next_lines_still_land() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(JOURNAL);
    let mut l = Journal::open(dir.path(), false, false).unwrap();
    l.append(rec("a", 1)).unwrap();
    let good = std::fs::read_to_string(&path).unwrap();
    // A full disk: every write fails with ENOSPC.
    let real = std::mem::replace(
        &mut l.store.as_mut().unwrap().file,
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
    l.store.as_mut().unwrap().file = real;
    l.append(rec("a", 3)).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with(&good));
    assert_eq!(text.lines().count(), 2, "{text}");
    drop(l);
    // The journal replays cleanly: no torn line in the middle.
    let l = Journal::open(dir.path(), false, false).unwrap();
    assert_eq!(l.aggregate().models["a"].usage.output_tokens, 4);
    assert_eq!(l.next_seq(), 4);
}

#[test]
fn corruption_in_the_middle_is_reported_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut l = Journal::open(dir.path(), false, false).unwrap();
        l.append(rec("a", 1)).unwrap();
    }
    let path = dir.path().join(JOURNAL);
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{good}garbage\n{good}")).unwrap();
    let err = Journal::open(dir.path(), false, false)
        .unwrap_err()
        .to_string();
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
        let mut l = Journal::open(dir.path(), false, false).unwrap();
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
    let mut l = Journal::open(dir.path(), false, false).unwrap();
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
    let mut l = Journal::open(dir.path(), false, false).unwrap();
    assert_eq!(l.take_unsettled().len(), 1);
    assert_eq!(l.aggregate().models["gpt-5-mini"].requests, 3);
    // `read` (report) sees the same totals.
    assert_eq!(read(dir.path()).unwrap().models["gpt-5-mini"], totals);
}

// === the spool ===

/// Record lines of the journal, by seq (intents and marks left out).
fn record_seqs(dir: &std::path::Path) -> Vec<u64> {
    std::fs::read_to_string(dir.join(JOURNAL))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"].as_u64())
        .collect()
}

#[test]
fn records_survive_reopen_acks_and_compaction_with_monotonic_seqs() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = Journal::open(dir.path(), false, true).unwrap();
        for i in 0..5 {
            let r = s.append(rec("gpt-5-mini", i)).unwrap();
            assert_eq!(r.seq, i + 1);
        }
        s.ack(2).unwrap();
        assert_eq!(s.depth(), 3);
    }
    // A torn tail from a kill mid-write.
    let mut f = OpenOptions::new()
        .append(true)
        .open(dir.path().join(JOURNAL))
        .unwrap();
    f.write_all(br#"{"seq":6,"ts":"#).unwrap();
    drop(f);
    let mut s = Journal::open(dir.path(), false, true).unwrap();
    let seqs: Vec<u64> = s.after(0, 100).iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![3, 4, 5], "acked dropped, torn line cut");
    assert_eq!(s.after(3, 1)[0].seq, 4);
    assert_eq!(s.append(rec("gpt-5-mini", 9)).unwrap().seq, 6);
    // Ack everything and compact: no record is left in the journal, the
    // seq continues.
    s.ack(6).unwrap();
    s.compact().unwrap();
    assert_eq!(record_seqs(dir.path()), Vec::<u64>::new());
    drop(s);
    let mut s = Journal::open(dir.path(), false, true).unwrap();
    assert_eq!(s.depth(), 0);
    assert_eq!(s.aggregate().models["gpt-5-mini"].requests, 6);
    assert_eq!(s.append(rec("gpt-5-mini", 1)).unwrap().seq, 7);
}

#[test]
fn compaction_keeps_the_unacked_records_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Journal::open(dir.path(), false, true).unwrap();
    for i in 0..1500 {
        s.append(rec("gpt-5-mini", i)).unwrap();
    }
    s.ack(1200).unwrap();
    s.compact().unwrap();
    assert_eq!(record_seqs(dir.path()), (1201..=1500).collect::<Vec<_>>());
    drop(s);
    let s = Journal::open(dir.path(), false, true).unwrap();
    assert_eq!(s.after(0, 1)[0].seq, 1201);
    assert_eq!(s.depth(), 300);
    assert_eq!(s.next_seq(), 1501);
    assert_eq!(s.aggregate().models["gpt-5-mini"].requests, 1500);
    assert_eq!(
        read(dir.path()).unwrap().models["gpt-5-mini"].requests,
        1500
    );
}

#[test]
fn the_operator_only_sees_records_on_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Journal::open(dir.path(), false, true).unwrap();
    let mut a = rec("gpt-5-mini", 1);
    s.stage(&mut a);
    assert_eq!(s.depth(), 1);
    assert!(!s.has_after(0), "staged, not written");
    assert!(s.after(0, 10).is_empty());
    s.flush().unwrap();
    assert!(s.has_after(0));
    assert_eq!(s.after(0, 10)[0].seq, 1);
    // In memory a staged record is as written as it gets.
    let mut m = Journal::memory(true);
    m.stage(&mut rec("gpt-5-mini", 1));
    assert_eq!(m.after(0, 10).len(), 1);
    assert!(!m.is_durable());
}

#[test]
fn records_of_standalone_runs_are_never_spooled() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut l = Journal::open(dir.path(), false, false).unwrap();
        l.append(rec("a", 1)).unwrap();
    }
    {
        let mut s = Journal::open(dir.path(), false, true).unwrap();
        assert_eq!(s.depth(), 0, "a standalone record is not sent");
        assert_eq!(s.append(rec("a", 2)).unwrap().seq, 2);
    }
    {
        let mut l = Journal::open(dir.path(), false, false).unwrap();
        assert_eq!(l.depth(), 0);
        l.append(rec("a", 3)).unwrap();
    }
    let s = Journal::open(dir.path(), false, true).unwrap();
    let seqs: Vec<u64> = s.unacked().map(|r| r.seq).collect();
    assert_eq!(seqs, [2], "only the connected run's record");
    assert_eq!(s.aggregate().models["a"].usage.output_tokens, 6);
}

// === the upgrade ===

/// A state dir as sidecars before the one journal left it in connected
/// mode: every record in `ledger.jsonl` (a leftover intent included) and
/// in `spool.jsonl`, under the same seqs, the operator having acked 2.
fn old_state_dir(dir: &std::path::Path) {
    let mut ledger = Vec::new();
    let mut spool = Vec::new();
    for seq in 1..=4 {
        let r = UsageRecord {
            seq,
            ..rec("gpt-5-mini", seq)
        };
        r.write_json(&mut ledger);
        ledger.push(b'\n');
        r.write_json(&mut spool);
        spool.push(b'\n');
    }
    tokenwarden_core::usage::IntentLine {
        intent: 7,
        record: rec("gpt-5-mini", 1000),
    }
    .write_json(&mut ledger);
    ledger.push(b'\n');
    std::fs::write(dir.join(JOURNAL), ledger).unwrap();
    std::fs::write(dir.join("spool.jsonl"), spool).unwrap();
    std::fs::write(dir.join("spool.meta.json"), br#"{"next_seq":5,"acked":2}"#).unwrap();
}

#[test]
fn an_old_state_dir_is_read_once_without_double_counting() {
    let dir = tempfile::tempdir().unwrap();
    old_state_dir(dir.path());
    let check = |s: &Journal| {
        let m = &s.aggregate().models["gpt-5-mini"];
        assert_eq!((m.requests, m.usage.output_tokens), (4, 10));
        let unacked: Vec<u64> = s.unacked().map(|r| r.seq).collect();
        assert_eq!(unacked, [3, 4], "the old spool's unacked records");
        assert_eq!(s.acked(), 2);
    };
    {
        let mut s = Journal::open(dir.path(), false, true).unwrap();
        check(&s);
        assert_eq!(s.after(0, 10).len(), 2, "sent under their old seqs");
        assert_eq!(s.take_unsettled().len(), 1, "the open intent");
        assert!(!dir.path().join("spool.jsonl").exists());
        assert!(!dir.path().join("spool.meta.json").exists());
        assert_eq!(s.next_seq(), 5);
    }
    // Reopened: the same, nothing counted or spooled twice.
    let mut s = Journal::open(dir.path(), false, true).unwrap();
    check(&s);
    assert_eq!(read(dir.path()).unwrap().models["gpt-5-mini"].requests, 4);
    assert_eq!(s.append(rec("gpt-5-mini", 1)).unwrap().seq, 5);
    s.ack(5).unwrap();
    drop(s);
    let s = Journal::open(dir.path(), false, true).unwrap();
    assert_eq!(s.depth(), 0);
    assert_eq!(s.aggregate().models["gpt-5-mini"].requests, 5);
}

#[test]
fn an_upgrade_interrupted_before_the_old_files_went_is_made_once() {
    let dir = tempfile::tempdir().unwrap();
    old_state_dir(dir.path());
    let spool = std::fs::read(dir.path().join("spool.jsonl")).unwrap();
    let meta = std::fs::read(dir.path().join("spool.meta.json")).unwrap();
    drop(Journal::open(dir.path(), false, true).unwrap());
    // The process died between writing the journal and removing the old
    // spool: it is moved in again.
    std::fs::write(dir.path().join("spool.jsonl"), spool).unwrap();
    std::fs::write(dir.path().join("spool.meta.json"), meta).unwrap();
    drop(Journal::open(dir.path(), false, true).unwrap());
    let s = Journal::open(dir.path(), false, true).unwrap();
    assert_eq!(s.aggregate().models["gpt-5-mini"].requests, 4);
    let unacked: Vec<u64> = s.unacked().map(|r| r.seq).collect();
    assert_eq!(unacked, [3, 4]);
    assert_eq!(s.next_seq(), 5);
}

#[test]
fn an_old_spool_ahead_of_the_ledger_keeps_the_seqs_going_up() {
    // The old spool numbered past the ledger file (its writes had failed):
    // its records are counted now, and new seqs follow its.
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Vec::new();
    for seq in 8..=9 {
        UsageRecord {
            seq,
            ..rec("gpt-5-mini", 1)
        }
        .write_json(&mut spool);
        spool.push(b'\n');
    }
    std::fs::write(dir.path().join("spool.jsonl"), spool).unwrap();
    std::fs::write(
        dir.path().join("spool.meta.json"),
        br#"{"next_seq":10,"acked":7}"#,
    )
    .unwrap();
    let mut s = Journal::open(dir.path(), false, true).unwrap();
    assert_eq!(s.aggregate().models["gpt-5-mini"].requests, 2);
    assert_eq!(s.append(rec("gpt-5-mini", 1)).unwrap().seq, 10);
    drop(s);
    let s = Journal::open(dir.path(), false, true).unwrap();
    assert_eq!(s.aggregate().models["gpt-5-mini"].requests, 3);
    let unacked: Vec<u64> = s.unacked().map(|r| r.seq).collect();
    assert_eq!(unacked, [8, 9, 10]);
}
