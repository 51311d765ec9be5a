//! The tokenwarden operator: the control plane of the sidecars.
//!
//! - [`source`]: where RoutingPolicies and TokenBudgets come from and where
//!   their status goes (Kubernetes or a local directory), sidecar identity
//!   and leadership: the interfaces everything else is written against.
//! - [`engine`]: the state machine: config push, leases, the exactly-once
//!   ledger, status batching.
//! - [`control`]: the gRPC `Control.Session` server.
//! - [`args`]: the command line; [`mode`]: what local and Kubernetes mode
//!   set up; [`lead`]: running the engine while this replica leads.
//! - [`local`]: local mode (a watched directory, status files, a shared
//!   secret, a lock file for leadership); [`kube`]: the Kubernetes layer.
//! - [`admin`], [`metrics`]: `/healthz`, `/readyz`, `/metrics`, `/ledger`.
//! - [`usage_store`]: the optional per-request usage store (PostgreSQL).

pub mod admin;
pub mod args;
pub mod control;
pub mod engine;
pub mod kube;
pub mod lead;
pub mod local;
pub mod metrics;
pub mod mode;
pub mod otel;
pub mod source;
pub mod status;
pub mod tls;
pub mod usage_store;
pub mod webhook;

use std::{
    future::Future, net::SocketAddr, pin::Pin, process::ExitCode, sync::Arc, time::Duration,
};

use clap::Parser;
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};

use crate::{
    args::{Args, Command, LogFormat, check_listeners, is_loopback},
    engine::{Cmd, EngineConfig, UsageStoreHandle},
    lead::{Lead, Published},
    metrics::Metrics,
    mode::{Mode, StartError},
};

/// Exit code for invalid configuration (sysexits `EX_USAGE`).
pub const EXIT_CONFIG: u8 = 64;

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Rbac) = args.command {
        return match serde_json::to_string_pretty(&rbac()) {
            Ok(s) => {
                println!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tokenwarden-operator: {e}");
                ExitCode::from(1)
            }
        };
    }
    if let Some(Command::History(h)) = &args.command {
        return history(h);
    }
    if args.check_config {
        let Some(dir) = &args.local_dir else {
            eprintln!("tokenwarden-operator: --check-config needs --local-dir");
            return ExitCode::from(EXIT_CONFIG);
        };
        let report = local::check_dir(dir);
        print!("{}", report.render());
        return if report.ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_CONFIG)
        };
    }
    init_logging(args.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokenwarden-operator: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(run(args))
}

/// `history`: print from the usage store's views.
fn history(args: &usage_store::history::HistoryArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokenwarden-operator: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(usage_store::history::run(args)) {
        Ok(table) => {
            print!("{table}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tokenwarden-operator: usage store {e}");
            ExitCode::from(1)
        }
    }
}

