//! Leases: requests are granted from the book (the grant goes out once the
//! write that records it is durable), answered `LeaseUnmet` at once when
//! the budget cannot cover them this period, or parked while other
//! sidecars are recalled; releases give budget back and serve the parked
//! requests.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokenwarden_core::{book::LeaseAsk, workload::ObjectRef};

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
        self.serve_lease(&budget, waiter, now);
    }

    /// Grant what can be granted; when a waiting request cannot be covered
    /// at all this period, say so at once (`LeaseUnmet`); when it still
    /// cannot be covered but other sidecars hold unused leases, recall them
    /// and keep the request until they come back.
    fn serve_lease(&mut self, budget: &ObjectRef, w: Waiter, now: Timestamp) {
        let ttl = i64::try_from(self.cfg.lease_ttl.as_millis()).unwrap_or(i64::MAX);
        let Some(slot) = self.books.get_mut(budget) else {
            return;
        };
        let (id, ask) = (w.session, w.ask);
        let before = slot.book.lease(&w.sidecar);
        let recall = slot.book.recall_candidates(&w.sidecar, ask);
        let view = slot.book.grant(&w.sidecar, ask, now, ttl);
        let covered = view.granted.saturating_sub(before.granted) >= ask.need
            && view.granted_tokens.saturating_sub(before.granted_tokens) >= ask.need_tokens;
        let generation = slot.book.generation();
        let grant = Grant {
            budget: budget.clone(),
            view,
            request_id: w.request_id,
        };
        slot.pending_grants.push((id, generation, grant));
        // Spent + this need > cap: nothing that comes back can cover it
        // (and nothing is recalled for it). The grant above still follows
        // once written; the verdict needs no write, it grants nothing. The
        // spend it is based on goes along, so the sidecar's own check
        // refuses the next such request without asking.
        if let Some(unmet) = slot.book.cannot_cover(ask) {
            slot.waiters.retain(|x| x.session != id);
            let status = BudgetSnapshot::of(budget, &slot.book);
            tracing::debug!(
                budget = %budget,
                sidecar = %w.sidecar,
                need_usd = %ask.need,
                remaining_usd = ?unmet.remaining,
                "lease request cannot be covered this period"
            );
            let request_id = w.request_id;
            self.send(
                id,
                Outbound::Unmet {
                    budget: budget.clone(),
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
        slot.waiters.retain(|x| x.session != id);
        slot.waiters.push(w);
        if slot
            .last_recall
            .is_some_and(|t| t.elapsed() < Duration::from_millis(200))
        {
            return;
        }
        slot.last_recall = Some(Instant::now());
        let period_start = slot.book.window().start;
        let targets: Vec<(SessionId, u64)> = recall
            .iter()
            .filter_map(|s| {
                let session = self.by_sidecar.get(s)?;
                Some((*session, slot.book.lease(s).version))
            })
            .collect();
        for (session, version) in targets {
            self.metrics.lease_recalls.inc();
            self.send(
                session,
                Outbound::Recall {
                    budget: budget.clone(),
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
        if rel.period_start_unix != slot.book.window().start.as_second() {
            return;
        }
        let view = slot
            .book
            .release(&sidecar, rel.version, rel.keep, rel.keep_tokens);
        let generation = slot.book.generation();
        let grant = Grant {
            budget: budget.clone(),
            view,
            request_id: 0,
        };
        slot.pending_grants.push((id, generation, grant));
        // Serve the requests that were waiting for budget to come back.
        let waiters = std::mem::take(&mut slot.waiters);
        for w in waiters {
            if self.sessions.contains_key(&w.session) {
                self.serve_lease(&budget, w, now);
            }
        }
    }

    /// Answer `LeaseUnmet` to the waiting requests of `budget` whose need
    /// can no longer be covered this period, and stop holding them.
    pub(super) fn answer_unmet_waiters(&mut self, budget: &ObjectRef) {
        let Some(slot) = self.books.get_mut(budget) else {
            return;
        };
        if slot.waiters.is_empty() {
            return;
        }
        let book = &slot.book;
        let mut answers = Vec::new();
        let mut unmet_asks = Vec::new();
        slot.waiters.retain(|w| {
            let Some(unmet) = book.cannot_cover(w.ask) else {
                return true;
            };
            let msg = Outbound::Unmet {
                budget: budget.clone(),
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
            slot.book.note_unmet(ask);
        }
        let status = Outbound::BudgetStatus(BudgetSnapshot::of(budget, &slot.book));
        for (session, msg) in answers {
            self.send(session, msg);
            self.send(session, status.clone());
        }
    }

    /// Send the grants of budget `id` whose write has completed.
    pub(super) fn release_grants(&mut self, id: &ObjectRef) {
        let Some(slot) = self.books.get_mut(id) else {
            return;
        };
        if slot.pending_grants.is_empty() {
            return;
        }
        let written = slot.written_gen;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut slot.pending_grants)
            .into_iter()
            .partition(|(_, g, _)| *g <= written);
        slot.pending_grants = waiting;
        for (sid, _, g) in ready {
            self.send(sid, Outbound::Grant(g));
        }
    }
}
