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
pub mod tls;
pub mod webhook;

use std::{
    future::Future, net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc, time::Duration,
};

use clap::Parser;
use tokio::{
    sync::{oneshot, watch},
    task::JoinHandle,
};

use crate::{
    engine::{Engine, EngineConfig, LedgerStore},
    metrics::Metrics,
    source::{Authenticator, Leadership, ObjectSource},
    webhook::server::CertStore,
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

/// Subcommands (without one, the operator runs).
#[derive(Debug, Clone, Copy, clap::Subcommand)]
pub enum Command {
    /// Print every Kubernetes API call the operator makes (the RBAC it
    /// needs) as JSON: `[{apiGroup, resource, subresource, verbs, scope,
    /// reason}]`, with `scope` `Cluster` or `Namespace` (the operator's).
    Rbac,
}

/// tokenwarden operator.
///
/// Kubernetes mode (the default) reads RoutingPolicies and TokenBudgets
/// from the API server (in-cluster config or `KUBECONFIG`), elects a leader
/// on a Lease and serves the admission webhooks. With `--local-dir` it runs
/// on one machine instead, from a directory of YAML files.
#[derive(Debug, Parser)]
#[command(name = "tokenwarden-operator", version, about)]
pub struct Args {
    /// What to do instead of running.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Local mode: a directory of RoutingPolicy/TokenBudget YAML files
    /// (`*.yaml`, `*.yml`), watched, used instead of the Kubernetes API.
    #[arg(long, env = "TOKENWARDEN_OPERATOR_LOCAL_DIR", value_name = "DIR")]
    pub local_dir: Option<PathBuf>,

    /// Validate every object in `--local-dir`, print one line per object and
    /// exit: 0 when all are valid, 64 otherwise.
    #[arg(long)]
    pub check_config: bool,

    /// Local mode: where status files, the cluster ledger, events and the
    /// leader lock live (default: `<local-dir>.state`, beside the watched
    /// directory, never inside it).
    #[arg(long, env = "TOKENWARDEN_OPERATOR_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Local mode: a file holding the secret every sidecar presents
    /// (at least 16 characters).
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_SHARED_SECRET_FILE",
        value_name = "FILE"
    )]
    pub shared_secret_file: Option<PathBuf>,

    /// gRPC control server (sidecars connect here). Loopback by default;
    /// in a cluster the chart sets `0.0.0.0:15810`. Without
    /// `--tls-cert-file` a non-loopback address is refused unless
    /// `--allow-plaintext-control` is given.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_GRPC_LISTEN",
        default_value = "127.0.0.1:15810"
    )]
    pub grpc_listen: SocketAddr,

    /// Admin endpoints: /healthz, /readyz, /metrics (open to every client)
    /// and /ledger (cluster usage: loopback clients only, and in Kubernetes
    /// mode a bearer token whose user may get tokenbudgets in all
    /// namespaces). Loopback by default; the chart sets `0.0.0.0:15811`.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_ADMIN_LISTEN",
        default_value = "127.0.0.1:15811"
    )]
    pub admin_listen: SocketAddr,

    /// Local mode: serve the gRPC control plane in plaintext on a
    /// non-loopback `--grpc-listen` (the shared secret and all usage then
    /// cross the network unencrypted). Without it the operator refuses to
    /// start (exit 64); prefer `--tls-cert-file`.
    #[arg(long, env = "TOKENWARDEN_OPERATOR_ALLOW_PLAINTEXT_CONTROL")]
    pub allow_plaintext_control: bool,

    /// PEM certificate (chain) of the gRPC server. Local mode without it:
    /// plaintext, on a loopback `--grpc-listen` only (see
    /// `--allow-plaintext-control`). Kubernetes mode without it: the
    /// webhook's certificate, which names the control Service too.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_TLS_CERT_FILE",
        value_name = "FILE",
        requires = "tls_key_file"
    )]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of the gRPC server.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_TLS_KEY_FILE",
        value_name = "FILE",
        requires = "tls_cert_file"
    )]
    pub tls_key_file: Option<PathBuf>,

    /// This replica's control address, given to sidecars that reach a
    /// replica that does not lead (default: derived from the listen address).
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_ADVERTISE_ADDRESS",
        value_name = "URL"
    )]
    pub advertise_address: Option<String>,

    /// Lease lifetime: a sidecar cut off from the operator may spend its
    /// lease this long.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_LEASE_TTL_SECS",
        default_value_t = 30
    )]
    pub lease_ttl_secs: u64,

    /// How long after expiry an unspent lease is still held back (for
    /// requests in flight when it expired) before it returns to the pool.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_LEASE_GRACE_SECS",
        default_value_t = 60
    )]
    pub lease_grace_secs: u64,

    /// At most one status write per budget per this interval.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_STATUS_INTERVAL_MS",
        default_value_t = 1000
    )]
    pub status_interval_ms: u64,

    /// Log format.
    #[arg(long, env = "TOKENWARDEN_OPERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Kubernetes mode: the operator's namespace (its Lease, certificate
    /// Secret and Pods). Default: the service account's namespace.
    #[arg(long, env = "POD_NAMESPACE", value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    /// Kubernetes mode: this replica's Pod name (the Lease identity, and the
    /// Pod the leader labels).
    #[arg(long, env = "POD_NAME", value_name = "NAME")]
    pub pod_name: Option<String>,

    /// Kubernetes mode: this replica's Pod IP, for the default advertise
    /// address `https://<pod-ip>:<grpc port>`.
    #[arg(long, env = "POD_IP", value_name = "IP")]
    pub pod_ip: Option<String>,

    /// Kubernetes mode: the Lease replicas elect a leader on.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_LEASE_NAME",
        default_value = kube::leader::DEFAULT_LEASE_NAME
    )]
    pub lease_name: String,

    /// Kubernetes mode: the ConfigMap (operator namespace) that holds the
    /// cluster ledger by namespace, workload and model.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_LEDGER_CONFIGMAP",
        default_value = kube::ledger::DEFAULT_NAME
    )]
    pub ledger_configmap: String,

    /// Admission webhooks and their certificates (Kubernetes mode).
    #[command(flatten)]
    pub webhook: webhook::WebhookArgs,
}

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