/// Every Kubernetes API call of the operator: the kube layer's and the
/// webhook's, one entry per rule.
pub fn rbac() -> Vec<webhook::ApiCall> {
    let mut calls: Vec<webhook::ApiCall> = kube::api_calls()
        .into_iter()
        .map(|c| webhook::ApiCall {
            api_group: c.group,
            resource: c.resource,
            subresource: c.subresource,
            verbs: c.verbs.to_vec(),
            scope: match c.scope {
                kube::Scope::Cluster => "Cluster",
                kube::Scope::OperatorNamespace => "Namespace",
            },
            reason: c.reason,
        })
        .collect();
    calls.extend(webhook::api_calls());
    calls
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: a log file or a collector gets no escape codes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn config_error(msg: &str) -> ExitCode {
    eprintln!("tokenwarden-operator: {msg}");
    ExitCode::from(EXIT_CONFIG)
}

/// The two listeners, bound before anything else starts.
struct Listeners {
    grpc: TcpListener,
    admin: TcpListener,
    grpc_addr: SocketAddr,
    admin_addr: SocketAddr,
}

async fn bind(args: &Args) -> Result<Listeners, StartError> {
    let listen = |addr| move |source| StartError::Listen { addr, source };
    let grpc = TcpListener::bind(args.grpc_listen)
        .await
        .map_err(listen(args.grpc_listen))?;
    let admin = TcpListener::bind(args.admin_listen)
        .await
        .map_err(listen(args.admin_listen))?;
    let grpc_addr = grpc.local_addr().map_or(args.grpc_listen, |a| a);
    let admin_addr = admin.local_addr().map_or(args.admin_listen, |a| a);
    Ok(Listeners {
        grpc,
        admin,
        grpc_addr,
        admin_addr,
    })
}

/// The engine's command channel, published once this replica leads.
type EngineHandle = watch::Receiver<Option<mpsc::Sender<Cmd>>>;

type Serve = Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>;

async fn run(args: Args) -> ExitCode {
    // A collector misconfigured must not stop the control plane: it runs
    // without traces and says why.
    let traces = match otel::Traces::from_env() {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "OpenTelemetry traces are off");
            None
        }
    };
    if traces.is_some() {
        tracing::info!("exporting OpenTelemetry traces (OTEL_* environment)");
    }
    let started = match start(&args).await {
        Ok(s) => s,
        Err(e) => return config_error(&e.to_string()),
    };
    let Started {
        mut mode,
        serve,
        driver,
        engine,
    } = started;
    let code = tokio::select! {
        r = serve => {
            if let Err(e) = r {
                tracing::error!(error = %e, "control server failed");
            }
            ExitCode::from(1)
        }
        () = fatal(&mut mode) => ExitCode::from(1),
        () = shutdown_signal() => {
            tracing::info!("shutting down");
            ExitCode::SUCCESS
        }
    };
    hand_over(driver, &engine, &mut mode).await;
    if let Some(t) = &traces {
        t.flush(Duration::from_secs(2)).await;
    }
    code
}

/// Everything running, and what stopping it needs.
struct Started {
    mode: Mode,
    serve: Serve,
    driver: JoinHandle<()>,
    engine: EngineHandle,
}

/// Check the flags, bind, set the mode up and start the driver, the admin
/// server and the control server.
async fn start(args: &Args) -> Result<Started, StartError> {
    check_listeners(args)?;
    let listeners = bind(args).await?;
    let mode = match &args.local_dir {
        Some(dir) => mode::local(args, dir, listeners.grpc_addr)?,
        None => mode::kube(args, listeners.grpc_addr).await?,
    };
    let metrics = Arc::new(Metrics::new());
    let usage = usage_store(args, &metrics)?;
    let (engine_tx, engine) = watch::channel(None);
    let (synced_tx, synced) = watch::channel(false);
    let driver = tokio::spawn(lead::drive(
        Lead {
            source: mode.source.clone(),
            ledger: mode.ledger.clone(),
            usage,
            leadership: mode.leadership.clone(),
            cfg: engine_config(args),
            metrics: metrics.clone(),
        },
        Published {
            engine: engine_tx,
            synced: synced_tx,
        },
    ));
    tokio::spawn(admin::serve(
        listeners.admin,
        admin::AdminState {
            metrics: metrics.clone(),
            engine: engine.clone(),
            leadership: mode.leadership.clone(),
            synced,
            tls: mode.tls.clone(),
            ledger_access: mode.ledger_access.clone(),
        },
    ));
    let serve = control_server(&mode, listeners.grpc, listeners.grpc_addr, &engine, metrics)?;
    tracing::info!(
        grpc = %listeners.grpc_addr,
        admin = %listeners.admin_addr,
        tls = mode.tls.is_some(),
        "tokenwarden operator listening"
    );
    Ok(Started {
        mode,
        serve,
        driver,
        engine,
    })
}

