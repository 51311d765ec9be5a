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

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use jiff::Timestamp;
use tokenwarden_core::{
    book::{Applied, Book, LeaseAsk, LeaseView, Unmet},
    budget::State,
    cluster_ledger::{ClusterLedger, ClusterLedgerState},
    compile::{BudgetInput, PolicyInput, compile},
    money::Usd,
    workload::{ObjectRef, WorkloadConfig},
};
use tokenwarden_crds::{RoutingPolicyStatus, TokenBudgetStatus, common::conditions as c};
use tokenwarden_proto::{
    self as pb, BudgetStatus, ConfigSnapshot, LeaseGrant, LeaseRecall, LeaseRevoke, LeaseUnmet,
    OperatorMessage, UsageAck, operator_message::Msg as Out, sidecar_message::Msg as In,
};
use tokio::sync::{mpsc, oneshot};

use crate::{
    metrics::Metrics,
    source::{Event, EventType, Identity, ObjectSource, Objects, Regarding},
    status,
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

/// Where the cluster ledger is persisted: a file in local mode, a
/// ConfigMap on Kubernetes. Both calls block (they run on blocking threads).
pub trait LedgerStore: Send + Sync + 'static {
    /// Write durably.
    fn save(&self, state: &ClusterLedgerState) -> Result<(), String>;
    /// Read what was saved (empty when nothing was saved yet).
    fn load(&self) -> Result<ClusterLedgerState, String>;
}

/// Session handle.
pub type SessionId = u64;

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
    Written(Sink, u64, Result<(), String>),
    /// Render the cluster ledger and budgets (admin `/ledger`).
    Ledger(oneshot::Sender<serde_json::Value>),
    /// Stop: start no more writes, wait for the ones in flight, end every
    /// session, answer, and exit. Unacked usage stays in the sidecars'
    /// spools and is replayed to the next leader; after the answer nothing
    /// of this engine writes any more, so leadership can be handed over.
    Shutdown(oneshot::Sender<()>),
}

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

struct BookSlot {
    book: Book,
    written_gen: u64,
    writing: bool,
    last_write: Option<Instant>,
    last_status: Option<TokenBudgetStatus>,
    /// Grants waiting for a write: (session, generation needed, grant).
    pending_grants: Vec<(SessionId, u64, LeaseGrant)>,
    /// Last cluster state broadcast: (percent, state, spent).
    broadcast: Option<(u64, State, Usd)>,
    /// Last state for which an Event was recorded.
    evented: Option<(State, Option<u8>)>,
    /// Write even if the generation did not move.
    force_write: bool,
    /// Requests that could not be met, retried when leases come back:
    /// (session, sidecar, ask, request id).
    waiters: Vec<(SessionId, String, LeaseAsk, u64)>,
    /// When this budget last recalled leases.
    last_recall: Option<Instant>,
}

struct LedgerSlot {
    ledger: ClusterLedger,
    store: Arc<dyn LedgerStore>,
    written_gen: u64,
    writing: bool,
    last_write: Option<Instant>,
}

struct Session {
    identity: Identity,
    sidecar_id: String,
    workload: String,
    tx: mpsc::Sender<Result<OperatorMessage, tonic::Status>>,
    cfg: Option<WorkloadConfig>,
    sent_version: String,
    acked_version: String,
    nack: Option<(String, String)>,
    /// Batches not yet acked: (last seq, sinks and the generation needed).
    pending: VecDeque<(u64, Vec<(Sink, u64)>)>,
    opened: Instant,
}

struct PolicySlot {
    written: Option<RoutingPolicyStatus>,
    writing: bool,
    last_write: Option<Instant>,
    pending: Option<RoutingPolicyStatus>,
}

/// The engine.
pub struct Engine {
    cfg: EngineConfig,
    source: Arc<dyn ObjectSource>,
    metrics: Arc<Metrics>,
    tx: mpsc::Sender<Cmd>,
    objects: Arc<Objects>,
    policies: Vec<PolicyInput>,
    budgets_in: Vec<BudgetInput>,
    policy_errors: BTreeMap<ObjectRef, String>,
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
}

