//! Housekeeping, once a second: the cluster ledger forgets silent
//! sidecars; each book rolls its period, reclaims expired leases, renews
//! the leases of connected sidecars, samples its spend for the forecast,
//! broadcasts a changed state and records an Event when its state crosses
//! a threshold or its projection crosses the limit.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use tokenwarden_core::{book::LeaseAsk, budget::State, forecast::Forecast, workload::ObjectRef};
use tokenwarden_crds::common::conditions as c;

use super::{
    Engine, LEDGER_WATERMARK_KEEP_SECS, SessionId,
    messages::{BudgetSnapshot, Grant, Outbound},
    state::BookSlot,
};
use crate::{
    source::{Event, EventType, Regarding},
    status::projection,
};

/// Lease lifetimes in milliseconds.
#[derive(Clone, Copy)]
struct Lifetimes {
    ttl: i64,
    grace: i64,
}

impl Engine {
    pub(super) fn housekeeping(&mut self, now: Timestamp) {
        if let Some(l) = self.ledger.as_mut() {
            let dropped = l.ledger.prune(now.as_second(), LEDGER_WATERMARK_KEEP_SECS);
            if dropped > 0 {
                tracing::info!(
                    sidecars = dropped,
                    "cluster ledger: forgot sidecars silent for 7 days"
                );
            }
        }
        let lifetimes = Lifetimes {
            ttl: i64::try_from(self.cfg.lease_ttl.as_millis()).unwrap_or(i64::MAX),
            grace: i64::try_from(self.cfg.lease_grace.as_millis()).unwrap_or(i64::MAX),
        };
        let connected: BTreeMap<String, SessionId> = self
            .by_sidecar
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        // Busts age out of the PromptCacheUnstable window.
        if self.cache_watch.prune(now) {
            self.policy_statuses_dirty = true;
        }
        let mut events = Vec::new();
        let mut broadcasts = Vec::new();
        for (id, slot) in &mut self.books {
            events.extend(keep_book(id, slot, &connected, lifetimes, now));
            sample_forecast(slot, now);
            self.metrics.projected_spend(
                id,
                slot.forecast.as_ref().and_then(Forecast::projected_spend),
            );
            let state = slot.book.budget_state();
            let pct = slot.book.percent_spent();
            // Tokens too: a per-key token limit needs them when no USD moved.
            let spent = (slot.book.totals().spent, slot.book.totals().tokens());
            let overrun = slot.projected_overrun();
            if slot.broadcast != Some((pct, state, spent, overrun)) {
                slot.broadcast = Some((pct, state, spent, overrun));
                broadcasts.push(id.clone());
            }
            events.extend(state_event(id, slot));
            events.extend(projection_event(id, slot));
            let (out, _) = slot.book.outstanding();
            self.metrics.lease_outstanding(id, out);
        }
        for b in broadcasts {
            self.broadcast_status(&b);
        }
        let lag: usize = self.sessions.values().map(|s| s.pending.len()).sum();
        self.metrics
            .ledger_lag
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
        let source = self.source.clone();
        if !events.is_empty() {
            tokio::spawn(async move {
                for e in &events {
                    source.event(e).await;
                }
            });
        }
    }

    /// Send budget `b`'s state to every session it selects.
    fn broadcast_status(&mut self, b: &ObjectRef) {
        let Some(slot) = self.books.get(b) else {
            return;
        };
        let msg =
            Outbound::BudgetStatus(BudgetSnapshot::of(b, &slot.book, slot.projected_overrun()));
        let targets: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                s.cfg
                    .as_ref()
                    .is_some_and(|c| c.budgets.iter().any(|x| x.source == *b))
            })
            .map(|(id, _)| *id)
            .collect();
        for t in targets {
            self.send(t, msg.clone());
        }
    }
}

