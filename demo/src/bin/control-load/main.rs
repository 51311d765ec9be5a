//! `tokenwarden-control-load`: N simulated sidecars against one operator.
//!
//! Every simulated sidecar opens one `Control.Session` stream (the real
//! proto, plaintext gRPC on loopback) with its own sidecar id and pod
//! labels, presents the local-mode shared secret, ACKs every config
//! snapshot, and sends usage batches (priced records shaped like the real
//! sidecar's, `seq` increasing per sidecar, budget periods taken from the
//! `BudgetStatus` it received) at a total target rate, for a bounded time.
//! It measures ingest throughput, the time from sending a batch to the
//! `UsageAck` that covers it, and (when given the objects file) the time a
//! config change takes to reach every stream. At the end it checks that
//! the operator's ledgers hold exactly the cost that was sent.
//!
//! Streams share a few HTTP/2 connections (`--connections`, default 10 ×
//! 50 streams): one TCP connection per sidecar would measure the loopback
//! TCP stack and file-descriptor limits more than the operator, and a
//! handful of connections keeps well under the server's per-connection
//! stream limit.
//!
//! `tokenwarden-control-load objects` prints the RoutingPolicy/TokenBudget
//! YAML the simulated pods are selected by; `tokenwarden-control-load run`
//! runs the load. See `bench/control/README.md`.