/// What a mode provides to the common control plane.
pub struct Mode {
    /// Objects and status.
    pub source: Arc<dyn ObjectSource>,
    /// Sidecar identity.
    pub auth: Arc<dyn Authenticator>,
    /// Leadership.
    pub leadership: watch::Receiver<Leadership>,
    /// Where the cluster ledger (namespace, workload, model) is kept.
    pub ledger: Option<Arc<dyn LedgerStore>>,
    /// The control server's certificate (`None`: plaintext).
    pub tls: Option<CertStore>,
    /// Who besides loopback clients may read `/ledger` (`None`: nobody).
    pub ledger_access: Option<Arc<dyn admin::LedgerAccess>>,
    /// Work whose end ends the process (the webhook server).
    pub fatal: Option<JoinHandle<anyhow::Result<()>>>,
    /// Hands leadership over on shutdown: completing the sender makes the
    /// elector release; the task ends when it has.
    pub release: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

/// Refuse a plaintext control server on an address other hosts can reach:
/// local mode without `--tls-cert-file`, `--grpc-listen` not loopback, no
/// `--allow-plaintext-control`. (Kubernetes mode always speaks TLS.)
pub fn check_listeners(args: &Args) -> Result<(), String> {
    let plaintext = args.local_dir.is_some() && args.tls_cert_file.is_none();
    if plaintext && !is_loopback(args.grpc_listen.ip()) && !args.allow_plaintext_control {
        return Err(format!(
            "refusing to serve the control plane in plaintext on {} (not a loopback address): \
             the shared secret and every usage record would cross the network unencrypted. \
             Give --tls-cert-file and --tls-key-file, listen on loopback \
             (--grpc-listen 127.0.0.1:15810), or pass --allow-plaintext-control",
            args.grpc_listen
        ));
    }
    Ok(())
}

/// Loopback, also as an IPv4-mapped IPv6 address (`::ffff:127.0.0.1`).
pub fn is_loopback(ip: std::net::IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Local mode's default `--state-dir`: `<local-dir>.state`, beside the
/// watched directory (never inside it, where it would be part of what is
/// watched, copied or committed with the objects).
pub fn default_state_dir(local_dir: &std::path::Path) -> Result<PathBuf, String> {
    let need = || {
        format!(
            "cannot derive a state directory beside {}: give --state-dir",
            local_dir.display()
        )
    };
    let mut abs = std::path::absolute(local_dir).map_err(|e| format!("{}: {e}", need()))?;
    // `.`, `..` or a trailing `..`: name the directory itself.
    if abs.file_name().is_none() {
        abs = std::fs::canonicalize(&abs).map_err(|e| format!("{}: {e}", need()))?;
    }
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
        return Err(need());
    };
    let mut state = name.to_os_string();
    state.push(".state");
    Ok(parent.join(state))
}

async fn run(args: Args) -> ExitCode {
    if let Err(e) = check_listeners(&args) {
        return config_error(&e);
    }
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
    let mode = match &args.local_dir {
        Some(dir) => local_mode(&args, dir, grpc_addr),
        None => kube_mode(&args, grpc_addr).await,
    };
    let mut mode = match mode {
        Ok(m) => m,
        Err(e) => return config_error(&e),
    };
    let metrics = Arc::new(Metrics::new());
    let (engine_tx, engine_rx) = watch::channel(None);
    let (synced_tx, synced_rx) = watch::channel(false);
    let driver = tokio::spawn(drive(
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
            tls: mode.tls.clone(),
            ledger_access: mode.ledger_access.clone(),
        },
    ));
    let service = control::ControlService::new(
        mode.auth.clone(),
        mode.leadership.clone(),
        engine_rx.clone(),
        metrics.clone(),
    );
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .tcp_nodelay(true)
        .add_service(service);
    type Serve =
        std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>;
    let serve: Serve = match &mode.tls {
        Some(store) => match tls::server_config(store) {
            Ok(cfg) => Box::pin(server.serve_with_incoming(tls::incoming(grpc, cfg))),
            Err(e) => return config_error(&format!("TLS: {e}")),
        },
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
    tracing::info!(
        grpc = %grpc_addr,
        admin = %admin_addr,
        tls = mode.tls.is_some(),
        "tokenwarden operator listening"
    );
    let fatal = async {
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
    };
    let code = tokio::select! {
        r = serve => {
            if let Err(e) = r {
                tracing::error!(error = %e, "control server failed");
            }
            ExitCode::from(1)
        }
        () = fatal => ExitCode::from(1),
        () = shutdown_signal() => {
            tracing::info!("shutting down");
            ExitCode::SUCCESS
        }
    };
    // Hand over cleanly: the engine finishes its writes and ends the
    // sessions; only then may another replica lead.
    driver.abort();
    let engine = engine_rx.borrow().clone();
    if let Some(engine) = engine {
        let (done_tx, done_rx) = oneshot::channel();
        if engine.send(engine::Cmd::Shutdown(done_tx)).await.is_ok()
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
    code
}

/// How long a stopping leader waits for its status writes.
const SHUTDOWN_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

fn local_mode(args: &Args, dir: &std::path::Path, grpc_addr: SocketAddr) -> Result<Mode, String> {
    let state = match &args.state_dir {
        Some(state) => state.clone(),
        None => default_state_dir(dir)?,
    };
    let secret = args
        .shared_secret_file
        .as_deref()
        .ok_or("local mode needs --shared-secret-file (the secret sidecars present)")?;
    let auth = local::SharedSecret::from_file(secret)?;
    let tls = match (&args.tls_cert_file, &args.tls_key_file) {
        (Some(cert), Some(key)) => {
            let store = CertStore::default();
            tls::load_files(&store, cert, key)?;
            tls::reload_files(
                store.clone(),
                cert.clone(),
                key.clone(),
                tls::FILE_RELOAD_INTERVAL,
            );
            Some(store)
        }
        _ => None,
    };
    let advertise = args.advertise_address.clone().unwrap_or_else(|| {
        let scheme = if tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{grpc_addr}")
    });
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
        tls,
        ledger_access: None,
        fatal: None,
        release: None,
    })
}

