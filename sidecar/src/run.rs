//! Running the proxy: start-up, configuration reloads, listeners.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwapOption;
use jiff::Timestamp;
use tokenwarden_core::selector::Labels;
use tokenwarden_durable::Journal;
use tokio::net::TcpListener;

use crate::{
    args::{Args, LogFormat, config_error},
    control::{Control, sidecar_id},
    metrics::Metrics,
    policy_file::PolicySet,
    state::{Active, Options, Shared},
};

/// Where the config comes from.
#[derive(Debug)]
pub enum Mode {
    /// A policy file compiled for this workload.
    Standalone {
        /// The file or directory.
        policy: PathBuf,
        /// The workload's labels.
        labels: Labels,
        /// The policies as first read.
        set: PolicySet,
        /// What the files looked like just before that read (so a change
        /// made between the read and the first poll is not missed).
        seen: Fingerprint,
    },
    /// Snapshots pushed by the operator.
    Connected(crate::control::Settings),
}

/// Start the proxy; returns when it cannot continue.
pub fn run(args: Args, mode: Mode) -> ExitCode {
    init_logging(args.log_format);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokenwarden-sidecar: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(serve(args, mode))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal, never into a file or a
    // log collector.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The process, step by step: state, first config, listeners, the
/// background tasks; returns when the proxy stops or a signal arrives.
async fn serve(args: Args, mode: Mode) -> ExitCode {
    let (shared, outbox) = match shared_state(&args, &mode) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let secrets_seen = first_config(&shared, &args, &mode);
    let (app, admin) = match bind(&args).await {
        Ok(l) => l,
        Err(code) => return code,
    };
    announce(&args, &mode, &app, &admin);
    spawn_config_source(&shared, &args, mode, outbox, secrets_seen);
    tokio::spawn(budget_ticker(shared.clone()));
    let proxy = spawn_listeners(&shared, &args, app, admin);
    tokio::select! {
        _ = proxy => ExitCode::from(1),
        () = shutdown_signal() => {
            tracing::info!("shutting down");
            persist_burn(&shared, true);
            // Both at once: the wait is bounded by one OTEL_FLUSH.
            let traces = async {
                if let Some(otel) = &shared.otel {
                    otel.flush(OTEL_FLUSH).await;
                }
            };
            let metrics = async {
                if let Some(m) = &shared.otel_metrics {
                    m.flush(OTEL_FLUSH).await;
                }
            };
            tokio::join!(traces, metrics);
            ExitCode::SUCCESS
        }
    }
}

/// How long a shutdown waits for the queued spans and the last metrics to
/// reach the collector.
const OTEL_FLUSH: Duration = Duration::from_secs(2);

/// The session's outbox (lease requests), in connected mode.
type Outbox = tokio::sync::mpsc::UnboundedReceiver<tokenwarden_proto::SidecarMessage>;

/// Everything request handling shares, built before anything listens: the
/// upstream client, the journal (with the attempts a previous run left in
/// flight recorded), the connected-mode state.
fn shared_state(args: &Args, mode: &Mode) -> Result<(Arc<Shared>, Option<Outbox>), ExitCode> {
    let client = crate::upstream::client(args.ca_bundle.as_deref())
        .map_err(|e| config_error(&format!("--ca-bundle: {e}")))?;
    let mut journal = open_journal(args, matches!(mode, Mode::Connected(_)))?;
    let (control, outbox) = match mode {
        Mode::Standalone { .. } => (None, None),
        Mode::Connected(settings) => {
            let (control, outbox) = control_state(settings)?;
            (Some(control), Some(outbox))
        }
    };
    recover_unsettled(&mut journal);
    let metrics = Metrics::new();
    let cache_errors = metrics.response_cache_errors();
    // A collector misconfigured for a whole fleet must not stop its
    // traffic: the sidecar runs without traces and says why.
    let otel = match crate::otel::Otel::from_env(metrics.otel_dropped()) {
        Ok(otel) => otel,
        Err(e) => {
            tracing::error!(error = %e, "OpenTelemetry traces are off");
            None
        }
    };
    if otel.is_some() {
        tracing::info!("exporting OpenTelemetry traces (OTEL_* environment)");
    }
    let otel_metrics = match crate::otel::OtelMetrics::from_env(metrics.otel_metric_failures()) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "OpenTelemetry metrics are off");
            None
        }
    };
    if otel_metrics.is_some() {
        tracing::info!("exporting OpenTelemetry metrics (OTEL_* environment)");
    }
    let shared = Arc::new(Shared {
        options: Options {
            max_body_bytes: args.max_body_bytes,
            secrets_dir: args.secrets_dir.clone(),
            buffer_response_bytes: 1024 * 1024,
            reservation_wait: std::time::Duration::from_millis(args.reservation_wait_ms),
            ledger_fail_open: args.ledger_fail_open,
            body_timeout: Duration::from_millis(args.body_timeout_ms.max(1)),
            upstream_idle: Duration::from_millis(args.upstream_idle_timeout_ms.max(1)),
            prompt_cache_ttl: args.prompt_cache_ttl_ms.map(Duration::from_millis),
            workload: workload_label(args, mode),
            pod_name: args.pod_name.clone(),
        },
        reservations_freed: Default::default(),
        active: ArcSwapOption::empty(),
        budgets: Mutex::new(Default::default()),
        burn: Mutex::new(crate::forecast::BurnBook::open(args.state_dir.as_deref())),
        journal: Mutex::new(journal),
        metrics,
        client,
        repeats: Mutex::new(Default::default()),
        control,
        prompt_cache: crate::prompt_cache::PromptCache::new(
            args.prompt_cache_ttl_ms.map(Duration::from_millis),
        ),
        otel,
        otel_metrics,
        response_cache: crate::response_cache::ResponseCache::new(
            args.secrets_dir.clone(),
            cache_errors,
        ),
    });
    shared.metrics.ledger_writable(true);
    Ok((shared, outbox))
}

