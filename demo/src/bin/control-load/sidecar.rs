//! One simulated sidecar: a `Control.Session` stream (the harness's fake
//! sidecar) that ACKs every snapshot, learns its budgets' periods from the
//! statuses, sends priced usage batches on schedule during the load window
//! and measures the time to the covering `UsageAck`.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use futures_util::StreamExt as _;
use tokenwarden_core::{usage::BudgetPeriodRef, workload::ObjectRef};
use tokenwarden_proto::{
    self as pb, ConfigAck, Hello, OperatorMessage, SidecarMessage, UsageBatch,
    operator_message::Msg as Out, sidecar_message::Msg as In,
};
use tokenwarden_tests::fake_sidecar::FakeSidecar;
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

use crate::{
    args::RunArgs,
    objects::APPS,
    records::{Kind, Rng, make_record},
};

pub struct Identity {
    pub sidecar_id: String,
    pub namespace: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub app: &'static str,
}

pub fn identity(i: usize, namespaces: usize, seed: u64) -> Identity {
    let namespace = format!("bench-{}", i % namespaces);
    let app = APPS[(i / namespaces) % APPS.len()];
    // Random-looking UUIDs, as real pod UIDs are (they key the
    // operator's per-sidecar maps, so a shared prefix would cost it more
    // string comparisons than a cluster does).
    let mut r = Rng::new(seed.wrapping_mul(1_000_003).wrapping_add(i as u64));
    let (a, b) = (r.next(), r.next());
    let pod_uid = format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) & 0xfff,
        b & 0xffff_ffff_ffff
    );
    Identity {
        sidecar_id: format!("{pod_uid}:{:08x}", Rng::new(seed ^ 0xb5).next() as u32),
        namespace,
        pod_name: format!("{app}-5d8f7c9b6-{i:05}"),
        pod_uid,
        app,
    }
}

/// What a sidecar saw and did.
#[derive(Default)]
pub struct SidecarResult {
    pub records_sent: u64,
    pub records_acked: u64,
    pub records_acked_in_window: u64,
    pub batches_sent: u64,
    /// Send → covering ack, microseconds, one per batch.
    pub latencies_us: Vec<u64>,
    /// Cost sent, per budget `ns/name`.
    pub cost_by_budget: BTreeMap<String, i128>,
    pub cost_sent: i128,
    /// Snapshots received: (version, when).
    pub snapshots: Vec<(String, Instant)>,
    pub budget_statuses: u64,
    /// Worst delay behind the send schedule.
    pub max_send_lag: Duration,
    pub ready: bool,
    pub unacked_batches: usize,
    pub error: Option<String>,
}

pub struct Shared {
    pub kinds: Vec<Kind>,
    pub args: RunArgs,
    pub secret: String,
}

fn budgets_of(config_json: &[u8]) -> anyhow::Result<Vec<ObjectRef>> {
    let v: serde_json::Value = serde_json::from_slice(config_json).context("config_json")?;
    let Some(list) = v["budgets"].as_array() else {
        return Ok(Vec::new());
    };
    list.iter()
        .map(|b| {
            let ns = b["source"]["namespace"]
                .as_str()
                .context("budget namespace")?;
            let name = b["source"]["name"].as_str().context("budget name")?;
            Ok(ObjectRef::new(ns, name))
        })
        .collect()
}

fn ack(tx: &mpsc::UnboundedSender<SidecarMessage>, version: &str) {
    let _ = tx.send(SidecarMessage {
        msg: Some(In::ConfigAck(ConfigAck {
            version: version.to_string(),
            accepted: true,
            reason: String::new(),
        })),
    });
}

/// Times of the load: (start, end), published once every stream is ready.
pub type Window = watch::Receiver<Option<(Instant, Instant)>>;

pub async fn sidecar(
    i: usize,
    channel: Channel,
    shared: Arc<Shared>,
    ready: mpsc::Sender<Result<(), String>>,
    done: mpsc::Sender<(usize, SidecarResult)>,
    mut window: Window,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut res = SidecarResult::default();
    let stream = match sidecar_inner(i, channel, &shared, &ready, &mut window, &mut res).await {
        Ok(s) => Some(s),
        Err(e) => {
            let msg = format!("sidecar {i}: {e:#}");
            if !res.ready {
                let _ = ready.send(Err(msg.clone())).await;
            }
            res.error = Some(msg);
            None
        }
    };
    let _ = done.send((i, res)).await;
    // Hold the stream open (reading it, ACKing snapshots) until the summary
    // is taken: the operator's memory is measured with every stream still
    // connected.
    let Some(mut stream) = stream else { return };
    let mut spare = SidecarResult::default();
    let mut periods = BTreeMap::new();
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            m = stream.rx.next() => match m {
                Some(Ok(m)) => on_message(m, &stream.tx, &mut periods, &mut VecDeque::new(), &mut spare, None),
                Some(Err(_)) | None => return,
            },
        }
    }
}

