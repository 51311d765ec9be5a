//! In-process tests of the engine's rules, against fakes of the object
//! source and the ledger store: a batch is acked only once its status
//! write is durable, a lease grant goes out only after the write that
//! records it, a replayed record counts once, and a replica that lost
//! leadership writes nothing more.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use tokenwarden_core::cluster_ledger::ClusterLedgerState;
use tokenwarden_crds::{
    RoutingPolicyStatus, TokenBudgetStatus,
    load::{Object, parse_yaml},
};
use tokenwarden_proto::{
    BudgetPeriod, LeaseRequest, UsageBatch, UsageRecord, operator_message::Msg as Out,
};

use super::*;
use crate::source::{BoxFuture, Event, EventType, Regarding, SourceError};

const BUDGET_YAML: &str = include_str!("../../../deploy/examples/02-team-daily-budget.yaml");
const NS: &str = "agents";
const POLICY: &str = "search-routing";
const POLICY_YAML: &str = r#"
apiVersion: tokenwarden.dev/v1alpha1
kind: RoutingPolicy
metadata: {name: search-routing, namespace: agents}
spec:
  workloadSelector: {matchLabels: {team: search}}
  providers:
    - name: anthropic
      api: anthropic
      baseUrl: https://api.anthropic.com
      apiKeySecretRef: {name: llm-keys, key: anthropic}
"#;
const BUDGET: &str = "search-team-daily";
/// Long enough for the engine to have done what it would do (it ticks
/// every 50 ms); short enough to keep the tests fast.
const QUIET: Duration = Duration::from_millis(400);
const PATIENCE: Duration = Duration::from_secs(10);

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

// === fakes ===

/// An object source whose budget status writes complete only while its
/// gate is open; it records every write started and finished.
struct FakeSource {
    objects: watch::Sender<Option<Arc<Objects>>>,
    gate: watch::Sender<bool>,
    started: Mutex<Vec<TokenBudgetStatus>>,
    finished: Mutex<Vec<TokenBudgetStatus>>,
    policy_writes: Mutex<Vec<RoutingPolicyStatus>>,
    events: Mutex<Vec<Event>>,
}

impl FakeSource {
    fn started(&self) -> Vec<TokenBudgetStatus> {
        self.started.lock().unwrap().clone()
    }

    fn finished(&self) -> Vec<TokenBudgetStatus> {
        self.finished.lock().unwrap().clone()
    }
}

impl ObjectSource for FakeSource {
    fn objects(&self) -> watch::Receiver<Option<Arc<Objects>>> {
        self.objects.subscribe()
    }

    fn write_budget_status<'a>(
        &'a self,
        _id: &'a ObjectRef,
        status: &'a TokenBudgetStatus,
    ) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            self.started.lock().unwrap().push(status.clone());
            let mut gate = self.gate.subscribe();
            let _ = gate.wait_for(|open| *open).await;
            self.finished.lock().unwrap().push(status.clone());
            Ok(())
        })
    }

    fn write_policy_status<'a>(
        &'a self,
        _id: &'a ObjectRef,
        status: &'a RoutingPolicyStatus,
    ) -> BoxFuture<'a, Result<(), SourceError>> {
        self.policy_writes.lock().unwrap().push(status.clone());
        Box::pin(async { Ok(()) })
    }

    fn event<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, ()> {
        self.events.lock().unwrap().push(event.clone());
        Box::pin(async {})
    }

    fn fresh(&self) -> BoxFuture<'_, Result<Arc<Objects>, SourceError>> {
        let current = self.objects.borrow().clone().unwrap_or_default();
        Box::pin(async move { Ok(current) })
    }
}

/// A cluster ledger kept in memory; counts its saves.
#[derive(Default)]
struct FakeLedger {
    saved: Mutex<Vec<ClusterLedgerState>>,
}

impl LedgerStore for FakeLedger {
    fn save(&self, state: &ClusterLedgerState) -> Result<(), LedgerError> {
        self.saved.lock().unwrap().push(state.clone());
        Ok(())
    }

    fn load(&self) -> Result<ClusterLedgerState, LedgerError> {
        Ok(self
            .saved
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default())
    }
}