/// The usage journal: under `--state-dir`, else in memory; spooling
/// records for the operator when `connected`.
fn open_journal(args: &Args, connected: bool) -> Result<Journal, ExitCode> {
    match &args.state_dir {
        Some(dir) => {
            let mut journal = Journal::open(dir, args.ledger_fsync, connected).map_err(|e| {
                eprintln!("tokenwarden-sidecar: cannot open the ledger: {e}");
                ExitCode::from(1)
            })?;
            journal.set_replay_keep_bytes(args.replay_keep_bytes);
            Ok(journal)
        }
        None => {
            tracing::warn!("no --state-dir: the ledger is kept in memory and lost on exit");
            if connected {
                tracing::warn!(
                    "no --state-dir: usage records not yet acked by the operator are kept in memory only and lost if the sidecar dies"
                );
            }
            Ok(Journal::memory(connected))
        }
    }
}

/// Connected mode's shared state, under this sidecar's id.
fn control_state(settings: &crate::control::Settings) -> Result<(Arc<Control>, Outbox), ExitCode> {
    let id = sidecar_id(settings.state_dir.as_deref(), &settings.pod_uid).map_err(|e| {
        eprintln!("tokenwarden-sidecar: cannot create the sidecar id: {e}");
        ExitCode::from(1)
    })?;
    let (control, outbox) = Control::new(id, settings.pod_name.clone(), settings.lease_wait);
    Ok((Arc::new(control), outbox))
}

