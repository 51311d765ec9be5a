//! Usage ingest and acks: each record is counted in every book it names
//! (of the sidecar's own namespace) and in the cluster ledger, deduped by
//! (sidecar id, seq); a batch is acked once every sink it touched is
//! durable at a generation that includes it. Every valid record, counted or
//! not, also goes to the usage store when there is one (see `usage`).

use std::collections::BTreeSet;

use jiff::Timestamp;
use tokenwarden_core::{book::Applied, usage::UsageRecord, workload::ObjectRef};

use super::{
    Engine, SessionId, Sink,
    messages::{IncomingRecord, Outbound},
    state::PendingBatch,
};

/// Where one record counted.
#[derive(Default)]
struct Outcome {
    counted: bool,
    duplicate: bool,
}

impl Outcome {
    fn note(&mut self, applied: Applied) -> bool {
        match applied {
            Applied::Counted => self.counted = true,
            Applied::Duplicate => self.duplicate = true,
            Applied::Late => return false,
        }
        true
    }
}

impl Engine {
    pub(super) fn usage(&mut self, id: SessionId, records: Vec<IncomingRecord>, now: Timestamp) {
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        let sidecar = s.sidecar_id.clone();
        let _span = crate::otel::enter(
            "tokenwarden.usage.ingest",
            vec![
                opentelemetry::KeyValue::new("tokenwarden.sidecar.id", sidecar.to_string()),
                opentelemetry::KeyValue::new("tokenwarden.usage.records", records.len() as i64),
            ],
        );
        let mut touched: BTreeSet<Sink> = BTreeSet::new();
        let mut last_seq = 0;
        let defer = self.defer_usage(id, records.len());
        for incoming in records {
            if incoming.claimed_sidecar != sidecar {
                tracing::warn!(
                    sidecar = %sidecar,
                    claimed = %incoming.claimed_sidecar,
                    "usage record for another sidecar id ignored"
                );
                self.metrics.records_invalid.inc();
                continue;
            }
            let rec = match incoming.record {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(sidecar = %sidecar, error = %e, "invalid usage record ignored");
                    self.metrics.records_invalid.inc();
                    continue;
                }
            };
            last_seq = last_seq.max(rec.seq);
            self.count(id, &rec, now, &mut touched);
            self.queue_usage(id, rec, defer, &mut touched);
        }
        if last_seq == 0 {
            return;
        }
        let needs = self.generations_needed(id, touched);
        let books: Vec<ObjectRef> = needs
            .iter()
            .filter_map(|(sink, _)| match sink {
                Sink::Budget(b) => Some(b.clone()),
                _ => None,
            })
            .collect();
        if let Some(s) = self.sessions.get_mut(&id) {
            s.pending.push_back(PendingBatch { last_seq, needs });
        }
        self.ack(id);
        // The spend grew: requests waiting on a recall may have become
        // impossible (in the budget's pool or a key's).
        for b in &books {
            self.answer_unmet_waiters(b, "", now);
            let keys: Vec<String> = self.books.get(b).map_or_else(Vec::new, |slot| {
                slot.keys
                    .iter()
                    .filter(|(_, kp)| !kp.waiters.is_empty())
                    .map(|(k, _)| k.clone())
                    .collect()
            });
            for k in keys {
                self.answer_unmet_waiters(b, &k, now);
            }
        }
    }

    /// Count one record of session `id` in its books and the cluster
    /// ledger; note the sinks it touched.
    fn count(
        &mut self,
        id: SessionId,
        rec: &UsageRecord,
        now: Timestamp,
        touched: &mut BTreeSet<Sink>,
    ) {
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        let sidecar = s.sidecar_id.as_str();
        let workload = s.workload.as_str();
        let namespace = s.identity.namespace.as_str();
        let mut outcome = Outcome::default();
        for p in &rec.budgets {
            // Budgets are namespaced: a sidecar can only charge budgets
            // of its own namespace.
            if p.budget.namespace != namespace {
                continue;
            }
            let Some(slot) = self.books.get_mut(&p.budget) else {
                continue;
            };
            let applied = slot.book.apply(sidecar, workload, p.period_start, rec, now);
            if !outcome.note(applied) {
                self.metrics.records_late.inc();
            }
            // The key's lease pool counts it too (a pool made now starts
            // from the budget's count of the key, this record included).
            if applied == Applied::Counted
                && let Some(key) = p.key.as_deref()
            {
                match slot.keys.get_mut(key) {
                    Some(kp) => {
                        kp.book.apply(sidecar, workload, p.period_start, rec, now);
                        slot.book.bump();
                    }
                    None => {
                        let _ = slot.pool(key, now);
                    }
                }
            }
            touched.insert(Sink::Budget(p.budget.clone()));
        }
        if let Some(l) = self.ledger.as_mut() {
            let wl = workload.rsplit('/').next().unwrap_or(workload);
            outcome.note(l.ledger.apply(sidecar, namespace, wl, rec, now.as_second()));
            touched.insert(Sink::Ledger);
        }
        if outcome.counted {
            if rec.cache.bust.is_some()
                && let Some(policy) = s.cfg.as_ref().and_then(|c| c.routing.as_ref())
            {
                self.cache_watch.note(&policy.source, workload, rec);
                self.policy_statuses_dirty = true;
            }
            self.metrics.records_ingested.inc();
            self.metrics.record(rec);
        } else if outcome.duplicate {
            self.metrics.records_duplicate.inc();
        }
    }

    /// Each touched sink with the generation that includes the batch.
    fn generations_needed(&self, id: SessionId, touched: BTreeSet<Sink>) -> Vec<(Sink, u64)> {
        touched
            .into_iter()
            .filter_map(|sink| {
                let generation = match &sink {
                    Sink::Budget(b) => self.books.get(b)?.book.generation(),
                    Sink::Ledger => self.ledger.as_ref()?.ledger.generation(),
                    Sink::UsageStore => self.usage_generation(id)?,
                    Sink::Policy(_) => return None,
                };
                Some((sink, generation))
            })
            .collect()
    }

    /// Whether `sink` has been written at `generation` or later.
    pub(super) fn durable(&self, sink: &Sink, generation: u64) -> bool {
        match sink {
            // A budget deleted since: nothing more to persist.
            Sink::Budget(b) => self
                .books
                .get(b)
                .is_none_or(|s| s.written_gen >= generation),
            Sink::Ledger => self
                .ledger
                .as_ref()
                .is_none_or(|l| l.written_gen >= generation),
            Sink::UsageStore => self
                .usage
                .as_ref()
                .is_none_or(|u| u.written_gen >= generation),
            Sink::Policy(_) => true,
        }
    }

    /// Ack the session's oldest batches whose sinks are all durable.
    pub(super) fn ack(&mut self, id: SessionId) {
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        let mut upto = None;
        let mut n = 0;
        for batch in &s.pending {
            if batch.needs.iter().all(|(sink, g)| self.durable(sink, *g)) {
                upto = Some(batch.last_seq);
                n += 1;
            } else {
                break;
            }
        }
        let Some(up_to_seq) = upto else {
            return;
        };
        let sidecar_id = s.sidecar_id.clone();
        let _span = crate::otel::enter(
            "tokenwarden.usage.ack",
            vec![
                opentelemetry::KeyValue::new("tokenwarden.sidecar.id", sidecar_id.to_string()),
                opentelemetry::KeyValue::new(
                    "tokenwarden.usage.up_to_seq",
                    i64::try_from(up_to_seq).unwrap_or(i64::MAX),
                ),
                opentelemetry::KeyValue::new("tokenwarden.usage.batches", n as i64),
            ],
        );
        if let Some(s) = self.sessions.get_mut(&id) {
            s.pending.drain(..n);
        }
        self.send(
            id,
            Outbound::Ack {
                sidecar_id,
                up_to_seq,
            },
        );
    }
}