/// A usage store that commits only while `up`; it keeps every row of
/// every committed write, in order (resends included: deduplication is
/// Postgres's job, by key).
#[derive(Default)]
struct FakeUsage {
    up: std::sync::atomic::AtomicBool,
    committed: Mutex<Vec<(String, u64)>>,
    failures: std::sync::atomic::AtomicU64,
}

impl FakeUsage {
    fn seqs(&self) -> Vec<u64> {
        self.committed.lock().unwrap().iter().map(|r| r.1).collect()
    }
}

impl crate::usage_store::UsageSink for FakeUsage {
    fn write<'a>(
        &'a self,
        rows: &'a [crate::usage_store::UsageRow],
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<crate::usage_store::Written, crate::usage_store::StoreError>,
                > + Send
                + 'a,
        >,
    > {
        Box::pin(async move {
            if !self.up.load(std::sync::atomic::Ordering::SeqCst) {
                self.failures
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                return Err(crate::usage_store::StoreError::Timeout(Duration::ZERO));
            }
            let mut c = self.committed.lock().unwrap();
            for r in rows {
                assert_eq!(r.namespace, NS);
                assert_eq!(r.pod, format!("search-{}", r.sidecar_id));
                c.push((r.sidecar_id.clone(), r.record.seq));
            }
            Ok(crate::usage_store::Written {
                inserted: rows.len() as u64,
                ..Default::default()
            })
        })
    }
}

fn usage_store(max_backlog: usize) -> (Arc<FakeUsage>, UsageStoreHandle) {
    let fake = Arc::new(FakeUsage::default());
    let handle = UsageStoreHandle {
        sink: fake.clone(),
        max_backlog,
    };
    (fake, handle)
}

// === harness ===

struct Harness {
    engine: mpsc::Sender<Cmd>,
    source: Arc<FakeSource>,
    ledger: Arc<FakeLedger>,
    leadership: watch::Sender<Leadership>,
    metrics: Arc<Metrics>,
}

fn objects() -> Arc<Objects> {
    let mut objects = Objects::default();
    for o in parse_yaml(BUDGET_YAML).unwrap() {
        if let Object::TokenBudget(mut b) = o {
            b.metadata.generation = Some(1);
            objects
                .budgets
                .insert(ObjectRef::new(NS, BUDGET), Arc::new(*b));
        }
    }
    assert_eq!(objects.budgets.len(), 1);
    for o in parse_yaml(POLICY_YAML).unwrap() {
        if let Object::RoutingPolicy(mut p) = o {
            p.metadata.generation = Some(1);
            objects
                .policies
                .insert(ObjectRef::new(NS, POLICY), Arc::new(*p));
        }
    }
    assert_eq!(objects.policies.len(), 1);
    Arc::new(objects)
}

/// An engine leading on the example budget; status writes complete only
/// while `gate_open`.
fn start(gate_open: bool) -> Harness {
    start_with(gate_open, None)
}

/// [`start`], writing usage rows to `usage`.
fn start_with(gate_open: bool, usage: Option<UsageStoreHandle>) -> Harness {
    let objects = objects();
    let source = Arc::new(FakeSource {
        objects: watch::channel(Some(objects.clone())).0,
        gate: watch::channel(gate_open).0,
        started: Mutex::default(),
        finished: Mutex::default(),
        policy_writes: Mutex::default(),
        events: Mutex::default(),
    });
    let ledger = Arc::new(FakeLedger::default());
    let (leadership, leading) = watch::channel(Leadership {
        leader: true,
        leader_address: None,
    });
    let cfg = EngineConfig {
        status_interval: Duration::from_millis(10),
        ..EngineConfig::default()
    };
    let metrics = Arc::new(Metrics::new());
    if usage.is_some() {
        metrics.usage_store.enable();
    }
    let engine = Engine::spawn(
        cfg,
        source.clone(),
        Some((ClusterLedgerState::default(), ledger.clone())),
        usage,
        metrics.clone(),
        objects,
        leading,
    );
    Harness {
        engine,
        source,
        ledger,
        leadership,
        metrics,
    }
}

/// One sidecar stream, as the engine sees it.
struct Sidecar {
    id: SessionId,
    sidecar_id: String,
    rx: mpsc::Receiver<Result<OperatorMessage, tonic::Status>>,
    /// The budget period its snapshot named.
    period_start_unix: i64,
}

