use super::*;
use crate::{
    cluster_ledger::{ClusterLedger, ClusterLedgerState, LedgerKey},
    period::Period,
    usage::BudgetPeriodRef,
    workload::{Endpoint, FailMode},
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
        per_key: None,
        on_projected_overrun: None,
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
        usage: TokenCounts {
            input_tokens: 100,
            output_tokens: 10,
            cache_read_tokens: 5,
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
        },
        cost: Some(usd(cost)),
        estimated: false,
        budgets: vec![BudgetPeriodRef {
            budget: ObjectRef::new("ns", "team"),
            period_start: at("2026-11-22T00:00:00Z"),
            key: None,
        }],
        intent: None,
        cache: Default::default(),
    }
}

fn day() -> Timestamp {
    at("2026-11-22T00:00:00Z")
}

#[test]
fn a_response_cache_hit_counts_as_a_hit_and_its_saving_never_as_spend() {
    let mut b = Book::new(cfg("10"), now()).unwrap();
    b.apply("a", "ns/web", day(), &rec(1, "0.10", "m"), now());
    let mut hit = rec(2, "0", "m");
    hit.usage = TokenCounts::default();
    hit.cache.response_hit = true;
    hit.cache.response_saved = usd("0.10");
    assert_eq!(b.apply("a", "ns/web", day(), &hit, now()), Applied::Counted);
    // A resend is a replay.
    assert_eq!(
        b.apply("a", "ns/web", day(), &hit, now()),
        Applied::Duplicate
    );
    hit.seq = 3;
    assert_eq!(b.apply("a", "ns/web", day(), &hit, now()), Applied::Counted);
    let t = b.totals();
    assert_eq!((t.spent, t.requests, t.tokens()), (usd("0.10"), 1, 115));
    assert_eq!(
        (t.cache.response_hits, t.cache.response_saved),
        (2, usd("0.20"))
    );
    assert_eq!(b.sidecars()["a"].charged, usd("0.10"));
    assert_eq!(b.models()["m"].requests, 1);
    assert_eq!(b.workloads()["ns/web"].requests, 1);
    // Restored from what it persists, the book keeps the hits.
    let restored = Book::restore(cfg("10"), now(), b.to_state()).unwrap();
    assert_eq!(restored.totals().cache.response_hits, 2);
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

fn need(n: &str) -> LeaseAsk {
    LeaseAsk {
        need: usd(n),
        ..LeaseAsk::default()
    }
}

/// Three sidecars have spent $0.97 of $1.00; $0.03 is leased to a and b.
fn nearly_spent() -> Book {
    let mut b = Book::new(cfg("1.00"), now()).unwrap();
    for (id, lease, spend) in [
        ("a", "0.40", "0.38"),
        ("b", "0.40", "0.39"),
        ("c", "0.20", "0.20"),
    ] {
        let g = b.grant(id, need(lease), now(), 30_000);
        assert_eq!(g.granted, usd(lease));
        b.apply(id, "ns/w", day(), &rec(1, spend, "m"), now());
    }
    assert_eq!(b.available().0, Some(Usd::ZERO));
    assert_eq!(b.remaining().0, Some(usd("0.03")));
    b
}

#[test]
fn a_need_only_the_pool_cannot_cover_is_recalled_not_unmet() {
    let mut b = nearly_spent();
    // c needs 0.02: the pool is empty but a and b hold 0.03 unused, so
    // they are recalled and the request waits.
    assert_eq!(b.cannot_cover(need("0.02")), None);
    assert_eq!(
        b.recall_candidates("c", need("0.02")),
        vec!["a".to_string(), "b".to_string()]
    );
    // Exactly what is left is still coverable.
    assert_eq!(b.cannot_cover(need("0.03")), None);
    let g = b.grant("c", need("0.02"), now(), 30_000);
    assert_eq!(g.granted, usd("0.20"), "nothing in the pool yet");
    assert_eq!(b.budget_state(), State::Ok);
    // Once a and b give back what they do not use, it is covered.
    let (va, vb) = (b.lease("a").version, b.lease("b").version);
    b.release("a", va, usd("0.38"), 0);
    b.release("b", vb, usd("0.39"), 0);
    let g = b.grant("c", need("0.02"), now(), 30_000);
    assert!(g.granted >= usd("0.22"), "{}", g.granted);
}

#[test]
fn a_need_the_cap_minus_spend_cannot_cover_is_unmet_at_once_and_recalls_nobody() {
    let mut b = nearly_spent();
    // c needs 0.05 but only 0.03 is left cluster-wide: even if a and b gave
    // everything back, no grant could cover it.
    let u = b.cannot_cover(need("0.05")).unwrap();
    assert_eq!(u.remaining, Some(usd("0.03")));
    assert_eq!(u.remaining_tokens, None, "no token limit");
    assert_eq!((u.epoch, u.period_start), (b.epoch(), day()));
    assert!(
        b.recall_candidates("c", need("0.05")).is_empty(),
        "recalling would not help"
    );
    let before = b.lease("c").granted;
    let g = b.grant("c", need("0.05"), now(), 30_000);
    assert!(g.granted.saturating_sub(before) < usd("0.05"));
    assert_eq!(b.budget_state(), State::Exhausted);
    // Topping up (no need) is never unmet.
    assert_eq!(b.cannot_cover(LeaseAsk::want(usd("5"))), None);

    // The verdict stays true in the period and epoch: releases and
    // expiries move leases, not the spend...
    let (va, vb) = (b.lease("a").version, b.lease("b").version);
    b.release("a", va, Usd::ZERO, 0);
    b.release("b", vb, Usd::ZERO, 0);
    let t = now() + jiff::SignedDuration::from_secs(120);
    b.reclaim(t, 60_000);
    let u = b.cannot_cover(need("0.05")).unwrap();
    assert_eq!(u.remaining, Some(usd("0.03")));
    let before = b.lease("c").granted;
    let g = b.grant("c", need("0.05"), t, 30_000);
    assert_eq!(
        g.granted.saturating_sub(before),
        usd("0.03"),
        "all there is"
    );
    // ...and more spend only shrinks what is left.
    b.apply("c", "ns/w", day(), &rec(2, "0.01", "m"), t);
    assert_eq!(
        b.cannot_cover(need("0.025")).unwrap().remaining,
        Some(usd("0.02"))
    );
    // A raised limit is a new epoch: the need can be covered again.
    let epoch = b.epoch();
    b.reconfigure(cfg("2.00"), t).unwrap();
    assert_eq!(b.epoch(), epoch + 1);
    assert_eq!(b.cannot_cover(need("0.05")), None);
    // A new period starts from nothing spent.
    let mut b = nearly_spent();
    let tomorrow = at("2026-11-23T00:00:01Z");
    b.roll(tomorrow);
    assert_eq!(b.cannot_cover(need("0.05")), None);
}

#[test]
fn token_needs_are_unmet_against_the_token_cap() {
    let mut c = cfg("1.00");
    c.limit_usd = None;
    c.limit_tokens = Some(1_000);
    let mut b = Book::new(c, now()).unwrap();
    let ask = |n: u64| LeaseAsk {
        need_tokens: n,
        ..LeaseAsk::default()
    };
    b.grant("a", ask(1_000), now(), 30_000);
    // rec() uses 115 tokens.
    b.apply("a", "ns/w", day(), &rec(1, "0", "m"), now());
    assert_eq!(b.remaining(), (None, Some(885)));
    assert_eq!(b.cannot_cover(ask(885)), None);
    let u = b.cannot_cover(ask(886)).unwrap();
    assert_eq!((u.remaining, u.remaining_tokens), (None, Some(885)));
    // A USD need means nothing to a budget without a USD limit.
    assert_eq!(b.cannot_cover(need("1000")), None);
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
    let mut smallest_unmet: Option<Usd> = None;
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
            // The verdict says exactly whether the need could be covered if
            // every lease (the asker's own included) came back unspent...
            let unmet = b.cannot_cover(ask);
            let mut all_back = b.clone();
            for (sid, e) in b.sidecars() {
                all_back.release(sid, e.version, Usd::ZERO, 0);
            }
            let before = all_back.lease(&id).granted;
            let after = all_back.grant(&id, ask, t, 60_000).granted;
            assert_eq!(
                unmet.is_some(),
                after.saturating_sub(before) < worst,
                "step {step}: need {worst}, {unmet:?}"
            );
            // ...says what is left...
            if let Some(u) = unmet {
                assert_eq!(u.remaining, Some(usd("1.00").saturating_sub(truth)));
                smallest_unmet = Some(smallest_unmet.map_or(worst, |m: Usd| m.min(worst)));
            }
            // ...and never turns false later in the period: a need at least
            // as large as one found unmet stays unmet.
            if smallest_unmet.is_some_and(|m| worst >= m) {
                assert!(unmet.is_some(), "step {step}: {worst} became coverable");
            }
            let g = b.grant(&id, ask, t, 60_000);
            leases[s] = g.granted;
            assert!(b.totals().spent.saturating_add(b.outstanding().0) <= usd("1.00"));
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
    assert!(smallest_unmet.is_some(), "the run reached the cap");
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

/// A waiter parked while the book still had room, found impossible once
/// more spend arrived: noting it turns the budget Exhausted, as a grant of
/// an impossible need does (the state is what status shows).
#[test]
fn an_impossible_waiter_noted_later_makes_the_budget_exhausted() {
    let mut b = nearly_spent();
    assert_ne!(b.budget_state(), State::Exhausted);
    // Within what is left: not unmet, nothing noted.
    b.note_unmet(need("0.02"));
    assert_ne!(b.budget_state(), State::Exhausted);
    b.note_unmet(need("0.05"));
    assert_eq!(b.budget_state(), State::Exhausted);
}
