//! What the engine holds: one slot per budget book, the cluster ledger,
//! one per sidecar session and one per RoutingPolicy status; the session
//! handle and the units of durability.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
    time::Instant,
};

use jiff::Timestamp;

use tokenwarden_core::{
    book::{Book, LeaseAsk},
    budget::State,
    cluster_ledger::ClusterLedger,
    forecast::{BurnSamples, Forecast},
    money::Usd,
    workload::{ObjectRef, WorkloadConfig},
};
use tokenwarden_crds::{RoutingPolicyStatus, TokenBudgetStatus};
use tokenwarden_proto::OperatorMessage;
use tokio::sync::mpsc;

use super::{messages::Grant, store::LedgerStore};
use crate::{source::Identity, status};

/// Session handle.
pub type SessionId = u64;

/// A unit of durability.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Sink {
    /// A TokenBudget's status.
    Budget(ObjectRef),
    /// The cluster ledger file.
    Ledger,
    /// A RoutingPolicy's status (not a ledger sink, but written the same way).
    Policy(ObjectRef),
    /// The per-request usage store (PostgreSQL).
    UsageStore,
}

/// A request that could not be met, retried when leases come back.
#[derive(Debug, Clone)]
pub(super) struct Waiter {
    pub(super) session: SessionId,
    pub(super) sidecar: String,
    pub(super) ask: LeaseAsk,
    pub(super) request_id: u64,
}

/// One TokenBudget's book and its write state.
pub(super) struct BookSlot {
    pub(super) book: Book,
    pub(super) written_gen: u64,
    pub(super) writing: bool,
    pub(super) last_write: Option<Instant>,
    pub(super) last_status: Option<TokenBudgetStatus>,
    /// Grants waiting for a write: (session, generation needed, grant).
    pub(super) pending_grants: Vec<(SessionId, u64, Grant)>,
    /// Last cluster state broadcast: (percent, state, (spent, tokens),
    /// projected overrun).
    pub(super) broadcast: Option<(u64, State, (Usd, u64), bool)>,
    /// Last state for which an Event was recorded.
    pub(super) evented: Option<(State, Option<u8>)>,
    /// Write even if the generation did not move.
    pub(super) force_write: bool,
    /// Requests that could not be met, retried when leases come back.
    pub(super) waiters: Vec<Waiter>,
    /// When this budget last recalled leases.
    pub(super) last_recall: Option<Instant>,
    /// The lease pools of the budget's per-key keys (`spec.perKey`),
    /// persisted with its status.
    pub(super) keys: BTreeMap<String, KeyPool>,
    /// Samples of the period's cumulative spend, for the forecast
    /// (persisted in `status.ledger.burn`).
    pub(super) burn: BurnSamples,
    /// The forecast of the last housekeeping tick.
    pub(super) forecast: Option<Forecast>,
    /// The projected overrun for which an Event was last recorded.
    pub(super) projected_evented: Option<bool>,
}

/// The lease pool of one per-key key: a book kept against the key's limit
/// (its spend and its sidecars' leases), with its waiting requests.
pub(super) struct KeyPool {
    pub(super) book: Book,
    /// Grants waiting for the budget's status write: (session, budget
    /// generation needed, grant).
    pub(super) pending_grants: Vec<(SessionId, u64, Grant)>,
    pub(super) waiters: Vec<Waiter>,
    pub(super) last_recall: Option<Instant>,
}

/// A lease pool to serve from: the budget's own, or one key's. A change to
/// a key's pool bumps the budget's book, so the status write that carries
/// it is the one its grants wait for.
pub(super) struct Pool<'a> {
    pub(super) book: &'a mut Book,
    pub(super) pending_grants: &'a mut Vec<(SessionId, u64, Grant)>,
    pub(super) waiters: &'a mut Vec<Waiter>,
    pub(super) last_recall: &'a mut Option<Instant>,
    /// The budget's own book, for a key's pool.
    parent: Option<&'a mut Book>,
}

impl Pool<'_> {
    /// The budget generation whose write carries this pool as it is now.
    pub(super) fn generation(&mut self) -> u64 {
        match self.parent.as_deref_mut() {
            Some(p) => {
                p.bump();
                p.generation()
            }
            None => self.book.generation(),
        }
    }
}

/// Most key lease pools a budget keeps: twice `maxKeys` (sidecars bound
/// their keys on their own, so the union across pods can pass `maxKeys`),
/// plus `(none)` and `(other)`. Past it, a new key's lease is refused.
fn max_key_pools(max_keys: u32) -> usize {
    2 * max_keys as usize + 2
}