/// Roll the period, reclaim expired leases, renew the leases of connected
/// sidecars halfway to expiry and forget sidecars gone. Returns the Event
/// of a period that ended.
fn keep_book(
    id: &ObjectRef,
    slot: &mut BookSlot,
    connected: &BTreeMap<String, SessionId>,
    lifetimes: Lifetimes,
    now: Timestamp,
) -> Option<Event> {
    let mut event = None;
    if let Some((w, totals)) = slot.book.roll(now) {
        tracing::info!(
            budget = %id,
            period_start = %w.start,
            spent_usd = %totals.spent,
            requests = totals.requests,
            "budget period ended"
        );
        event = Some(Event {
            regarding: Regarding::Budget(id.clone()),
            type_: EventType::Normal,
            reason: c::REASON_PERIOD_RESET.into(),
            message: format!(
                "period from {} ended: spent ${} in {} requests",
                w.start, totals.spent, totals.requests
            ),
        });
    }
    for sidecar in slot.book.reclaim(now, lifetimes.grace) {
        tracing::info!(budget = %id, sidecar = %sidecar, "expired lease reclaimed");
    }
    let ttl = lifetimes.ttl;
    let renew: Vec<(String, SessionId)> = slot
        .book
        .sidecars()
        .iter()
        .filter(|(_, e)| e.expires_ms != 0 && e.expires_ms - now.as_millisecond() < ttl / 2)
        .filter_map(|(sid, _)| connected.get(sid).map(|s| (sid.clone(), *s)))
        .collect();
    for (sidecar, session) in renew {
        let view = slot.book.grant(&sidecar, LeaseAsk::default(), now, ttl);
        let grant = Grant {
            budget: id.clone(),
            key: String::new(),
            view,
            request_id: 0,
        };
        slot.pending_grants
            .push((session, slot.book.generation(), grant));
    }
    let sidecars_known: BTreeSet<String> = connected.keys().cloned().collect();
    slot.book.prune(|s| sidecars_known.contains(s));
    if event.is_some() {
        // A new period: keys start over; a pool stays only while a request
        // waits on it or a grant of it is to be sent.
        slot.keys
            .retain(|_, kp| !kp.waiters.is_empty() || !kp.pending_grants.is_empty());
    }
    keep_key_pools(id, slot, connected, &sidecars_known, lifetimes, now);
    event
}

/// [`keep_book`] for the lease pools of a budget's per-key keys: roll,
/// reclaim expired leases, renew connected sidecars' leases, forget
/// sidecars gone. A change bumps the budget's book (its status carries
/// the pools), and renewals wait for that write.
fn keep_key_pools(
    id: &ObjectRef,
    slot: &mut BookSlot,
    connected: &BTreeMap<String, SessionId>,
    sidecars_known: &BTreeSet<String>,
    lifetimes: Lifetimes,
    now: Timestamp,
) {
    let ttl = lifetimes.ttl;
    let mut changed = false;
    let mut renewals = Vec::new();
    for (key, kp) in &mut slot.keys {
        let before = kp.book.generation();
        kp.book.roll(now);
        kp.book.reclaim(now, lifetimes.grace);
        let renew: Vec<(String, SessionId)> = kp
            .book
            .sidecars()
            .iter()
            .filter(|(_, e)| e.expires_ms != 0 && e.expires_ms - now.as_millisecond() < ttl / 2)
            .filter_map(|(sid, _)| connected.get(sid).map(|s| (sid.clone(), *s)))
            .collect();
        for (sidecar, session) in renew {
            let view = kp.book.grant(&sidecar, LeaseAsk::default(), now, ttl);
            renewals.push((key.clone(), session, view));
        }
        kp.book.prune(|s| sidecars_known.contains(s));
        changed |= kp.book.generation() != before;
    }
    if !changed {
        return;
    }
    slot.book.bump();
    let generation = slot.book.generation();
    for (key, session, view) in renewals {
        if let Some(kp) = slot.keys.get_mut(&key) {
            let grant = Grant {
                budget: id.clone(),
                key,
                view,
                request_id: 0,
            };
            kp.pending_grants.push((session, generation, grant));
        }
    }
}