/// Kubernetes mode: reflectors, TokenReview, leader election on a Lease, the
/// webhook server on every replica, TLS from the webhook's certificate,
/// `/ledger` for bearer tokens that pass TokenReview and SubjectAccessReview.
async fn kube_mode(args: &Args, grpc_addr: SocketAddr) -> Result<Mode, String> {
    let client = ::kube::Client::try_default().await.map_err(|e| {
        format!(
            "no Kubernetes API configuration (in-cluster service account or KUBECONFIG): {e}; \
             to run without a cluster, use --local-dir DIR"
        )
    })?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let pod_name = args.pod_name.clone().ok_or(
        "Kubernetes mode needs this replica's pod name: --pod-name, or POD_NAME from the downward API",
    )?;
    // Validate the injection settings now rather than in the first review.
    args.webhook
        .inject_config(&namespace)
        .map_err(|e| format!("{e:#}"))?;
    let source = kube::KubeSource::start_with(
        client.clone(),
        kube::SourceOptions {
            instance: Some(pod_name.clone()),
            ..kube::SourceOptions::default()
        },
    );
    let auth = kube::TokenReviewAuth::new(client.clone());
    let ledger_access = kube::LedgerReview::new(client.clone());
    let webhook_certs = CertStore::default();
    let tls = match (&args.tls_cert_file, &args.tls_key_file) {
        (Some(cert), Some(key)) => {
            let store = CertStore::default();
            tls::reload_files(
                store.clone(),
                cert.clone(),
                key.clone(),
                tls::FILE_RELOAD_INTERVAL,
            );
            store
        }
        // The webhook certificate names the control Service too.
        _ => webhook_certs.clone(),
    };
    let advertise = args
        .advertise_address
        .clone()
        .unwrap_or_else(|| default_advertise(args, &namespace, grpc_addr.port()));
    let mut leader = kube::leader::LeaderConfig::new(&namespace, &pod_name, &advertise);
    leader.lease_name.clone_from(&args.lease_name);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (leadership, elector) = kube::leader::run_until(client.clone(), leader, async move {
        let _ = stop_rx.await;
    });
    let ledger =
        kube::ledger::ConfigMapLedger::new(client.clone(), &namespace, &args.ledger_configmap);
    let webhook = tokio::spawn(webhook::run(
        args.webhook.clone(),
        client,
        namespace.clone(),
        source.objects(),
        webhook_certs,
    ));
    tracing::info!(
        namespace = %namespace,
        pod = %pod_name,
        advertise = %advertise,
        lease = %args.lease_name,
        "Kubernetes mode"
    );
    Ok(Mode {
        source,
        auth: Arc::new(auth),
        leadership,
        ledger: Some(Arc::new(ledger)),
        tls: Some(tls),
        ledger_access: Some(Arc::new(ledger_access)),
        fatal: Some(webhook),
        release: Some((stop_tx, elector)),
    })
}

