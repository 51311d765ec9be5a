//! The control plane's state machine: one task owns the budget books, the
//! cluster ledger and the sessions, and is fed commands by the gRPC
//! sessions, the object source and a ticker. Nothing else mutates them, so
//! the ledger rules are easy to read here:
//!
//! - A usage batch is counted in every book its records name (and the
//!   cluster ledger), deduped per book by (sidecar id, seq).
//! - A batch is acked only when every book it touched (and the cluster
//!   ledger) has been written at a generation that includes it.
//! - A lease grant is sent only after the write that records it, so a
//!   restarted operator knows every lease it handed out.
//! - A lease request whose need the budget cannot cover at all this period
//!   (cap − spent < need) is also answered at once with `LeaseUnmet`, so
//!   the sidecar refuses the request instead of waiting for a grant; it
//!   grants nothing, so it needs no write.
//! - Each book is written at most once per `status_interval`.
//! - Only a leader writes: once leadership is lost no write starts, the
//!   sessions end and the engine stops (the fence).
//!
//! The rooms: `messages` (the wire edge: [`Cmd`] carries sidecar messages
//! as they arrive and each session streams `OperatorMessage`s; `messages`
//! turns them into core types and back, so no other room reads or builds
//! one), `objects` (objects and config push), `sessions`, `ingest` (usage and
//! acks), `leases`, `writes` (status batching and durability), `store`
//! (the ledger store and write errors), `usage` (the usage store's queue),
//! `housekeeping`, `policies` (the
//! RoutingPolicy statuses), `render` (admin `/ledger`) and `state` (the
//! slots). Each room adds methods to [`Engine`]; `tests` runs the rules
//! in-process against fakes.

mod cache_watch;
mod housekeeping;
mod ingest;
mod leases;
mod messages;
mod objects;
mod policies;
mod render;
mod sessions;
mod state;
mod store;
mod usage;
mod writes;

#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use jiff::Timestamp;
use tokenwarden_core::{
    cluster_ledger::{ClusterLedger, ClusterLedgerState},
    compile::{BudgetInput, PolicyInput},
    workload::ObjectRef,
};
use tokenwarden_proto::{self as pb, OperatorMessage, sidecar_message::Msg as In};
use tokio::sync::{mpsc, oneshot, watch};

use self::state::{BookSlot, LedgerSlot, PolicySlot, Session};
pub use self::{
    sessions::workload_of,
    state::{SessionId, Sink},
    store::{LedgerError, LedgerStore, WriteError},
    usage::UsageStoreHandle,
};
use crate::{
    metrics::Metrics,
    source::{Identity, Leadership, ObjectSource, Objects},
};

/// Tunables.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Lease lifetime from grant or renewal.
    pub lease_ttl: Duration,
    /// How long after expiry an unspent lease is still held (requests in
    /// flight when it expired).
    pub lease_grace: Duration,
    /// At most one status write per budget per this interval.
    pub status_interval: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_secs(30),
            lease_grace: Duration::from_secs(60),
            status_interval: Duration::from_secs(1),
        }
    }
}

/// The cluster ledger forgets the dedupe watermark of a sidecar that sent
/// nothing for this long (pods come and go; the state must stay small).
pub const LEDGER_WATERMARK_KEEP_SECS: i64 = 7 * 24 * 3600;

/// Input to the engine.
#[derive(Debug)]
pub enum Cmd {
    /// A sidecar authenticated and said hello.
    Open {
        /// Session.
        id: SessionId,
        /// Who it is.
        identity: Identity,
        /// Its hello.
        hello: Box<pb::Hello>,
        /// Where its messages go.
        tx: mpsc::Sender<Result<OperatorMessage, tonic::Status>>,
        /// Refusal, if any.
        reply: oneshot::Sender<Result<(), tonic::Status>>,
    },
    /// A message on a session.
    Msg(SessionId, In),
    /// The session ended.
    Close(SessionId),
    /// The objects changed.
    Objects(Arc<Objects>),
    /// A write finished.
    Written(Sink, u64, Result<(), WriteError>),
    /// Render the cluster ledger and budgets (admin `/ledger`).
    Ledger(oneshot::Sender<serde_json::Value>),
    /// Stop: start no more writes, wait for the ones in flight, end every
    /// session, answer, and exit. Unacked usage stays in the sidecars'
    /// spools and is replayed to the next leader; after the answer nothing
    /// of this engine writes any more, so leadership can be handed over.
    Shutdown(oneshot::Sender<()>),
}

/// The engine.
pub struct Engine {
    cfg: EngineConfig,
    source: Arc<dyn ObjectSource>,
    metrics: Arc<Metrics>,
    tx: mpsc::Sender<Cmd>,
    leadership: watch::Receiver<Leadership>,
    objects: Arc<Objects>,
    policies: Vec<PolicyInput>,
    budgets_in: Vec<BudgetInput>,
    policy_errors: BTreeMap<ObjectRef, String>,
    /// Policies whose Redis credentials were resolved from a Secret (`Ok`)
    /// or not (why), for the `ResponseCacheDegraded` condition.
    cache_credentials: BTreeMap<ObjectRef, Result<(), String>>,
    books: BTreeMap<ObjectRef, BookSlot>,
    ledger: Option<LedgerSlot>,
    sessions: HashMap<SessionId, Session>,
    by_sidecar: HashMap<String, SessionId>,
    policy_slots: BTreeMap<ObjectRef, PolicySlot>,
    /// Set by [`Cmd::Shutdown`]: answered once no write is in flight.
    stopping: Option<oneshot::Sender<()>>,
    /// An ACK, NACK, session or object change may have moved a policy's
    /// Ready condition: recomputed once per tick, not per message (a
    /// reconnect storm would otherwise cost O(sessions²)).
    policy_statuses_dirty: bool,
    /// Prompt-cache busts of the last day, for `PromptCacheUnstable`.
    cache_watch: cache_watch::CacheWatch,
    /// The usage store's queue, when one is configured.
    usage: Option<usage::UsageSlot>,
}

