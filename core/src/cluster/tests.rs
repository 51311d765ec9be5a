use super::*;
use crate::{
    config::{Endpoint, FailMode},
    ledger::BudgetPeriodRef,
    period::Period,
};

fn cfg(limit: &str) -> BudgetConfig {
    BudgetConfig {
        source: ObjectRef::new("ns", "team"),
        generation: 1,
        period: Period::Daily,
        time_zone: "UTC".into(),
        limit_usd: Some(limit.parse().unwrap()),
        limit_tokens: None,
        thresholds: vec![],
        per_request_cap_usd: None,
        loop_guard: None,
        fail_mode: FailMode::Closed,
        shadow: false,
    }
}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn now() -> Timestamp {
    at("2026-11-22T10:00:00Z")
}

fn usd(s: &str) -> Usd {
    s.parse().unwrap()
}

fn rec(seq: u64, cost: &str, model: &str) -> UsageRecord {
    UsageRecord {
        seq,
        ts: now(),
        endpoint: Endpoint::ChatCompletions,
        requested_model: model.into(),
        served_model: model.into(),
        provider: "openai".into(),
        route: None,
        score: None,
        reason: None,
        attempt: 1,
        status: 200,
        usage: Usage {
            input_tokens: 100,
            output_tokens: 10,
            cache_read_tokens: 5,
            cache_write_tokens: 0,
        },
        cost: Some(usd(cost)),
        estimated: false,
        budgets: vec![BudgetPeriodRef {
            budget: ObjectRef::new("ns", "team"),
            period_start: at("2026-11-22T00:00:00Z"),
        }],
        intent: None,
    }
}

fn day() -> Timestamp {
    at("2026-11-22T00:00:00Z")
}

#[test]
fn replays_are_counted_once() {
    let mut b = Book::new(cfg("10"), now()).unwrap();
    assert_eq!(
        b.apply("a", "ns/web", day(), &rec(1, "0.10", "m"), now()),
        Applied::Counted
    );
    assert_eq!(
        b.apply("a", "ns/web", day(), &rec(2, "0.20", "m"), now()),
        Applied::Counted
    );
    // The sidecar replays 1 and 2 after a reconnect, then sends 3.
    assert_eq!(
        b.apply("a", "ns/web", day(), &rec(1, "0.10", "m"), now()),
        Applied::Duplicate
    );
    assert_eq!(
        b.apply("a", "ns/web", day(), &rec(2, "0.20", "m"), now()),
        Applied::Duplicate
    );
    assert_eq!(
        b.apply("a", "ns/web", day(), &rec(3, "0.30", "n"), now()),
        Applied::Counted
    );
    // Another sidecar's seq 1 is its own.
    assert_eq!(
        b.apply("b", "ns/api", day(), &rec(1, "1.00", "m"), now()),
        Applied::Counted
    );
    assert_eq!(b.totals().spent, usd("1.60"));
    assert_eq!(b.totals().requests, 4);
    assert_eq!(b.totals().usage.input_tokens, 400);
    assert_eq!(b.models()["m"].cost, usd("1.30"));
    assert_eq!(b.models()["n"].requests, 1);
    assert_eq!(b.workloads()["ns/web"].cost, usd("0.60"));
    assert_eq!(b.sidecars()["a"].charged, usd("0.60"));
    assert_eq!(b.sidecars()["a"].seq, 3);
}

#[test]
fn restored_book_dedupes_what_it_persisted() {
    let mut b = Book::new(cfg("10"), now()).unwrap();
    b.apply("a", "ns/web", day(), &rec(1, "0.10", "m"), now());
    b.grant("a", LeaseAsk::want(usd("1")), now(), 30_000);
    let saved = b.to_state();
    // Through JSON, as it is persisted.
    let json = serde_json::to_string(&saved).unwrap();
    let saved: BookState = serde_json::from_str(&json).unwrap();
    let mut r = Book::restore(cfg("10"), now(), saved).unwrap();
    assert_eq!(
        r.apply("a", "ns/web", day(), &rec(1, "0.10", "m"), now()),
        Applied::Duplicate
    );
    assert_eq!(r.totals().spent, usd("0.10"));
    assert_eq!(r.lease("a").granted, usd("1"));
    assert_eq!(r.outstanding().0, usd("0.90"));
}

