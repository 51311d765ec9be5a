//! Leases: requests are granted from the book (the grant goes out once the
//! write that records it is durable), answered `LeaseUnmet` at once when
//! the budget cannot cover them this period, or parked while other
//! sidecars are recalled; releases give budget back and serve the parked
//! requests. A budget split per key (`spec.perKey`) has one more lease
//! pool per key, kept against the key's limit the same way (a request
//! reserves from both), persisted in the budget's status.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokenwarden_core::{
    book::{LeaseAsk, Unmet},
    workload::ObjectRef,
};

use super::{
    Engine, SessionId,
    messages::{BudgetSnapshot, Grant, Outbound, Release},
    state::Waiter,
};

impl Engine {
    pub(super) fn lease_request(
        &mut self,
        id: SessionId,
        budget: ObjectRef,
        key: &str,
        ask: LeaseAsk,
        request_id: u64,
        now: Timestamp,
    ) {
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        let selected = s
            .cfg
            .as_ref()
            .is_some_and(|c| c.budgets.iter().any(|b| b.source == budget));
        let sidecar = s.sidecar_id.clone();
        let Some(slot) = self.books.get(&budget) else {
            self.send(
                id,
                Outbound::Revoke {
                    budget,
                    epoch: 0,
                    reason: "no such TokenBudget".into(),
                },
            );
            return;
        };
        if !selected {
            let epoch = slot.book.epoch();
            self.send(
                id,
                Outbound::Revoke {
                    budget,
                    epoch,
                    reason: "the TokenBudget does not select this pod".into(),
                },
            );
            return;
        }
        self.metrics.lease_requests.inc();
        let waiter = Waiter {
            session: id,
            sidecar,
            ask,
            request_id,
        };
        self.serve_lease(&budget, key, waiter, now);
    }

    /// Grant what can be granted; when a waiting request cannot be covered
    /// at all this period, say so at once (`LeaseUnmet`); when it still
    /// cannot be covered but other sidecars hold unused leases, recall them
    /// and keep the request until they come back.
    fn serve_lease(&mut self, budget: &ObjectRef, key: &str, w: Waiter, now: Timestamp) {
        let ttl = i64::try_from(self.cfg.lease_ttl.as_millis()).unwrap_or(i64::MAX);
        let Some(slot) = self.books.get_mut(budget) else {
            return;
        };
        let Some(mut pool) = slot.pool(key, now) else {
            // A key past the pools the budget keeps: nothing can be leased.
            let unmet = Unmet {
                epoch: slot.book.epoch(),
                period_start: slot.book.window().start,
                remaining: Some(tokenwarden_core::money::Usd::ZERO),
                remaining_tokens: Some(0),
            };
            let msg = Outbound::Unmet {
                budget: budget.clone(),
                key: key.to_string(),
                unmet,
                request_id: w.request_id,
            };
            self.send(w.session, msg);
            return;
        };
        let (id, ask) = (w.session, w.ask);
        let before = pool.book.lease(&w.sidecar);
        let recall = pool.book.recall_candidates(&w.sidecar, ask);
        let view = pool.book.grant(&w.sidecar, ask, now, ttl);
        let covered = view.granted.saturating_sub(before.granted) >= ask.need
            && view.granted_tokens.saturating_sub(before.granted_tokens) >= ask.need_tokens;
        let generation = pool.generation();
        let grant = Grant {
            budget: budget.clone(),
            key: key.to_string(),
            view,
            request_id: w.request_id,
        };
        pool.pending_grants.push((id, generation, grant));
        // Spent + this need > cap: nothing that comes back can cover it
        // (and nothing is recalled for it). The grant above still follows
        // once written; the verdict needs no write, it grants nothing. The
        // spend it is based on goes along, so the sidecar's own check
        // refuses the next such request without asking.
        if let Some(unmet) = pool.book.cannot_cover(ask) {
            pool.waiters.retain(|x| x.session != id);
            tracing::debug!(
                budget = %budget,
                sidecar = %w.sidecar,
                need_usd = %ask.need,
                remaining_usd = ?unmet.remaining,
                "lease request cannot be covered this period"
            );
            let status = BudgetSnapshot::of(budget, &slot.book, slot.projected_overrun());
            let request_id = w.request_id;
            self.send(
                id,
                Outbound::Unmet {
                    budget: budget.clone(),
                    key: key.to_string(),
                    unmet,
                    request_id,
                },
            );
            self.send(id, Outbound::BudgetStatus(status));
            return;
        }
        if covered || recall.is_empty() {
            return;
        }
        let sidecar = w.sidecar.clone();
        pool.waiters.retain(|x| x.session != id);
        pool.waiters.push(w);
        if pool
            .last_recall
            .is_some_and(|t| t.elapsed() < Duration::from_millis(200))
        {
            return;
        }
        *pool.last_recall = Some(Instant::now());
        let period_start = pool.book.window().start;
        let targets: Vec<(SessionId, u64)> = recall
            .iter()
            .filter_map(|s| {
                let session = self.by_sidecar.get(s)?;
                Some((*session, pool.book.lease(s).version))
            })
            .collect();
        for (session, version) in targets {
            self.metrics.lease_recalls.inc();
            self.send(
                session,
                Outbound::Recall {
                    budget: budget.clone(),
                    key: key.to_string(),
                    period_start,
                    version,
                    reason: format!("another sidecar ({sidecar}) needs this budget"),
                },
            );
        }
    }