impl Harness {
    /// Open session `id` for sidecar `sidecar_id` of a pod the budget
    /// selects; wait for its config and budget state.
    async fn connect(&self, id: SessionId, sidecar_id: &str) -> Sidecar {
        let (tx, rx) = mpsc::channel(256);
        let (reply, answer) = oneshot::channel();
        let identity = Identity {
            namespace: NS.into(),
            pod_name: format!("search-{sidecar_id}"),
            pod_uid: format!("uid-{sidecar_id}"),
            labels: [("team".to_string(), "search".to_string())].into(),
        };
        let hello = pb::Hello {
            sidecar_id: sidecar_id.into(),
            ..pb::Hello::default()
        };
        self.engine
            .send(Cmd::Open {
                id,
                identity,
                hello: Box::new(hello),
                tx,
                reply,
            })
            .await
            .unwrap();
        answer.await.unwrap().unwrap();
        let mut sidecar = Sidecar {
            id,
            sidecar_id: sidecar_id.into(),
            rx,
            period_start_unix: 0,
        };
        let status = sidecar.next(|m| matches!(m, Out::BudgetStatus(_))).await;
        let Out::BudgetStatus(s) = status else {
            unreachable!()
        };
        sidecar.period_start_unix = s.period_start_unix;
        sidecar
    }

    async fn send(&self, sidecar: &Sidecar, msg: In) {
        self.engine.send(Cmd::Msg(sidecar.id, msg)).await.unwrap();
    }

    /// Send usage records `seqs` ($1 each) of `sidecar`.
    async fn usage(&self, sidecar: &Sidecar, seqs: &[u64]) {
        let records = seqs.iter().map(|&seq| sidecar.record(seq)).collect();
        self.send(sidecar, In::Usage(UsageBatch { records })).await;
    }

    async fn render(&self) -> serde_json::Value {
        let (tx, rx) = oneshot::channel();
        self.engine.send(Cmd::Ledger(tx)).await.unwrap();
        rx.await.unwrap()
    }
}

const DOLLAR_PICOS: i64 = 1_000_000_000_000;

impl Sidecar {
    fn record(&self, seq: u64) -> UsageRecord {
        UsageRecord {
            sidecar_id: self.sidecar_id.clone(),
            seq,
            ts_unix_nanos: i64::try_from(Timestamp::now().as_nanosecond()).unwrap(),
            endpoint: "chatCompletions".into(),
            requested_model: "gpt-4o-mini".into(),
            served_model: "gpt-4o-mini".into(),
            provider: "openai".into(),
            status: 200,
            usage: Some(pb::Usage {
                input_tokens: 10,
                output_tokens: 5,
                ..pb::Usage::default()
            }),
            cost_picos: DOLLAR_PICOS,
            priced: true,
            budgets: vec![BudgetPeriod {
                namespace: NS.into(),
                name: BUDGET.into(),
                period_start_unix: self.period_start_unix,
                key: String::new(),
            }],
            ..UsageRecord::default()
        }
    }

    /// The next message matching `want` (others are skipped).
    async fn next(&mut self, want: impl Fn(&Out) -> bool) -> Out {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .expect("no such message in time")
                .expect("the stream ended")
                .expect("the stream failed");
            if let Some(m) = msg.msg
                && want(&m)
            {
                return m;
            }
        }
    }

    /// Every message that arrives within [`QUIET`] (and whether the
    /// stream ended or failed meanwhile).
    async fn quiet(&mut self) -> (Vec<Out>, Option<tonic::Status>) {
        let deadline = tokio::time::Instant::now() + QUIET;
        let mut seen = Vec::new();
        while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            match msg {
                Ok(m) => seen.extend(m.msg),
                Err(status) => return (seen, Some(status)),
            }
        }
        (seen, None)
    }
}

fn acks(msgs: &[Out]) -> Vec<u64> {
    msgs.iter()
        .filter_map(|m| match m {
            Out::UsageAck(a) => Some(a.up_to_seq),
            _ => None,
        })
        .collect()
}

/// Wait until `cond` holds.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn requests(status: &TokenBudgetStatus) -> i64 {
    status.requests.unwrap_or(0)
}