#[test]
fn grants_never_exceed_the_cap_and_leave_room_for_others() {
    let mut b = Book::new(cfg("1.00"), now()).unwrap();
    // Minimum chunk is 1/32 of the cap.
    let g = b.grant("a", LeaseAsk::want(usd("0.001")), now(), 30_000);
    assert_eq!(g.granted, usd("0.03125"));
    assert_eq!(g.version, 1);
    // With one other holder, a grant is at most half of what is left per
    // holder: (1 - 0.03125) / 4.
    let g = b.grant("b", LeaseAsk::want(usd("0.60")), now(), 30_000);
    assert_eq!(g.granted, usd("0.2421875"));
    // Unless a waiting request needs more.
    let ask = LeaseAsk {
        want: usd("0.60"),
        need: usd("0.50"),
        ..LeaseAsk::default()
    };
    let g = b.grant("c", ask, now(), 30_000);
    assert_eq!(g.granted, usd("0.50"));
    // Only what is left is granted, however much is asked.
    let left = usd("1.00") - usd("0.03125") - usd("0.2421875") - usd("0.50");
    let ask = LeaseAsk {
        want: usd("0.60"),
        need: usd("0.60"),
        ..LeaseAsk::default()
    };
    let g = b.grant("d", ask, now(), 30_000);
    assert_eq!(g.granted, left);
    assert_eq!(b.available().0, Some(Usd::ZERO));
    let g = b.grant("d", LeaseAsk::want(usd("0.10")), now(), 30_000);
    assert_eq!(g.granted, left, "nothing left");
    assert_eq!(g.version, 1, "an unchanged amount keeps its version");
    // b spends 0.20 of its lease: the spend moves from outstanding to spent,
    // the pool stays empty.
    b.apply("b", "ns/w", day(), &rec(1, "0.20", "m"), now());
    assert_eq!(b.available().0, Some(Usd::ZERO));
    assert_eq!(b.totals().spent + b.outstanding().0, usd("1.00"));
}

#[test]
fn released_leases_return_to_the_pool_unless_a_grant_crossed_them() {
    let mut b = Book::new(cfg("1.00"), now()).unwrap();
    let need = LeaseAsk {
        need: usd("0.60"),
        ..LeaseAsk::default()
    };
    let a = b.grant("a", need, now(), 30_000);
    assert_eq!(a.granted, usd("0.60"));
    b.apply("a", "ns/w", day(), &rec(1, "0.10", "m"), now());
    // b needs 0.50 but only 0.40 is in the pool: recall from a.
    assert_eq!(
        b.recall_candidates(
            "b",
            LeaseAsk {
                need: usd("0.50"),
                ..LeaseAsk::default()
            }
        ),
        vec!["a".to_string()]
    );
    // a keeps what it spent and reserved (0.10 spent + 0.05 in flight).
    let v = b.release("a", a.version, usd("0.15"), 0);
    assert_eq!(v.granted, usd("0.15"));
    assert!(v.version > a.version);
    assert_eq!(b.available().0, Some(usd("0.85")));
    let g = b.grant(
        "b",
        LeaseAsk {
            need: usd("0.50"),
            ..LeaseAsk::default()
        },
        now(),
        30_000,
    );
    assert_eq!(g.granted, usd("0.50"));
    // A release based on an old version is not applied (a newer grant
    // crossed it), but still answered with a newer version.
    let before = b.lease("a");
    let more = b.grant("a", LeaseAsk::want(usd("0.05")), now(), 30_000);
    assert!(more.granted > before.granted);
    let v = b.release("a", before.version, usd("0.10"), 0);
    assert_eq!(v.granted, more.granted);
    assert!(v.version > more.version);
    // Never below what was charged.
    let v = b.release("a", v.version, usd("0.01"), 0);
    assert_eq!(v.granted, usd("0.10"));
}

