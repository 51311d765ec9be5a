//! The usage store as an engine sink: every valid record a session sends
//! (counted, duplicate or late alike: the books dedupe a resend, but the
//! store must still get it, since the operator that counted it first may
//! have died before its row committed) is queued as a row; one write is
//! in flight at a time, on a task, and its outcome comes back as
//! [`Cmd::Written`]`(Sink::UsageStore, generation, result)`. A batch needs
//! the store durable at the generation of its last row, so it is acked
//! only after the COMMIT that holds it.
//!
//! Bounded: a batch that would take the queue past `max_backlog` rows is
//! not queued (nor is anything later of its session) (its batches then cannot be acked and stay in the sidecar's
//! journal); once the queue has drained, such sessions are ended, so their
//! sidecars reconnect and resend what the store lacks. Writes that fail
//! are retried with exponential backoff (100 ms doubling to 5 s); traffic
//! never waits for them (leases are granted on the books' writes only).

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant},
};

use tokenwarden_core::usage::UsageRecord;

use super::{Cmd, Engine, SessionId, Sink, WriteError};
use crate::usage_store::{UsageRow, UsageSink};

/// Most rows one write carries.
const CHUNK: usize = 2000;
/// First retry delay after a failed write.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What the engine is given to write usage rows to.
#[derive(Clone)]
pub struct UsageStoreHandle {
    /// Where rows go.
    pub sink: Arc<dyn UsageSink>,
    /// Most rows queued in memory.
    pub max_backlog: usize,
}

/// The usage store's queue and write state.
pub(super) struct UsageSlot {
    sink: Arc<dyn UsageSink>,
    max_backlog: usize,
    /// Rows not yet committed, with the generation each was queued at;
    /// the first `in_flight` are being written.
    queue: VecDeque<(u64, UsageRow)>,
    in_flight: usize,
    /// The generation of the last row queued.
    pub(super) generation: u64,
    /// Every row up to this generation is committed.
    pub(super) written_gen: u64,
    retry_at: Option<Instant>,
    backoff: Duration,
}

impl UsageSlot {
    pub(super) fn new(h: UsageStoreHandle) -> Self {
        Self {
            sink: h.sink,
            max_backlog: h.max_backlog.max(1),
            queue: VecDeque::new(),
            in_flight: 0,
            generation: 0,
            written_gen: 0,
            retry_at: None,
            backoff: BACKOFF_MIN,
        }
    }

    pub(super) fn writing(&self) -> bool {
        self.in_flight > 0
    }
}

impl Engine {
    /// Whether a batch of `n` records of session `id` is left to the
    /// sidecar rather than queued: a batch is queued whole or not at all,
    /// and an empty queue takes any batch, so the queue holds at most
    /// `max_backlog` rows plus one batch and every round of resends makes
    /// progress.
    pub(super) fn defer_usage(&mut self, id: SessionId, n: usize) -> bool {
        let Some(slot) = self.usage.as_ref() else {
            return false;
        };
        let Some(s) = self.sessions.get_mut(&id) else {
            return false;
        };
        let full = !slot.queue.is_empty() && slot.queue.len() + n > slot.max_backlog;
        if full && !s.usage_deferred {
            tracing::warn!(
                sidecar = %s.sidecar_id,
                backlog = slot.queue.len(),
                "usage store backlog full: this sidecar's records wait in its journal until the store catches up"
            );
            s.usage_deferred = true;
        }
        s.usage_deferred
    }

    /// Queue `rec` of session `id` for the usage store (if there is one;
    /// unless `defer`) and note the sink as touched.
    pub(super) fn queue_usage(
        &mut self,
        id: SessionId,
        rec: UsageRecord,
        defer: bool,
        touched: &mut std::collections::BTreeSet<Sink>,
    ) {
        let Some(slot) = self.usage.as_mut() else {
            return;
        };
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        touched.insert(Sink::UsageStore);
        if defer {
            self.metrics.usage_store.deferred(1);
            return;
        }
        let namespace = s.identity.namespace.clone();
        let workload = s
            .workload
            .strip_prefix(&format!("{namespace}/"))
            .unwrap_or(&s.workload)
            .to_string();
        slot.generation += 1;
        slot.queue.push_back((
            slot.generation,
            UsageRow {
                sidecar_id: s.sidecar_id.clone(),
                namespace,
                workload,
                pod: s.identity.pod_name.clone(),
                record: rec,
            },
        ));
        self.metrics.usage_store.backlog.set(backlog(slot));
    }

