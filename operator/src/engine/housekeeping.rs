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