use std::{
    collections::{BTreeMap, VecDeque},
    fmt::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use futures_util::StreamExt as _;
use tokenwarden_core::{
    catalog::{Catalog, ModelPrices, Usage},
    config::{Endpoint, ObjectRef},
    ledger::{BudgetPeriodRef, UsageRecord},
    money::Usd,
};
use tokenwarden_proto::{
    self as pb, ConfigAck, Hello, OperatorMessage, SidecarMessage, UsageBatch,
    operator_message::Msg as Out, sidecar_message::Msg as In,
};
use tokenwarden_tests::fake_sidecar::FakeSidecar;
use tokio::sync::{mpsc, watch};
use tonic::transport::{Channel, Endpoint as GrpcEndpoint};

/// Apps per namespace: each pod is selected by its namespace's team budget
/// and by its app's budget.
const APPS: [&str; 2] = ["chat", "agent"];

#[derive(Debug, Parser)]
#[command(name = "tokenwarden-control-load", about)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the RoutingPolicies and TokenBudgets that select the simulated pods.
    Objects {
        /// Namespaces `bench-0` … `bench-<n-1>`.
        #[arg(long, default_value_t = 5)]
        namespaces: usize,
        /// Every budget's USD limit (a decimal string; no run reaches it).
        #[arg(long, default_value = "1000000.00")]
        limit_usd: String,
    },
    /// Run the load.
    Run(Box<RunArgs>),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The operator's gRPC control address.
    #[arg(long, default_value = "http://127.0.0.1:15810")]
    url: String,
    /// File holding the local-mode shared secret.
    #[arg(long)]
    secret_file: PathBuf,
    /// Simulated sidecars (one stream each).
    #[arg(long, default_value_t = 500)]
    sidecars: usize,
    /// HTTP/2 connections the streams share (round robin).
    #[arg(long, default_value_t = 10)]
    connections: usize,
    /// Namespaces (must match `objects --namespaces`).
    #[arg(long, default_value_t = 5)]
    namespaces: usize,
    /// Total usage records per second, spread evenly over the sidecars.
    #[arg(long, default_value_t = 20_000.0)]
    rate: f64,
    /// Smallest batch (records).
    #[arg(long, default_value_t = 10)]
    batch_min: u64,
    /// Largest batch (records).
    #[arg(long, default_value_t = 50)]
    batch_max: u64,
    /// Seconds of load.
    #[arg(long, default_value_t = 30)]
    duration_secs: u64,
    /// The objects file to edit mid-run (config propagation).
    #[arg(long)]
    objects_file: Option<PathBuf>,
    /// When to edit it, seconds after the load starts (default: half-way).
    #[arg(long)]
    edit_at_secs: Option<f64>,
    /// The edit: every occurrence of this string …
    #[arg(long, default_value = "usd: \"1000000.00\"")]
    edit_from: String,
    /// … becomes this one.
    #[arg(long, default_value = "usd: \"2000000.00\"")]
    edit_to: String,
    /// The operator's state dir: verify its ledgers at the end.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The operator's PID: sample its CPU time and RSS from /proc.
    #[arg(long)]
    operator_pid: Option<u32>,
    /// Clock ticks per second of /proc/<pid>/stat (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clk_tck: u64,
    /// Seconds to wait for every stream to be connected and configured.
    #[arg(long, default_value_t = 60)]
    connect_timeout_secs: u64,
    /// Seconds to wait after the load for the last acks.
    #[arg(long, default_value_t = 60)]
    drain_timeout_secs: u64,
    /// Write the results as JSON here.
    #[arg(long)]
    out_json: Option<PathBuf>,
    /// Seed of the record generator (and of the sidecar ids' suffix).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Command::Objects {
            namespaces,
            limit_usd,
        } => {
            print!("{}", objects_yaml(namespaces, &limit_usd));
            ExitCode::SUCCESS
        }
        Command::Run(args) => {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("tokenwarden-control-load: cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            match rt.block_on(run(*args)) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("tokenwarden-control-load: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

fn objects_yaml(namespaces: usize, limit: &str) -> String {
    let mut s = String::from(
        "# Generated by `tokenwarden-control-load objects`: what the simulated pods\n\
         # (labels tokenwarden.dev/bench=true, app=chat|agent) are selected by.\n",
    );
    for n in 0..namespaces {
        let ns = format!("bench-{n}");
        let _ = write!(
            s,
            r#"---
apiVersion: tokenwarden.dev/v1alpha1
kind: RoutingPolicy
metadata: {{name: routing, namespace: {ns}}}
spec:
  workloadSelector: {{matchLabels: {{tokenwarden.dev/bench: "true"}}}}
  providers:
    - {{name: openai, api: openai, baseUrl: "http://127.0.0.1:9", apiKeySecretRef: {{name: keys, key: openai}}}}
    - {{name: anthropic, api: anthropic, baseUrl: "http://127.0.0.1:9", apiKeySecretRef: {{name: keys, key: anthropic}}}}
  tiers:
    - {{name: cheap, provider: anthropic, model: claude-haiku-4-5}}
    - {{name: standard, provider: anthropic, model: claude-sonnet-4-5}}
  routes:
    - {{name: hard, match: {{complexityClass: Hard}}, target: {{tier: standard}}}}
    - {{name: default, target: {{tier: cheap}}}}
---
apiVersion: tokenwarden.dev/v1alpha1
kind: TokenBudget
metadata: {{name: team-daily, namespace: {ns}}}
spec:
  workloadSelector: {{matchLabels: {{tokenwarden.dev/bench: "true"}}}}
  period: Daily
  limit: {{usd: "{limit}"}}
  thresholds:
    - {{percent: 80, action: Alert}}
"#
        );
        for app in APPS {
            let _ = write!(
                s,
                r#"---
apiVersion: tokenwarden.dev/v1alpha1
kind: TokenBudget
metadata: {{name: {app}-daily, namespace: {ns}}}
spec:
  workloadSelector: {{matchLabels: {{app: {app}}}}}
  period: Daily
  limit: {{usd: "{limit}"}}
"#
            );
        }
    }
    s
}

// ---- records -----------------------------------------------------------------

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One kind of traffic: what was asked for, what served it, at what price.
struct Kind {
    endpoint: Endpoint,
    requested: &'static str,
    served: &'static str,
    provider: &'static str,
    route: Option<&'static str>,
    prices: ModelPrices,
}

fn kinds() -> anyhow::Result<Vec<Kind>> {
    let table: [(Endpoint, &str, &str, &str, Option<&str>); 5] = [
        (
            Endpoint::Messages,
            "claude-opus-4-1",
            "claude-haiku-4-5",
            "anthropic",
            Some("default"),
        ),
        (
            Endpoint::Messages,
            "claude-opus-4-1",
            "claude-sonnet-4-5",
            "anthropic",
            Some("hard"),
        ),
        (
            Endpoint::ChatCompletions,
            "gpt-5",
            "gpt-5-mini",
            "openai",
            None,
        ),
        (
            Endpoint::Responses,
            "gpt-4.1",
            "gpt-4.1-mini",
            "openai",
            None,
        ),
        (
            Endpoint::Embeddings,
            "text-embedding-3-small",
            "text-embedding-3-small",
            "openai",
            None,
        ),
    ];
    table
        .into_iter()
        .map(|(endpoint, requested, served, provider, route)| {
            let m = Catalog::builtin()
                .lookup(Some(provider), served)
                .with_context(|| format!("no built-in price for {provider}/{served}"))?;
            Ok(Kind {
                endpoint,
                requested,
                served,
                provider,
                route,
                prices: m.prices.clone(),
            })
        })
        .collect()
}

fn make_record(
    rng: &mut Rng,
    kinds: &[Kind],
    seq: u64,
    budgets: &[BudgetPeriodRef],
) -> (UsageRecord, i128) {
    let k = &kinds[(rng.next() % kinds.len() as u64) as usize];
    let usage = if k.endpoint == Endpoint::Embeddings {
        Usage {
            input_tokens: rng.range(50, 2_000),
            ..Usage::default()
        }
    } else {
        let cached = rng.next().is_multiple_of(3);
        Usage {
            input_tokens: rng.range(200, 6_000),
            output_tokens: rng.range(20, 1_500),
            cache_read_tokens: if cached { rng.range(1_000, 20_000) } else { 0 },
            cache_write_tokens: if rng.next().is_multiple_of(10) {
                rng.range(500, 4_000)
            } else {
                0
            },
        }
    };
    let cost = k.prices.cost(&usage);
    let score = u16::try_from(rng.next() % 100).unwrap_or(0);
    let rec = UsageRecord {
        seq,
        ts: jiff::Timestamp::now(),
        endpoint: k.endpoint,
        requested_model: k.requested.to_string(),
        served_model: k.served.to_string(),
        provider: k.provider.to_string(),
        route: k.route.map(str::to_string),
        score: (k.endpoint != Endpoint::Embeddings).then_some(score),
        reason: (k.endpoint != Endpoint::Embeddings)
            .then(|| format!("score {score}: +{} turns, +code block", 1 + score / 10)),
        attempt: 1,
        status: 200,
        usage,
        cost: Some(cost),
        estimated: false,
        budgets: budgets.to_vec(),
        intent: None,
    };
    (rec, cost.picos())
}

// ---- one simulated sidecar -----------------------------------------------------

struct Identity {
    sidecar_id: String,
    namespace: String,
    pod_name: String,
    pod_uid: String,
    app: &'static str,
}

fn identity(i: usize, namespaces: usize, seed: u64) -> Identity {
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
struct SidecarResult {
    records_sent: u64,
    records_acked: u64,
    records_acked_in_window: u64,
    batches_sent: u64,
    /// Send → covering ack, microseconds, one per batch.
    latencies_us: Vec<u64>,
    /// Cost sent, per budget `ns/name`.
    cost_by_budget: BTreeMap<String, i128>,
    cost_sent: i128,
    /// Snapshots received: (version, when).
    snapshots: Vec<(String, Instant)>,
    budget_statuses: u64,
    /// Worst delay behind the send schedule.
    max_send_lag: Duration,
    ready: bool,
    unacked_batches: usize,
    error: Option<String>,
}

struct Shared {
    kinds: Vec<Kind>,
    args: RunArgs,
    secret: String,
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
type Window = watch::Receiver<Option<(Instant, Instant)>>;

async fn sidecar(
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
    let hello = Hello {
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
        credential: shared.secret.clone(),
        config_version: String::new(),
    };
    // Connect (retry while the operator is starting) and wait for the
    // first snapshot and the status of every budget that selects the pod.
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
    let _ = ready.send(Ok(())).await;
    res.ready = true;
    let (start, end) = loop {
        if let Some(w) = *window.borrow_and_update() {
            break w;
        }
        // Keep reading while waiting (the operator drops streams that do not read).
        tokio::select! {
            r = window.changed() => if r.is_err() { bail!("cancelled") },
            m = stream.rx.next() => match m {
                Some(Ok(m)) => on_message(m, &stream.tx, &mut periods, &mut VecDeque::new(), res, None),
                Some(Err(s)) => bail!("stream error: {s}"),
                None => bail!("stream ended"),
            },
        }
    };

    // The load.
    let mut rng = Rng::new(args.seed.wrapping_add(i as u64 * 7919));
    let per_sec = args.rate / args.sidecars as f64;
    let mean = (args.batch_min + args.batch_max) as f64 / 2.0;
    let phase = Duration::from_secs_f64(rng.unit() * mean / per_sec);
    let mut next_send = start + phase;
    let mut seq = 0u64;
    let mut pending: VecDeque<(u64, u64, Instant)> = VecDeque::new();
    let drain_deadline = end + Duration::from_secs(args.drain_timeout_secs);
    loop {
        let sending = next_send < end;
        if !sending && pending.is_empty() {
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
                let n = rng.range(args.batch_min, args.batch_max);
                let budgets: Vec<BudgetPeriodRef> = wanted
                    .iter()
                    .filter_map(|b| {
                        let start = jiff::Timestamp::from_second(*periods.get(b)?).ok()?;
                        Some(BudgetPeriodRef { budget: b.clone(), period_start: start })
                    })
                    .collect();
                let mut records = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
                for _ in 0..n {
                    seq += 1;
                    let (rec, cost) = make_record(&mut rng, &shared.kinds, seq, &budgets);
                    res.cost_sent += cost;
                    for b in &budgets {
                        *res.cost_by_budget.entry(format!("{}/{}", b.budget.namespace, b.budget.name)).or_default() += cost;
                    }
                    records.push(pb::record_to_wire(&id.sidecar_id, &id.pod_name, &rec));
                }
                pending.push_back((seq, n, Instant::now()));
                stream
                    .tx
                    .send(SidecarMessage { msg: Some(In::Usage(UsageBatch { records })) })
                    .map_err(|_| anyhow::anyhow!("outbound queue closed"))?;
                res.records_sent += n;
                res.batches_sent += 1;
                next_send += Duration::from_secs_f64(n as f64 / per_sec);
            }
            m = stream.rx.next() => match m {
                Some(Ok(m)) => on_message(m, &stream.tx, &mut periods, &mut pending, res, Some(end)),
                Some(Err(s)) => bail!("stream error: {s}"),
                None => bail!("stream ended"),
            },
        }
    }
    res.unacked_batches = pending.len();
    Ok(stream)
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
    pending: &mut VecDeque<(u64, u64, Instant)>,
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

// ---- /proc ---------------------------------------------------------------------

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rsplit_once(')')
        .map(|(_, a)| a)
        .context("malformed /proc stat")?;
    let f: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = f.get(11).context("no utime")?.parse()?;
    let stime: u64 = f.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

/// (VmRSS, VmHWM) of `pid`, KiB.
fn rss_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name}"))?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("malformed status")?
            .parse()?)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

fn self_pid() -> u32 {
    std::process::id()
}

// ---- the run -------------------------------------------------------------------

async fn connect(url: &str, deadline: Instant) -> anyhow::Result<Channel> {
    let ep = GrpcEndpoint::from_shared(url.to_string())
        .context("--url")?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    loop {
        match ep.connect().await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).context(format!("connect {url}")),
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(us: u64) -> String {
    format!("{:.1}", us as f64 / 1000.0)
}

fn edit_file(path: &Path, from: &str, to: &str) -> anyhow::Result<usize> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let n = text.matches(from).count();
    if n == 0 {
        bail!("{} does not contain {from:?}", path.display());
    }
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let tmp = dir.join(".control-load-edit.tmp");
    std::fs::write(&tmp, text.replace(from, to))?;
    // Atomic: the operator never reads a half-written file.
    std::fs::rename(&tmp, path)?;
    Ok(n)
}

/// The operator's ledgers: (per budget spentPicos and requests, cluster
/// ledger cost picos and requests).
type Ledgers = (BTreeMap<String, (i128, u64)>, i128, u64);

fn read_ledgers(state: &Path) -> anyhow::Result<Ledgers> {
    let mut budgets = BTreeMap::new();
    let dir = state.join("status/tokenbudgets");
    for e in std::fs::read_dir(&dir).with_context(|| dir.display().to_string())? {
        let p = e?.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&p)?).with_context(|| p.display().to_string())?;
        let spent: i128 = v["ledger"]["spentPicos"]
            .as_str()
            .with_context(|| format!("{}: no .ledger.spentPicos", p.display()))?
            .parse()?;
        let requests = v["requests"].as_u64().unwrap_or(0);
        let stem = p
            .file_stem()
            .and_then(|s| s.to_str())
            .context("file name")?;
        let key = stem.replacen('.', "/", 1);
        budgets.insert(key, (spent, requests));
    }
    let lp = state.join("ledger.json");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&lp).with_context(|| lp.display().to_string())?)?;
    let mut cost = 0i128;
    let mut requests = 0u64;
    for row in v["rows"].as_array().context("ledger.json: no rows")? {
        let spend = &row[1];
        let c: Usd = spend["cost"]
            .as_str()
            .context("ledger.json: row without cost")?
            .parse()
            .map_err(|e| anyhow::anyhow!("ledger.json cost: {e}"))?;
        cost += c.picos();
        requests += spend["requests"].as_u64().unwrap_or(0);
    }
    Ok((budgets, cost, requests))
}