// === the rules ===

#[tokio::test]
async fn a_batch_is_acked_only_once_its_status_write_is_durable() {
    let h = start(false);
    let mut sidecar = h.connect(1, "sc-1").await;
    h.usage(&sidecar, &[1, 2]).await;
    // A status write is under way, and held (the one counting the batch,
    // or the first one, which the batch's must wait for).
    until("a status write", || !h.source.started().is_empty()).await;
    let (seen, _) = sidecar.quiet().await;
    assert_eq!(acks(&seen), Vec::<u64>::new(), "acked before durable");
    assert!(h.source.finished().is_empty());

    h.source.gate.send_replace(true);
    let ack = sidecar.next(|m| matches!(m, Out::UsageAck(_))).await;
    let Out::UsageAck(ack) = ack else {
        unreachable!()
    };
    assert_eq!(ack.up_to_seq, 2);
    assert!(
        h.source.finished().iter().any(|s| requests(s) == 2),
        "acked, yet no finished write holds the batch"
    );
}

#[tokio::test]
async fn a_lease_grant_goes_out_only_after_the_write_that_records_it() {
    let h = start(false);
    let mut sidecar = h.connect(1, "sc-1").await;
    let request = LeaseRequest {
        budget_namespace: NS.into(),
        budget_name: BUDGET.into(),
        want_picos: 2 * DOLLAR_PICOS,
        need_picos: DOLLAR_PICOS,
        request_id: 7,
        ..LeaseRequest::default()
    };
    h.send(&sidecar, In::LeaseRequest(request)).await;
    let (seen, _) = sidecar.quiet().await;
    assert!(
        !seen
            .iter()
            .any(|m| matches!(m, Out::LeaseGrant(g) if g.request_id == 7)),
        "granted before the write: {seen:?}"
    );

    h.source.gate.send_replace(true);
    let grant = sidecar
        .next(|m| matches!(m, Out::LeaseGrant(g) if g.request_id == 7))
        .await;
    let Out::LeaseGrant(grant) = grant else {
        unreachable!()
    };
    assert!(grant.amount_picos >= DOLLAR_PICOS, "{grant:?}");
    // A restarted operator would find the lease in a finished write.
    let recorded = h.source.finished().iter().any(|s| {
        s.ledger.as_ref().is_some_and(|l| {
            l.sidecars
                .iter()
                .any(|e| e.id == "sc-1" && e.granted_picos == grant.amount_picos.to_string())
        })
    });
    assert!(recorded, "the grant is in no finished write");
}

#[tokio::test]
async fn a_replayed_record_counts_once() {
    let h = start(true);
    let mut first = h.connect(1, "sc-1").await;
    h.usage(&first, &[1, 2]).await;
    let ack = first.next(|m| matches!(m, Out::UsageAck(_))).await;
    assert!(matches!(ack, Out::UsageAck(a) if a.up_to_seq == 2));

    // The sidecar reconnects and replays what it had sent (its ack may
    // have been lost), then a new record.
    h.engine.send(Cmd::Close(first.id)).await.unwrap();
    let mut again = h.connect(2, "sc-1").await;
    h.usage(&again, &[1, 2, 3]).await;
    let ack = again.next(|m| matches!(m, Out::UsageAck(_))).await;
    assert!(matches!(ack, Out::UsageAck(a) if a.up_to_seq == 3));

    let view = h.render().await;
    assert_eq!(view["budgets"][0]["requests"], 3, "{view}");
    assert_eq!(view["budgets"][0]["spent_usd"], "3.00", "{view}");
    assert_eq!(view["ledger"].as_array().map(Vec::len), Some(1), "{view}");
    assert_eq!(view["ledger"][0]["requests"], 3, "{view}");
    until("the status write of the third record", || {
        h.source.finished().iter().any(|s| requests(s) == 3)
    })
    .await;
    assert!(
        h.source.finished().iter().all(|s| requests(s) <= 3),
        "a replay was counted twice: {:?}",
        h.source.finished()
    );
    let saved = h.ledger.saved.lock().unwrap().clone();
    let last = saved.last().unwrap();
    assert_eq!(
        last.rows.iter().map(|(_, r)| r.requests).sum::<u64>(),
        3,
        "{last:?}"
    );
}