impl BookSlot {
    /// A book restored from (or started without) a saved status.
    pub(super) fn new(book: Book, last_status: Option<TokenBudgetStatus>) -> Self {
        let generation = book.generation();
        let burn = status::projection::burn_samples(last_status.as_ref(), &book.window());
        Self {
            book,
            written_gen: generation,
            writing: false,
            last_write: None,
            last_status,
            pending_grants: Vec::new(),
            broadcast: None,
            evented: None,
            // Write once so the status shows the period even when idle.
            force_write: true,
            waiters: Vec::new(),
            last_recall: None,
            keys: BTreeMap::new(),
            burn,
            forecast: None,
            projected_evented: None,
        }
    }

    /// Whether the last forecast reaches a limit before the period ends.
    pub(super) fn projected_overrun(&self) -> bool {
        self.forecast.as_ref().is_some_and(Forecast::overrun)
    }

    /// The lease pool of `key` (empty: the budget's own). A key's pool is
    /// made on first use, with what the budget counted for the key this
    /// period; `None` when the budget has no per-key split or keeps
    /// [`max_key_pools`] keys already.
    pub(super) fn pool(&mut self, key: &str, now: Timestamp) -> Option<Pool<'_>> {
        if key.is_empty() {
            return Some(Pool {
                book: &mut self.book,
                pending_grants: &mut self.pending_grants,
                waiters: &mut self.waiters,
                last_recall: &mut self.last_recall,
                parent: None,
            });
        }
        if !self.keys.contains_key(key) {
            let cfg = self.book.config().key_config()?;
            let max = self
                .book
                .config()
                .per_key
                .as_ref()
                .map_or(0, |p| p.max_keys);
            if self.keys.len() >= max_key_pools(max) {
                return None;
            }
            let spent = self
                .book
                .totals()
                .keys
                .get(key)
                .cloned()
                .unwrap_or_default();
            let state = tokenwarden_core::book::BookState {
                period_start: self.book.window().start,
                epoch: 1,
                totals: tokenwarden_core::usage::Totals {
                    spent: spent.spent,
                    usage: spent.usage,
                    requests: spent.requests,
                    unpriced_requests: spent.unpriced_requests,
                    ..Default::default()
                },
                ..Default::default()
            };
            let book = Book::restore(cfg, now, state).ok()?;
            self.keys.insert(key.to_string(), KeyPool::new(book));
        }
        let kp = self.keys.get_mut(key)?;
        Some(Pool {
            book: &mut kp.book,
            pending_grants: &mut kp.pending_grants,
            waiters: &mut kp.waiters,
            last_recall: &mut kp.last_recall,
            parent: Some(&mut self.book),
        })
    }
}

impl KeyPool {
    pub(super) fn new(book: Book) -> Self {
        Self {
            book,
            pending_grants: Vec::new(),
            waiters: Vec::new(),
            last_recall: None,
        }
    }
}

/// The cluster ledger and where it is persisted.
pub(super) struct LedgerSlot {
    pub(super) ledger: ClusterLedger,
    pub(super) store: Arc<dyn LedgerStore>,
    pub(super) written_gen: u64,
    pub(super) writing: bool,
    pub(super) last_write: Option<Instant>,
}

/// A usage batch not yet acked: its last sequence number and the sinks
/// (with the generation) that must be durable first.
pub(super) struct PendingBatch {
    pub(super) last_seq: u64,
    pub(super) needs: Vec<(Sink, u64)>,
}

/// One connected sidecar.
pub(super) struct Session {
    pub(super) identity: Identity,
    pub(super) sidecar_id: String,
    pub(super) workload: String,
    pub(super) tx: mpsc::Sender<Result<OperatorMessage, tonic::Status>>,
    pub(super) cfg: Option<WorkloadConfig>,
    pub(super) sent_version: String,
    pub(super) acked_version: String,
    pub(super) nack: Option<(String, String)>,
    /// Batches not yet acked, oldest first.
    pub(super) pending: VecDeque<PendingBatch>,
    pub(super) opened: Instant,
    /// Some of its records were not queued for the usage store (the
    /// backlog was full): its batches wait until it reconnects and resends.
    pub(super) usage_deferred: bool,
}

/// A RoutingPolicy's status and its write state.
pub(super) struct PolicySlot {
    pub(super) written: Option<RoutingPolicyStatus>,
    pub(super) writing: bool,
    pub(super) last_write: Option<Instant>,
    pub(super) pending: Option<RoutingPolicyStatus>,
}