/// The usage store, when `--usage-store-url` is given. Nothing connects
/// here: Postgres being down must not keep the operator from serving.
fn usage_store(
    args: &Args,
    metrics: &Arc<Metrics>,
) -> Result<Option<UsageStoreHandle>, StartError> {
    let Some(cfg) = args.usage_store.config() else {
        return Ok(None);
    };
    let store = Arc::new(usage_store::PgStore::new(&cfg)?);
    metrics.usage_store.enable();
    tokio::spawn(prepare_usage_store(store.clone(), metrics.clone()));
    tracing::info!(
        target = %store.target(),
        retention_months = cfg.retention_months,
        max_backlog = cfg.max_backlog,
        "usage store: writing every usage record to PostgreSQL"
    );
    Ok(Some(UsageStoreHandle {
        sink: store,
        max_backlog: cfg.max_backlog,
    }))
}

/// Connect, migrate and make this month's partitions at start (every
/// replica, leading or not), so the schema exists before the first record
/// and `tokenwarden_usage_store_up` says at once whether the database
/// answers; retried with backoff until it does.
async fn prepare_usage_store(store: Arc<usage_store::PgStore>, metrics: Arc<Metrics>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match store.ready().await {
            Ok(()) => {
                metrics.usage_store.up.set(1);
                return;
            }
            Err(e) => {
                metrics.usage_store.up.set(0);
                tracing::warn!(target = %store.target(), error = %e, "usage store not reachable yet; records wait (unacked) until it is");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

fn engine_config(args: &Args) -> EngineConfig {
    EngineConfig {
        lease_ttl: Duration::from_secs(args.lease_ttl_secs.max(1)),
        lease_grace: Duration::from_secs(args.lease_grace_secs),
        status_interval: Duration::from_millis(args.status_interval_ms.max(10)),
    }
}

/// The gRPC control server, over TLS when the mode has a certificate.
fn control_server(
    mode: &Mode,
    grpc: TcpListener,
    grpc_addr: SocketAddr,
    engine: &EngineHandle,
    metrics: Arc<Metrics>,
) -> Result<Serve, StartError> {
    let service = control::ControlService::new(
        mode.auth.clone(),
        mode.leadership.clone(),
        engine.clone(),
        metrics,
    );
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .tcp_nodelay(true)
        .add_service(service);
    let serve: Serve = match &mode.tls {
        Some(store) => {
            let cfg = tls::server_config(store).map_err(StartError::ControlTls)?;
            Box::pin(server.serve_with_incoming(tls::incoming(grpc, cfg)))
        }
        None => {
            if is_loopback(grpc_addr.ip()) {
                tracing::info!(
                    "the control server speaks plaintext on loopback (no --tls-cert-file)"
                );
            } else {
                tracing::warn!(
                    "the control server speaks plaintext on {grpc_addr} (--allow-plaintext-control)"
                );
            }
            let incoming =
                tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true));
            Box::pin(server.serve_with_incoming(incoming))
        }
    };
    Ok(serve)
}

/// Ends when the mode's fatal work (the webhook server) ends; never
/// without one.
async fn fatal(mode: &mut Mode) {
    match mode.fatal.as_mut() {
        Some(task) => match task.await {
            Ok(Ok(())) => tracing::error!("the webhook server stopped"),
            Ok(Err(e)) => {
                tracing::error!(error = format!("{e:#}"), "the webhook server failed")
            }
            Err(e) => tracing::error!(error = %e, "the webhook server panicked"),
        },
        None => std::future::pending().await,
    }
}

/// How long a stopping leader waits for its status writes.
const SHUTDOWN_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Hand over cleanly: the engine finishes its writes and ends the
/// sessions; only then may another replica lead.
async fn hand_over(driver: JoinHandle<()>, engine: &EngineHandle, mode: &mut Mode) {
    driver.abort();
    let engine = engine.borrow().clone();
    if let Some(engine) = engine {
        let (done_tx, done_rx) = oneshot::channel();
        if engine.send(Cmd::Shutdown(done_tx)).await.is_ok()
            && tokio::time::timeout(SHUTDOWN_WRITE_TIMEOUT, done_rx)
                .await
                .is_err()
        {
            tracing::warn!("status writes still in flight at shutdown");
        }
    }
    if let Some((stop, task)) = mode.release.take() {
        let _ = stop.send(());
        if tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .is_err()
        {
            tracing::warn!("the Lease was not released in time; it expires on its own");
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