/// Install the config the proxy starts with: the policy file compiled
/// (standalone), or the last good snapshot (connected). Returns the
/// fingerprint of the keys the secrets loop starts from.
fn first_config(shared: &Shared, args: &Args, mode: &Mode) -> Fingerprint {
    match mode {
        Mode::Standalone { labels, set, .. } => {
            let cfg = set.compile(&args.namespace, &args.pod_name, labels);
            for w in &cfg.warnings {
                tracing::warn!(warning = %w, "configuration warning");
            }
            let active = Active::new(cfg, args.secrets_dir.as_deref());
            for p in active.keys.problems() {
                tracing::warn!(problem = %p, "provider key unavailable");
            }
            shared.install(active, Timestamp::now());
            shared.metrics.reload(true);
            Fingerprint::new()
        }
        Mode::Connected(settings) => {
            // The keys' fingerprint before they are first read, so a
            // rotation during start-up is seen by the first poll.
            let seen = args
                .secrets_dir
                .as_deref()
                .map(|d| fingerprint(d, Some(d)))
                .unwrap_or_default();
            if let Some(control) = &shared.control {
                restore_connected(shared, control, settings);
            }
            seen
        }
    }
}

/// The app's and the admin listener.
async fn bind(args: &Args) -> Result<(TcpListener, TcpListener), ExitCode> {
    let listen = |addr: std::net::SocketAddr| async move {
        TcpListener::bind(addr).await.map_err(|e| {
            eprintln!("tokenwarden-sidecar: cannot listen on {addr}: {e}");
            ExitCode::from(1)
        })
    };
    let app = listen(args.listen).await?;
    let admin = listen(args.admin_listen).await?;
    Ok((app, admin))
}

/// The start-up log line: where the sidecar listens and what it serves.
fn announce(args: &Args, mode: &Mode, app: &TcpListener, admin: &TcpListener) {
    let listen = app
        .local_addr()
        .map_or_else(|_| args.listen.to_string(), |a| a.to_string());
    let admin = admin
        .local_addr()
        .map_or_else(|_| args.admin_listen.to_string(), |a| a.to_string());
    match mode {
        Mode::Standalone { policy, .. } => tracing::info!(
            listen = %listen,
            admin = %admin,
            policy = %policy.display(),
            "tokenwarden sidecar ready"
        ),
        Mode::Connected(settings) => tracing::info!(
            listen = %listen,
            admin = %admin,
            control_plane = %settings.url,
            "tokenwarden sidecar started (connected mode)"
        ),
    }
}

/// Where config changes come from: the policy file's reload loop
/// (standalone), or the operator's session and the provider keys' loop
/// (connected).
fn spawn_config_source(
    shared: &Arc<Shared>,
    args: &Args,
    mode: Mode,
    outbox: Option<Outbox>,
    secrets_seen: Fingerprint,
) {
    let every = Duration::from_millis(args.reload_interval_ms.max(50));
    match mode {
        Mode::Standalone {
            policy,
            labels,
            set,
            seen,
        } => {
            tokio::spawn(reload_loop(
                shared.clone(),
                Watch {
                    policy,
                    labels,
                    namespace: args.namespace.clone(),
                    pod_name: args.pod_name.clone(),
                    every,
                    seen,
                    has_objects: !set.is_empty(),
                },
            ));
        }
        Mode::Connected(settings) => {
            if let (Some(control), Some(outbox)) = (shared.control.clone(), outbox) {
                tokio::spawn(crate::session::run(
                    shared.clone(),
                    control,
                    settings,
                    outbox,
                ));
            }
            tokio::spawn(secrets_loop(shared.clone(), every, secrets_seen));
        }
    }
}

/// Serve the admin port and the proxy; the proxy's task, which ends only
/// when it cannot go on.
fn spawn_listeners(
    shared: &Arc<Shared>,
    args: &Args,
    app: TcpListener,
    admin: TcpListener,
) -> tokio::task::JoinHandle<()> {
    let limits = crate::server::Limits {
        header_timeout: Duration::from_millis(args.header_timeout_ms.max(1)),
    };
    let s = shared.clone();
    tokio::spawn(crate::server::serve(admin, limits, move |req, peer| {
        crate::admin::handle(s.clone(), req, peer)
    }));
    let s = shared.clone();
    // Accept on a worker, not in `block_on` on the main thread: a connection
    // accepted there is handed to a worker with a cross-thread wake-up.
    tokio::spawn(crate::server::serve(app, limits, move |req, _peer| {
        crate::proxy::handle(s.clone(), req)
    }))
}

