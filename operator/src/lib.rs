//! The tokenwarden operator: the control plane of the sidecars.
//!
//! - [`source`]: where RoutingPolicies and TokenBudgets come from and where
//!   their status goes (Kubernetes or a local directory), sidecar identity
//!   and leadership: the interfaces everything else is written against.
//! - [`engine`]: the state machine: config push, leases, the exactly-once
//!   ledger, status batching.
//! - [`control`]: the gRPC `Control.Session` server.
//! - [`local`]: local mode (a watched directory, status files, a shared
//!   secret, a lock file for leadership).
//! - [`admin`], [`metrics`]: `/healthz`, `/readyz`, `/metrics`, `/ledger`.

pub mod admin;
pub mod control;
pub mod engine;
pub mod kube;
pub mod local;
pub mod metrics;
pub mod source;
pub mod status;
pub mod webhook;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use clap::Parser;
use tokio::sync::watch;

use crate::{
    engine::{Engine, EngineConfig, LedgerStore},
    metrics::Metrics,
    source::{Authenticator, Leadership, ObjectSource},
};

/// Exit code for invalid configuration (sysexits `EX_USAGE`).
pub const EXIT_CONFIG: u8 = 64;

/// Log format.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// tokenwarden operator.
#[derive(Debug, Parser)]
#[command(name = "tokenwarden-operator", version, about)]
pub struct Args {
    /// Local mode: a directory of RoutingPolicy/TokenBudget YAML files
    /// (`*.yaml`, `*.yml`), watched, used instead of the Kubernetes API.
    #[arg(long, env = "TOKENWARDEN_LOCAL_DIR", value_name = "DIR")]
    pub local_dir: Option<PathBuf>,

    /// Validate every object in `--local-dir`, print one line per object and
    /// exit: 0 when all are valid, 64 otherwise.
    #[arg(long)]
    pub check_config: bool,

    /// Local mode: where status files, the cluster ledger, events and the
    /// leader lock live (default: `<local-dir>/.tokenwarden`).
    #[arg(long, env = "TOKENWARDEN_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Local mode: a file holding the secret every sidecar presents
    /// (at least 16 characters).
    #[arg(long, env = "TOKENWARDEN_SHARED_SECRET_FILE", value_name = "FILE")]
    pub shared_secret_file: Option<PathBuf>,

    /// gRPC control server (sidecars connect here).
    #[arg(long, env = "TOKENWARDEN_GRPC_LISTEN", default_value = "0.0.0.0:15810")]
    pub grpc_listen: SocketAddr,

    /// Admin endpoints: /healthz, /readyz, /metrics, /ledger.
    #[arg(
        long,
        env = "TOKENWARDEN_ADMIN_LISTEN",
        default_value = "0.0.0.0:15811"
    )]
    pub admin_listen: SocketAddr,

    /// PEM certificate (chain) of the gRPC server. Without it the control
    /// server speaks plaintext (local mode on loopback only).
    #[arg(
        long,
        env = "TOKENWARDEN_TLS_CERT_FILE",
        value_name = "FILE",
        requires = "tls_key_file"
    )]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of the gRPC server.
    #[arg(
        long,
        env = "TOKENWARDEN_TLS_KEY_FILE",
        value_name = "FILE",
        requires = "tls_cert_file"
    )]
    pub tls_key_file: Option<PathBuf>,

    /// This replica's control address, given to sidecars that reach a
    /// replica that does not lead (default: derived from the listen address).
    #[arg(long, env = "TOKENWARDEN_ADVERTISE_ADDRESS", value_name = "URL")]
    pub advertise_address: Option<String>,

    /// Lease lifetime: a sidecar cut off from the operator may spend its
    /// lease this long.
    #[arg(long, env = "TOKENWARDEN_LEASE_TTL_SECS", default_value_t = 30)]
    pub lease_ttl_secs: u64,

    /// How long after expiry an unspent lease is still held back (for
    /// requests in flight when it expired) before it returns to the pool.
    #[arg(long, env = "TOKENWARDEN_LEASE_GRACE_SECS", default_value_t = 60)]
    pub lease_grace_secs: u64,

    /// At most one status write per budget per this interval.
    #[arg(long, env = "TOKENWARDEN_STATUS_INTERVAL_MS", default_value_t = 1000)]
    pub status_interval_ms: u64,

    /// Log format.
    #[arg(long, env = "TOKENWARDEN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let args = Args::parse();
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

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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

/// What a mode provides to the common control plane.
pub struct Mode {
    /// Objects and status.
    pub source: Arc<dyn ObjectSource>,
    /// Sidecar identity.
    pub auth: Arc<dyn Authenticator>,
    /// Leadership.
    pub leadership: watch::Receiver<Leadership>,
    /// The cluster ledger store (local mode), and its saved state loader.
    pub ledger: Option<Arc<local::FileLedger>>,
}