#[test]
fn expired_leases_return_to_the_pool_after_the_grace() {
    let mut b = Book::new(cfg("1.00"), now()).unwrap();
    b.grant("a", LeaseAsk::want(usd("1.00")), now(), 30_000);
    assert_eq!(b.available().0, Some(Usd::ZERO));
    b.apply("a", "ns/w", day(), &rec(1, "0.25", "m"), now());
    // Expired, but within the grace: still held.
    let t = now() + jiff::SignedDuration::from_secs(40);
    assert!(b.reclaim(t, 60_000).is_empty());
    assert_eq!(b.available().0, Some(Usd::ZERO));
    let t = now() + jiff::SignedDuration::from_secs(91);
    assert_eq!(b.reclaim(t, 60_000), vec!["a".to_string()]);
    assert_eq!(b.available().0, Some(usd("0.75")));
    assert_eq!(b.lease("a").granted, usd("0.25"));
    assert_eq!(b.lease("a").expires_ms, 0);
}

#[test]
fn exhausted_when_what_is_left_cannot_cover_a_needed_lease() {
    let mut b = Book::new(cfg("1.00"), now()).unwrap();
    assert_eq!(b.budget_state(), State::Ok);
    b.grant("a", LeaseAsk::want(usd("1.00")), now(), 30_000);
    b.apply("a", "ns/w", day(), &rec(1, "0.97", "m"), now());
    // Topping up is not a need.
    b.grant("a", LeaseAsk::want(usd("0.05")), now(), 30_000);
    assert_eq!(b.budget_state(), State::Ok);
    // A request waiting on the lease needs 0.05; 0.03 is left.
    let ask = LeaseAsk {
        need: usd("0.05"),
        ..LeaseAsk::default()
    };
    b.grant("a", ask, now(), 30_000);
    assert_eq!(b.budget_state(), State::Exhausted);
    assert_eq!(b.unmet().0, Some(usd("0.05")));
}

#[test]
fn periods_roll_and_late_records_do_not_enter_the_new_period() {
    let mut b = Book::new(cfg("1.00"), now()).unwrap();
    b.grant("a", LeaseAsk::want(usd("0.50")), now(), 30_000);
    b.apply("a", "ns/w", day(), &rec(1, "0.25", "m"), now());
    let tomorrow = at("2026-11-23T00:00:01Z");
    let (w, totals) = b.roll(tomorrow).unwrap();
    assert_eq!(w.start, day());
    assert_eq!(totals.spent, usd("0.25"));
    assert_eq!(b.totals().spent, Usd::ZERO);
    assert_eq!(b.lease("a").granted, Usd::ZERO);
    // A record of yesterday arrives late: watermark moves, totals do not.
    assert_eq!(
        b.apply("a", "ns/w", day(), &rec(2, "0.10", "m"), tomorrow),
        Applied::Late
    );
    assert_eq!(b.totals().spent, Usd::ZERO);
    assert_eq!(
        b.apply("a", "ns/w", day(), &rec(2, "0.10", "m"), tomorrow),
        Applied::Duplicate
    );
    // A record of the new period counts.
    assert_eq!(
        b.apply(
            "a",
            "ns/w",
            b.window().start,
            &rec(3, "0.10", "m"),
            tomorrow
        ),
        Applied::Counted
    );
    assert_eq!(b.totals().spent, usd("0.10"));
    // A saved state of yesterday restores only the watermarks.
    let mut old = b.to_state();
    old.period_start = day();
    let r = Book::restore(cfg("1.00"), tomorrow, old).unwrap();
    assert_eq!(r.totals().spent, Usd::ZERO);
    assert_eq!(r.sidecars()["a"].seq, 3);
}

#[test]
fn a_limit_change_bumps_the_epoch() {
    let mut b = Book::new(cfg("1.00"), now()).unwrap();
    let e = b.epoch();
    b.reconfigure(cfg("1.00"), now()).unwrap();
    assert_eq!(b.epoch(), e);
    b.reconfigure(cfg("2.00"), now()).unwrap();
    assert_eq!(b.epoch(), e + 1);
}