/// The Event for a budget whose state or active threshold changed since
/// the last one (none for a budget that has always been Ok).
fn state_event(id: &ObjectRef, slot: &mut BookSlot) -> Option<Event> {
    let state = slot.book.budget_state();
    let pct = slot.book.percent_spent();
    let spent = slot.book.totals().spent;
    let threshold = slot.book.config().active_threshold(pct).map(|t| t.percent);
    if slot.evented == Some((state, threshold)) {
        return None;
    }
    let first_ok = slot.evented.is_none() && state == State::Ok;
    slot.evented = Some((state, threshold));
    if first_ok {
        return None;
    }
    let (type_, reason, message) = match (state, threshold) {
        (State::Exhausted, _) => (
            EventType::Warning,
            c::EXHAUSTED,
            format!("budget exhausted: spent ${spent} ({pct}%)"),
        ),
        (_, Some(p)) => (
            EventType::Warning,
            c::THRESHOLD_CROSSED,
            format!("{pct}% of the budget spent (threshold {p}%)"),
        ),
        _ => (
            EventType::Normal,
            c::REASON_WITHIN_BUDGET,
            format!("{pct}% of the budget spent"),
        ),
    };
    Some(Event {
        regarding: Regarding::Budget(id.clone()),
        type_,
        reason: reason.into(),
        message,
    })
}

/// Sample the period's cumulative spend (the samples reset when the period
/// rolled) and forecast. A forecast whose status fields changed is written
/// (at most once per status interval); an unchanged one is not, so an idle
/// budget's status stays put.
fn sample_forecast(slot: &mut BookSlot, now: Timestamp) {
    let w = slot.book.window();
    let t = slot.book.totals();
    slot.burn.record(&w, now, t.spent, t.tokens());
    let f = projection::forecast_of(&slot.book, &slot.burn, now);
    let shown = |f: &Forecast| {
        (
            f.projected_spend(),
            f.projected_tokens(),
            f.projected_exhaustion(),
            f.note(),
        )
    };
    if slot.forecast.as_ref().map(shown) != Some(shown(&f)) {
        slot.force_write = true;
    }
    slot.forecast = Some(f);
}