fn digest(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn i64_picos(u: Usd) -> i64 {
    i64::try_from(u.picos()).unwrap_or(i64::MAX)
}

/// The workload a pod belongs to: `app.kubernetes.io/name`, `app`, else
/// the pod name without its generated suffixes.
pub fn workload_of(identity: &Identity) -> String {
    for key in ["app.kubernetes.io/name", "app", "tokenwarden.dev/workload"] {
        if let Some(v) = identity.labels.get(key)
            && !v.is_empty()
        {
            return v.clone();
        }
    }
    let mut name = identity.pod_name.as_str();
    if identity.labels.contains_key("pod-template-hash") {
        // deploy-<rs hash>-<pod suffix>
        for _ in 0..2 {
            if let Some(i) = name.rfind('-') {
                name = &name[..i];
            }
        }
    }
    name.to_string()
}

// === impl Engine ===

impl Engine {
    /// Start the engine task on the objects the source has synced. Returns
    /// the command sender.
    pub fn spawn(
        cfg: EngineConfig,
        source: Arc<dyn ObjectSource>,
        ledger: Option<(ClusterLedgerState, Arc<dyn LedgerStore>)>,
        metrics: Arc<Metrics>,
        objects: Arc<Objects>,
    ) -> mpsc::Sender<Cmd> {
        let (tx, rx) = mpsc::channel(8192);
        let mut engine = Engine {
            cfg,
            source,
            metrics,
            tx: tx.clone(),
            objects: Arc::new(Objects::default()),
            policies: Vec::new(),
            budgets_in: Vec::new(),
            policy_errors: BTreeMap::new(),
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
                let r = self.open(id, identity, *hello, tx);
                let _ = reply.send(r);
            }
            Cmd::Msg(id, msg) => self.message(id, msg, now),
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

    /// When stopping and no write is in flight: end the sessions, answer the
    /// shutdown and say the engine is done.
    fn stopped(&mut self) -> bool {
        if self.stopping.is_none() {
            return false;
        }
        let busy = self.books.values().any(|b| b.writing)
            || self.ledger.as_ref().is_some_and(|l| l.writing)
            || self.policy_slots.values().any(|p| p.writing);
        if busy {
            return false;
        }
        for (_, session) in self.sessions.drain() {
            let _ = session.tx.try_send(Err(tonic::Status::unavailable(
                "the operator is shutting down; reconnect",
            )));
        }
        self.by_sidecar.clear();
        if let Some(reply) = self.stopping.take() {
            let _ = reply.send(());
        }
        true
    }

    // ---- objects and config push ------------------------------------------

    fn set_objects(&mut self, objects: Arc<Objects>, now: Timestamp) {
        self.objects = objects.clone();
        self.policies.clear();
        self.budgets_in.clear();
        self.policy_errors.clear();
        for (id, p) in &objects.policies {
            match p.to_input() {
                Ok(i) => self.policies.push(i),
                Err(e) => {
                    self.policy_errors.insert(id.clone(), e.to_string());
                }
            }
        }
        let mut wanted = BTreeSet::new();
        for (id, b) in &objects.budgets {
            let input = match b.to_input() {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!(budget = %id, error = %e, "invalid TokenBudget ignored");
                    continue;
                }
            };
            wanted.insert(id.clone());
            let cfg = input.budget.clone();
            match self.books.get_mut(id) {
                Some(slot) => {
                    if slot.book.config() != &cfg
                        && let Err(e) = slot.book.reconfigure(cfg, now)
                    {
                        tracing::warn!(budget = %id, error = %e, "budget reconfigure failed");
                    }
                }
                None => {
                    let saved = status::book_state(b.status.as_ref());
                    let book = match saved {
                        Some(s) => Book::restore(cfg, now, s),
                        None => Book::new(cfg, now),
                    };
                    match book {
                        Ok(book) => {
                            let generation = book.generation();
                            self.books.insert(
                                id.clone(),
                                BookSlot {
                                    book,
                                    written_gen: generation,
                                    writing: false,
                                    last_write: None,
                                    last_status: b.status.clone(),
                                    pending_grants: Vec::new(),
                                    broadcast: None,
                                    evented: None,
                                    // Write once so the status shows the
                                    // period even when idle.
                                    force_write: true,
                                    waiters: Vec::new(),
                                    last_recall: None,
                                },
                            );
                        }
                        Err(e) => {
                            tracing::warn!(budget = %id, error = %e, "budget period invalid");
                        }
                    }
                }
            }
            self.budgets_in.push(input);
        }
        self.books.retain(|id, _| wanted.contains(id));
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        for id in ids {
            self.push_config(id);
        }
        self.policy_statuses_dirty = true;
        self.metrics
            .budgets
            .set(i64::try_from(self.books.len()).unwrap_or(0));
    }

    fn compile_for(&self, identity: &Identity) -> WorkloadConfig {
        compile(
            &identity.namespace,
            &identity.labels,
            &self.policies,
            &self.budgets_in,
        )
    }

    /// Compile for the session's pod; send a snapshot if it changed.
    fn push_config(&mut self, id: SessionId) {
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        let cfg = self.compile_for(&s.identity);
        let json = match serde_json::to_vec(&cfg) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialize a config");
                return;
            }
        };
        let version = digest(&json);
        let old_budgets: BTreeSet<ObjectRef> = s
            .cfg
            .iter()
            .flat_map(|c| c.budgets.iter().map(|b| b.source.clone()))
            .collect();
        if version == s.sent_version {
            return;
        }
        let msg = OperatorMessage {
            msg: Some(Out::Config(ConfigSnapshot {
                version: version.clone(),
                protocol_version: pb::PROTOCOL_VERSION,
                config_schema: pb::CONFIG_SCHEMA,
                config_json: json,
            })),
        };
        let new_budgets: BTreeSet<ObjectRef> =
            cfg.budgets.iter().map(|b| b.source.clone()).collect();
        let sidecar = s.sidecar_id.clone();
        if let Some(s) = self.sessions.get_mut(&id) {
            s.sent_version = version;
            s.cfg = Some(cfg);
        }
        self.send(id, msg);
        self.metrics.snapshots_sent.inc();
        // Revoke leases of budgets that no longer select the pod.
        for gone in old_budgets.difference(&new_budgets) {
            self.send(
                id,
                OperatorMessage {
                    msg: Some(Out::LeaseRevoke(LeaseRevoke {
                        budget_namespace: gone.namespace.clone(),
                        budget_name: gone.name.clone(),
                        epoch: self.books.get(gone).map_or(0, |b| b.book.epoch()),
                        reason: "the TokenBudget no longer selects this pod".into(),
                    })),
                },
            );
        }
        // Budget state and current leases of newly selecting budgets.
        // Their current leases go out once what they show is durable.
        for b in new_budgets.difference(&old_budgets) {
            if let Some(slot) = self.books.get_mut(b) {
                let st = budget_status_msg(b, &slot.book);
                if let Some(Out::LeaseGrant(g)) = grant_msg(b, &slot.book.lease(&sidecar), 0).msg {
                    slot.pending_grants.push((id, slot.book.generation(), g));
                }
                self.send(id, st);
            }
        }
    }

    fn send(&mut self, id: SessionId, msg: OperatorMessage) {
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        if s.tx.try_send(Ok(msg)).is_err() {
            // A sidecar that does not read its stream is dropped; it
            // reconnects and replays.
            tracing::warn!(sidecar = %s.sidecar_id, "sidecar stream full or closed; dropping it");
            let _ = s.tx.try_send(Err(tonic::Status::resource_exhausted(
                "the sidecar is not reading its stream",
            )));
            self.close(id);
        }
    }

    // ---- sessions -----------------------------------------------------------

    fn open(
        &mut self,
        id: SessionId,
        identity: Identity,
        hello: pb::Hello,
        tx: mpsc::Sender<Result<OperatorMessage, tonic::Status>>,
    ) -> Result<(), tonic::Status> {
        if hello.sidecar_id.is_empty() || hello.sidecar_id.len() > 253 {
            return Err(tonic::Status::invalid_argument(
                "Hello.sidecar_id must be 1-253 characters",
            ));
        }
        // A sidecar id names one process lineage; a second stream replaces
        // the first (a reconnect racing with the old stream's end).
        if let Some(old) = self.by_sidecar.get(&hello.sidecar_id).copied() {
            self.close(old);
        }
        let workload = format!("{}/{}", identity.namespace, workload_of(&identity));
        tracing::info!(
            sidecar = %hello.sidecar_id,
            pod = %format!("{}/{}", identity.namespace, identity.pod_name),
            version = %hello.sidecar_version,
            "sidecar connected"
        );
        self.by_sidecar.insert(hello.sidecar_id.clone(), id);
        self.sessions.insert(
            id,
            Session {
                identity,
                sidecar_id: hello.sidecar_id,
                workload,
                tx,
                cfg: None,
                sent_version: String::new(),
                acked_version: hello.config_version,
                nack: None,
                pending: VecDeque::new(),
                opened: Instant::now(),
            },
        );
        self.metrics.sidecars.set(self.sessions.len() as i64);
        self.push_config(id);
        Ok(())
    }

    fn close(&mut self, id: SessionId) {
        if let Some(s) = self.sessions.remove(&id) {
            if self.by_sidecar.get(&s.sidecar_id) == Some(&id) {
                self.by_sidecar.remove(&s.sidecar_id);
            }
            tracing::info!(
                sidecar = %s.sidecar_id,
                connected_secs = s.opened.elapsed().as_secs(),
                "sidecar disconnected"
            );
            for slot in self.books.values_mut() {
                slot.pending_grants.retain(|(sid, _, _)| *sid != id);
                slot.waiters.retain(|(sid, _, _, _)| *sid != id);
            }
            self.metrics.sidecars.set(self.sessions.len() as i64);
            self.policy_statuses_dirty = true;
        }
    }

    fn message(&mut self, id: SessionId, msg: In, now: Timestamp) {
        match msg {
            In::Hello(_) => {
                if let Some(s) = self.sessions.get(&id) {
                    tracing::warn!(sidecar = %s.sidecar_id, "second Hello on a stream ignored");
                }
            }
            In::ConfigAck(ack) => {
                let Some(s) = self.sessions.get_mut(&id) else {
                    return;
                };
                if ack.accepted {
                    s.acked_version = ack.version;
                    s.nack = None;
                    self.metrics.acks.inc();
                } else {
                    tracing::warn!(
                        sidecar = %s.sidecar_id,
                        version = %ack.version,
                        reason = %ack.reason,
                        "sidecar rejected a config snapshot"
                    );
                    s.nack = Some((ack.version, ack.reason));
                    self.metrics.nacks.inc();
                }
                self.policy_statuses_dirty = true;
            }
            In::Usage(batch) => self.usage(id, batch, now),
            In::LeaseRequest(req) => self.lease_request(id, req, now),
            In::LeaseRelease(rel) => self.lease_release(id, rel, now),
        }
    }

    fn usage(&mut self, id: SessionId, batch: pb::UsageBatch, now: Timestamp) {
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        let sidecar = s.sidecar_id.clone();
        let workload = s.workload.clone();
        let namespace = s.identity.namespace.clone();
        let mut touched: BTreeSet<Sink> = BTreeSet::new();
        let mut last_seq = 0;
        for wire in &batch.records {
            if wire.sidecar_id != sidecar {
                tracing::warn!(
                    sidecar = %sidecar,
                    claimed = %wire.sidecar_id,
                    "usage record for another sidecar id ignored"
                );
                self.metrics.records_invalid.inc();
                continue;
            }
            let rec = match pb::record_from_wire(wire) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(sidecar = %sidecar, error = %e, "invalid usage record ignored");
                    self.metrics.records_invalid.inc();
                    continue;
                }
            };
            last_seq = last_seq.max(rec.seq);
            let mut counted = false;
            let mut duplicate = false;
            for p in &rec.budgets {
                // Budgets are namespaced: a sidecar can only charge budgets
                // of its own namespace.
                if p.budget.namespace != namespace {
                    continue;
                }
                let Some(slot) = self.books.get_mut(&p.budget) else {
                    continue;
                };
                match slot
                    .book
                    .apply(&sidecar, &workload, p.period_start, &rec, now)
                {
                    Applied::Counted => counted = true,
                    Applied::Duplicate => duplicate = true,
                    Applied::Late => {
                        self.metrics.records_late.inc();
                    }
                }
                touched.insert(Sink::Budget(p.budget.clone()));
            }
            if let Some(l) = self.ledger.as_mut() {
                let wl = workload.rsplit('/').next().unwrap_or(&workload).to_string();
                match l
                    .ledger
                    .apply(&sidecar, &namespace, &wl, &rec, now.as_second())
                {
                    Applied::Counted => counted = true,
                    Applied::Duplicate => duplicate = true,
                    Applied::Late => {}
                }
                touched.insert(Sink::Ledger);
            }
            if counted {
                self.metrics.records_ingested.inc();
                self.metrics.record(&rec);
            } else if duplicate {
                self.metrics.records_duplicate.inc();
            }
        }
        if last_seq == 0 {
            return;
        }
        let needs: Vec<(Sink, u64)> = touched
            .into_iter()
            .filter_map(|sink| {
                let generation = match &sink {
                    Sink::Budget(b) => self.books.get(b)?.book.generation(),
                    Sink::Ledger => self.ledger.as_ref()?.ledger.generation(),
                    Sink::Policy(_) => return None,
                };
                Some((sink, generation))
            })
            .collect();
        let books: Vec<ObjectRef> = needs
            .iter()
            .filter_map(|(sink, _)| match sink {
                Sink::Budget(b) => Some(b.clone()),
                _ => None,
            })
            .collect();
        if let Some(s) = self.sessions.get_mut(&id) {
            s.pending.push_back((last_seq, needs));
        }
        self.ack(id);
        // The spend grew: requests waiting on a recall may have become
        // impossible.
        for b in &books {
            self.answer_unmet_waiters(b);
        }
    }

    /// Answer `LeaseUnmet` to the waiting requests of `budget` whose need
    /// can no longer be covered this period, and stop holding them.
    fn answer_unmet_waiters(&mut self, budget: &ObjectRef) {
        let Some(slot) = self.books.get_mut(budget) else {
            return;
        };
        if slot.waiters.is_empty() {
            return;
        }
        let book = &slot.book;
        let mut answers = Vec::new();
        let mut unmet = Vec::new();
        slot.waiters.retain(|(session, _, ask, request_id)| {
            let Some(u) = book.cannot_cover(*ask) else {
                return true;
            };
            answers.push((*session, unmet_msg(budget, &u, *request_id)));
            unmet.push(*ask);
            false
        });
        if answers.is_empty() {
            return;
        }
        // The grant that parked them saw less spend: the budget's state
        // must still say no request of that size can be served.
        for ask in unmet {
            slot.book.note_unmet(ask);
        }
        let status = budget_status_msg(budget, &slot.book);
        for (session, msg) in answers {
            self.send(session, msg);
            self.send(session, status.clone());
        }
    }

    fn lease_request(&mut self, id: SessionId, req: pb::LeaseRequest, now: Timestamp) {
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        let budget = ObjectRef::new(&req.budget_namespace, &req.budget_name);
        let selected = s
            .cfg
            .as_ref()
            .is_some_and(|c| c.budgets.iter().any(|b| b.source == budget));
        let sidecar = s.sidecar_id.clone();
        let Some(slot) = self.books.get_mut(&budget) else {
            self.send(
                id,
                OperatorMessage {
                    msg: Some(Out::LeaseRevoke(LeaseRevoke {
                        budget_namespace: budget.namespace,
                        budget_name: budget.name,
                        epoch: 0,
                        reason: "no such TokenBudget".into(),
                    })),
                },
            );
            return;
        };
        if !selected {
            let epoch = slot.book.epoch();
            self.send(
                id,
                OperatorMessage {
                    msg: Some(Out::LeaseRevoke(LeaseRevoke {
                        budget_namespace: budget.namespace,
                        budget_name: budget.name,
                        epoch,
                        reason: "the TokenBudget does not select this pod".into(),
                    })),
                },
            );
            return;
        }
        let ask = LeaseAsk {
            want: Usd::from_picos(i128::from(req.want_picos.max(0))),
            want_tokens: req.want_tokens,
            need: Usd::from_picos(i128::from(req.need_picos.max(0))),
            need_tokens: req.need_tokens,
        };
        self.metrics.lease_requests.inc();
        self.serve_lease(&budget, id, &sidecar, ask, req.request_id, now);
    }

    /// Grant what can be granted; when a waiting request cannot be covered
    /// at all this period, say so at once (`LeaseUnmet`); when it still
    /// cannot be covered but other sidecars hold unused leases, recall them
    /// and keep the request until they come back.
    fn serve_lease(
        &mut self,
        budget: &ObjectRef,
        id: SessionId,
        sidecar: &str,
        ask: LeaseAsk,
        request_id: u64,
        now: Timestamp,
    ) {
        let ttl = i64::try_from(self.cfg.lease_ttl.as_millis()).unwrap_or(i64::MAX);
        let Some(slot) = self.books.get_mut(budget) else {
            return;
        };
        let before = slot.book.lease(sidecar);
        let recall = slot.book.recall_candidates(sidecar, ask);
        let view = slot.book.grant(sidecar, ask, now, ttl);
        let covered = view.granted.saturating_sub(before.granted) >= ask.need
            && view.granted_tokens.saturating_sub(before.granted_tokens) >= ask.need_tokens;
        let generation = slot.book.generation();
        if let Some(Out::LeaseGrant(g)) = grant_msg(budget, &view, request_id).msg {
            slot.pending_grants.push((id, generation, g));
        }
        // Spent + this need > cap: nothing that comes back can cover it
        // (and nothing is recalled for it). The grant above still follows
        // once written; the verdict needs no write, it grants nothing. The
        // spend it is based on goes along, so the sidecar's own check
        // refuses the next such request without asking.
        if let Some(u) = slot.book.cannot_cover(ask) {
            slot.waiters.retain(|(s, _, _, _)| *s != id);
            let status = budget_status_msg(budget, &slot.book);
            tracing::debug!(
                budget = %budget,
                sidecar = %sidecar,
                need_usd = %ask.need,
                remaining_usd = ?u.remaining,
                "lease request cannot be covered this period"
            );
            self.send(id, unmet_msg(budget, &u, request_id));
            self.send(id, status);
            return;
        }
        if covered || recall.is_empty() {
            return;
        }
        slot.waiters.retain(|(s, _, _, _)| *s != id);
        slot.waiters
            .push((id, sidecar.to_string(), ask, request_id));
        if slot
            .last_recall
            .is_some_and(|t| t.elapsed() < Duration::from_millis(200))
        {
            return;
        }
        slot.last_recall = Some(Instant::now());
        let period = slot.book.window().start.as_second();
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
                OperatorMessage {
                    msg: Some(Out::LeaseRecall(LeaseRecall {
                        budget_namespace: budget.namespace.clone(),
                        budget_name: budget.name.clone(),
                        period_start_unix: period,
                        version,
                        reason: format!("another sidecar ({sidecar}) needs this budget"),
                    })),
                },
            );
        }
    }

    fn lease_release(&mut self, id: SessionId, rel: pb::LeaseRelease, now: Timestamp) {
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        let sidecar = s.sidecar_id.clone();
        let budget = ObjectRef::new(&rel.budget_namespace, &rel.budget_name);
        let Some(slot) = self.books.get_mut(&budget) else {
            return;
        };
        if rel.period_start_unix != slot.book.window().start.as_second() {
            return;
        }
        let keep = Usd::from_picos(i128::from(rel.keep_picos.max(0)));
        let view = slot
            .book
            .release(&sidecar, rel.version, keep, rel.keep_tokens);
        let generation = slot.book.generation();
        if let Some(Out::LeaseGrant(g)) = grant_msg(&budget, &view, 0).msg {
            slot.pending_grants.push((id, generation, g));
        }
        // Serve the requests that were waiting for budget to come back.
        let waiters = std::mem::take(&mut slot.waiters);
        for (session, waiting, ask, request_id) in waiters {
            if self.sessions.contains_key(&session) {
                self.serve_lease(&budget, session, &waiting, ask, request_id, now);
            }
        }
    }

    // ---- durability -----------------------------------------------------------

    /// Send the grants whose write has completed.
    fn release_grants(&mut self, id: &ObjectRef) {
        let Some(slot) = self.books.get_mut(id) else {
            return;
        };
        if slot.pending_grants.is_empty() {
            return;
        }
        let written = slot.written_gen;
        let ready: Vec<_> = slot
            .pending_grants
            .iter()
            .filter(|(_, g, _)| *g <= written)
            .cloned()
            .collect();
        slot.pending_grants.retain(|(_, g, _)| *g > written);
        for (sid, _, g) in ready {
            self.send(
                sid,
                OperatorMessage {
                    msg: Some(Out::LeaseGrant(g)),
                },
            );
        }
    }

    fn flush(&mut self, now: Timestamp) {
        if self.stopping.is_some() {
            return;
        }
        let ids: Vec<ObjectRef> = self.books.keys().cloned().collect();
        for id in &ids {
            self.release_grants(id);
        }
        let interval = self.cfg.status_interval;
        let due = |last: Option<Instant>| last.is_none_or(|t| t.elapsed() >= interval);
        let ids: Vec<ObjectRef> = self.books.keys().cloned().collect();
        for id in ids {
            let Some(slot) = self.books.get_mut(&id) else {
                continue;
            };
            if slot.writing
                || (slot.book.generation() == slot.written_gen && !slot.force_write)
                || !due(slot.last_write)
            {
                continue;
            }
            slot.force_write = false;
            let st = status::budget_status(&slot.book, slot.last_status.as_ref(), now);
            slot.writing = true;
            slot.last_write = Some(Instant::now());
            let generation = slot.book.generation();
            slot.last_status = Some(st.clone());
            let source = self.source.clone();
            let tx = self.tx.clone();
            let metrics = self.metrics.clone();
            tokio::spawn(async move {
                let t = Instant::now();
                let r = source
                    .write_budget_status(&id, &st)
                    .await
                    .map_err(|e| e.to_string());
                metrics
                    .status_write_seconds
                    .observe(t.elapsed().as_secs_f64());
                let _ = tx.send(Cmd::Written(Sink::Budget(id), generation, r)).await;
            });
        }
        if let Some(l) = self.ledger.as_mut()
            && !l.writing
            && l.ledger.generation() != l.written_gen
            && due(l.last_write)
        {
            l.writing = true;
            l.last_write = Some(Instant::now());
            let generation = l.ledger.generation();
            let state = l.ledger.to_state();
            let store = l.store.clone();
            let tx = self.tx.clone();
            tokio::task::spawn_blocking(move || {
                let r = store.save(&state);
                let _ = tx.blocking_send(Cmd::Written(Sink::Ledger, generation, r));
            });
        }
        let pids: Vec<ObjectRef> = self.policy_slots.keys().cloned().collect();
        for id in pids {
            let Some(slot) = self.policy_slots.get_mut(&id) else {
                continue;
            };
            if slot.writing || !due(slot.last_write) {
                continue;
            }
            let Some(st) = slot.pending.take() else {
                continue;
            };
            slot.writing = true;
            slot.last_write = Some(Instant::now());
            let source = self.source.clone();
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let r = source
                    .write_policy_status(&id, &st)
                    .await
                    .map_err(|e| e.to_string());
                let _ = tx.send(Cmd::Written(Sink::Policy(id), 0, r)).await;
            });
        }
    }

    fn written(&mut self, sink: Sink, generation: u64, result: Result<(), String>) {
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
        }
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        for id in ids {
            self.ack(id);
        }
    }

    fn durable(&self, sink: &Sink, generation: u64) -> bool {
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
            Sink::Policy(_) => true,
        }
    }

    fn ack(&mut self, id: SessionId) {
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        let mut upto = None;
        let mut n = 0;
        for (seq, needs) in &s.pending {
            if needs.iter().all(|(sink, g)| self.durable(sink, *g)) {
                upto = Some(*seq);
                n += 1;
            } else {
                break;
            }
        }
        let Some(upto) = upto else {
            return;
        };
        let sidecar = s.sidecar_id.clone();
        if let Some(s) = self.sessions.get_mut(&id) {
            s.pending.drain(..n);
        }
        self.send(
            id,
            OperatorMessage {
                msg: Some(Out::UsageAck(UsageAck {
                    sidecar_id: sidecar,
                    up_to_seq: upto,
                })),
            },
        );
    }

    // ---- housekeeping ---------------------------------------------------------

    fn housekeeping(&mut self, now: Timestamp) {
        if let Some(l) = self.ledger.as_mut() {
            let dropped = l.ledger.prune(now.as_second(), LEDGER_WATERMARK_KEEP_SECS);
            if dropped > 0 {
                tracing::info!(
                    sidecars = dropped,
                    "cluster ledger: forgot sidecars silent for 7 days"
                );
            }
        }
        let ttl = i64::try_from(self.cfg.lease_ttl.as_millis()).unwrap_or(i64::MAX);
        let grace = i64::try_from(self.cfg.lease_grace.as_millis()).unwrap_or(i64::MAX);
        let connected: BTreeMap<String, SessionId> = self
            .by_sidecar
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let mut events = Vec::new();
        let mut broadcasts = Vec::new();
        let mut outstanding_total = Usd::ZERO;
        for (id, slot) in &mut self.books {
            if let Some((w, totals)) = slot.book.roll(now) {
                tracing::info!(
                    budget = %id,
                    period_start = %w.start,
                    spent_usd = %totals.spent,
                    requests = totals.requests,
                    "budget period ended"
                );
                events.push(Event {
                    regarding: Regarding::Budget(id.clone()),
                    type_: EventType::Normal,
                    reason: c::REASON_PERIOD_RESET.into(),
                    message: format!(
                        "period from {} ended: spent ${} in {} requests",
                        w.start, totals.spent, totals.requests
                    ),
                });
            }
            for sidecar in slot.book.reclaim(now, grace) {
                tracing::info!(budget = %id, sidecar = %sidecar, "expired lease reclaimed");
            }
            // Renew the leases of connected sidecars halfway to expiry.
            let renew: Vec<(String, SessionId)> = slot
                .book
                .sidecars()
                .iter()
                .filter(|(_, e)| e.expires_ms != 0 && e.expires_ms - now.as_millisecond() < ttl / 2)
                .filter_map(|(sid, _)| connected.get(sid).map(|s| (sid.clone(), *s)))
                .collect();
            for (sidecar, session) in renew {
                let view = slot.book.grant(&sidecar, LeaseAsk::default(), now, ttl);
                if let Some(Out::LeaseGrant(g)) = grant_msg(id, &view, 0).msg {
                    slot.pending_grants
                        .push((session, slot.book.generation(), g));
                }
            }
            let sidecars_known: BTreeSet<String> = connected.keys().cloned().collect();
            slot.book.prune(|s| sidecars_known.contains(s));
            let state = slot.book.budget_state();
            let pct = slot.book.percent_spent();
            let spent = slot.book.totals().spent;
            if slot.broadcast != Some((pct, state, spent)) {
                slot.broadcast = Some((pct, state, spent));
                broadcasts.push(id.clone());
            }
            let threshold = slot.book.config().active_threshold(pct).map(|t| t.percent);
            if slot.evented != Some((state, threshold)) {
                if slot.evented.is_some() || state != State::Ok {
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
                    events.push(Event {
                        regarding: Regarding::Budget(id.clone()),
                        type_,
                        reason: reason.into(),
                        message,
                    });
                }
                slot.evented = Some((state, threshold));
            }
            let (out, _) = slot.book.outstanding();
            self.metrics.lease_outstanding(id, out);
            outstanding_total = outstanding_total.saturating_add(out);
        }
        for b in broadcasts {
            let Some(slot) = self.books.get(&b) else {
                continue;
            };
            let msg = budget_status_msg(&b, &slot.book);
            let targets: Vec<SessionId> = self
                .sessions
                .iter()
                .filter(|(_, s)| {
                    s.cfg
                        .as_ref()
                        .is_some_and(|c| c.budgets.iter().any(|x| x.source == b))
                })
                .map(|(id, _)| *id)
                .collect();
            for t in targets {
                self.send(t, msg.clone());
            }
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

    fn update_policy_statuses(&mut self) {
        let now = Timestamp::now();
        let objects = self.objects.clone();
        for (id, p) in &objects.policies {
            let generation = p.metadata.generation.unwrap_or(0);
            let prev: Vec<_> = self
                .policy_slots
                .get(id)
                .and_then(|s| s.written.as_ref())
                .map(|s| s.conditions.clone())
                .or_else(|| p.status.as_ref().map(|s| s.conditions.clone()))
                .unwrap_or_default();
            let mut conds = Vec::new();
            let route_count = i32::try_from(p.spec.routes.len()).unwrap_or(i32::MAX);
            let (selected, in_sync, nacks, shadowed) = self.policy_sidecars(id);
            if let Some(err) = self.policy_errors.get(id) {
                status::set_condition(
                    &mut conds,
                    &prev,
                    c::READY,
                    false,
                    c::REASON_INVALID,
                    err.clone(),
                    generation,
                    now,
                );
            } else if let Some((pod, reason)) = nacks.first() {
                status::set_condition(
                    &mut conds,
                    &prev,
                    c::READY,
                    false,
                    c::REASON_REJECTED,
                    format!(
                        "{in_sync}/{selected} sidecars run the current version; {} rejected it \
                         (pod {pod}): {reason}",
                        nacks.len()
                    ),
                    generation,
                    now,
                );
            } else {
                let reason = if in_sync == selected {
                    c::REASON_IN_SYNC
                } else {
                    c::REASON_PROPAGATING
                };
                status::set_condition(
                    &mut conds,
                    &prev,
                    c::READY,
                    true,
                    reason,
                    format!("{in_sync}/{selected} sidecars run the current version"),
                    generation,
                    now,
                );
            }
            status::set_condition(
                &mut conds,
                &prev,
                c::CONFLICTED,
                shadowed > 0,
                if shadowed > 0 {
                    c::REASON_SHADOWED
                } else {
                    c::REASON_ACCEPTED
                },
                if shadowed > 0 {
                    format!("{shadowed} selected pods run a higher-precedence RoutingPolicy")
                } else {
                    "no higher-precedence RoutingPolicy selects the same pods".into()
                },
                generation,
                now,
            );
            let st = RoutingPolicyStatus {
                observed_generation: Some(generation),
                route_count: Some(route_count),
                sidecars: Some(format!("{in_sync}/{selected}")),
                conditions: conds,
            };
            let slot = self.policy_slots.entry(id.clone()).or_insert(PolicySlot {
                written: p.status.clone(),
                writing: false,
                last_write: None,
                pending: None,
            });
            let same = |a: &RoutingPolicyStatus, b: &RoutingPolicyStatus| {
                a.observed_generation == b.observed_generation
                    && a.route_count == b.route_count
                    && a.sidecars == b.sidecars
                    && a.conditions.len() == b.conditions.len()
                    && a.conditions.iter().zip(&b.conditions).all(|(x, y)| {
                        x.type_ == y.type_
                            && x.status == y.status
                            && x.reason == y.reason
                            && x.message == y.message
                    })
            };
            if slot.written.as_ref().is_none_or(|w| !same(w, &st)) {
                slot.written = Some(st.clone());
                slot.pending = Some(st);
            }
        }
        self.policy_slots
            .retain(|id, _| objects.policies.contains_key(id));
    }

    /// (selected sidecars, on the current version, NACKs (pod, reason),
    /// shadowed by another policy).
    fn policy_sidecars(&self, policy: &ObjectRef) -> (usize, usize, Vec<(String, String)>, usize) {
        let mut selected = 0;
        let mut in_sync = 0;
        let mut nacks = Vec::new();
        let mut shadowed = 0;
        for s in self.sessions.values() {
            let Some(cfg) = &s.cfg else { continue };
            let runs = cfg.routing.as_ref().is_some_and(|r| &r.source == policy);
            let shadow = cfg
                .conflict
                .as_ref()
                .is_some_and(|c| c.shadowed.contains(policy));
            if shadow {
                shadowed += 1;
            }
            if !runs {
                continue;
            }
            selected += 1;
            if s.acked_version == s.sent_version {
                in_sync += 1;
            } else if let Some((v, reason)) = &s.nack
                && *v == s.sent_version
            {
                nacks.push((
                    format!("{}/{}", s.identity.namespace, s.identity.pod_name),
                    reason.clone(),
                ));
            }
        }
        (selected, in_sync, nacks, shadowed)
    }

    fn render_ledger(&self) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = self
            .ledger
            .iter()
            .flat_map(|l| l.ledger.rows().iter())
            .map(|(k, v)| {
                serde_json::json!({
                    "namespace": k.namespace,
                    "workload": k.workload,
                    "model": k.model,
                    "requests": v.requests,
                    "input_tokens": v.usage.input_tokens,
                    "output_tokens": v.usage.output_tokens,
                    "cache_read_tokens": v.usage.cache_read_tokens,
                    "cache_write_tokens": v.usage.cache_write_tokens,
                    "cost_usd": v.cost.to_string(),
                    "unpriced_requests": v.unpriced,
                    "estimated_requests": v.estimated,
                })
            })
            .collect();
        let budgets: Vec<serde_json::Value> = self
            .books
            .iter()
            .map(|(id, s)| {
                let b = &s.book;
                let w = b.window();
                let (out, _) = b.outstanding();
                serde_json::json!({
                    "namespace": id.namespace,
                    "name": id.name,
                    "period_start": w.start.to_string(),
                    "period_end": w.end.to_string(),
                    "spent_usd": b.totals().spent.to_string(),
                    "period": b.config().period.to_string(),
                    "limit_usd": b.config().limit_usd.map(|l| l.to_string()),
                    "limit_tokens": b.config().limit_tokens,
                    "remaining_usd": b.config().limit_usd.map(|l| l.saturating_sub(b.totals().spent).max(Usd::ZERO).to_string()),
                    "leased_usd": out.to_string(),
                    "requests": b.totals().requests,
                    "tokens": b.totals().tokens(),
                    "state": b.budget_state().as_str(),
                    "percent_spent": b.percent_spent(),
                })
            })
            .collect();
        let sidecars: Vec<serde_json::Value> = self
            .sessions
            .values()
            .map(|s| {
                serde_json::json!({
                    "sidecar_id": s.sidecar_id,
                    "pod": format!("{}/{}", s.identity.namespace, s.identity.pod_name),
                    "workload": s.workload,
                    "config_version": s.sent_version,
                    "acked_version": s.acked_version,
                    "unacked_batches": s.pending.len(),
                })
            })
            .collect();
        serde_json::json!({ "ledger": rows, "budgets": budgets, "sidecars": sidecars })
    }
}