#[tokio::test]
async fn a_replica_that_lost_leadership_writes_nothing_more() {
    let h = start(true);
    let mut sidecar = h.connect(1, "sc-1").await;
    h.usage(&sidecar, &[1]).await;
    let ack = sidecar.next(|m| matches!(m, Out::UsageAck(_))).await;
    assert!(matches!(ack, Out::UsageAck(a) if a.up_to_seq == 1));
    let (writes, saves) = (
        h.source.started().len(),
        h.ledger.saved.lock().unwrap().len(),
    );

    // Another replica leads now.
    h.leadership.send_replace(Leadership {
        leader: false,
        leader_address: Some("https://other:15810".into()),
    });
    // Whatever still reaches this engine is not written (the channel may
    // already be closed).
    let _ = h
        .engine
        .send(Cmd::Msg(
            sidecar.id,
            In::Usage(UsageBatch {
                records: vec![sidecar.record(2)],
            }),
        ))
        .await;
    let (seen, ended) = sidecar.quiet().await;
    assert_eq!(
        acks(&seen),
        Vec::<u64>::new(),
        "acked after losing leadership"
    );
    let ended = ended.expect("the session ends when leadership is lost");
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
    assert_eq!(
        h.source.started().len(),
        writes,
        "a status write after the fence"
    );
    assert_eq!(
        h.ledger.saved.lock().unwrap().len(),
        saves,
        "a ledger write after the fence"
    );
}

#[tokio::test]
async fn a_cache_bust_makes_the_policy_prompt_cache_unstable_with_a_warning_event() {
    let h = start(true);
    let mut sidecar = h.connect(1, "sc-1").await;
    let mut busted = sidecar.record(1);
    busted.served_model = "claude-sonnet-4-5".into();
    busted.cache_wasted_picos = 250_000_000_000;
    busted.cache_bust = Some(pb::CacheBust {
        reason: "volatile_prefix".into(),
        section: "system".into(),
        offset: 14,
        change: "timestamp".into(),
        lost_tokens: 90_000,
    });
    h.send(
        &sidecar,
        In::Usage(UsageBatch {
            records: vec![busted, sidecar.record(2)],
        }),
    )
    .await;
    sidecar
        .next(|m| matches!(m, Out::UsageAck(a) if a.up_to_seq == 2))
        .await;
    let want = "workload agents/search-sc-1: 1 prompt-cache bust in the last 24h, wasting \
                $0.25; most often on claude-sonnet-4-5 at system offset 14 (a timestamp-like \
                value changed): once";
    let unstable = |s: &RoutingPolicyStatus| {
        s.conditions.iter().any(|c| {
            c.type_ == "PromptCacheUnstable"
                && c.status == "True"
                && c.reason == "VolatilePrefix"
                && c.message == want
        })
    };
    until("PromptCacheUnstable in a policy status write", || {
        h.source.policy_writes.lock().unwrap().iter().any(unstable)
    })
    .await;
    until("a PromptCacheUnstable Event", || {
        h.source.events.lock().unwrap().iter().any(|e| {
            e.reason == "PromptCacheUnstable"
                && e.regarding == Regarding::Policy(ObjectRef::new(NS, POLICY))
                && e.type_ == EventType::Warning
                && e.message == want
        })
    })
    .await;
    // The cluster ledger's row carries the waste and the bust.
    let view = h.render().await;
    let row = view["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["model"] == "claude-sonnet-4-5")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (
            row["cache_wasted_usd"].as_str(),
            row["cache_busts"].as_u64()
        ),
        (Some("0.25"), Some(1)),
        "{view}"
    );
}