/// The address a replica announces for `Redirect`: its pod IP when known
/// (sidecars verify the certificate against the control Service's name, see
/// docs/control-plane.md), else the control Service.
fn default_advertise(args: &Args, namespace: &str, port: u16) -> String {
    match args.pod_ip.as_deref().map(str::trim) {
        Some(ip) if ip.contains(':') => format!("https://[{ip}]:{port}"),
        Some(ip) if !ip.is_empty() => format!("https://{ip}:{port}"),
        _ => args
            .webhook
            .control_plane_address
            .clone()
            .unwrap_or_else(|| {
                format!(
                    "https://{}.{namespace}.svc:{}",
                    args.webhook.control_service, args.webhook.control_port
                )
            }),
    }
}

/// Wait until this replica leads and the objects are synced, then run the
/// engine and feed it object changes.
async fn drive(
    source: Arc<dyn ObjectSource>,
    ledger: Option<Arc<dyn LedgerStore>>,
    mut leadership: watch::Receiver<Leadership>,
    cfg: EngineConfig,
    metrics: Arc<Metrics>,
    engine_tx: watch::Sender<Option<tokio::sync::mpsc::Sender<engine::Cmd>>>,
    synced_tx: watch::Sender<bool>,
) {
    let mut objects = source.objects();
    loop {
        if objects.borrow_and_update().is_some() {
            break;
        }
        if objects.changed().await.is_err() {
            return;
        }
    }
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
    // Leading: statuses are ours now. Read them fresh, not from the watch: a
    // previous leader may have written since, and the watch may lag.
    let latest = until_ok("the objects", &leadership, || source.fresh()).await;
    objects.borrow_and_update();
    let saved = match ledger {
        Some(l) => {
            let state = until_ok("the cluster ledger", &leadership, || {
                let store = l.clone();
                async move {
                    tokio::task::spawn_blocking(move || store.load())
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()))
                }
            })
            .await;
            Some((state, l))
        }
        None => None,
    };
    let tx = Engine::spawn(
        cfg,
        source.clone(),
        saved,
        metrics,
        latest,
        leadership.clone(),
    );
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