fn budget_status_msg(id: &ObjectRef, b: &Book) -> OperatorMessage {
    let w = b.window();
    let cfg = b.config();
    OperatorMessage {
        msg: Some(Out::BudgetStatus(BudgetStatus {
            namespace: id.namespace.clone(),
            name: id.name.clone(),
            period_start_unix: w.start.as_second(),
            period_end_unix: w.end.as_second(),
            spent_picos: i64_picos(b.totals().spent),
            spent_tokens: b.totals().tokens(),
            percent_spent: u32::try_from(b.percent_spent()).unwrap_or(u32::MAX),
            state: b.budget_state().as_str().into(),
            limit_picos: cfg.limit_usd.map_or(0, i64_picos),
            has_limit_usd: cfg.limit_usd.is_some(),
            limit_tokens: cfg.limit_tokens.unwrap_or(0),
            has_limit_tokens: cfg.limit_tokens.is_some(),
        })),
    }
}

fn unmet_msg(id: &ObjectRef, u: &Unmet, request_id: u64) -> OperatorMessage {
    OperatorMessage {
        msg: Some(Out::LeaseUnmet(LeaseUnmet {
            budget_namespace: id.namespace.clone(),
            budget_name: id.name.clone(),
            period_start_unix: u.period_start.as_second(),
            epoch: u.epoch,
            request_id,
            remaining_picos: u.remaining.map_or(0, i64_picos),
            remaining_tokens: u.remaining_tokens.unwrap_or(0),
            limits_usd: u.remaining.is_some(),
            limits_tokens: u.remaining_tokens.is_some(),
        })),
    }
}