/// Record the attempts the sidecar had in flight when it last stopped
/// (their intents have no record): each at its worst case, marked
/// estimated, spooled in connected mode so the operator counts them too.
/// Before budgets are built, so their spend includes them.
fn recover_unsettled(journal: &mut Journal) {
    let unsettled = journal.take_unsettled();
    if unsettled.is_empty() {
        return;
    }
    let n = unsettled.len();
    for mut record in unsettled {
        journal.stage(&mut record);
    }
    match journal.flush() {
        Ok(()) => tracing::warn!(
            requests = n,
            "requests were in flight when the sidecar stopped: recorded at their worst case, marked estimated"
        ),
        Err(e) => {
            tracing::error!(error = %e, requests = n, "cannot record the requests that were in flight when the sidecar stopped; counted in memory, recorded at the next start")
        }
    }
}

/// Once a second: roll budget periods that ended (they reset on schedule,
/// not at the next request), sample their burn for the forecast and
/// refresh the budget gauges (connected: the operator's projected
/// overrun of the current period too).
async fn budget_ticker(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Timestamp::now();
        let mut budgets = crate::sync::lock(&shared.budgets);
        let mut burn = crate::sync::lock(&shared.burn);
        if shared.active.load().is_some() {
            burn.retain(|id| budgets.contains_key(id));
        }
        for (id, b) in budgets.iter_mut() {
            if let Some((window, totals)) = b.roll(now) {
                tracing::info!(
                    budget = %id,
                    period_start = %window.start,
                    spent_usd = %totals.spent,
                    requests = totals.requests,
                    "budget period ended"
                );
            }
            observe_forecast(&shared, &mut burn, b, now);
            shared.metrics.budget(b);
            if shared.control.is_some() {
                // A roll-over ends the operator's projection of the
                // period that ended.
                shared.metrics.cluster_overrun(b);
            }
        }
        drop(burn);
        drop(budgets);
        persist_burn(&shared, false);
        if shared.control.is_some() {
            let journal = crate::sync::lock(&shared.journal);
            shared.metrics.spool(journal.depth(), journal.oldest());
        }
    }
}

/// Sample `b`'s burn and log when its forecast starts or stops reaching
/// a limit before the period's end (once per change). Standalone, that
/// forecast is the budget's projected overrun (`onProjectedOverrun`);
/// connected, the operator's cluster-wide one is.
fn observe_forecast(
    shared: &Shared,
    burn: &mut crate::forecast::BurnBook,
    b: &mut tokenwarden_core::budget::BudgetState,
    now: Timestamp,
) {
    use crate::forecast::Transition;
    use tokenwarden_core::workload::ProjectedOverrunAction;
    let change = burn.observe(b, now);
    if shared.control.is_none() {
        b.set_local_projection(burn.overrun(&b.config().source));
    }
    let id = &b.config().source;
    let f = burn.forecast(b, now);
    shared.metrics.budget_forecast(id, f.as_ref());
    // Connected, the operator's forecast (every pod's spend) is the one
    // that acts and is reported (the ProjectedOverrun condition and Event).
    let Some(change) = change.filter(|_| shared.control.is_none()) else {
        return;
    };
    let (spend, exhaustion) = f
        .as_ref()
        .map(|f| {
            (
                f.projected_spend().map(|u| u.to_string()),
                f.projected_exhaustion()
                    .map(tokenwarden_core::period::rfc3339_seconds),
            )
        })
        .unwrap_or_default();
    let spend = spend.unwrap_or_default();
    let exhaustion = exhaustion.unwrap_or_else(|| "-".into());
    let action = match &b.config().on_projected_overrun {
        Some(ProjectedOverrunAction::Downgrade(_)) if b.config().shadow => {
            "shadow budget: reported only".to_string()
        }
        Some(ProjectedOverrunAction::Downgrade(to)) => {
            format!(
                "requests go to {} until it clears",
                crate::forecast::target(to)
            )
        }
        _ => "alert only".to_string(),
    };
    match change {
        Transition::On => tracing::warn!(
            budget = %id,
            projected_spend_usd = %spend,
            projected_exhaustion = %exhaustion,
            action = %action,
            "budget projected to reach its limit before the period ends"
        ),
        Transition::Off => tracing::info!(
            budget = %id,
            projected_spend_usd = %spend,
            "budget no longer projected to reach its limit"
        ),
    }
}