#[tokio::test]
async fn a_batch_is_acked_only_once_the_usage_store_committed_it_and_resends_are_written_again() {
    let (store, handle) = usage_store(1000);
    let h = start_with(true, Some(handle));
    let mut sidecar = h.connect(1, "sc-1").await;
    h.usage(&sidecar, &[1, 2]).await;
    until("a failed usage store write", || {
        store.failures.load(std::sync::atomic::Ordering::SeqCst) > 0
    })
    .await;
    // The books are durable; the store is down: no ack.
    let (seen, ended) = sidecar.quiet().await;
    assert_eq!(acks(&seen), Vec::<u64>::new(), "acked before the commit");
    assert!(ended.is_none());
    assert!(
        h.metrics
            .render()
            .contains("tokenwarden_usage_store_backlog_records 2\n"),
        "{}",
        h.metrics.render()
    );
    assert!(
        h.metrics
            .render()
            .contains("tokenwarden_usage_store_up 0\n")
    );
    // Leases are still granted meanwhile: traffic does not wait.
    let request = LeaseRequest {
        budget_namespace: NS.into(),
        budget_name: BUDGET.into(),
        want_picos: DOLLAR_PICOS,
        need_picos: DOLLAR_PICOS,
        request_id: 9,
        ..LeaseRequest::default()
    };
    h.send(&sidecar, In::LeaseRequest(request)).await;
    sidecar
        .next(|m| matches!(m, Out::LeaseGrant(g) if g.request_id == 9))
        .await;

    store.up.store(true, std::sync::atomic::Ordering::SeqCst);
    let Out::UsageAck(ack) = sidecar.next(|m| matches!(m, Out::UsageAck(_))).await else {
        unreachable!()
    };
    assert_eq!(ack.up_to_seq, 2);
    assert_eq!(store.seqs(), vec![1, 2]);
    // A resend of 2 (the books skip it) still goes to the store, whose key
    // makes it a no-op; 3 is new.
    h.usage(&sidecar, &[2, 3]).await;
    let Out::UsageAck(ack) = sidecar.next(|m| matches!(m, Out::UsageAck(_))).await else {
        unreachable!()
    };
    assert_eq!(ack.up_to_seq, 3);
    assert_eq!(store.seqs(), vec![1, 2, 2, 3]);
    assert!(
        h.metrics
            .render()
            .contains("tokenwarden_usage_store_backlog_records 0\n")
    );
    assert!(
        h.metrics
            .render()
            .contains("tokenwarden_usage_store_up 1\n")
    );
    // Without a usage store its metrics are not exported at all (no `up 0`
    // to alert on).
    let plain = start(true);
    assert!(!plain.metrics.render().contains("tokenwarden_usage_store"));
    assert!(plain.metrics.render().ends_with("# EOF\n"));
}

#[tokio::test]
async fn a_full_backlog_leaves_records_to_the_sidecar_and_asks_for_them_once_drained() {
    let (store, handle) = usage_store(2);
    let h = start_with(true, Some(handle));
    let mut sidecar = h.connect(1, "sc-1").await;
    // The first batch fills the queue; the next one waits in the sidecar.
    h.usage(&sidecar, &[1, 2]).await;
    h.usage(&sidecar, &[3, 4]).await;
    until("a failed usage store write", || {
        store.failures.load(std::sync::atomic::Ordering::SeqCst) > 0
    })
    .await;
    let render = h.metrics.render();
    assert!(
        render.contains("tokenwarden_usage_store_backlog_records 2\n"),
        "{render}"
    );
    assert!(
        render.contains("tokenwarden_usage_store_records_total{result=\"deferred\"} 2\n"),
        "{render}"
    );
    store.up.store(true, std::sync::atomic::Ordering::SeqCst);
    // The queued batch commits and is acked; the other was never queued,
    // so the session is ended for the sidecar to resend it.
    let (seen, ended) = sidecar.quiet().await;
    assert_eq!(acks(&seen), vec![2]);
    let ended = ended.expect("the session ends once the backlog drained");
    assert_eq!(ended.code(), tonic::Code::Unavailable);
    assert!(
        ended.message().contains("usage store caught up"),
        "{ended:?}"
    );
    assert_eq!(store.seqs(), vec![1, 2]);
    // It reconnects and resends everything unacked.
    let mut sidecar = h.connect(2, "sc-1").await;
    h.usage(&sidecar, &[3, 4]).await;
    let Out::UsageAck(ack) = sidecar.next(|m| matches!(m, Out::UsageAck(_))).await else {
        unreachable!()
    };
    assert_eq!(ack.up_to_seq, 4);
    assert_eq!(store.seqs(), vec![1, 2, 3, 4]);
    // Counted once in the books all the same.
    let ledger = h.render().await;
    assert_eq!(ledger["ledger"][0]["requests"], 4, "{ledger}");
}