fn grant_msg(id: &ObjectRef, v: &LeaseView, request_id: u64) -> OperatorMessage {
    OperatorMessage {
        msg: Some(Out::LeaseGrant(LeaseGrant {
            budget_namespace: id.namespace.clone(),
            budget_name: id.name.clone(),
            epoch: v.epoch,
            amount_picos: i64_picos(v.granted),
            amount_tokens: v.granted_tokens,
            expires_unix_millis: v.expires_ms,
            period_start_unix: v.period_start.as_second(),
            request_id,
            charged_picos: i64_picos(v.charged),
            charged_tokens: v.charged_tokens,
            charged_seq: v.charged_seq,
            limits_usd: v.limits_usd,
            limits_tokens: v.limits_tokens,
            version: v.version,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_names_come_from_labels_or_the_pod_name() {
        let mut id = Identity {
            namespace: "shop".into(),
            pod_name: "checkout-7d9f8b6c5d-x2x4p".into(),
            pod_uid: "u".into(),
            labels: [("pod-template-hash".to_string(), "7d9f8b6c5d".to_string())].into(),
        };
        assert_eq!(workload_of(&id), "checkout");
        id.labels.insert("app".into(), "cart".into());
        assert_eq!(workload_of(&id), "cart");
        id.labels
            .insert("app.kubernetes.io/name".into(), "cart-api".into());
        assert_eq!(workload_of(&id), "cart-api");
    }
}
