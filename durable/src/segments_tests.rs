//! Replay retention: records kept past compactions in rotated segments,
//! the keep bound, and crashes between the steps of a rotation.

use tokenwarden_core::{tokens::TokenCounts, usage::UsageRecord, workload::Endpoint};

use super::{list, records};
use crate::{JOURNAL, Journal, SNAPSHOT, read};

fn rec(out: u64) -> UsageRecord {
    UsageRecord {
        seq: 0,
        ts: "2026-12-06T10:00:00Z".parse().unwrap(),
        endpoint: Endpoint::ChatCompletions,
        requested_model: "gpt-5".into(),
        served_model: "gpt-5-mini".into(),
        provider: "openai".into(),
        route: Some("rest".into()),
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
        budgets: vec![],
        intent: None,
        replay: Some(Box::new(tokenwarden_core::usage::ReplayFacts {
            prompt_estimate: 25,
            ..Default::default()
        })),
        cache: Default::default(),
    }
}

fn seqs(dir: &std::path::Path) -> Vec<u64> {
    records(dir).unwrap().iter().map(|r| r.seq).collect()
}

fn segment_bytes(dir: &std::path::Path) -> u64 {
    list(dir)
        .unwrap()
        .iter()
        .map(|(_, p)| std::fs::metadata(p).unwrap().len())
        .sum()
}

#[test]
fn records_survive_compactions_once_each_in_seq_order() {
    let dir = tempfile::tempdir().unwrap();
    // Connected mode: a compaction carries the unacked records into the
    // new journal, so they are in a segment and the journal both.
    let mut j = Journal::open(dir.path(), false, true).unwrap();
    for i in 0..30 {
        j.append(rec(i)).unwrap();
    }
    j.ack(20).unwrap();
    j.compact().unwrap();
    for i in 0..5 {
        j.append(rec(i)).unwrap();
    }
    j.compact().unwrap();
    j.append(rec(7)).unwrap();
    assert_eq!(list(dir.path()).unwrap().len(), 2);
    assert_eq!(seqs(dir.path()), (1..=36).collect::<Vec<_>>());
    let all = records(dir.path()).unwrap();
    // The first attempt of each request names it by its seq.
    assert!(
        all.iter()
            .all(|r| r.replay.as_ref().unwrap().request == r.seq)
    );
    assert_eq!(all[35].usage.output_tokens, 7);
    // The totals are unchanged by the segments: nothing counts twice.
    drop(j);
    assert_eq!(read(dir.path()).unwrap().models["gpt-5-mini"].requests, 36);
    let j = Journal::open(dir.path(), false, true).unwrap();
    assert_eq!(j.aggregate().models["gpt-5-mini"].requests, 36);
}

#[test]
fn the_keep_bound_holds_dropping_the_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), false, false).unwrap();
    // Ten records a segment; keep room for a bit over two segments.
    let mut one = Vec::new();
    rec(0).write_json(&mut one);
    let per_segment = 10 * (one.len() as u64 + 1);
    let keep = per_segment * 2 + per_segment / 2;
    j.set_replay_keep_bytes(keep);
    for _ in 0..6 {
        for i in 0..10 {
            j.append(rec(i)).unwrap();
        }
        j.compact().unwrap();
        assert!(segment_bytes(dir.path()) <= keep);
    }
    // The two newest segments, numbered on.
    let numbers: Vec<u64> = list(dir.path()).unwrap().iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, [5, 6]);
    assert_eq!(seqs(dir.path()), (41..=60).collect::<Vec<_>>());
    // 0 keeps none: compaction drops the lines as before.
    j.set_replay_keep_bytes(0);
    j.append(rec(1)).unwrap();
    j.compact().unwrap();
    assert!(list(dir.path()).unwrap().is_empty());
    assert_eq!(seqs(dir.path()), Vec::<u64>::new());
    assert_eq!(j.aggregate().models["gpt-5-mini"].requests, 61);
}

/// The state a rotation leaves when the process dies after each of its
/// steps: the snapshot written, the old journal linked as a segment, the
/// new journal half written aside. Every counted record is still counted
/// once, and every record is still read once.
#[test]
fn a_crash_at_any_step_of_a_rotation_loses_nothing() {
    for step in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        {
            let mut j = Journal::open(d, false, false).unwrap();
            for i in 0..12 {
                j.append(rec(i)).unwrap();
            }
        }
        let counted = read(d).unwrap();
        // Step 1: the snapshot is written.
        std::fs::write(d.join(SNAPSHOT), serde_json::to_vec(&counted).unwrap()).unwrap();
        if step >= 1 {
            // Step 2: the old journal is linked as the next segment.
            std::fs::hard_link(d.join(JOURNAL), d.join("requests-1.jsonl")).unwrap();
        }
        if step >= 2 {
            // Step 3 begun: the new journal half written aside.
            std::fs::write(d.join(".ledger.jsonl.next"), b"{\"spool\":fa").unwrap();
        }
        let mut j = Journal::open(d, false, false).unwrap();
        assert_eq!(j.aggregate(), &counted, "step {step}");
        assert_eq!(seqs(d), (1..=12).collect::<Vec<_>>(), "step {step}");
        // Going on: a compaction rotates past the leftovers.
        j.append(rec(99)).unwrap();
        j.compact().unwrap();
        j.append(rec(98)).unwrap();
        drop(j);
        assert_eq!(seqs(d), (1..=14).collect::<Vec<_>>(), "step {step}");
        assert_eq!(
            read(d).unwrap().models["gpt-5-mini"].requests,
            14,
            "step {step}"
        );
        assert!(!d.join(".ledger.jsonl.next").exists());
    }
}