/// Write the burn samples under the state dir when due (always with
/// `force`, at shutdown), outside the locks.
fn persist_burn(shared: &Shared, force: bool) {
    let due = crate::sync::lock(&shared.burn).due(Timestamp::now(), force);
    if let Some((path, bytes)) = due {
        crate::forecast::save(&path, &bytes);
    }
}

/// Connected mode at start-up: serve with the last good snapshot (if one
/// was persisted) and count the spool's unacked records in the leases.
fn restore_connected(shared: &Shared, control: &Control, settings: &crate::control::Settings) {
    if let Some(dir) = &settings.state_dir
        && let Some((version, cfg)) = crate::control::snapshot::load(dir, &settings.namespace)
    {
        let active = Active::new(cfg, shared.options.secrets_dir.as_deref());
        shared.install(active, Timestamp::now());
        *crate::sync::lock(&control.config_version) = version.clone();
        shared.metrics.snapshot(true, &version);
        tracing::info!(version = %version, "serving with the last good config snapshot until the operator answers");
    }
    let journal = crate::sync::lock(&shared.journal);
    for r in journal.unacked() {
        let actual = tokenwarden_core::budget::Held {
            cost: r.cost.unwrap_or(tokenwarden_core::money::Usd::ZERO),
            tokens: r.usage.total_tokens(),
        };
        for b in &r.budgets {
            let period = b.period_start.as_second();
            let budget = (b.budget.clone(), String::new());
            control.leases.record(&budget, r.seq, period, actual);
            if let Some(key) = &b.key {
                let lease = (b.budget.clone(), key.clone());
                control.leases.record(&lease, r.seq, period, actual);
            }
        }
    }
    shared.metrics.spool(journal.depth(), journal.oldest());
}