    pub(super) fn lease_release(&mut self, id: SessionId, rel: Release, now: Timestamp) {
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        let sidecar = s.sidecar_id.clone();
        let budget = rel.budget;
        let Some(slot) = self.books.get_mut(&budget) else {
            return;
        };
        let Some(mut pool) = slot.pool(&rel.key, now) else {
            return;
        };
        if rel.period_start_unix != pool.book.window().start.as_second() {
            return;
        }
        let view = pool
            .book
            .release(&sidecar, rel.version, rel.keep, rel.keep_tokens);
        let generation = pool.generation();
        let grant = Grant {
            budget: budget.clone(),
            key: rel.key.clone(),
            view,
            request_id: 0,
        };
        pool.pending_grants.push((id, generation, grant));
        // Serve the requests that were waiting for budget to come back.
        let waiters = std::mem::take(pool.waiters);
        for w in waiters {
            if self.sessions.contains_key(&w.session) {
                self.serve_lease(&budget, &rel.key, w, now);
            }
        }
    }

    /// Answer `LeaseUnmet` to the waiting requests of `budget`'s pool of
    /// `key` (empty: its own) whose need can no longer be covered this
    /// period, and stop holding them.
    pub(super) fn answer_unmet_waiters(&mut self, budget: &ObjectRef, key: &str, now: Timestamp) {
        let Some(slot) = self.books.get_mut(budget) else {
            return;
        };
        if !key.is_empty() && !slot.keys.contains_key(key) {
            return;
        }
        let Some(pool) = slot.pool(key, now) else {
            return;
        };
        if pool.waiters.is_empty() {
            return;
        }
        let book = &*pool.book;
        let mut answers = Vec::new();
        let mut unmet_asks = Vec::new();
        pool.waiters.retain(|w| {
            let Some(unmet) = book.cannot_cover(w.ask) else {
                return true;
            };
            let msg = Outbound::Unmet {
                budget: budget.clone(),
                key: key.to_string(),
                unmet,
                request_id: w.request_id,
            };
            answers.push((w.session, msg));
            unmet_asks.push(w.ask);
            false
        });
        if answers.is_empty() {
            return;
        }
        // The grant that parked them saw less spend: the budget's state
        // must still say no request of that size can be served.
        for ask in unmet_asks {
            pool.book.note_unmet(ask);
        }
        let status = Outbound::BudgetStatus(BudgetSnapshot::of(
            budget,
            &slot.book,
            slot.projected_overrun(),
        ));
        for (session, msg) in answers {
            self.send(session, msg);
            self.send(session, status.clone());
        }
    }

    /// Send the grants of budget `id` (its own and its keys') whose write
    /// has completed.
    pub(super) fn release_grants(&mut self, id: &ObjectRef) {
        let Some(slot) = self.books.get_mut(id) else {
            return;
        };
        let written = slot.written_gen;
        let mut ready = Vec::new();
        let mut take = |pending: &mut Vec<(SessionId, u64, Grant)>| {
            if pending.is_empty() {
                return;
            }
            let (now_ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(pending)
                .into_iter()
                .partition(|(_, g, _)| *g <= written);
            *pending = waiting;
            ready.extend(now_ready);
        };
        take(&mut slot.pending_grants);
        for kp in slot.keys.values_mut() {
            take(&mut kp.pending_grants);
        }
        for (sid, _, g) in ready {
            self.send(sid, Outbound::Grant(g));
        }
    }
}