/// The pending batches: (last seq, records, sent at).
type Pending = VecDeque<(u64, u64, Instant)>;

/// Connect, get configured, wait for the load window, send the load and
/// drain the acks; returns the stream (still open).
async fn sidecar_inner(
    i: usize,
    channel: Channel,
    shared: &Shared,
    ready: &mpsc::Sender<Result<(), String>>,
    window: &mut Window,
    res: &mut SidecarResult,
) -> anyhow::Result<FakeSidecar> {
    let args = &shared.args;
    let id = identity(i, args.namespaces, args.seed);
    let (mut stream, wanted, mut periods) =
        connect_and_configure(channel, &id, shared, res).await?;
    let _ = ready.send(Ok(())).await;
    res.ready = true;
    let (start, end) = wait_for_window(&mut stream, window, &mut periods, res).await?;
    let mut load = Load {
        rng: Rng::new(args.seed.wrapping_add(i as u64 * 7919)),
        per_sec: args.rate / args.sidecars as f64,
        seq: 0,
        pending: Pending::new(),
    };
    let mean = (args.batch_min + args.batch_max) as f64 / 2.0;
    let phase = Duration::from_secs_f64(load.rng.unit() * mean / load.per_sec);
    let mut next_send = start + phase;
    let drain_deadline = end + Duration::from_secs(args.drain_timeout_secs);
    loop {
        let sending = next_send < end;
        if !sending && load.pending.is_empty() {
            break;
        }
        if Instant::now() >= drain_deadline {
            break;
        }
        let wake = if sending { next_send } else { drain_deadline };
        tokio::select! {
            () = tokio::time::sleep_until(wake.into()) => {
                if !sending {
                    break;
                }
                let now = Instant::now();
                res.max_send_lag = res.max_send_lag.max(now.saturating_duration_since(next_send));
                let n = load.send_batch(&stream, &id, shared, &wanted, &periods, res)?;
                next_send += Duration::from_secs_f64(n as f64 / load.per_sec);
            }
            m = stream.rx.next() => match m {
                Some(Ok(m)) => on_message(m, &stream.tx, &mut periods, &mut load.pending, res, Some(end)),
                Some(Err(s)) => bail!("stream error: {s}"),
                None => bail!("stream ended"),
            },
        }
    }
    res.unacked_batches = load.pending.len();
    Ok(stream)
}

/// The Hello of simulated pod `id`.
fn hello_of(id: &Identity, credential: &str) -> Hello {
    Hello {
        protocol_version: pb::PROTOCOL_VERSION,
        sidecar_id: id.sidecar_id.clone(),
        namespace: id.namespace.clone(),
        pod_name: id.pod_name.clone(),
        pod_uid: id.pod_uid.clone(),
        labels: [
            ("app".to_string(), id.app.to_string()),
            ("tokenwarden.dev/bench".to_string(), "true".to_string()),
            ("pod-template-hash".to_string(), "5d8f7c9b6".to_string()),
        ]
        .into(),
        sidecar_version: "control-load".into(),
        credential: credential.to_string(),
        config_version: String::new(),
    }
}