/// Connected mode: re-read provider keys when the secrets dir changes.
async fn secrets_loop(shared: Arc<Shared>, every: Duration, seen: Fingerprint) {
    let Some(dir) = shared.options.secrets_dir.clone() else {
        return;
    };
    let mut last = seen;
    loop {
        tokio::time::sleep(every).await;
        let now = fingerprint(&dir, Some(&dir));
        if now == last {
            continue;
        }
        last = now;
        if let Some(active) = shared.active.load_full() {
            let fresh = Active::new(active.cfg.clone(), Some(&dir));
            for p in fresh.keys.problems() {
                tracing::warn!(problem = %p, "provider key unavailable");
            }
            shared.install(fresh, Timestamp::now());
            tracing::info!("provider keys reloaded");
        }
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// What identifies a version of the policy file(s) and secrets on disk:
/// each file's path, length and modification time.
pub type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// How long a changed fingerprint must hold before the files are read: a
/// file rewritten in place (truncated, then written) is read whole, not
/// caught empty or cut at a document boundary.
const SETTLE: Duration = Duration::from_millis(100);

/// The [`Fingerprint`] of the policy file (or directory) and, with
/// `secrets`, of the keys under it.
pub fn fingerprint(policy: &Path, secrets: Option<&Path>) -> Fingerprint {
    let mut out = Vec::new();
    let mut visit = |p: &Path, depth: usize| {
        fn walk(p: &Path, depth: usize, out: &mut Fingerprint) {
            let Ok(meta) = std::fs::metadata(p) else {
                out.push((p.to_path_buf(), u64::MAX, None));
                return;
            };
            if meta.is_dir() && depth > 0 {
                if let Ok(rd) = std::fs::read_dir(p) {
                    let mut entries: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
                    entries.sort();
                    for e in entries {
                        walk(&e, depth - 1, out);
                    }
                }
            } else {
                out.push((p.to_path_buf(), meta.len(), meta.modified().ok()));
            }
        }
        walk(p, depth, &mut out);
    };
    visit(policy, 1);
    if let Some(s) = secrets {
        // DIR/<secret>/<key>; Kubernetes swaps a `..data` symlink on update.
        visit(s, 2);
    }
    out
}

/// `namespace/workload` for metrics (`namespace` when the workload has no
/// name: neither a naming label nor a pod name).
fn workload_label(args: &Args, mode: &Mode) -> String {
    let labels = match mode {
        Mode::Standalone { labels, .. } => labels,
        Mode::Connected(settings) => &settings.labels,
    };
    let name = tokenwarden_core::workload::workload_name(labels, &args.pod_name);
    if name.is_empty() {
        args.namespace.clone()
    } else {
        format!("{}/{name}", args.namespace)
    }
}

/// What the standalone reload loop watches.
struct Watch {
    policy: PathBuf,
    labels: Labels,
    namespace: String,
    /// This pod's name (names the workload when no label does).
    pod_name: String,
    every: Duration,
    /// The files' fingerprint when the running config was read.
    seen: Fingerprint,
    /// The running config came from files with at least one object.
    has_objects: bool,
}

/// Poll the policy file and secrets; reload on change or SIGHUP, keeping
/// the last good config when the new one is invalid. A change is read once
/// it has held for [`SETTLE`]; files that hold no object at all, where the
/// running config had some, are taken for a file caught mid-write and
/// rejected (a restart runs without policies on purpose).
async fn reload_loop(shared: Arc<Shared>, watch: Watch) {
    let Watch {
        policy,
        labels,
        namespace,
        pod_name,
        every,
        seen,
        mut has_objects,
    } = watch;
    let secrets = shared.options.secrets_dir.clone();
    let mut last = seen;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        let forced = match hup.as_mut() {
            Some(h) => tokio::select! {
                _ = h.recv() => true,
                () = tokio::time::sleep(every) => false,
            },
            None => {
                tokio::time::sleep(every).await;
                false
            }
        };
        let now = fingerprint(&policy, secrets.as_deref());
        if !forced && now == last {
            continue;
        }
        tokio::time::sleep(SETTLE.min(every)).await;
        if fingerprint(&policy, secrets.as_deref()) != now {
            // Still being written: look again at the next poll.
            continue;
        }
        last = now;
        match PolicySet::from_path(&policy) {
            Ok(set) if set.is_empty() && has_objects => {
                shared.metrics.reload(false);
                tracing::error!(
                    policy = %policy.display(),
                    "configuration rejected: the policy file holds no RoutingPolicy or TokenBudget (caught mid-write?); keeping the last good one (restart to run without policies)"
                );
            }
            Ok(set) => {
                has_objects = !set.is_empty();
                let cfg = set.compile(&namespace, &pod_name, &labels);
                for w in &cfg.warnings {
                    tracing::warn!(warning = %w, "configuration warning");
                }
                let active = Active::new(cfg, secrets.as_deref());
                for p in active.keys.problems() {
                    tracing::warn!(problem = %p, "provider key unavailable");
                }
                shared.install(active, Timestamp::now());
                shared.metrics.reload(true);
                tracing::info!(policy = %policy.display(), "configuration reloaded");
            }
            Err(e) => {
                shared.metrics.reload(false);
                tracing::error!(error = %e, "configuration rejected; keeping the last good one");
            }
        }
    }
}