async fn run(args: Args) -> ExitCode {
    let grpc = match tokio::net::TcpListener::bind(args.grpc_listen).await {
        Ok(l) => l,
        Err(e) => return config_error(&format!("cannot listen on {}: {e}", args.grpc_listen)),
    };
    let admin = match tokio::net::TcpListener::bind(args.admin_listen).await {
        Ok(l) => l,
        Err(e) => return config_error(&format!("cannot listen on {}: {e}", args.admin_listen)),
    };
    let grpc_addr = grpc.local_addr().map_or(args.grpc_listen, |a| a);
    let admin_addr = admin.local_addr().map_or(args.admin_listen, |a| a);
    let tls = match (&args.tls_cert_file, &args.tls_key_file) {
        (Some(c), Some(k)) => match (std::fs::read(c), std::fs::read(k)) {
            (Ok(cert), Ok(key)) => Some(tonic::transport::Identity::from_pem(cert, key)),
            (Err(e), _) => return config_error(&format!("{}: {e}", c.display())),
            (_, Err(e)) => return config_error(&format!("{}: {e}", k.display())),
        },
        _ => None,
    };
    let advertise = args.advertise_address.clone().unwrap_or_else(|| {
        let scheme = if tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{grpc_addr}")
    });
    let mode = match &args.local_dir {
        Some(dir) => match local_mode(&args, dir, advertise.clone()) {
            Ok(m) => m,
            Err(e) => return config_error(&e),
        },
        None => {
            return config_error(
                "Kubernetes mode is not available in this build; run with --local-dir DIR",
            );
        }
    };
    let metrics = Arc::new(Metrics::new());
    let (engine_tx, engine_rx) = watch::channel(None);
    let (synced_tx, synced_rx) = watch::channel(false);
    tokio::spawn(drive(
        mode.source.clone(),
        mode.ledger.clone(),
        mode.leadership.clone(),
        EngineConfig {
            lease_ttl: Duration::from_secs(args.lease_ttl_secs.max(1)),
            lease_grace: Duration::from_secs(args.lease_grace_secs),
            status_interval: Duration::from_millis(args.status_interval_ms.max(10)),
        },
        metrics.clone(),
        engine_tx,
        synced_tx,
    ));
    tokio::spawn(admin::serve(
        admin,
        admin::AdminState {
            metrics: metrics.clone(),
            engine: engine_rx.clone(),
            leadership: mode.leadership.clone(),
            synced: synced_rx,
        },
    ));
    let service = control::ControlService::new(
        mode.auth.clone(),
        mode.leadership.clone(),
        engine_rx,
        metrics.clone(),
    );
    let mut server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .tcp_nodelay(true);
    if let Some(identity) = tls {
        server =
            match server.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity)) {
                Ok(s) => s,
                Err(e) => return config_error(&format!("TLS: {e}")),
            };
    } else {
        tracing::warn!("the control server speaks plaintext (no --tls-cert-file)");
    }
    tracing::info!(grpc = %grpc_addr, admin = %admin_addr, advertise = %advertise, "tokenwarden operator listening");
    let incoming = tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true));
    let serve = server.add_service(service).serve_with_incoming(incoming);
    tokio::select! {
        r = serve => {
            if let Err(e) = r {
                tracing::error!(error = %e, "control server failed");
            }
            ExitCode::from(1)
        }
        () = shutdown_signal() => {
            tracing::info!("shutting down");
            ExitCode::SUCCESS
        }
    }
}

fn local_mode(args: &Args, dir: &std::path::Path, advertise: String) -> Result<Mode, String> {
    let state = args
        .state_dir
        .clone()
        .unwrap_or_else(|| dir.join(".tokenwarden"));
    let secret = args
        .shared_secret_file
        .as_deref()
        .ok_or("local mode needs --shared-secret-file (the secret sidecars present)")?;
    let auth = local::SharedSecret::from_file(secret)?;
    let source =
        local::LocalSource::start(dir.to_path_buf(), state.clone(), Duration::from_millis(200))
            .map_err(|e| format!("{}: {e}", state.display()))?;
    let leadership = local::local_leadership(&state, advertise)
        .map_err(|e| format!("leader lock in {}: {e}", state.display()))?;
    Ok(Mode {
        source,
        auth: Arc::new(auth),
        leadership,
        ledger: Some(Arc::new(local::FileLedger::new(&state))),
    })
}

/// Wait until this replica leads and the objects are synced, then run the
/// engine and feed it object changes.
async fn drive(
    source: Arc<dyn ObjectSource>,
    ledger: Option<Arc<local::FileLedger>>,
    mut leadership: watch::Receiver<Leadership>,
    cfg: EngineConfig,
    metrics: Arc<Metrics>,
    engine_tx: watch::Sender<Option<tokio::sync::mpsc::Sender<engine::Cmd>>>,
    synced_tx: watch::Sender<bool>,
) {
    let mut objects = source.objects();
    let first = loop {
        if let Some(o) = objects.borrow_and_update().clone() {
            break o;
        }
        if objects.changed().await.is_err() {
            return;
        }
    };
    synced_tx.send_replace(true);
    loop {
        if leadership.borrow_and_update().leader {
            break;
        }
        if leadership.changed().await.is_err() {
            return;
        }
    }
    metrics.leader.set(1);
    // Leading: statuses are ours now; read them fresh (a previous leader
    // may have written since the first load).
    let latest = objects.borrow_and_update().clone().unwrap_or(first);
    let saved = match &ledger {
        Some(l) => match l.load() {
            Ok(s) => Some((s, l.clone() as Arc<dyn LedgerStore>)),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the cluster ledger; refusing to lead");
                std::process::exit(1);
            }
        },
        None => None,
    };
    let tx = Engine::spawn(cfg, source.clone(), saved, metrics, latest);
    engine_tx.send_replace(Some(tx.clone()));
    tracing::info!("leading: granting leases and writing ledgers");
    loop {
        tokio::select! {
            r = objects.changed() => {
                if r.is_err() { return; }
                let o = objects.borrow_and_update().clone();
                if let Some(o) = o && tx.send(engine::Cmd::Objects(o)).await.is_err() {
                    return;
                }
            }
            r = leadership.changed() => {
                if r.is_err() || !leadership.borrow().leader {
                    // Another replica may now write ledgers: stop at once.
                    tracing::error!("lost leadership; exiting so a clean process takes over");
                    std::process::exit(1);
                }
            }
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