/// Retry `read` with backoff until it succeeds; a new leader serves nothing
/// before. Exits if leadership is lost meanwhile.
async fn until_ok<T, E, F, Fut>(
    what: &str,
    leadership: &watch::Receiver<Leadership>,
    mut read: F,
) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = Duration::from_millis(200);
    loop {
        match read().await {
            Ok(t) => return t,
            Err(e) => {
                tracing::error!(error = %e, "cannot read {what}; not serving yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                if !leadership.borrow().leader {
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    fn parse(args: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("tokenwarden-operator").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The operator and the sidecar never read the same variable: exporting
    /// one binary's setting must not configure the other.
    #[test]
    fn every_environment_variable_has_the_operator_prefix() {
        let cmd = Args::command();
        let mut names = Vec::new();
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env() {
                names.push(env.to_string_lossy().into_owned());
            }
        }
        assert!(names.len() > 30, "{names:?}");
        let downward_api = ["POD_NAMESPACE", "POD_NAME", "POD_IP"];
        let stray: Vec<&String> = names
            .iter()
            .filter(|n| {
                !(n.starts_with("TOKENWARDEN_OPERATOR_") || downward_api.contains(&n.as_str()))
            })
            .collect();
        assert!(stray.is_empty(), "without the operator prefix: {stray:?}");
        assert!(names.contains(&"TOKENWARDEN_OPERATOR_STATE_DIR".to_string()));
        assert!(names.contains(&"TOKENWARDEN_OPERATOR_ALLOW_PLAINTEXT_CONTROL".to_string()));
    }

    #[test]
    fn listeners_default_to_loopback() {
        let args = parse(&[]);
        assert_eq!(args.grpc_listen, "127.0.0.1:15810".parse().unwrap());
        assert_eq!(args.admin_listen, "127.0.0.1:15811".parse().unwrap());
        assert!(!args.allow_plaintext_control);
    }

    #[test]
    fn plaintext_control_is_refused_off_loopback() {
        let local = ["--local-dir", "objects", "--shared-secret-file", "secret"];
        let with = |extra: &[&str]| {
            let mut a = local.to_vec();
            a.extend_from_slice(extra);
            check_listeners(&parse(&a))
        };
        // Loopback, any form: fine.
        assert_eq!(with(&[]), Ok(()));
        assert_eq!(with(&["--grpc-listen", "127.0.0.2:1"]), Ok(()));
        assert_eq!(with(&["--grpc-listen", "[::1]:1"]), Ok(()));
        assert_eq!(with(&["--grpc-listen", "[::ffff:127.0.0.1]:1"]), Ok(()));
        // Anything else: refused, naming the flag that allows it.
        for addr in ["0.0.0.0:15810", "[::]:15810", "10.1.2.3:15810"] {
            let err = with(&["--grpc-listen", addr]).unwrap_err();
            assert!(
                err.starts_with(&format!(
                    "refusing to serve the control plane in plaintext on {}",
                    addr.parse::<SocketAddr>().unwrap()
                )),
                "{err}"
            );
            assert!(err.contains("--allow-plaintext-control"), "{err}");
            assert!(err.contains("--tls-cert-file"), "{err}");
        }
        assert_eq!(
            with(&["--grpc-listen", "0.0.0.0:1", "--allow-plaintext-control"]),
            Ok(())
        );
        assert_eq!(
            with(&[
                "--grpc-listen",
                "0.0.0.0:1",
                "--tls-cert-file",
                "c",
                "--tls-key-file",
                "k"
            ]),
            Ok(())
        );
        // Kubernetes mode always serves TLS (the webhook's certificate).
        assert_eq!(
            check_listeners(&parse(&["--grpc-listen", "0.0.0.0:15810"])),
            Ok(())
        );
    }

    #[test]
    fn the_default_state_dir_lies_beside_the_watched_dir() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            default_state_dir(&p("/srv/objects")),
            Ok(p("/srv/objects.state"))
        );
        assert_eq!(
            default_state_dir(&p("/srv/objects/")),
            Ok(p("/srv/objects.state"))
        );
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            default_state_dir(&p("objects")),
            Ok(cwd.join("objects.state"))
        );
        let here = std::fs::canonicalize(&cwd).unwrap();
        let mut name = here.file_name().unwrap().to_os_string();
        name.push(".state");
        let expected = here.parent().unwrap().join(&name);
        for dot in [".", "./"] {
            let got = default_state_dir(&p(dot)).unwrap();
            assert_eq!(
                std::fs::canonicalize(got.parent().unwrap()).unwrap(),
                std::fs::canonicalize(expected.parent().unwrap()).unwrap()
            );
            assert_eq!(got.file_name().unwrap(), name.as_os_str());
        }
        assert_eq!(
            default_state_dir(&p("/")),
            Err("cannot derive a state directory beside /: give --state-dir".to_string())
        );
        for dir in ["/srv/objects", "objects", ".", "/srv/a/../objects"] {
            let state = default_state_dir(&p(dir)).unwrap();
            let watched = std::path::absolute(dir).unwrap();
            assert!(
                !state.starts_with(&watched),
                "{} inside {}",
                state.display(),
                watched.display()
            );
        }
    }
}