fn usd(picos: i128) -> String {
    Usd::from_picos(picos).to_string()
}

async fn run(args: RunArgs) -> anyhow::Result<bool> {
    if args.sidecars == 0 || args.connections == 0 || args.namespaces == 0 {
        bail!("--sidecars, --connections and --namespaces must be positive");
    }
    if args.batch_min == 0 || args.batch_max < args.batch_min || args.rate <= 0.0 {
        bail!("need 0 < --batch-min <= --batch-max and --rate > 0");
    }
    let secret = std::fs::read_to_string(&args.secret_file)
        .with_context(|| args.secret_file.display().to_string())?
        .trim()
        .to_string();
    let kinds = kinds()?;
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(args.connect_timeout_secs);
    let mut channels = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        channels.push(connect(&args.url, deadline).await?);
    }
    let n = args.sidecars;
    let duration = Duration::from_secs(args.duration_secs);
    let edit_at = args
        .edit_at_secs
        .map_or(duration / 2, Duration::from_secs_f64);
    let objects_file = args.objects_file.clone();
    let edit = (args.edit_from.clone(), args.edit_to.clone());
    let state_dir = args.state_dir.clone();
    let pid = args.operator_pid;
    let clk = args.clk_tck.max(1);
    let shared = Arc::new(Shared {
        kinds,
        args,
        secret,
    });
    let (ready_tx, mut ready_rx) = mpsc::channel(n);
    let (window_tx, window_rx) = watch::channel(None);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::channel(n);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        tasks.push(tokio::spawn(sidecar(
            i,
            channels[i % channels.len()].clone(),
            shared.clone(),
            ready_tx.clone(),
            done_tx.clone(),
            window_rx.clone(),
            shutdown_rx.clone(),
        )));
    }
    drop(ready_tx);
    drop(done_tx);
    let mut ok = 0;
    let mut failed = Vec::new();
    while ok + failed.len() < n {
        match tokio::time::timeout_at((deadline + Duration::from_secs(5)).into(), ready_rx.recv())
            .await
        {
            Ok(Some(Ok(()))) => ok += 1,
            Ok(Some(Err(e))) => failed.push(e),
            Ok(None) | Err(_) => break,
        }
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    if ok < n {
        shutdown_tx.send_replace(true);
        bail!(
            "only {ok}/{n} streams ready after {connect_secs:.1}s; first errors: {:?}",
            failed.iter().take(3).collect::<Vec<_>>()
        );
    }
    eprintln!("control-load: {n} streams connected and configured in {connect_secs:.1}s");

    // Before the load.
    let rss_before = pid.map(rss_kib).transpose()?;
    let cpu_before = pid.map(cpu_ticks).transpose()?;
    let self_cpu_before = cpu_ticks(self_pid())?;
    let start = Instant::now() + Duration::from_millis(100);
    let end = start + duration;
    window_tx.send_replace(Some((start, end)));

    // During: edit the objects mid-run, sample the operator's RSS.
    let mut edited: Option<(Instant, usize)> = None;
    let mut rss_peak = rss_before.map_or(0, |r| r.0);
    let mut next_sample = start;
    while Instant::now() < end {
        let now = Instant::now();
        if edited.is_none()
            && let Some(f) = &objects_file
            && now >= start + edit_at
        {
            let n = edit_file(f, &edit.0, &edit.1)?;
            edited = Some((Instant::now(), n));
            eprintln!(
                "control-load: edited {} ({n} replacements) at t={:.2}s",
                f.display(),
                (now - start).as_secs_f64()
            );
        }
        if now >= next_sample {
            if let Some(p) = pid {
                rss_peak = rss_peak.max(rss_kib(p)?.0);
            }
            next_sample += Duration::from_secs(1);
        }
        let mut wake = next_sample.min(end);
        if edited.is_none() && objects_file.is_some() {
            wake = wake.min(start + edit_at);
        }
        tokio::time::sleep_until(wake.into()).await;
    }
    let cpu_end_of_load = pid.map(cpu_ticks).transpose()?;

    // Every task drains its acks (bounded by --drain-timeout-secs), reports,
    // and keeps its stream open until the summary is taken.
    let drain_deadline =
        end + Duration::from_secs(shared.args.drain_timeout_secs) + Duration::from_secs(5);
    let mut slots: Vec<Option<SidecarResult>> = (0..n).map(|_| None).collect();
    for _ in 0..n {
        match tokio::time::timeout_at(drain_deadline.into(), done_rx.recv()).await {
            Ok(Some((i, r))) => slots[i] = Some(r),
            Ok(None) => bail!("sidecar tasks ended without reporting"),
            Err(_) => bail!("sidecar tasks did not finish their drain"),
        }
    }
    let results: Vec<SidecarResult> = slots.into_iter().flatten().collect();
    if results.len() != n {
        bail!("{} of {n} sidecars reported", results.len());
    }
    let drained_at = Instant::now();
    let cpu_after = pid.map(cpu_ticks).transpose()?;
    let rss_after = pid.map(rss_kib).transpose()?;
    let self_cpu_after = cpu_ticks(self_pid())?;
    drop(ready_rx);

    // ---- summary
    let secs = duration.as_secs_f64();
    let errors: Vec<&String> = results.iter().filter_map(|r| r.error.as_ref()).collect();
    let sent: u64 = results.iter().map(|r| r.records_sent).sum();
    let acked: u64 = results.iter().map(|r| r.records_acked).sum();
    let acked_window: u64 = results.iter().map(|r| r.records_acked_in_window).sum();
    let batches: u64 = results.iter().map(|r| r.batches_sent).sum();
    let unacked: usize = results.iter().map(|r| r.unacked_batches).sum();
    let max_lag = results
        .iter()
        .map(|r| r.max_send_lag)
        .max()
        .unwrap_or_default();
    let mut lat: Vec<u64> = results
        .iter()
        .flat_map(|r| r.latencies_us.iter().copied())
        .collect();
    lat.sort_unstable();
    let cost_sent: i128 = results.iter().map(|r| r.cost_sent).sum();
    let mut expected: BTreeMap<String, (i128, u64)> = BTreeMap::new();
    for r in &results {
        for (b, c) in &r.cost_by_budget {
            expected.entry(b.clone()).or_default().0 += c;
        }
    }
    // Requests per budget: every record of a sidecar counts in each of its budgets.
    for (i, r) in results.iter().enumerate() {
        let id = identity(i, shared.args.namespaces, shared.args.seed);
        for b in [
            format!("{}/team-daily", id.namespace),
            format!("{}/{}-daily", id.namespace, id.app),
        ] {
            expected.entry(b).or_default().1 += r.records_sent;
        }
    }

    // Config propagation: from the file write to the last stream's new snapshot.
    let propagation = edited.map(|(at, replacements)| {
        let mut times = Vec::with_capacity(n);
        let mut missing = 0;
        for r in &results {
            let before = r
                .snapshots
                .iter()
                .rev()
                .find(|(_, t)| *t < at)
                .map(|(v, _)| v);
            match r
                .snapshots
                .iter()
                .find(|(v, t)| *t >= at && Some(v) != before)
            {
                Some((_, t)) => {
                    times.push(u64::try_from((*t - at).as_micros()).unwrap_or(u64::MAX))
                }
                None => missing += 1,
            }
        }
        times.sort_unstable();
        (times, missing, replacements)
    });

    let mut out = String::new();
    let mut pass = errors.is_empty() && unacked == 0;
    let _ = writeln!(out, "### Load\n");
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(
        out,
        "| simulated sidecars (streams) | {n} over {} HTTP/2 connections |",
        channels.len()
    );
    let _ = writeln!(
        out,
        "| target rate | {:.0} records/s ({:.1}/s per sidecar), batches of {}–{} records |",
        shared.args.rate,
        shared.args.rate / n as f64,
        shared.args.batch_min,
        shared.args.batch_max
    );
    let _ = writeln!(out, "| duration | {secs:.0} s |");
    let _ = writeln!(
        out,
        "| streams connected + configured in | {connect_secs:.2} s |"
    );
    let _ = writeln!(out, "\n### Ingest\n");
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(
        out,
        "| records sent | {sent} in {batches} batches = **{:.0} records/s** |",
        sent as f64 / secs
    );
    let _ = writeln!(
        out,
        "| records acked during the load | {acked_window} = **{:.0} records/s** |",
        acked_window as f64 / secs
    );
    let _ = writeln!(
        out,
        "| records acked in total | {acked} (last ack {:.2} s after the load ended) |",
        (drained_at - end).as_secs_f64().max(0.0)
    );
    let _ = writeln!(out, "| batches never acked | {unacked} |");
    let _ = writeln!(
        out,
        "| load tool behind schedule (worst) | {:.1} ms |",
        max_lag.as_secs_f64() * 1000.0
    );
    let _ = writeln!(
        out,
        "\n### Ack latency (batch sent → `UsageAck` covering it), {} batches\n",
        lat.len()
    );
    let _ = writeln!(out, "| p50 | p90 | p99 | max |\n|---|---|---|---|");
    let _ = writeln!(
        out,
        "| {} ms | {} ms | {} ms | {} ms |",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.9)),
        ms(percentile(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or(0))
    );
    if let Some((times, missing, replacements)) = &propagation {
        let _ = writeln!(
            out,
            "\n### Config propagation (file write → new snapshot received), {n} streams\n"
        );
        let _ = writeln!(
            out,
            "Edit: {replacements} × `{}` → `{}` in one file, written atomically at t={:.1} s.\n",
            edit.0,
            edit.1,
            edit_at.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "| first stream | p50 | p99 | **last stream** | streams without the new snapshot |\n|---|---|---|---|---|"
        );
        let _ = writeln!(
            out,
            "| {} ms | {} ms | {} ms | **{} ms** | {missing} |",
            ms(times.first().copied().unwrap_or(0)),
            ms(percentile(times, 0.5)),
            ms(percentile(times, 0.99)),
            ms(times.last().copied().unwrap_or(0))
        );
        if *missing > 0 {
            pass = false;
        }
    }
    if let (Some(b), Some(a), Some(c0), Some(c1), Some(cl)) = (
        rss_before,
        rss_after,
        cpu_before,
        cpu_after,
        cpu_end_of_load,
    ) {
        let cpu_s = (c1 - c0) as f64 / clk as f64;
        let cpu_load_s = (cl - c0) as f64 / clk as f64;
        let _ = writeln!(out, "\n### Operator process (/proc)\n");
        let _ = writeln!(out, "| | |\n|---|---|");
        let _ = writeln!(
            out,
            "| RSS before the load (streams connected) | {:.1} MiB |",
            b.0 as f64 / 1024.0
        );
        let _ = writeln!(
            out,
            "| RSS after the load (streams connected) | {:.1} MiB |",
            a.0 as f64 / 1024.0
        );
        let _ = writeln!(out, "| RSS peak (VmHWM) | {:.1} MiB |", a.1 as f64 / 1024.0);
        let _ = writeln!(
            out,
            "| CPU time during the load | {cpu_load_s:.2} s in {secs:.0} s = {:.0}% of one core |",
            cpu_load_s / secs * 100.0
        );
        let _ = writeln!(
            out,
            "| CPU time load + drain, per 1k records acked | {:.2} ms |",
            if acked > 0 {
                cpu_s * 1000.0 / (acked as f64 / 1000.0)
            } else {
                0.0
            }
        );
        let _ = writeln!(
            out,
            "| RSS sampled peak (1 s) | {:.1} MiB |",
            rss_peak as f64 / 1024.0
        );
    }
    let self_cpu = (self_cpu_after.saturating_sub(self_cpu_before)) as f64 / clk as f64;
    let _ = writeln!(
        out,
        "\nLoad tool CPU over the same time: {self_cpu:.2} s (it shares the 2 cores with the operator)."
    );

    // ---- correctness
    let _ = writeln!(out, "\n### Ledger check (after the last ack)\n");
    let _ = writeln!(out, "Cost sent: ${} in {sent} records.\n", usd(cost_sent));
    if let Some(state) = &state_dir {
        let (budgets, ledger_cost, ledger_requests) = read_ledgers(state)?;
        let _ = writeln!(out, "| ledger | expected | operator | |\n|---|---|---|---|");
        let mut all = true;
        let ok_mark = |b: bool| if b { "ok" } else { "**MISMATCH**" };
        let lok = ledger_cost == cost_sent && ledger_requests == sent;
        all &= lok;
        let _ = writeln!(
            out,
            "| cluster ledger (`ledger.json`) | ${} / {sent} req | ${} / {ledger_requests} req | {} |",
            usd(cost_sent),
            usd(ledger_cost),
            ok_mark(lok)
        );
        let budgets_total: i128 = budgets.values().map(|v| v.0).sum();
        let expected_total: i128 = expected.values().map(|v| v.0).sum();
        for (b, (cost, reqs)) in &expected {
            let got = budgets.get(b).copied().unwrap_or_default();
            let good = got.0 == *cost && got.1 == *reqs;
            all &= good;
            let _ = writeln!(
                out,
                "| TokenBudget {b} `.ledger.spentPicos` | {cost} / {reqs} req | {} / {} req | {} |",
                got.0,
                got.1,
                ok_mark(good)
            );
        }
        let _ = writeln!(
            out,
            "| all TokenBudgets (each record counts in 2) | ${} | ${} | {} |",
            usd(expected_total),
            usd(budgets_total),
            ok_mark(budgets_total == expected_total)
        );
        all &= budgets_total == expected_total;
        let _ = writeln!(out, "\nLEDGER CHECK: {}", if all { "PASS" } else { "FAIL" });
        pass &= all;
    }
    if !errors.is_empty() {
        let _ = writeln!(
            out,
            "\n{} stream errors, first: {}",
            errors.len(),
            errors[0]
        );
    }
    print!("{out}");
    // Let the streams go.
    shutdown_tx.send_replace(true);
    drop((window_tx, shutdown_rx));
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    if let Some(p) = &shared.args.out_json {
        let j = serde_json::json!({
            "sidecars": n,
            "connections": channels.len(),
            "rate_target": shared.args.rate,
            "duration_secs": secs,
            "records_sent": sent,
            "records_acked": acked,
            "records_acked_in_window": acked_window,
            "sent_per_sec": sent as f64 / secs,
            "acked_per_sec_in_window": acked_window as f64 / secs,
            "ack_latency_ms": {
                "p50": percentile(&lat, 0.5) as f64 / 1000.0,
                "p90": percentile(&lat, 0.9) as f64 / 1000.0,
                "p99": percentile(&lat, 0.99) as f64 / 1000.0,
                "max": lat.last().copied().unwrap_or(0) as f64 / 1000.0,
            },
            "propagation_ms": propagation.as_ref().map(|(t, missing, _)| serde_json::json!({
                "first": t.first().copied().unwrap_or(0) as f64 / 1000.0,
                "p50": percentile(t, 0.5) as f64 / 1000.0,
                "last": t.last().copied().unwrap_or(0) as f64 / 1000.0,
                "missing": missing,
            })),
            "operator_rss_kib": {
                "before": rss_before.map(|r| r.0),
                "after": rss_after.map(|r| r.0),
                "hwm": rss_after.map(|r| r.1),
            },
            "operator_cpu_secs": cpu_before.zip(cpu_after).map(|(a, b)| (b - a) as f64 / clk as f64),
            "cost_sent_picos": cost_sent.to_string(),
            "errors": errors.len(),
            "pass": pass,
        });
        std::fs::write(p, serde_json::to_vec_pretty(&j)?)?;
    }
    Ok(pass)
}