/// Connect (retry while the operator is starting) and wait for the first
/// snapshot and the status of every budget that selects the pod: the
/// stream, those budgets, their periods.
async fn connect_and_configure(
    channel: Channel,
    id: &Identity,
    shared: &Shared,
    res: &mut SidecarResult,
) -> anyhow::Result<(FakeSidecar, Vec<ObjectRef>, BTreeMap<ObjectRef, i64>)> {
    let args = &shared.args;
    let hello = hello_of(id, &shared.secret);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.connect_timeout_secs);
    let mut stream = loop {
        match tokio::time::timeout_at(deadline, FakeSidecar::open(channel.clone(), hello.clone()))
            .await
        {
            Ok(Ok(s)) => break s,
            Ok(Err(s)) if s.code() == tonic::Code::Unavailable => {}
            Ok(Err(s)) => bail!("refused: {s}"),
            Err(_) => bail!("not connected within {}s", args.connect_timeout_secs),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut wanted: Option<Vec<ObjectRef>> = None;
    let mut periods: BTreeMap<ObjectRef, i64> = BTreeMap::new();
    loop {
        let m = match tokio::time::timeout_at(deadline, stream.rx.next()).await {
            Err(_) => bail!("no config within {}s", args.connect_timeout_secs),
            Ok(None) => bail!("stream ended before the first config"),
            Ok(Some(Err(s))) => bail!("stream error before the first config: {s}"),
            Ok(Some(Ok(m))) => m,
        };
        handle_setup(m, &stream.tx, &mut wanted, &mut periods, res)?;
        if let Some(w) = &wanted
            && w.iter().all(|b| periods.contains_key(b))
        {
            break;
        }
    }
    let wanted = wanted.unwrap_or_default();
    if wanted.is_empty() {
        bail!(
            "no TokenBudget selects pod {}/{}",
            id.namespace,
            id.pod_name
        );
    }
    Ok((stream, wanted, periods))
}

/// Wait until the load window is published, reading the stream meanwhile
/// (the operator drops streams that do not read).
async fn wait_for_window(
    stream: &mut FakeSidecar,
    window: &mut Window,
    periods: &mut BTreeMap<ObjectRef, i64>,
    res: &mut SidecarResult,
) -> anyhow::Result<(Instant, Instant)> {
    loop {
        if let Some(w) = *window.borrow_and_update() {
            return Ok(w);
        }
        tokio::select! {
            r = window.changed() => if r.is_err() { bail!("cancelled") },
            m = stream.rx.next() => match m {
                Some(Ok(m)) => on_message(m, &stream.tx, periods, &mut Pending::new(), res, None),
                Some(Err(s)) => bail!("stream error: {s}"),
                None => bail!("stream ended"),
            },
        }
    }
}

/// One sidecar's sending state.
struct Load {
    rng: Rng,
    per_sec: f64,
    seq: u64,
    pending: Pending,
}

impl Load {
    /// Send one batch of records for the pod's budgets; returns its size.
    fn send_batch(
        &mut self,
        stream: &FakeSidecar,
        id: &Identity,
        shared: &Shared,
        wanted: &[ObjectRef],
        periods: &BTreeMap<ObjectRef, i64>,
        res: &mut SidecarResult,
    ) -> anyhow::Result<u64> {
        let args = &shared.args;
        let n = self.rng.range(args.batch_min, args.batch_max);
        let budgets: Vec<BudgetPeriodRef> = wanted
            .iter()
            .filter_map(|b| {
                let start = jiff::Timestamp::from_second(*periods.get(b)?).ok()?;
                Some(BudgetPeriodRef {
                    budget: b.clone(),
                    period_start: start,
                    key: None,
                })
            })
            .collect();
        let mut records = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
        for _ in 0..n {
            self.seq += 1;
            let (rec, cost) = make_record(&mut self.rng, &shared.kinds, self.seq, &budgets);
            res.cost_sent += cost;
            for b in &budgets {
                *res.cost_by_budget
                    .entry(format!("{}/{}", b.budget.namespace, b.budget.name))
                    .or_default() += cost;
            }
            records.push(pb::record_to_wire(&id.sidecar_id, &id.pod_name, &rec));
        }
        self.pending.push_back((self.seq, n, Instant::now()));
        stream
            .tx
            .send(SidecarMessage {
                msg: Some(In::Usage(UsageBatch { records })),
            })
            .map_err(|_| anyhow::anyhow!("outbound queue closed"))?;
        res.records_sent += n;
        res.batches_sent += 1;
        Ok(n)
    }
}

fn handle_setup(
    m: OperatorMessage,
    tx: &mpsc::UnboundedSender<SidecarMessage>,
    wanted: &mut Option<Vec<ObjectRef>>,
    periods: &mut BTreeMap<ObjectRef, i64>,
    res: &mut SidecarResult,
) -> anyhow::Result<()> {
    if let Some(Out::Config(c)) = &m.msg {
        *wanted = Some(budgets_of(&c.config_json)?);
    }
    on_message(m, tx, periods, &mut VecDeque::new(), res, None);
    Ok(())
}

fn on_message(
    m: OperatorMessage,
    tx: &mpsc::UnboundedSender<SidecarMessage>,
    periods: &mut BTreeMap<ObjectRef, i64>,
    pending: &mut Pending,
    res: &mut SidecarResult,
    end: Option<Instant>,
) {
    let now = Instant::now();
    match m.msg {
        Some(Out::Config(c)) => {
            res.snapshots.push((c.version.clone(), now));
            ack(tx, &c.version);
        }
        Some(Out::BudgetStatus(s)) => {
            res.budget_statuses += 1;
            periods.insert(ObjectRef::new(s.namespace, s.name), s.period_start_unix);
        }
        Some(Out::UsageAck(a)) => {
            while let Some(&(last, n, sent)) = pending.front() {
                if last > a.up_to_seq {
                    break;
                }
                pending.pop_front();
                res.latencies_us
                    .push(u64::try_from(now.duration_since(sent).as_micros()).unwrap_or(u64::MAX));
                res.records_acked += n;
                if end.is_some_and(|e| now <= e) {
                    res.records_acked_in_window += n;
                }
            }
        }
        _ => {}
    }
}
