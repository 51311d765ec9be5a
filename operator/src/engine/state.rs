//! What the engine holds: one slot per budget book, the cluster ledger,
//! one per sidecar session and one per RoutingPolicy status; the session
//! handle and the units of durability.

use std::{collections::VecDeque, sync::Arc, time::Instant};

use tokenwarden_core::{
    book::{Book, LeaseAsk},
    budget::State,
    cluster_ledger::ClusterLedger,
    money::Usd,
    workload::{ObjectRef, WorkloadConfig},
};
use tokenwarden_crds::{RoutingPolicyStatus, TokenBudgetStatus};
use tokenwarden_proto::OperatorMessage;
use tokio::sync::mpsc;

use super::{messages::Grant, store::LedgerStore};
use crate::source::Identity;

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
    /// Last cluster state broadcast: (percent, state, (spent, tokens)).
    pub(super) broadcast: Option<(u64, State, (Usd, u64))>,
    /// Last state for which an Event was recorded.
    pub(super) evented: Option<(State, Option<u8>)>,
    /// Write even if the generation did not move.
    pub(super) force_write: bool,
    /// Requests that could not be met, retried when leases come back.
    pub(super) waiters: Vec<Waiter>,
    /// When this budget last recalled leases.
    pub(super) last_recall: Option<Instant>,
}

impl BookSlot {
    /// A book restored from (or started without) a saved status.
    pub(super) fn new(book: Book, last_status: Option<TokenBudgetStatus>) -> Self {
        let generation = book.generation();
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
}

/// A RoutingPolicy's status and its write state.
pub(super) struct PolicySlot {
    pub(super) written: Option<RoutingPolicyStatus>,
    pub(super) writing: bool,
    pub(super) last_write: Option<Instant>,
    pub(super) pending: Option<RoutingPolicyStatus>,
}
