//! Status batching and durability: each book, the cluster ledger and each
//! RoutingPolicy status is written at most once per `status_interval`, one
//! write in flight per sink; a finished write releases the grants and the
//! acks it made durable. Only a leader starts a write.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use opentelemetry::{KeyValue, context::FutureExt as _};
use tokenwarden_core::workload::ObjectRef;

use super::{Cmd, Engine, SessionId, Sink, WriteError};
use crate::status;

/// Whether a sink last written at `last` may be written again.
fn due(last: Option<Instant>, interval: Duration) -> bool {
    last.is_none_or(|t| t.elapsed() >= interval)
}

impl Engine {
    /// Whether a status or ledger write is in flight.
    pub(super) fn writes_in_flight(&self) -> bool {
        self.books.values().any(|b| b.writing)
            || self.ledger.as_ref().is_some_and(|l| l.writing)
            || self.policy_slots.values().any(|p| p.writing)
            || self.usage.as_ref().is_some_and(|u| u.writing())
    }

    /// Send the grants already durable, and start the writes that are due.
    pub(super) fn flush(&mut self, now: Timestamp) {
        if self.stopping.is_some() || !self.leads() {
            return;
        }
        let ids: Vec<ObjectRef> = self.books.keys().cloned().collect();
        for id in &ids {
            self.release_grants(id);
        }
        for id in ids {
            self.write_book(id, now);
        }
        self.write_ledger();
        self.write_usage();
        let pids: Vec<ObjectRef> = self.policy_slots.keys().cloned().collect();
        for id in pids {
            self.write_policy(id);
        }
    }

    fn write_book(&mut self, id: ObjectRef, now: Timestamp) {
        let interval = self.cfg.status_interval;
        let Some(slot) = self.books.get_mut(&id) else {
            return;
        };
        if slot.writing
            || (slot.book.generation() == slot.written_gen && !slot.force_write)
            || !due(slot.last_write, interval)
        {
            return;
        }
        slot.force_write = false;
        let st = status::budget_status(
            &slot.book,
            slot.keys.iter().map(|(k, kp)| (k, &kp.book)),
            &slot.burn,
            slot.last_status.as_ref(),
            now,
        );
        slot.writing = true;
        slot.last_write = Some(Instant::now());
        let generation = slot.book.generation();
        slot.last_status = Some(st.clone());
        let source = self.source.clone();
        let tx = self.tx.clone();
        let metrics = self.metrics.clone();
        let cx = crate::otel::start(
            "tokenwarden.status.write",
            vec![
                KeyValue::new("tokenwarden.budget", id.to_string()),
                KeyValue::new("tokenwarden.generation", generation as i64),
            ],
        );
        tokio::spawn(async move {
            let t = Instant::now();
            let r = source
                .write_budget_status(&id, &st)
                .with_context(cx.clone())
                .await
                .map_err(WriteError::from);
            if r.is_err() {
                crate::otel::failed(&cx, "status_write_failed");
            }
            metrics
                .status_write_seconds
                .observe(t.elapsed().as_secs_f64());
            let _ = tx.send(Cmd::Written(Sink::Budget(id), generation, r)).await;
        });
    }

    fn write_ledger(&mut self) {
        let interval = self.cfg.status_interval;
        let Some(l) = self.ledger.as_mut() else {
            return;
        };
        if l.writing || l.ledger.generation() == l.written_gen || !due(l.last_write, interval) {
            return;
        }
        l.writing = true;
        l.last_write = Some(Instant::now());
        let generation = l.ledger.generation();
        let state = l.ledger.to_state();
        let store = l.store.clone();
        let tx = self.tx.clone();
        let cx = crate::otel::start(
            "tokenwarden.ledger.write",
            vec![KeyValue::new("tokenwarden.generation", generation as i64)],
        );
        tokio::task::spawn_blocking(move || {
            let r = store.save(&state).map_err(WriteError::from);
            if r.is_err() {
                crate::otel::failed(&cx, "ledger_write_failed");
            }
            drop(cx);
            let _ = tx.blocking_send(Cmd::Written(Sink::Ledger, generation, r));
        });
    }

    fn write_policy(&mut self, id: ObjectRef) {
        let interval = self.cfg.status_interval;
        let Some(slot) = self.policy_slots.get_mut(&id) else {
            return;
        };
        if slot.writing || !due(slot.last_write, interval) {
            return;
        }
        let Some(st) = slot.pending.take() else {
            return;
        };
        slot.writing = true;
        slot.last_write = Some(Instant::now());
        let source = self.source.clone();
        let tx = self.tx.clone();
        let cx = crate::otel::start(
            "tokenwarden.policy_status.write",
            vec![KeyValue::new("tokenwarden.policy", id.to_string())],
        );
        tokio::spawn(async move {
            let r = source
                .write_policy_status(&id, &st)
                .with_context(cx.clone())
                .await
                .map_err(WriteError::from);
            if r.is_err() {
                crate::otel::failed(&cx, "policy_status_write_failed");
            }
            let _ = tx.send(Cmd::Written(Sink::Policy(id), 0, r)).await;
        });
    }

    /// A write finished: on success its generation is durable (release the
    /// grants and acks it covers); on failure it is retried next interval.
    pub(super) fn written(&mut self, sink: Sink, generation: u64, result: Result<(), WriteError>) {
        match &sink {
            Sink::Budget(id) => {
                let Some(slot) = self.books.get_mut(id) else {
                    return;
                };
                slot.writing = false;
                match result {
                    Ok(()) => {
                        slot.written_gen = slot.written_gen.max(generation);
                        let id = id.clone();
                        self.release_grants(&id);
                    }
                    Err(e) => {
                        self.metrics.status_write_errors.inc();
                        tracing::error!(budget = %id, error = %e, "cannot write TokenBudget status; will retry");
                        // Retry at the next interval.
                    }
                }
            }
            Sink::Ledger => {
                let Some(l) = self.ledger.as_mut() else {
                    return;
                };
                l.writing = false;
                match result {
                    Ok(()) => l.written_gen = l.written_gen.max(generation),
                    Err(e) => {
                        self.metrics.status_write_errors.inc();
                        tracing::error!(error = %e, "cannot write the cluster ledger; will retry");
                    }
                }
            }
            Sink::Policy(id) => {
                if let Some(slot) = self.policy_slots.get_mut(id) {
                    slot.writing = false;
                    if let Err(e) = result {
                        tracing::warn!(policy = %id, error = %e, "cannot write RoutingPolicy status; will retry");
                        if slot.pending.is_none() {
                            slot.pending = slot.written.clone();
                        }
                    }
                }
                return;
            }
            Sink::UsageStore => self.usage_written(generation, result),
        }
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        for id in ids {
            self.ack(id);
        }
        if sink == Sink::UsageStore {
            self.resume_deferred();
        }
    }
}