#[test]
fn random_interleavings_never_overspend_or_double_count() {
    // Eight sidecars each spend only from their lease (reserving the worst
    // case first), in a random order with replays and expiries.
    let mut b = Book::new(cfg("1.00"), now()).unwrap();
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut leases = [Usd::ZERO; 8];
    let mut spent = [Usd::ZERO; 8];
    let mut seqs = [0u64; 8];
    let mut truth = Usd::ZERO;
    for step in 0..5_000u64 {
        let s = (next() % 8) as usize;
        let id = format!("s{s}");
        let t = now() + jiff::SignedDuration::from_millis(step as i64);
        let worst = Usd::from_picos(i128::from(next() % 50_000_000_000) + 1);
        if spent[s].saturating_add(worst) > leases[s] {
            let ask = LeaseAsk {
                want: worst,
                need: worst,
                ..LeaseAsk::default()
            };
            let g = b.grant(&id, ask, t, 60_000);
            leases[s] = g.granted;
            continue;
        }
        // Actual cost at most the worst case.
        let actual = Usd::from_picos(worst.picos() * i128::from(next() % 100) / 100);
        spent[s] = spent[s].saturating_add(actual);
        seqs[s] += 1;
        let mut r = rec(seqs[s], "0", "m");
        r.cost = Some(actual);
        assert_eq!(b.apply(&id, "ns/w", day(), &r, t), Applied::Counted);
        truth = truth.saturating_add(actual);
        // Replay an old one now and then.
        if next() % 5 == 0 && seqs[s] > 1 {
            let mut old = rec(seqs[s] - 1, "0", "m");
            old.cost = Some(actual);
            assert_eq!(b.apply(&id, "ns/w", day(), &old, t), Applied::Duplicate);
        }
        assert!(b.totals().spent.saturating_add(b.outstanding().0) <= usd("1.00"));
    }
    assert_eq!(b.totals().spent, truth);
    assert!(truth <= usd("1.00"));
}

#[test]
fn cluster_ledger_groups_and_dedupes() {
    let mut l = ClusterLedger::default();
    assert_eq!(
        l.apply("a", "ns", "web", &rec(1, "0.10", "m"), 100),
        Applied::Counted
    );
    assert_eq!(
        l.apply("a", "ns", "web", &rec(1, "0.10", "m"), 100),
        Applied::Duplicate
    );
    assert_eq!(
        l.apply("a", "ns", "web", &rec(2, "0.20", "n"), 100),
        Applied::Counted
    );
    assert_eq!(
        l.apply("b", "ns", "api", &rec(1, "0.40", "m"), 5_000),
        Applied::Counted
    );
    let json = serde_json::to_string(&l.to_state()).unwrap();
    let r = ClusterLedger::restore(serde_json::from_str(&json).unwrap());
    let key = LedgerKey {
        namespace: "ns".into(),
        workload: "web".into(),
        model: "m".into(),
    };
    assert_eq!(r.rows()[&key].cost, usd("0.10"));
    assert_eq!(r.rows().len(), 3);
    assert_eq!(r.watermark("a"), 2);

    // Pruning forgets sidecars silent for longer than the window, and only them.
    let mut p = r;
    assert_eq!(p.prune(1_000, 3_600), 0, "nothing is older than an hour");
    assert_eq!(p.prune(100 + 3_601, 3_600), 1, "a was last seen at 100");
    assert_eq!(p.watermark("a"), 0);
    assert_eq!(p.watermark("b"), 1);
    assert_eq!(p.rows().len(), 3, "totals are kept");
    // State from before last-seen times existed: treated as seen at the prune.
    let legacy: ClusterLedgerState =
        serde_json::from_str(r#"{"watermarks":{"x":7},"rows":[]}"#).unwrap();
    let mut legacy = ClusterLedger::restore(legacy);
    assert_eq!(legacy.prune(10_000, 3_600), 0);
    assert_eq!(legacy.watermark("x"), 7);
    assert_eq!(legacy.prune(10_000 + 3_601, 3_600), 1);
}