/// The Event for a budget whose projection started or stopped reaching
/// the limit: a Warning `ProjectedOverrun` when it starts, a Normal
/// `ProjectedWithinLimit` when it clears (none for a budget that has never
/// been projected over).
fn projection_event(id: &ObjectRef, slot: &mut BookSlot) -> Option<Event> {
    let f = slot.forecast.as_ref()?;
    let overrun = f.overrun();
    if slot.projected_evented == Some(overrun) {
        return None;
    }
    let first_clear = slot.projected_evented.is_none() && !overrun;
    slot.projected_evented = Some(overrun);
    if first_clear {
        return None;
    }
    let message = projection::message(&slot.book, f);
    let (type_, reason, message) = if overrun {
        (EventType::Warning, c::PROJECTED_OVERRUN, message)
    } else {
        (
            EventType::Normal,
            c::REASON_PROJECTED_WITHIN_LIMIT,
            format!("no longer projected to reach the limit: {message}"),
        )
    };
    Some(Event {
        regarding: Regarding::Budget(id.clone()),
        type_,
        reason: reason.into(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use jiff::SignedDuration;
    use tokenwarden_core::{
        book::Book,
        money::Usd,
        period::Period,
        tokens::TokenCounts,
        usage::{BudgetPeriodRef, UsageRecord, cache::CacheFigures},
        workload::{BudgetConfig, Endpoint, FailMode},
    };

    use super::*;
    use crate::status::{budget_status, projection::burn_samples};

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// A $24-a-day budget in Berlin, seen by the engine from `start`.
    fn slot(start: Timestamp) -> BookSlot {
        let cfg = BudgetConfig {
            source: ObjectRef::new("ns", "team"),
            generation: 1,
            period: Period::Daily,
            time_zone: "Europe/Berlin".into(),
            limit_usd: Some("24".parse().unwrap()),
            limit_tokens: None,
            thresholds: vec![],
            per_request_cap_usd: None,
            loop_guard: None,
            fail_mode: FailMode::Closed,
            shadow: false,
            per_key: None,
            on_projected_overrun: None,
        };
        BookSlot::new(Book::new(cfg, start).unwrap(), None)
    }

    /// The synthetic clock: `minutes` housekeeping ticks a minute apart,
    /// each after a request costing `per_min`; the Events they record.
    fn run(
        slot: &mut BookSlot,
        now: &mut Timestamp,
        seq: &mut u64,
        minutes: i64,
        per_min: &str,
    ) -> Vec<Event> {
        let id = ObjectRef::new("ns", "team");
        // The tick at the start (the engine samples every tick).
        slot.book.roll(*now);
        sample_forecast(slot, *now);
        let mut events = Vec::new();
        for _ in 0..minutes {
            *now += SignedDuration::from_mins(1);
            slot.book.roll(*now);
            let cost: Usd = per_min.parse().unwrap();
            if !cost.is_zero() {
                *seq += 1;
                let rec = UsageRecord {
                    seq: *seq,
                    ts: *now,
                    endpoint: Endpoint::Messages,
                    requested_model: "m".into(),
                    served_model: "m".into(),
                    provider: "anthropic".into(),
                    route: None,
                    score: None,
                    reason: None,
                    attempt: 1,
                    status: 200,
                    usage: TokenCounts {
                        input_tokens: 100,
                        ..TokenCounts::default()
                    },
                    cost: Some(cost),
                    estimated: false,
                    budgets: vec![BudgetPeriodRef {
                        budget: id.clone(),
                        period_start: slot.book.window().start,
                        key: None,
                    }],
                    intent: None,
                    replay: None,
                    cache: CacheFigures::default(),
                };
                let start = slot.book.window().start;
                slot.book.apply("s1", "ns/web", start, &rec, *now);
            }
            sample_forecast(slot, *now);
            events.extend(projection_event(&id, slot));
        }
        events
    }

    #[test]
    fn a_projected_overrun_raises_a_warning_event_once_and_a_normal_one_when_it_clears() {
        // Berlin's 23-hour day, 2026-03-29: [03-28T23:00Z, 03-29T22:00Z).
        let mut now = at("2026-03-28T23:00:00Z");
        let mut s = slot(now);
        let mut seq = 0;
        // Three hours at $1.20 an hour: 27.60 by the end, over $24.
        let events = run(&mut s, &mut now, &mut seq, 59, "0.02");
        assert!(events.is_empty(), "warming up: {events:?}");
        assert!(!s.projected_overrun());
        let events = run(&mut s, &mut now, &mut seq, 121, "0.02");
        assert_eq!(events.len(), 1, "{events:?}");
        let e = &events[0];
        assert_eq!(
            (e.type_, e.reason.as_str()),
            (EventType::Warning, "ProjectedOverrun")
        );
        // Raised once an hour of history is there (00:00Z, $1.20 spent):
        // $22.80 more at $0.02 a minute takes 1140 minutes: 19:00Z, which
        // is 21:00 CEST (the clocks went forward at 02:00).
        assert_eq!(
            e.message,
            "projected $27.60 of $24.00 by the period's end at 2026-03-29T22:00:00Z \
             (burn rate min(mean 1h, mean 1h)): the limit is reached at \
             2026-03-29T19:00:00Z (2026-03-29 21:00 CEST) at this rate"
        );
        assert!(s.projected_overrun());
        let st = budget_status(&s.book, std::iter::empty(), &s.burn, None, now);
        assert_eq!(st.projected_spend_usd.as_deref(), Some("27.60"));
        assert_eq!(st.projected_tokens, Some(138_000));
        assert_eq!(
            st.projected_exhaustion.as_deref(),
            Some("2026-03-29T19:00:00Z")
        );
        assert_eq!(st.projection.as_deref(), Some("min(mean 3h, mean 1h)"));
        // As the API server stores it.
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(
            (
                &json["projectedSpendUsd"],
                &json["projectedTokens"],
                &json["projectedExhaustion"],
                &json["projection"]
            ),
            (
                &serde_json::json!("27.60"),
                &serde_json::json!(138_000),
                &serde_json::json!("2026-03-29T19:00:00Z"),
                &serde_json::json!("min(mean 3h, mean 1h)")
            )
        );
        assert_eq!(
            json["ledger"]["burn"][0],
            serde_json::json!({"atUnixMillis": 1_774_738_800_000_i64, "spentPicos": "0", "tokens": 0})
        );
        let cond = st
            .conditions
            .iter()
            .find(|c| c.type_ == "ProjectedOverrun")
            .unwrap();
        assert_eq!(
            (
                cond.status.as_str(),
                cond.reason.as_str(),
                cond.message.as_str()
            ),
            (
                "True",
                "ProjectedOverLimit",
                e.message
                    .replace("min(mean 1h, mean 1h)", "min(mean 3h, mean 1h)")
                    .as_str()
            )
        );
        // What the sidecars are told (they downgrade on it with
        // `onProjectedOverrun: Downgrade`).
        let wire = |s: &BookSlot| {
            let snapshot =
                BudgetSnapshot::of(&s.book.config().source, &s.book, s.projected_overrun());
            match tokenwarden_proto::OperatorMessage::from(Outbound::BudgetStatus(snapshot)).msg {
                Some(tokenwarden_proto::operator_message::Msg::BudgetStatus(b)) => b,
                other => panic!("{other:?}"),
            }
        };
        assert!(wire(&s).projected_overrun);
        // And the gauge.
        let metrics = crate::metrics::Metrics::new();
        metrics.projected_spend(
            &s.book.config().source,
            s.forecast.and_then(|f| f.projected_spend()),
        );
        assert!(
            metrics.render().contains(
                "tokenwarden_budget_cluster_projected_spend_usd{budget=\"ns/team\"} 27.6\n"
            ),
            "{}",
            metrics.render()
        );
        // Still over: no second Event.
        assert!(run(&mut s, &mut now, &mut seq, 10, "0.02").is_empty());
        // An hour without traffic: the short window's mean is zero.
        let events = run(&mut s, &mut now, &mut seq, 60, "0");
        assert_eq!(events.len(), 1, "{events:?}");
        let e = &events[0];
        assert_eq!(
            (e.type_, e.reason.as_str()),
            (EventType::Normal, "ProjectedWithinLimit")
        );
        // It clears as soon as the estimate falls under the limit (here
        // after 10 quiet minutes: $3.80 + 1180 min × $1.00/60 min, rounded
        // down to the pico-dollar).
        assert!(
            e.message.starts_with(
                "no longer projected to reach the limit: projected $23.466666666666 of $24.00"
            ),
            "{}",
            e.message
        );
        assert!(!wire(&s).projected_overrun);
        // After an hour of quiet the projection is what is spent.
        let st = budget_status(&s.book, std::iter::empty(), &s.burn, None, now);
        assert_eq!(st.spent_usd.as_deref(), Some("3.80"));
        assert_eq!(st.projected_spend_usd.as_deref(), Some("3.80"));
        assert_eq!(st.projected_exhaustion, None);
        let cond = st
            .conditions
            .iter()
            .find(|c| c.type_ == "ProjectedOverrun")
            .unwrap();
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str()),
            ("False", "ProjectedWithinLimit")
        );
    }

    #[test]
    fn the_samples_survive_a_new_leader_and_reset_with_the_period() {
        let mut now = at("2026-03-28T23:00:00Z");
        let mut s = slot(now);
        let mut seq = 0;
        run(&mut s, &mut now, &mut seq, 120, "0.02");
        let st = budget_status(&s.book, std::iter::empty(), &s.burn, None, now);
        let burn = &st.ledger.as_ref().unwrap().burn;
        assert_eq!(burn.len(), s.burn.samples.len());
        assert_eq!(burn.last().unwrap().spent_picos, "2400000000000");
        // A new leader restores the book and its samples from the status:
        // its first forecast is the old leader's, not "warming up".
        let book = Book::restore(
            s.book.config().clone(),
            now,
            crate::status::book_state(Some(&st)).unwrap(),
        )
        .unwrap();
        let restored = BookSlot::new(book, Some(st.clone()));
        assert_eq!(restored.burn, s.burn);
        let again = budget_status(
            &restored.book,
            std::iter::empty(),
            &restored.burn,
            None,
            now,
        );
        assert_eq!(again.projected_spend_usd, st.projected_spend_usd);
        assert!(again.projected_spend_usd.is_some());
        // The next day: the period rolled, the samples start over.
        let mut next = at("2026-03-29T22:00:00Z");
        run(&mut s, &mut next, &mut seq, 1, "0.02");
        assert_eq!(s.burn.period_start, at("2026-03-29T22:00:00Z"));
        assert_eq!(s.burn.samples.len(), 2, "22:00 and 22:01");
        let st = budget_status(&s.book, std::iter::empty(), &s.burn, None, next);
        assert_eq!(st.projected_spend_usd, None);
        assert_eq!(
            st.projection.as_deref(),
            Some("warming up until 2026-03-29T23:00:00Z")
        );
        // A status of the previous period restores no samples.
        assert!(burn_samples(Some(&again), &s.book.window()).is_empty());
    }
}