    /// The generation a batch of session `id` needs: the last row queued,
    /// or never (`u64::MAX`) when some of its rows were not queued.
    pub(super) fn usage_generation(&self, id: SessionId) -> Option<u64> {
        let slot = self.usage.as_ref()?;
        let deferred = self.sessions.get(&id).is_some_and(|s| s.usage_deferred);
        Some(if deferred { u64::MAX } else { slot.generation })
    }

    /// Start a write of the oldest queued rows, unless one is in flight or
    /// the last failure's backoff has not passed.
    pub(super) fn write_usage(&mut self) {
        let Some(slot) = self.usage.as_mut() else {
            return;
        };
        if slot.writing()
            || slot.queue.is_empty()
            || slot.retry_at.is_some_and(|t| Instant::now() < t)
        {
            return;
        }
        let n = slot.queue.len().min(CHUNK);
        slot.in_flight = n;
        let rows: Vec<UsageRow> = slot.queue.iter().take(n).map(|(_, r)| r.clone()).collect();
        let generation = slot.queue.get(n - 1).map_or(0, |(g, _)| *g);
        let sink = slot.sink.clone();
        let tx = self.tx.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let r = sink.write(&rows).await;
            metrics
                .usage_store
                .write_seconds
                .observe(t.elapsed().as_secs_f64());
            let r = match r {
                Ok(w) => {
                    metrics.usage_store.written(w);
                    Ok(())
                }
                Err(e) => {
                    metrics.usage_store.failed();
                    Err(WriteError::UsageStore(e))
                }
            };
            let _ = tx.send(Cmd::Written(Sink::UsageStore, generation, r)).await;
        });
    }

    /// A usage store write finished: drop its rows and move the durable
    /// generation, or schedule a retry.
    pub(super) fn usage_written(&mut self, generation: u64, result: Result<(), WriteError>) {
        let Some(slot) = self.usage.as_mut() else {
            return;
        };
        let n = std::mem::take(&mut slot.in_flight);
        match result {
            Ok(()) => {
                slot.queue.drain(..n.min(slot.queue.len()));
                slot.written_gen = slot.written_gen.max(generation);
                slot.backoff = BACKOFF_MIN;
                slot.retry_at = None;
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    backlog = slot.queue.len(),
                    retry_in_ms = slot.backoff.as_millis() as u64,
                    "cannot write to the usage store; will retry (acks wait, traffic does not)"
                );
                slot.retry_at = Some(Instant::now() + slot.backoff);
                slot.backoff = (slot.backoff * 2).min(BACKOFF_MAX);
            }
        }
        self.metrics.usage_store.backlog.set(backlog(slot));
    }

    /// Once the queue has drained, end the sessions whose records were not
    /// queued (the backlog was full): they reconnect and resend. Called
    /// after the acks the last write released went out.
    pub(super) fn resume_deferred(&mut self) {
        if self.usage.as_ref().is_none_or(|u| !u.queue.is_empty()) {
            return;
        }
        let ids: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.usage_deferred)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(s) = self.sessions.get(&id) {
                tracing::info!(sidecar = %s.sidecar_id, "usage store caught up: asking the sidecar to resend");
                let _ = s.tx.try_send(Err(tonic::Status::unavailable(
                    "the usage store caught up; reconnect and resend unacked usage",
                )));
            }
            self.close(id);
        }
    }
}

fn backlog(slot: &UsageSlot) -> i64 {
    i64::try_from(slot.queue.len()).unwrap_or(i64::MAX)
}
