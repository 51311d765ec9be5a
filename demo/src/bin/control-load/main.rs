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
//!
//! Modules: [`args`] (the command line), [`objects`] (the YAML), [`records`] (what is sent),
//! [`sidecar`] (one simulated sidecar), [`procfs`] (the operator's CPU and
//! memory), [`report`] (totals, tables, JSON).

mod args;
mod objects;
mod procfs;
mod records;
mod report;
mod sidecar;

use std::{
    path::Path,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Parser as _;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tonic::transport::{Channel, Endpoint as GrpcEndpoint};

use crate::{
    args::{Cli, Command, RunArgs},
    procfs::{cpu_ticks, rss_kib, self_pid},
    records::kinds,
    report::{Measured, ProcStats},
    sidecar::{Shared, SidecarResult},
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Command::Objects {
            namespaces,
            limit_usd,
        } => {
            print!("{}", objects::objects_yaml(namespaces, &limit_usd));
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

fn edit_file(path: &Path, from: &str, to: &str) -> anyhow::Result<usize> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let n = text.matches(from).count();
    if n == 0 {
        bail!("{} does not contain {from:?}", path.display());
    }
    // Atomic: the operator never reads a half-written file.
    tokenwarden_durable::write_atomic(path, text.replace(from, to).as_bytes(), false)?;
    Ok(n)
}

/// The simulated sidecars' tasks and the channels that drive them.
struct Fleet {
    n: usize,
    tasks: Vec<JoinHandle<()>>,
    ready: mpsc::Receiver<Result<(), String>>,
    done: mpsc::Receiver<(usize, SidecarResult)>,
    window: watch::Sender<Option<(Instant, Instant)>>,
    shutdown: watch::Sender<bool>,
}

impl Fleet {
    /// One task per simulated sidecar, round robin over `channels`.
    fn start(shared: &Arc<Shared>, channels: &[Channel]) -> Fleet {
        let n = shared.args.sidecars;
        let (ready_tx, ready) = mpsc::channel(n);
        let (window, window_rx) = watch::channel(None);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (done_tx, done) = mpsc::channel(n);
        let tasks = (0..n)
            .map(|i| {
                tokio::spawn(sidecar::sidecar(
                    i,
                    channels[i % channels.len()].clone(),
                    shared.clone(),
                    ready_tx.clone(),
                    done_tx.clone(),
                    window_rx.clone(),
                    shutdown_rx.clone(),
                ))
            })
            .collect();
        Fleet {
            n,
            tasks,
            ready,
            done,
            window,
            shutdown,
        }
    }

    /// Wait until every stream is connected and configured (a few seconds
    /// past `deadline` at most).
    async fn ready(&mut self, deadline: Instant, t0: Instant) -> anyhow::Result<f64> {
        let n = self.n;
        let mut ok = 0;
        let mut failed = Vec::new();
        while ok + failed.len() < n {
            match tokio::time::timeout_at(
                (deadline + Duration::from_secs(5)).into(),
                self.ready.recv(),
            )
            .await
            {
                Ok(Some(Ok(()))) => ok += 1,
                Ok(Some(Err(e))) => failed.push(e),
                Ok(None) | Err(_) => break,
            }
        }
        let connect_secs = t0.elapsed().as_secs_f64();
        if ok < n {
            self.shutdown.send_replace(true);
            bail!(
                "only {ok}/{n} streams ready after {connect_secs:.1}s; first errors: {:?}",
                failed.iter().take(3).collect::<Vec<_>>()
            );
        }
        Ok(connect_secs)
    }

    /// Every task drains its acks and reports (by `deadline`), keeping its
    /// stream open until [`Fleet::stop`].
    async fn results(&mut self, deadline: Instant) -> anyhow::Result<Vec<SidecarResult>> {
        let n = self.n;
        let mut slots: Vec<Option<SidecarResult>> = (0..n).map(|_| None).collect();
        for _ in 0..n {
            match tokio::time::timeout_at(deadline.into(), self.done.recv()).await {
                Ok(Some((i, r))) => slots[i] = Some(r),
                Ok(None) => bail!("sidecar tasks ended without reporting"),
                Err(_) => bail!("sidecar tasks did not finish their drain"),
            }
        }
        let results: Vec<SidecarResult> = slots.into_iter().flatten().collect();
        if results.len() != n {
            bail!("{} of {n} sidecars reported", results.len());
        }
        Ok(results)
    }

    /// Let the streams go.
    async fn stop(self) {
        self.shutdown.send_replace(true);
        drop(self.window);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

/// During the load: edit the objects file at `edit_at` (when given) and
/// sample the operator's RSS every second. Returns the edit (when, how many
/// replacements) and the sampled RSS peak.
async fn drive(
    args: &RunArgs,
    start: Instant,
    end: Instant,
    edit_at: Duration,
    rss_peak: &mut u64,
) -> anyhow::Result<Option<(Instant, usize)>> {
    let mut edited: Option<(Instant, usize)> = None;
    let mut next_sample = start;
    while Instant::now() < end {
        let now = Instant::now();
        if edited.is_none()
            && let Some(f) = &args.objects_file
            && now >= start + edit_at
        {
            let n = edit_file(f, &args.edit_from, &args.edit_to)?;
            edited = Some((Instant::now(), n));
            eprintln!(
                "control-load: edited {} ({n} replacements) at t={:.2}s",
                f.display(),
                (now - start).as_secs_f64()
            );
        }
        if now >= next_sample {
            if let Some(p) = args.operator_pid {
                *rss_peak = (*rss_peak).max(rss_kib(p)?.0);
            }
            next_sample += Duration::from_secs(1);
        }
        let mut wake = next_sample.min(end);
        if edited.is_none() && args.objects_file.is_some() {
            wake = wake.min(start + edit_at);
        }
        tokio::time::sleep_until(wake.into()).await;
    }
    Ok(edited)
}

fn check(args: &RunArgs) -> anyhow::Result<()> {
    if args.sidecars == 0 || args.connections == 0 || args.namespaces == 0 {
        bail!("--sidecars, --connections and --namespaces must be positive");
    }
    if args.batch_min == 0 || args.batch_max < args.batch_min || args.rate <= 0.0 {
        bail!("need 0 < --batch-min <= --batch-max and --rate > 0");
    }
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<bool> {
    check(&args)?;
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
    let pid = args.operator_pid;
    let shared = Arc::new(Shared {
        kinds,
        args,
        secret,
    });
    let args = &shared.args;
    let mut fleet = Fleet::start(&shared, &channels);
    let connect_secs = fleet.ready(deadline, t0).await?;
    eprintln!("control-load: {n} streams connected and configured in {connect_secs:.1}s");

    // Before the load.
    let rss_before = pid.map(rss_kib).transpose()?;
    let cpu_before = pid.map(cpu_ticks).transpose()?;
    let self_cpu_before = cpu_ticks(self_pid())?;
    let start = Instant::now() + Duration::from_millis(100);
    let end = start + duration;
    fleet.window.send_replace(Some((start, end)));
    let mut rss_peak = rss_before.map_or(0, |r| r.0);
    let edited = drive(args, start, end, edit_at, &mut rss_peak).await?;
    let cpu_end_of_load = pid.map(cpu_ticks).transpose()?;
    let drain_deadline =
        end + Duration::from_secs(args.drain_timeout_secs) + Duration::from_secs(5);
    let results = fleet.results(drain_deadline).await?;
    let drained_at = Instant::now();
    let cpu_after = pid.map(cpu_ticks).transpose()?;
    let rss_after = pid.map(rss_kib).transpose()?;
    let self_cpu_after = cpu_ticks(self_pid())?;

    let operator = match (
        rss_before,
        rss_after,
        cpu_before,
        cpu_end_of_load,
        cpu_after,
    ) {
        (Some(rss_before), Some(rss_after), Some(c0), Some(cl), Some(c1)) => Some(ProcStats {
            rss_before,
            rss_after,
            cpu: (c0, cl, c1),
            rss_peak,
        }),
        _ => None,
    };
    let measured = Measured {
        connections: channels.len(),
        connect_secs,
        duration,
        results,
        drained_after: drained_at.saturating_duration_since(end),
        edited,
        edit_at,
        operator,
        self_cpu_secs: self_cpu_after.saturating_sub(self_cpu_before) as f64
            / args.clk_tck.max(1) as f64,
    };
    let totals = report::totals(&measured, args);
    let (out, pass) = report::render(&measured, &totals, args)?;
    print!("{out}");
    fleet.stop().await;
    if let Some(p) = &args.out_json {
        let j = report::json(&measured, &totals, args, pass);
        std::fs::write(p, serde_json::to_vec_pretty(&j)?)?;
    }
    Ok(pass)
}