// === impl Engine ===

impl Engine {
    /// Start the engine task on the objects the source has synced, for as
    /// long as `leadership` says this replica leads, writing usage rows to
    /// `usage` if given. Returns the command sender.
    pub fn spawn(
        cfg: EngineConfig,
        source: Arc<dyn ObjectSource>,
        ledger: Option<(ClusterLedgerState, Arc<dyn LedgerStore>)>,
        usage: Option<UsageStoreHandle>,
        metrics: Arc<Metrics>,
        objects: Arc<Objects>,
        leadership: watch::Receiver<Leadership>,
    ) -> mpsc::Sender<Cmd> {
        let (tx, rx) = mpsc::channel(8192);
        let mut engine = Engine {
            cfg,
            source,
            metrics,
            tx: tx.clone(),
            leadership,
            objects: Arc::new(Objects::default()),
            policies: Vec::new(),
            budgets_in: Vec::new(),
            policy_errors: BTreeMap::new(),
            cache_credentials: BTreeMap::new(),
            books: BTreeMap::new(),
            ledger: ledger.map(|(state, store)| LedgerSlot {
                ledger: ClusterLedger::restore(state),
                store,
                written_gen: 0,
                writing: false,
                last_write: None,
            }),
            sessions: HashMap::new(),
            by_sidecar: HashMap::new(),
            policy_slots: BTreeMap::new(),
            stopping: None,
            policy_statuses_dirty: false,
            cache_watch: cache_watch::CacheWatch::default(),
            usage: usage.map(usage::UsageSlot::new),
        };
        engine.set_objects(objects, Timestamp::now());
        tokio::spawn(engine.run(rx));
        tx
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut housekeeping = Instant::now();
        loop {
            tokio::select! {
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { return };
                    self.handle(cmd);
                    // Drain what is queued before writing, to batch.
                    while let Ok(cmd) = rx.try_recv() {
                        self.handle(cmd);
                    }
                    if self.stopped() {
                        return;
                    }
                }
                changed = self.leadership.changed() => {
                    if changed.is_err() || !self.leads() {
                        self.fence();
                        return;
                    }
                }
                _ = tick.tick() => {
                    if self.stopped() {
                        return;
                    }
                    if self.policy_statuses_dirty {
                        self.policy_statuses_dirty = false;
                        self.update_policy_statuses();
                    }
                    let now = Timestamp::now();
                    if self.stopping.is_none() && housekeeping.elapsed() >= Duration::from_secs(1) {
                        housekeeping = Instant::now();
                        self.housekeeping(now);
                    }
                    self.flush(now);
                }
            }
        }
    }

    fn handle(&mut self, cmd: Cmd) {
        let now = Timestamp::now();
        match cmd {
            Cmd::Open {
                id,
                identity,
                hello,
                tx,
                reply,
            } => {
                if self.stopping.is_some() {
                    let _ = reply.send(Err(tonic::Status::unavailable(
                        "the operator is shutting down; reconnect",
                    )));
                    return;
                }
                let r = self.open(id, identity, (*hello).into(), tx);
                let _ = reply.send(r);
            }
            Cmd::Msg(id, msg) => self.message(id, msg.into(), now),
            Cmd::Close(id) => self.close(id),
            Cmd::Objects(o) => self.set_objects(o, now),
            Cmd::Written(sink, generation, result) => self.written(sink, generation, result),
            Cmd::Ledger(reply) => {
                let _ = reply.send(self.render_ledger());
            }
            Cmd::Shutdown(reply) => {
                tracing::info!("engine stopping: finishing the writes in flight");
                self.stopping = Some(reply);
            }
        }
    }

    /// Whether this replica still leads (only a leader writes).
    fn leads(&self) -> bool {
        self.leadership.borrow().leader
    }

    /// Leadership is lost: another replica may write now. Start nothing
    /// more, end every session (the sidecars replay to the new leader) and
    /// stop; what is in flight is never acked from here.
    fn fence(&mut self) {
        tracing::error!("lost leadership: the engine stops writing");
        self.end_sessions("this replica lost leadership; reconnect");
    }

    /// When stopping and no write is in flight: end the sessions, answer the
    /// shutdown and say the engine is done.
    fn stopped(&mut self) -> bool {
        if self.stopping.is_none() {
            return false;
        }
        if self.writes_in_flight() {
            return false;
        }
        self.end_sessions("the operator is shutting down; reconnect");
        if let Some(reply) = self.stopping.take() {
            let _ = reply.send(());
        }
        true
    }
}
